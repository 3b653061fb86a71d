"""What a shell (operator or local driver) gathers for the state machine: the dataset and
eval set in the store, the models to start from, completion markers (the truth), and the
failures reported on the events and dead-letter topics."""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from pydantic import ValidationError

from vlgenrm import layout
from vlgenrm.bus.base import Record, Topics
from vlgenrm.contracts import DeadLetter, EventType, FailureReason, ShardDone, Stage, StageEvent, StageTask
from vlgenrm.iteration.machine import Observation
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.store import BlobStore
from vlgenrm.store.base import ObjectNotFoundError, StoreError

log = logging.getLogger(__name__)


class FailureLog:
    """Failure reports per Iteration, from ``shard_failed`` events and from dead letters of
    stage tasks (a task that crashed its handler reaches only the dead-letter topic).

    Bounded, since the topics carry every namespace's reports and an operator runs for months:
    the ``max_iterations`` Iterations that failed most recently, the newest ``max_events`` reports
    of each (far past any backoff limit); shells ``forget`` an Iteration once it is terminal."""

    def __init__(self, topics: Topics, *, max_iterations: int = 10_000, max_events: int = 1_000) -> None:
        self.topics, self.max_iterations, self.max_events = topics, max_iterations, max_events
        self._by_iteration: OrderedDict[tuple[str, str], deque[StageEvent]] = OrderedDict()

    def add(self, record: Record) -> None:
        try:
            if record.topic == self.topics.dlq:
                letter = DeadLetter.model_validate_json(record.value)
                task = StageTask.model_validate_json(letter.original)
                event = StageEvent(
                    event_id=f"{task.task_id}/{task.attempt}/dlq",
                    task_id=task.task_id,
                    shard=task.shard,
                    attempt=task.attempt,
                    type=EventType.SHARD_FAILED,
                    reason=FailureReason.INTERNAL,
                    message=f"dead-lettered ({letter.reason.value}): {letter.detail}",
                )
            else:
                event = StageEvent.model_validate_json(record.value)
        except (ValidationError, ValueError):
            return  # not about a stage task (or not ours): nothing the machine can use
        if event.type is EventType.SHARD_FAILED:
            key = (event.shard.namespace, event.shard.iteration)
            events = self._by_iteration.pop(key, None) or deque(maxlen=self.max_events)
            events.append(event)
            self._by_iteration[key] = events  # most recently failed last
            while len(self._by_iteration) > self.max_iterations:
                self._by_iteration.popitem(last=False)

    def of(self, namespace: str, name: str) -> list[StageEvent]:
        return list(self._by_iteration.get((namespace, name), []))

    def forget(self, namespace: str, name: str) -> None:
        self._by_iteration.pop((namespace, name), None)


@dataclass
class MarkerCache:
    """Completion markers never change once written: read each one once."""

    markers: dict[str, ShardDone] = field(default_factory=dict)

    def stage(self, store: BlobStore, namespace: str, name: str, stage: Stage) -> dict[int, ShardDone]:
        prefix = layout.stage_prefix(namespace, name, stage)
        out = {}
        for obj in store.list(prefix + "/"):
            shard = layout.parse_marker(prefix, obj.key)
            if shard is None:
                continue
            if obj.key not in self.markers:
                self.markers[obj.key] = store.get_model(obj.key, ShardDone)
            out[shard] = self.markers[obj.key]
        return out

    def forget(self, namespace: str, name: str) -> None:
        prefix = layout.iteration_prefix(namespace, name)
        for key in [k for k in self.markers if k.startswith(prefix)]:
            del self.markers[key]


def observe(
    store: BlobStore,
    spec: IterationSpec,
    namespace: str,
    name: str,
    *,
    failures: list[StageEvent],
    markers: MarkerCache,
    previous_succeeded: bool | None = None,
) -> Observation:
    """The Observation of one Iteration. ``previous_succeeded``: whether spec.previousIteration
    finished (the shell knows its status); without it the previous checkpoint must exist."""
    from vlgenrm.synth.dataset import eval_export_key, load_manifest

    try:
        manifest = load_manifest(store, spec.dataset)
        split = manifest.splits.get("train")
        shards = [store.uri(key) for key in split.shards] if split else []
    except (ObjectNotFoundError, StoreError, ValidationError) as exc:
        log.warning("dataset %s: %s", spec.dataset, exc)
        shards = []
    eval_key = eval_export_key(spec.eval_set)
    eval_uri = store.uri(eval_key) if store.exists(eval_key) else None
    current, hard_pool = spec.base_model, []
    if spec.previous_iteration:
        prefix = layout.checkpoint_prefix(namespace, spec.previous_iteration)
        exists = store.exists(layout.checkpoint_manifest_key(prefix))
        current = store.uri(prefix) if exists and previous_succeeded is not False else None
        hard_prefix = layout.kind_prefix(namespace, spec.previous_iteration, Stage.SAMPLING, "hard")
        hard_pool = [store.uri(o.key) for o in store.list(hard_prefix) if o.key.endswith(".jsonl")]
    base = spec.base_model or current
    done = {stage: markers.stage(store, namespace, name, stage) for stage in Stage}
    return Observation(
        namespace=namespace,
        name=name,
        dataset_shards=shards,
        eval_uri=eval_uri,
        uri=store.uri,
        base_model=base,
        current_model=current,
        done=done,
        failures=failures,
        hard_pool=hard_pool,
    )
