"""The local driver: the operator's state machine over in-process services (threads) on one
bus and store — the embedded default behind ``vlgenrm run``."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from vlgenrm.bus import Bus, Topics, Worker
from vlgenrm.contracts import IterationStatus, Stage
from vlgenrm.evaluation.promotion import PromotionDecision, PromotionRecord, promote
from vlgenrm.iteration.machine import Announce, Promote, PublishTask, Reconciliation, reconcile
from vlgenrm.iteration.observe import FailureLog, MarkerCache, observe
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.settings import Settings
from vlgenrm.store import BlobStore

log = logging.getLogger(__name__)


#: Builds one stage service's worker on a bus and store (``vlgenrm.services.stage_workers()``
#: has them all; the core is handed them and never imports a service).
WorkerBuilder = Callable[[Settings, Bus, BlobStore], Worker]


class LocalServices:
    """Every stage service as a thread consuming the shared bus."""

    def __init__(self, settings: Settings, bus: Bus, store: BlobStore, builders: Mapping[str, WorkerBuilder]) -> None:
        self.workers = {name: build(settings, bus, store) for name, build in builders.items()}
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> LocalServices:
        for name, worker in self.workers.items():
            thread = threading.Thread(target=worker.run, name=f"service-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers.values():
            worker.stop()
        for thread in self.threads:
            thread.join(30)


def execute(
    store: BlobStore, bus: Bus, topics: Topics, namespace: str, name: str, r: Reconciliation, announce: Callable[[Announce], None] | None = None
) -> None:
    """Carry out the machine's actions; ``announce`` posts the Kubernetes Events (the operator),
    by default they are logged (the local driver)."""
    for action in r.actions:
        if isinstance(action, PublishTask):
            bus.publish(topics.tasks(action.task.shard.stage), action.task.shard.key, action.task)
        elif isinstance(action, Promote):
            decision = store.get_model(action.decision_key, PromotionDecision)
            promote(
                store,
                PromotionRecord(
                    namespace=namespace,
                    iteration=name,
                    model=decision.candidate_uri,
                    model_version=decision.candidate_version,
                    accuracy=decision.candidate_accuracy,
                    dataset=decision.dataset,
                ),
            )
        elif isinstance(action, Announce) and announce is not None:
            announce(action)
        elif isinstance(action, Announce):
            (log.warning if action.warning else log.info)("%s/%s %s: %s", namespace, name, action.reason.value, action.message)


class LocalDriver:
    """Runs Iterations to a terminal phase with the shared state machine."""

    def __init__(self, settings: Settings, bus: Bus, store: BlobStore, namespace: str = "local") -> None:
        self.settings, self.bus, self.store, self.namespace = settings, bus, store, namespace
        self.topics = Topics(settings.bus.topic_prefix)
        self.bus.ensure_topics([self.topics.events, self.topics.dlq, *(self.topics.tasks(s) for s in Stage)])

    def run(
        self, name: str, spec: IterationSpec, *, on_status: Callable[[IterationStatus], None] | None = None, timeout_s: float = 3600, poll_s: float = 0.5
    ) -> IterationStatus:
        failures, markers, status = FailureLog(self.topics), MarkerCache(), IterationStatus()
        deadline = time.monotonic() + timeout_s
        with self.bus.consumer([self.topics.events, self.topics.dlq], self.topics.group(f"local-driver-{uuid.uuid4().hex[:8]}")) as consumer:
            while True:
                obs = observe(self.store, spec, self.namespace, name, failures=failures.of(self.namespace, name), markers=markers, previous_succeeded=True)
                r = reconcile(spec, status, obs, datetime.now(UTC))
                execute(self.store, self.bus, self.topics, self.namespace, name, r)
                status = r.status
                if on_status is not None:
                    on_status(status)
                if status.phase.is_terminal:
                    return status
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} still {status.phase.value} after {timeout_s:.0f} s: {status.message}")
                records = consumer.poll(poll_s, 500)
                for record in records:
                    failures.add(record)
                if records:
                    consumer.commit(records)
