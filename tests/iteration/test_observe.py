"""What shells gather for the state machine: the failure log stays bounded however many
reports the topics carry."""

from __future__ import annotations

from vlgenrm.bus import Record, Topics
from vlgenrm.contracts import EventType, FailureReason, ShardRef, Stage, StageEvent
from vlgenrm.iteration.observe import FailureLog


def _report(topics: Topics, iteration: str, n: int) -> Record:
    shard = ShardRef(namespace="ns", iteration=iteration, stage=Stage.EXPERTS, shard=0)
    event = StageEvent(
        event_id=f"{iteration}-{n}", task_id=f"{iteration}-task", shard=shard, type=EventType.SHARD_FAILED, reason=FailureReason.TRANSIENT, message="boom"
    )
    return Record(topics.events, 0, n, "k", event.to_json_bytes(), 0)


def test_the_failure_log_keeps_the_recently_failed_iterations_and_their_newest_reports():
    topics = Topics("t")
    log = FailureLog(topics, max_iterations=3, max_events=5)
    for n, iteration in enumerate(["a", "b", "c", "a", "d"]):  # "a" failed again after "b" and "c"
        log.add(_report(topics, iteration, n))
    assert [bool(log.of("ns", it)) for it in "abcd"] == [True, False, True, True]  # "b" was the least recent
    for n in range(10, 30):
        log.add(_report(topics, "a", n))
    assert [e.event_id for e in log.of("ns", "a")] == [f"a-{n}" for n in range(25, 30)]
    log.forget("ns", "a")
    assert log.of("ns", "a") == []
