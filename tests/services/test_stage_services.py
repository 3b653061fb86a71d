"""Rationale and sampler services: redelivery gives identical outputs; SIGKILL mid-shard and
a restart complete the shard exactly once (over real Kafka + S3)."""

from __future__ import annotations

import pytest

from tests.services.conftest import Platform
from tests.support.procs import kill_mid_shard_then_restart
from tests.support.services import run_one, synth, task
from vlgenrm.contracts import RationaleCandidate, ShardDone, Stage, TrainingRecord
from vlgenrm.genrm.model import upload_checkpoint
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.services.rationale.service import build_worker as rationale_worker
from vlgenrm.services.sampler.service import build_worker as sampler_worker
from vlgenrm.stages import marker_key, output_key, stage_prefix

WORKERS = {Stage.RATIONALE: rationale_worker, Stage.SAMPLING: sampler_worker}


def experts_outputs(platform: Platform, n: int) -> tuple[str, str]:
    [shard] = synth(platform, n=n)
    experts = task(platform, Stage.EXPERTS, [shard], {})
    platform.bus.publish(platform.topics.tasks(Stage.EXPERTS), experts.shard.key, experts)
    run_one(platform)
    return output_key(experts.shard), output_key(experts.shard, "reports")


def run_stage(platform: Platform, stage_task) -> None:
    platform.bus.publish(platform.topics.tasks(stage_task.shard.stage), stage_task.shard.key, stage_task)
    WORKERS[stage_task.shard.stage](platform.settings, platform.bus, platform.store).run(max_messages=1, idle_timeout_s=120)


def snapshot(platform: Platform, stage_task) -> dict[str, bytes]:
    prefix = stage_prefix(stage_task.shard) + "/"
    return {o.key: platform.store.get_bytes(o.key) for o in platform.store.list(prefix)}


@pytest.mark.slow
def test_redelivered_and_recomputed_tasks_write_identical_bytes(platform: Platform, tmp_path):
    pairs_key, reports_key = experts_outputs(platform, 8)
    rationale = task(platform, Stage.RATIONALE, [pairs_key, reports_key], {"k": 3, "both_orders": True})
    model_uri = upload_checkpoint(build_tiny_genrm(tmp_path / "m"), platform.store, "checkpoints/test/m0")
    sampling = task(platform, Stage.SAMPLING, [output_key(rationale.shard), pairs_key], {"model": model_uri, "sampler": {"tau0": -1.0}})
    for stage_task in (rationale, sampling):
        run_stage(platform, stage_task)
        first = snapshot(platform, stage_task)
        assert marker_key(stage_task.shard) in first
        run_stage(platform, stage_task)  # redelivery: answered from the marker
        platform.store.delete(marker_key(stage_task.shard))  # as if killed before the marker
        run_stage(platform, stage_task)
        assert snapshot(platform, stage_task) == first, f"{stage_task.shard.stage} outputs changed on a re-run"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("stage", [Stage.RATIONALE, Stage.SAMPLING])
def test_sigkill_mid_shard_then_restart_completes_exactly_once(cluster: Platform, tmp_path, stage: Stage):
    platform = cluster
    pairs_key, reports_key = experts_outputs(platform, 24)
    model_uri = upload_checkpoint(build_tiny_genrm(tmp_path / "m"), platform.store, "checkpoints/test/m0")
    if stage is Stage.RATIONALE:
        # The tiny model's generations are slow enough to be killed between batches.
        engine = {"kind": "transformers", "model": model_uri}
        stage_task = task(platform, stage, [pairs_key, reports_key], {"engine": engine, "k": 2, "batch_size": 2, "sampling": {"max_new_tokens": 48}})
        progress = "prompts done"
    else:
        rationale = task(platform, Stage.RATIONALE, [pairs_key, reports_key], {"k": 4, "both_orders": True})
        run_stage(platform, rationale)
        stage_task = task(platform, stage, [output_key(rationale.shard), pairs_key], {"model": model_uri, "genrm": {"batch_size": 4}})
        progress = "margins done"
    platform.bus.publish(platform.topics.tasks(stage), stage_task.shard.key, stage_task)

    module = "vlgenrm.services.rationale" if stage is Stage.RATIONALE else "vlgenrm.services.sampler"
    kill_mid_shard_then_restart(platform, module, progress, marker_key(stage_task.shard))
    done = platform.store.get_model(marker_key(stage_task.shard), ShardDone)
    lines = platform.store.get_bytes(output_key(stage_task.shard)).splitlines()
    if stage is Stage.RATIONALE:
        ids = [RationaleCandidate.model_validate_json(line).id for line in lines]
        assert done.counts["candidates"] == 2 * done.counts["pairs"]  # every prompt sampled once
    else:
        ids = [TrainingRecord.model_validate_json(line).id for line in lines]
        assert done.counts["scored"] == done.counts["candidates"] - done.counts["unparseable"]
    assert len(ids) == len(set(ids))


def test_a_shard_gives_extra_samples_only_to_the_hard_pairs_it_holds(platform: Platform):
    """Every rationale task gets the whole hard pool; pairs of other shards are not its business
    (their candidates would have no pair in this shard's sampling task)."""
    from vlgenrm.contracts import RefinedPair
    from vlgenrm.sampling.sampler import HardPoolEntry
    from vlgenrm.stages import jsonl, read_jsonl

    pairs_key, reports_key = experts_outputs(platform, 6)
    pairs = [p for p in read_jsonl(platform.store, platform.store.uri(pairs_key), RefinedPair) if p.label is not None]
    elsewhere = pairs[0].model_copy(update={"id": "another-shard/refined"})
    hard = [HardPoolEntry(id=f"{p.id}/hard/0", pair=p, iteration=0, extra_samples=3, reason="none accepted") for p in (pairs[1], elsewhere)]
    platform.store.put_bytes("iterations/test/prev/sampling/hard/00000.jsonl", jsonl(hard))
    rationale = task(
        platform, Stage.RATIONALE, [pairs_key, reports_key], {"k": 1, "hard_pool": [platform.store.uri("iterations/test/prev/sampling/hard/00000.jsonl")]}
    )
    run_stage(platform, rationale)
    done = platform.store.get_model(marker_key(rationale.shard), ShardDone)
    candidates = read_jsonl(platform.store, platform.store.uri(output_key(rationale.shard)), RationaleCandidate)
    assert done.counts["pairs_hard"] == 1
    assert {c.pair_id for c in candidates} <= {p.id for p in pairs}
    assert sum(c.pair_id == pairs[1].id for c in candidates) == 1 + 3


def test_tasks_of_a_deleted_iteration_are_skipped_and_its_outputs_can_go(platform: Platform):
    from vlgenrm.layout import cancelled_key
    from vlgenrm.stages import cancel_iteration

    pairs_key, reports_key = experts_outputs(platform, 4)
    assert cancel_iteration(platform.store, "test", "e2e", delete_outputs=True) >= 2
    assert not platform.store.exists(pairs_key) and platform.store.exists(cancelled_key("test", "e2e"))
    rationale = task(platform, Stage.RATIONALE, [pairs_key, reports_key], {"k": 1})
    run_stage(platform, rationale)  # queued before the deletion: consumed, not processed
    assert not platform.store.exists(marker_key(rationale.shard))
    assert [o.key for o in platform.store.list("iterations/test/e2e/")] == [cancelled_key("test", "e2e")]
