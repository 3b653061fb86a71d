"""The experts service over MemoryBus + LocalStore and over real Kafka + S3."""

from __future__ import annotations

import pytest

from tests.services.conftest import Platform
from tests.support.bus import drain
from tests.support.procs import kill_mid_shard_then_restart
from tests.support.services import events, run_one, synth
from vlgenrm.contracts import DeadLetter, DeadLetterReason, EventType, RefinedPair, ShardDone, ShardRef, Stage, StageTask
from vlgenrm.stages import marker_key, output_key


def make_task(platform: Platform, shard_key: str, iteration: str = "it-0", shard: int = 0, config: dict | None = None) -> StageTask:
    ref = ShardRef(namespace="test", iteration=iteration, stage=Stage.EXPERTS, shard=shard)
    return StageTask(
        task_id=f"{iteration}-experts-{shard}",
        shard=ref,
        shard_count=1,
        inputs=[platform.store.uri(shard_key)],
        output_prefix=f"iterations/test/{iteration}/experts/",
        config=config or {},
        created_at="2026-11-26T00:00:00Z",
    )


def test_a_shard_task_produces_reports_pairs_marker_and_event(platform: Platform):
    [shard] = synth(platform)
    task = make_task(platform, shard)
    platform.bus.publish(platform.topics.tasks(Stage.EXPERTS), task.shard.key, task)
    run_one(platform)
    done = platform.store.get_model(marker_key(task.shard), ShardDone)
    assert done.counts["examples"] == 12 and done.counts["errors"] == 0 and done.counts["claims"] > 12
    pairs = [RefinedPair.model_validate_json(line) for line in platform.store.get_bytes(output_key(task.shard)).splitlines()]
    assert len(pairs) == 12 and len({p.example.id for p in pairs}) == 12
    assert len(platform.store.get_bytes(output_key(task.shard, "reports")).splitlines()) == 12
    [event] = events(platform, 1, "reader-1")
    assert event.type is EventType.SHARD_DONE and event.counts == done.counts and event.output_uri.endswith(".done")


def test_the_same_task_twice_gives_identical_outputs(platform: Platform):
    [shard] = synth(platform)
    task = make_task(platform, shard)
    topic = platform.topics.tasks(Stage.EXPERTS)
    platform.bus.publish(topic, task.shard.key, task)
    run_one(platform)
    keys = [output_key(task.shard), output_key(task.shard, "reports"), marker_key(task.shard)]
    first = {k: platform.store.get_bytes(k) for k in keys}
    platform.bus.publish(topic, task.shard.key, task)  # a redelivery: answered from the marker
    run_one(platform)
    platform.store.delete(marker_key(task.shard))  # a crash before the marker: computed again
    platform.bus.publish(topic, task.shard.key, task)
    run_one(platform)
    assert {k: platform.store.get_bytes(k) for k in keys} == first
    assert [e.type for e in events(platform, 3, "reader-2")] == [EventType.SHARD_DONE] * 3


def test_a_corrupt_image_fails_one_example_not_the_shard(platform: Platform):
    [shard] = synth(platform)
    first = platform.store.get_bytes(shard).splitlines()[0]
    from vlgenrm.contracts import Example

    victim = Example.model_validate_json(first)
    platform.store.put_bytes(victim.image.key, b"\x89PNG garbage")  # digest no longer matches
    task = make_task(platform, shard)
    platform.bus.publish(platform.topics.tasks(Stage.EXPERTS), task.shard.key, task)
    run_one(platform)
    done = platform.store.get_model(marker_key(task.shard), ShardDone)
    assert done.counts["errors"] == 1 and victim.id in done.errors
    assert len(platform.store.get_bytes(output_key(task.shard)).splitlines()) == 11


def test_an_unreadable_shard_is_dead_lettered_with_a_failed_event(platform: Platform):
    platform.store.put_bytes("datasets/bad/shards/00000.jsonl", b'{"not": "an example"}\n')
    missing = make_task(platform, "datasets/none/shards/00000.jsonl", iteration="it-missing")
    malformed = make_task(platform, "datasets/bad/shards/00000.jsonl", iteration="it-bad")
    for task in (missing, malformed):
        platform.bus.publish(platform.topics.tasks(Stage.EXPERTS), task.shard.key, task)
    run_one(platform, n_messages=2)
    with platform.bus.consumer([platform.topics.dlq], "dlq-reader") as consumer:
        letters = [DeadLetter.model_validate_json(r.value) for r in drain(consumer, 2, timeout_s=30)]
    assert {letter.reason for letter in letters} == {DeadLetterReason.HANDLER_FAILED}
    details = " ".join(letter.detail for letter in letters)
    assert "does not exist" in details and "line 1 is not a valid Example" in details
    failed = events(platform, 2, "reader-3")
    assert {e.type for e in failed} == {EventType.SHARD_FAILED}
    assert {e.reason.value for e in failed} == {"MissingInput", "InvalidInput"}
    assert not platform.store.exists(marker_key(missing.shard))


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_mid_shard_then_restart_completes_the_shard_exactly_once(cluster: Platform):
    platform = cluster
    [shard] = synth(platform, n=40, text_probability=1.0)  # OCR on every image: slow enough to kill mid-way
    task = make_task(platform, shard, config={"batch_size": 8})
    platform.bus.publish(platform.topics.tasks(Stage.EXPERTS), task.shard.key, task)
    kill_mid_shard_then_restart(platform, "vlgenrm.services.experts", "8/40 examples verified", marker_key(task.shard), timeout_s=180)
    ids = [RefinedPair.model_validate_json(line).example.id for line in platform.store.get_bytes(output_key(task.shard)).splitlines()]
    assert len(ids) == 40 and len(set(ids)) == 40
    assert platform.store.get_model(marker_key(task.shard), ShardDone).counts["examples"] == 40
