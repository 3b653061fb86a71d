"""Experts -> rationale -> sampler over one platform, with the tiny GenRM computing margins:
every training record traces back to its example, expert report, refined pair and candidate."""

from __future__ import annotations

import pytest

from tests.services.conftest import Platform
from tests.support.services import run_one, synth, task
from vlgenrm.contracts import ExpertReport, RationaleCandidate, RefinedPair, ShardDone, Stage, TrainingRecord
from vlgenrm.genrm.model import upload_checkpoint
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.services.rationale.service import build_worker as rationale_worker
from vlgenrm.services.sampler.service import build_worker as sampler_worker
from vlgenrm.stages import marker_key, output_key, stage_prefix


def records(platform: Platform, key: str, model):
    return [model.model_validate_json(line) for line in platform.store.get_bytes(key).splitlines()]


@pytest.mark.slow
def test_experts_rationale_sampler_chain_keeps_lineage(platform: Platform, tmp_path):
    [shard] = synth(platform, n=8)
    experts = task(platform, Stage.EXPERTS, [shard], {})
    platform.bus.publish(platform.topics.tasks(Stage.EXPERTS), experts.shard.key, experts)
    run_one(platform)
    pairs_key, reports_key = output_key(experts.shard), output_key(experts.shard, "reports")

    rationale = task(platform, Stage.RATIONALE, [pairs_key, reports_key], {"k": 4, "both_orders": True})
    platform.bus.publish(platform.topics.tasks(Stage.RATIONALE), rationale.shard.key, rationale)
    rationale_worker(platform.settings, platform.bus, platform.store).run(max_messages=1, idle_timeout_s=60)
    candidates_key = output_key(rationale.shard)

    model_uri = upload_checkpoint(build_tiny_genrm(tmp_path / "m0"), platform.store, "checkpoints/test/base")
    sampling = task(platform, Stage.SAMPLING, [candidates_key, pairs_key], {"model": model_uri, "sampler": {"tau0": -1.0}})
    platform.bus.publish(platform.topics.tasks(Stage.SAMPLING), sampling.shard.key, sampling)
    sampler_worker(platform.settings, platform.bus, platform.store).run(max_messages=1, idle_timeout_s=120)

    pairs = {p.id: p for p in records(platform, pairs_key, RefinedPair)}
    reports = {r.example_id: r for r in records(platform, reports_key, ExpertReport)}
    candidates = {c.id: c for c in records(platform, candidates_key, RationaleCandidate)}
    training = records(platform, output_key(sampling.shard), TrainingRecord)
    labelled = [p for p in pairs.values() if p.label is not None]
    assert labelled and candidates
    assert len(candidates) == 4 * 2 * len(labelled)  # the template teacher always writes a verdict
    done = platform.store.get_model(marker_key(sampling.shard), ShardDone)
    assert done.counts["pairs"] == len(labelled)
    assert training, "with tau0 = -1 the tiny model accepts some candidates"
    for record in training:
        candidate = candidates[record.candidate_id]
        pair = pairs[record.pair_id]
        assert candidate.pair_id == pair.id and record.example_id == pair.example.id == candidate.example_id
        assert pair.report_id == reports[record.example_id].id
        assert record.image == pair.example.image and record.order == candidate.order
    assert platform.store.get_bytes(f"{stage_prefix(sampling.shard)}/report/00000.png").startswith(b"\x89PNG")
