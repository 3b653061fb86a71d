"""kopf handlers: a thin shell around :func:`vlgenrm.iteration.machine.reconcile`.

Each create/resume/update and a short timer reconcile one Iteration: observe the store
(markers) and the failures seen on the events and dead-letter topics, run the machine, publish
its tasks to Kafka, write the promotion pointer, post Kubernetes Events, patch the status. The
status is the only memory: an operator restarted at any moment resumes from it and the store.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from vlgenrm.bus import Bus, CommitFailedError, Record, Topics, make_bus
from vlgenrm.contracts import IterationReason, IterationStatus, Phase, Stage
from vlgenrm.iteration.crd import GROUP, PLURAL, VERSION
from vlgenrm.iteration.local import execute
from vlgenrm.iteration.machine import Announce, Reconciliation, chain_cycle, fail, reconcile
from vlgenrm.iteration.observe import FailureLog, MarkerCache, observe
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.settings import Settings, load_settings
from vlgenrm.stages import cancel_iteration
from vlgenrm.store import BlobStore, make_store

log = logging.getLogger("vlgenrm.operator")
RECONCILE_INTERVAL_S = 2.0
TERMINAL_PHASES = tuple(p.value for p in Phase if p.is_terminal)  # as the raw status holds them


@dataclass
class Runtime:
    """What the handlers share: the bus, the store, and what the event consumer has seen."""

    settings: Settings
    bus: Bus
    store: BlobStore
    topics: Topics
    failures: FailureLog
    markers: MarkerCache = field(default_factory=MarkerCache)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def settle(self, namespace: str, name: str) -> None:
        """Drop what was gathered for a terminal Iteration: it is never reconciled again."""
        with self.lock:
            self.failures.forget(namespace, name)
        self.markers.forget(namespace, name)

    def consume(self) -> None:
        """Collect failure reports from vlgenrm.events and vlgenrm.dlq (markers are read from the store)."""
        group = self.topics.group(f"operator-{uuid.uuid4().hex[:8]}")  # every replica sees every event
        with self.bus.consumer([self.topics.events, self.topics.dlq], group) as consumer:
            while not self.stop.is_set():
                records = consumer.poll(1.0, 500)
                with self.lock:
                    for record in records:
                        self.note(record)
                if records:
                    try:
                        consumer.commit(records)
                    except CommitFailedError as exc:  # they only come again; not worth the thread
                        log.warning("%s", exc)

    def note(self, record: Record) -> None:
        """Hand ``record`` to the failure log; a record it cannot take is skipped, never fatal.

        This thread is the operator's only view of failures: if one record killed it, every
        Iteration would wait forever for shards that already failed.
        """
        try:
            self.failures.add(record)
        except Exception:  # anyone can write to these topics
            log.exception("skipped %s[%d]@%d: not a failure report", record.topic, record.partition, record.offset)


class QuietTicks(logging.Filter):
    """Drops kopf's "Timer 'on_timer' succeeded." (one line per Iteration every
    RECONCILE_INTERVAL_S): the transitions are logged by the state machine; a failing tick still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.getMessage() == "Timer 'on_timer' succeeded.")


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress and diff-bases in annotations: the status belongs to the state machine.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.ERROR  # our own Events tell the transitions; kopf posts only its errors
    logging.getLogger("kopf.objects").addFilter(QuietTicks())
    cfg = load_settings(None, [])
    bus, store = make_bus(cfg.bus), make_store(cfg.store)
    topics = Topics(cfg.bus.topic_prefix)
    bus.ensure_topics([topics.events, topics.dlq, *(topics.tasks(stage) for stage in Stage)])
    runtime = Runtime(cfg, bus, store, topics, FailureLog(topics))
    threading.Thread(target=runtime.consume, name="events", daemon=True).start()
    memo.runtime = runtime
    log.info("operator started: bus %s, store %s", cfg.bus.kind.value, store.uri(""))


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.stop.set()


@kopf.index(GROUP, VERSION, PLURAL)
def phases(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict[tuple[str, str], str | None]:
    """Every Iteration's phase, so a chained one knows whether its previousIteration succeeded."""
    return {(namespace, name): status.get("phase")}


@kopf.index(GROUP, VERSION, PLURAL)
def chains(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str | None]:
    """Every Iteration's previousIteration, so a chain that loops back is seen (and failed)."""
    return {(namespace, name): spec.get("previousIteration")}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=dict))


def reconcile_iteration(
    body: kopf.Body, namespace: str, name: str, meta: kopf.Meta, patch: kopf.Patch, memo: kopf.Memo, phases: kopf.Index, chains: kopf.Index, **_: Any
) -> None:
    runtime: Runtime = memo.runtime
    raw_status = {k: v for k, v in _plain(body.get("status") or {}).items() if k != "kopf"}
    status = IterationStatus.model_validate(raw_status) if raw_status else IterationStatus()
    if status.phase.is_terminal:
        return
    now = datetime.now(UTC)
    try:
        spec = IterationSpec.model_validate(_plain(body["spec"]))
    except ValidationError as exc:
        r = fail(Reconciliation(status), IterationReason.INVALID_SPEC, f"invalid spec: {exc.errors()[0]['msg']}", now)
        _finish(runtime, body, namespace, name, patch, r)
        return
    if spec.previous_iteration and status.phase is Phase.PENDING:
        previous = set(phases.get((namespace, spec.previous_iteration), []))
        if Phase.SUCCEEDED.value not in previous:
            # The cycle first: its other members may have failed of it already, and "previous
            # failed" would hide why.
            if cycle := chain_cycle(name, lambda n: next(iter(chains.get((namespace, n), [])), None)):
                r = fail(
                    Reconciliation(status),
                    IterationReason.PREVIOUS_ITERATION_CYCLE,
                    f"previousIteration chain {' -> '.join(cycle)} is a cycle: none of them can start",
                    now,
                )
            elif Phase.FAILED.value in previous:
                r = fail(Reconciliation(status), IterationReason.MISSING_INPUT, f"previousIteration {spec.previous_iteration} failed", now)
            else:
                patch.status["message"] = f"waiting for previousIteration {spec.previous_iteration} to succeed"
                return
            _finish(runtime, body, namespace, name, patch, r)
            return
    with runtime.lock:
        failures = runtime.failures.of(namespace, name)
    obs = observe(runtime.store, spec, namespace, name, failures=failures, markers=runtime.markers, previous_succeeded=True)
    _finish(runtime, body, namespace, name, patch, reconcile(spec, status, obs, now, generation=meta.get("generation", 1)))


def _finish(runtime: Runtime, body: kopf.Body, namespace: str, name: str, patch: kopf.Patch, r: Reconciliation) -> None:
    def announce(action: Announce) -> None:
        kopf.event(body, type="Warning" if action.warning else "Normal", reason=action.reason.value, message=action.message[:1000])
        (log.warning if action.warning else log.info)("%s/%s %s: %s", namespace, name, action.reason.value, action.message)

    execute(runtime.store, runtime.bus, runtime.topics, namespace, name, r, announce)
    patch.status.update(r.status.model_dump(by_alias=True, mode="json", exclude={"schema_version"}))
    if r.status.phase.is_terminal:
        runtime.settle(namespace, name)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_change(**kwargs: Any) -> None:
    reconcile_iteration(**kwargs)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=RECONCILE_INTERVAL_S,
    initial_delay=RECONCILE_INTERVAL_S,
    when=lambda status, **_: status.get("phase") not in TERMINAL_PHASES,
)
def on_timer(**kwargs: Any) -> None:
    reconcile_iteration(**kwargs)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def on_delete(spec: kopf.Spec, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Finalizer: stop the Iteration's queued tasks (tombstone) and clean up per spec.cleanup."""
    runtime: Runtime = memo.runtime
    deleted = cancel_iteration(runtime.store, namespace, name, delete_outputs=spec.get("cleanup", "keep") == "delete")
    runtime.settle(namespace, name)
    log.info("%s/%s deleted: tasks cancelled, %d objects removed", namespace, name, deleted)
