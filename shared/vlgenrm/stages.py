"""What every stage service does around its own work: object layout, completion markers,
events, and the order that makes shards exactly-once in the store (§2, §4).

Order of a shard: outputs (deterministic keys and bytes) -> marker -> event -> commit. A
redelivered task whose marker exists only re-announces it. A process killed anywhere before
the marker leaves no marker, so the task (still uncommitted) runs again and overwrites the
same keys with the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from vlgenrm import layout
from vlgenrm.bus.base import Bus, Record, Topics
from vlgenrm.contracts import Contract, EventType, FailureReason, ShardDone, ShardRef, Stage, StageEvent, StageTask
from vlgenrm.errors import PermanentError
from vlgenrm.store.base import BlobStore, InvalidKeyError, ObjectNotFoundError

M = TypeVar("M", bound=Contract)
B = TypeVar("B", bound=BaseModel)

log = logging.getLogger(__name__)


# The shard's own keys (vlgenrm.layout builds every key).
def stage_prefix(shard: ShardRef) -> str:
    return layout.stage_prefix(shard.namespace, shard.iteration, shard.stage)


def output_key(shard: ShardRef, kind: str | None = None) -> str:
    """``iterations/<ns>/<name>/<stage>/[<kind>/]<nnnnn>.jsonl``"""
    return layout.output_key(shard.namespace, shard.iteration, shard.stage, shard.shard, kind)


def part_key(shard: ShardRef, part: str, ext: str) -> str:
    """The shard's ``part`` (report, decision, incumbent, data) as ``.<ext>``."""
    return layout.part_key(shard.namespace, shard.iteration, shard.stage, part, shard.shard, ext)


def marker_key(shard: ShardRef) -> str:
    return layout.marker_key(shard.namespace, shard.iteration, shard.stage, shard.shard)


def stage_lines(store: BlobStore, namespace: str, iteration: str, stage: Stage) -> list[bytes]:
    """The non-empty lines of a stage's output shards (not its reports, markers or other kinds)."""
    prefix = layout.stage_prefix(namespace, iteration, stage)
    lines: list[bytes] = []
    for obj in store.list(prefix + "/"):
        if layout.is_output_shard(prefix, obj.key):
            lines += [line for line in store.get_bytes(obj.key).splitlines() if line.strip()]
    return lines


def cancel_iteration(store: BlobStore, namespace: str, iteration: str, *, delete_outputs: bool = False) -> int:
    """Stop an Iteration's remaining tasks (tombstone first), then optionally delete its stage
    outputs. Returns the number of objects deleted."""
    tombstone = layout.cancelled_key(namespace, iteration)
    store.put_bytes(tombstone, b"cancelled\n")
    deleted = 0
    if delete_outputs:
        for obj in list(store.list(layout.iteration_prefix(namespace, iteration))):
            if obj.key != tombstone:
                store.delete(obj.key)
                deleted += 1
    return deleted


@dataclass
class ShardResult:
    """What a stage produced for one shard: objects to write, counts, per-item errors."""

    objects: dict[str, bytes]
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: Named URIs of what the stage wrote itself (e.g. a checkpoint), announced with the event.
    artifacts: dict[str, str] = field(default_factory=dict)
    #: The evaluation stage's promotion decision (None for every other stage).
    promote: bool | None = None


class InvalidShardError(PermanentError):
    """The shard itself cannot be read (missing or malformed): dead-letter the task."""

    def __init__(self, message: str, reason: FailureReason = FailureReason.INVALID_INPUT) -> None:
        super().__init__(message)
        self.reason = reason


def parse_config(task: StageTask, model: type[B], what: str) -> B:
    """The task's config as ``model``; an invalid one is an InvalidShardError naming the field."""
    try:
        return model.model_validate(task.config)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise InvalidShardError(f"task {task.task_id} has an invalid {what} config: {where + ': ' if where else ''}{err['msg']}") from exc


def read_shard(store: BlobStore, uri: str, what: str = "input shard") -> bytes:
    """The bytes of one input object; a foreign or missing one is an InvalidShardError."""
    try:
        return store.get_bytes(store.key_for(uri))
    except InvalidKeyError as exc:
        raise InvalidShardError(f"{what} {uri} is not an object of this store: {exc}") from exc
    except ObjectNotFoundError as exc:
        raise InvalidShardError(f"{what} {uri} does not exist", FailureReason.MISSING_INPUT) from exc


def read_jsonl(store: BlobStore, uri: str, model: type[M]) -> list[M]:
    """The records of one input shard; a missing or malformed shard is an InvalidShardError."""
    data = read_shard(store, uri)
    records = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(model.model_validate_json(line))
        except ValidationError as exc:
            raise InvalidShardError(f"{uri} line {number} is not a valid {model.__name__}: {exc.errors()[0]['msg']}") from exc
    return records


def jsonl(models: Sequence[Contract]) -> bytes:
    """Records as JSON lines, in the given order (deterministic bytes)."""
    return b"".join(m.to_json_bytes() + b"\n" for m in models)


def event_for(task: StageTask, type_: EventType, **fields: object) -> StageEvent:
    # Deterministic ids let consumers recognise a re-announced event as the same one.
    return StageEvent(
        event_id=f"{task.task_id}/{task.attempt}/{type_.value}", task_id=task.task_id, shard=task.shard, attempt=task.attempt, type=type_, **fields
    )


class StageRunner:
    """Turns ``process(task) -> ShardResult`` into a Worker handler with markers and events."""

    def __init__(self, bus: Bus, store: BlobStore, topics: Topics, process: Callable[[StageTask], ShardResult]) -> None:
        self.bus, self.store, self.topics, self.process = bus, store, topics, process

    def __call__(self, task: StageTask, record: Record) -> None:
        if self.store.exists(layout.cancelled_key(task.shard.namespace, task.shard.iteration)):
            log.info("%s belongs to a deleted Iteration; skipped", task.shard.key)
            return
        marker = marker_key(task.shard)
        if self.store.exists(marker):
            done = self.store.get_model(marker, ShardDone)
            log.info("%s already done; re-announcing", task.shard.key)
            self._announce(task, done)
            return
        try:
            result = self.process(task)
        except InvalidShardError as exc:
            self.bus.publish(self.topics.events, task.shard.key, event_for(task, EventType.SHARD_FAILED, reason=exc.reason, message=str(exc)))
            raise
        if self.store.exists(layout.cancelled_key(task.shard.namespace, task.shard.iteration)):
            # Deleted while this shard was being computed: write nothing after the cleanup.
            log.info("%s: its Iteration was deleted meanwhile; outputs dropped", task.shard.key)
            return
        for key, data in sorted(result.objects.items()):
            self.store.put_bytes(key, data)
        done = ShardDone(
            task_id=task.task_id,
            shard=task.shard,
            outputs=sorted(result.objects),
            counts=result.counts,
            errors=result.errors,
            metrics=result.metrics,
            artifacts=result.artifacts,
            promote=result.promote,
        )
        self.store.put_model(marker, done)
        self._announce(task, done)

    def _announce(self, task: StageTask, done: ShardDone) -> None:
        event = event_for(
            task,
            EventType.SHARD_DONE,
            output_uri=self.store.uri(marker_key(task.shard)),
            counts=done.counts,
            metrics=done.metrics,
            artifacts=done.artifacts,
            promote=done.promote,
        )
        self.bus.publish(self.topics.events, task.shard.key, event)
