"""What every stage service does around its work (vlgenrm.stages): outputs, then the completion
marker, then the event; a redelivered task only re-announces; a deleted Iteration writes
nothing; unreadable input is an InvalidShardError with its reason. On the in-memory bus and the
local store (the services' own tests run the same runner on Kafka and S3)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from tests.support.bus import drain, task
from vlgenrm.bus import MemoryBus
from vlgenrm.bus.base import Topics
from vlgenrm.contracts import EventType, FailureReason, ShardDone, Stage, StageEvent
from vlgenrm.stages import (
    InvalidShardError,
    ShardResult,
    StageRunner,
    cancel_iteration,
    jsonl,
    marker_key,
    output_key,
    parse_config,
    read_jsonl,
    stage_lines,
)
from vlgenrm.store import LocalStore

TOPICS = Topics("t")


class Harness:
    def __init__(self, tmp_path, result: ShardResult | Exception) -> None:
        self.bus, self.store, self.calls, self.result = MemoryBus(), LocalStore(tmp_path), 0, result
        self.bus.ensure_topics([TOPICS.events])
        self.events = self.bus.consumer([TOPICS.events], "test")
        self.run = StageRunner(self.bus, self.store, TOPICS, self.process)

    def process(self, _task) -> ShardResult:
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def published(self, want: int) -> list[StageEvent]:
        return [StageEvent.model_validate_json(r.value) for r in drain(self.events, want, timeout_s=2)]


def result_for(shard_task) -> ShardResult:
    return ShardResult(
        objects={output_key(shard_task.shard): b'{"a":1}\n', output_key(shard_task.shard, "report"): b"{}\n"}, counts={"records": 1}, promote=None
    )


def test_outputs_then_marker_then_one_done_event(tmp_path):
    t = task(3)
    h = Harness(tmp_path, result_for(t))
    h.run(t, None)
    done = h.store.get_model(marker_key(t.shard), ShardDone)
    assert done.outputs == sorted(result_for(t).objects) and done.counts == {"records": 1}
    assert all(h.store.get_bytes(key) == data for key, data in result_for(t).objects.items())
    (event,) = h.published(1)
    assert event.type is EventType.SHARD_DONE and event.output_uri == h.store.uri(marker_key(t.shard)) and event.counts == {"records": 1}


def test_a_redelivered_task_is_not_recomputed_only_re_announced(tmp_path):
    t = task(0)
    h = Harness(tmp_path, result_for(t))
    h.run(t, None)
    h.run(t, None)
    first, again = h.published(2)
    assert h.calls == 1 and first.event_id == again.event_id and again.type is EventType.SHARD_DONE


def test_unreadable_input_is_announced_as_failed_and_leaves_no_marker(tmp_path):
    t = task(1)
    h = Harness(tmp_path, InvalidShardError("shard 1 is gone", FailureReason.MISSING_INPUT))
    with pytest.raises(InvalidShardError):
        h.run(t, None)
    (event,) = h.published(1)
    assert event.type is EventType.SHARD_FAILED and event.reason is FailureReason.MISSING_INPUT and "gone" in event.message
    assert not h.store.exists(marker_key(t.shard))


def test_a_crash_leaves_nothing_and_the_rerun_writes_the_same_bytes(tmp_path):
    t = task(2)
    h = Harness(tmp_path, RuntimeError("killed"))
    with pytest.raises(RuntimeError):
        h.run(t, None)
    assert not h.store.exists(marker_key(t.shard)) and h.published(1) == []
    h.result = result_for(t)
    h.run(t, None)
    assert h.store.get_bytes(output_key(t.shard)) == b'{"a":1}\n' and h.published(1)[0].type is EventType.SHARD_DONE


def test_a_deleted_iteration_gets_no_outputs_even_mid_shard(tmp_path):
    t = task(4)
    h = Harness(tmp_path, result_for(t))
    cancel_iteration(h.store, t.shard.namespace, t.shard.iteration)
    h.run(t, None)
    assert h.calls == 0 and not h.store.exists(marker_key(t.shard))

    other = task(5).model_copy(update={"shard": task(5).shard.model_copy(update={"iteration": "other"})})
    h2 = Harness(tmp_path / "two", result_for(other))

    def cancelled_while_running(_task) -> ShardResult:
        cancel_iteration(h2.store, other.shard.namespace, other.shard.iteration)
        return result_for(other)

    h2.run.process = cancelled_while_running
    h2.run(other, None)
    assert not h2.store.exists(marker_key(other.shard)) and not h2.store.exists(output_key(other.shard)) and h2.published(1) == []


def test_stage_lines_read_output_shards_only_and_cleanup_keeps_the_tombstone(tmp_path):
    t = task(6)
    h = Harness(tmp_path, result_for(t))
    h.run(t, None)
    assert stage_lines(h.store, t.shard.namespace, t.shard.iteration, Stage.EXPERTS) == [b'{"a":1}']
    deleted = cancel_iteration(h.store, t.shard.namespace, t.shard.iteration, delete_outputs=True)
    assert deleted == 3 and stage_lines(h.store, t.shard.namespace, t.shard.iteration, Stage.EXPERTS) == []
    assert [o.key for o in h.store.list(f"iterations/{t.shard.namespace}/{t.shard.iteration}")] != []  # the tombstone


class Cfg(BaseModel):
    k: int = Field(ge=1)


def test_configs_and_input_shards_fail_with_what_and_where(tmp_path):
    store = LocalStore(tmp_path)
    bad = task(7).model_copy(update={"config": {"k": 0}})
    with pytest.raises(InvalidShardError, match="invalid rationale config: k: Input should be greater than or equal to 1"):
        parse_config(bad, Cfg, "rationale")
    assert parse_config(task(7).model_copy(update={"config": {"k": 2}}), Cfg, "rationale").k == 2
    with pytest.raises(InvalidShardError) as missing:
        read_jsonl(store, store.uri("nothing/here.jsonl"), ShardDone)
    assert missing.value.reason is FailureReason.MISSING_INPUT
    done = ShardDone(task_id="x", shard=task(0).shard, outputs=["a"])
    store.put_bytes("in/ok.jsonl", jsonl([done, done]) + b"\n")
    assert read_jsonl(store, store.uri("in/ok.jsonl"), ShardDone) == [done, done]
    store.put_bytes("in/bad.jsonl", jsonl([done]) + b'{"task_id": 1}\n')
    with pytest.raises(InvalidShardError, match="line 2 is not a valid ShardDone") as malformed:
        read_jsonl(store, store.uri("in/bad.jsonl"), ShardDone)
    assert malformed.value.reason is FailureReason.INVALID_INPUT
