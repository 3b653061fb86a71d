"""The evaluation stage through the sampler service's worker (MemoryBus + LocalStore, Kafka + S3):
report, predictions and promotion decision; the promoted pointer as incumbent; bad inputs
dead-lettered with a failed event; redelivery answered from the marker."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.services.conftest import Platform
from tests.support.bus import drain
from tests.support.services import events
from vlgenrm.contracts import DeadLetter, DeadLetterReason, EventType, ShardDone, ShardRef, Stage, StageEvent, StageTask
from vlgenrm.evaluation.promotion import PromotionDecision, PromotionRecord, decide, promote
from vlgenrm.evaluation.report import EvaluationReport
from vlgenrm.evaluation.run import EvaluationPrediction
from vlgenrm.genrm.model import upload_checkpoint
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.services.sampler.service import build_worker
from vlgenrm.stages import marker_key, output_key, stage_prefix
from vlgenrm.synth.dataset import SynthConfig, eval_export_key, generate_dataset

N_EVAL = 24
CREATED = "2026-11-26T00:00:00Z"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-models")
    return {"candidate": build_tiny_genrm(root / "cand", seed=0), "other": build_tiny_genrm(root / "other", seed=7)}


def benchmark(platform: Platform) -> str:
    generate_dataset(SynthConfig(name="evalsvc", n_train=0, n_eval=N_EVAL, image_size=192, shard_size=N_EVAL, seed=5), platform.store)
    return platform.store.uri(eval_export_key("evalsvc"))


def eval_task(platform: Platform, inputs: list[str], config: dict, iteration: str = "eval-0", stage: Stage = Stage.EVALUATION) -> StageTask:
    ref = ShardRef(namespace="test", iteration=iteration, stage=stage, shard=0)
    return StageTask(
        task_id=f"{iteration}-{stage.value}-0",
        shard=ref,
        shard_count=1,
        inputs=inputs,
        output_prefix=stage_prefix(ref) + "/",
        config=config,
        created_at=CREATED,
    )


def run(platform: Platform, task: StageTask, topic_stage: Stage = Stage.EVALUATION) -> None:
    platform.bus.publish(platform.topics.tasks(topic_stage), task.shard.key, task)
    build_worker(platform.settings, platform.bus, platform.store).run(max_messages=1, idle_timeout_s=120)


def outputs(platform: Platform, task: StageTask) -> dict[str, bytes]:
    return {o.key: platform.store.get_bytes(o.key) for o in platform.store.list(stage_prefix(task.shard) + "/")}


def decision_of(platform: Platform, task: StageTask) -> PromotionDecision:
    return platform.store.get_model(f"{stage_prefix(task.shard)}/decision/00000.json", PromotionDecision)


def scored(role: str) -> float:
    return REGISTRY.get_sample_value("vlgenrm_evaluation_examples_total", {"role": role}) or 0.0


def test_evaluation_reports_decides_and_respects_the_promoted_pointer(platform: Platform, tiny_models):
    bench = benchmark(platform)
    model = upload_checkpoint(tiny_models["candidate"], platform.store, "checkpoints/test/it-1")
    first = eval_task(platform, [bench], {"model": model, "genrm": {"batch_size": 8}})
    run(platform, first)

    [event] = events(platform, 1, "reader-eval-1")
    assert event.type is EventType.SHARD_DONE and event.counts["examples"] == N_EVAL and event.artifacts == {}
    assert 0.0 <= event.metrics["accuracy"] <= 1.0 and event.promote is True and "promote" not in event.metrics
    assert {"macro", "hallucination_precision", "hallucination_recall", "hallucination_f1", "best_of_n"} <= set(event.metrics)
    assert "incumbent_accuracy" not in event.metrics
    files = outputs(platform, first)
    base = stage_prefix(first.shard)
    report = EvaluationReport.model_validate_json(files[f"{base}/report/00000.json"])
    assert report.accuracy.overall == event.metrics["accuracy"] and report.dataset == bench and report.model == model
    assert report.created_at == first.created_at  # the task's time: a recomputation writes the same bytes
    assert files[f"{base}/report/00000.md"].decode().startswith("# Evaluation:")
    predictions = [EvaluationPrediction.model_validate_json(line) for line in files[output_key(first.shard)].splitlines()]
    assert len(predictions) == N_EVAL and all(p.hallucinated is not None for p in predictions)
    decision = decision_of(platform, first)
    assert decision.promote and decision.incumbent_uri is None and "no promoted model" in decision.reason
    assert decision.candidate_accuracy == report.accuracy.overall and decision.decided_at == first.created_at

    # A promoted model that scored 1.0 on this very benchmark: its recorded accuracy is reused.
    promote(
        platform.store,
        PromotionRecord(
            namespace="test",
            iteration="it-0",
            model="s3://elsewhere/checkpoints/it-0",
            model_version="0123456789ab",
            accuracy=1.0,
            dataset=bench,
            examples=N_EVAL,
        ),
    )
    second = eval_task(platform, [bench], {"model": model, "genrm": {"batch_size": 8}}, iteration="eval-1")
    run(platform, second)
    decision = decision_of(platform, second)
    assert not decision.promote and decision.incumbent_accuracy == 1.0 and decision.incumbent_version == "0123456789ab"
    assert "<" in decision.reason and "recorded" in decision.reason
    done = platform.store.get_model(marker_key(second.shard), ShardDone)
    assert done.promote is False and done.metrics["incumbent_accuracy"] == 1.0 and done.counts["incumbent_examples"] == 0
    assert not any("/incumbent/" in key for key in outputs(platform, second))


def test_the_incumbent_is_scored_when_its_accuracy_is_for_another_benchmark(platform: Platform, tiny_models):
    bench = benchmark(platform)
    model = upload_checkpoint(tiny_models["candidate"], platform.store, "checkpoints/test/it-2")
    other = upload_checkpoint(tiny_models["other"], platform.store, "checkpoints/test/it-1")
    promote(
        platform.store,
        PromotionRecord(namespace="test", iteration="it-1", model=other, model_version="whatever", accuracy=0.99, dataset="s3://other/bench.jsonl"),
    )
    config = {"model": model, "evaluation": {"max_examples": 12, "pointwise": False}}
    task = eval_task(platform, [bench], config)
    run(platform, task)
    decision = decision_of(platform, task)
    base = stage_prefix(task.shard)
    incumbent = platform.store.get_model(f"{base}/incumbent/00000.json", EvaluationReport)
    assert incumbent.model == other and incumbent.accuracy.n == 12 and decision.incumbent_accuracy == incumbent.accuracy.overall
    assert decision.promote is decide(decision.candidate_accuracy, incumbent.accuracy.overall, 0.0)[0]
    assert "measured on the same examples" in decision.reason and decision.incumbent_version != decision.candidate_version
    assert len(platform.store.get_bytes(output_key(task.shard, "incumbent")).splitlines()) == 12

    # An explicit incumbent that is the candidate itself: promoting it again is a no-op, never a demotion.
    same = eval_task(
        platform, [bench], config | {"incumbent": model, "evaluation": {"max_examples": 4, "pointwise": False, "min_gain": 0.5}}, iteration="eval-same"
    )
    run(platform, same)
    decision = decision_of(platform, same)
    assert decision.promote and "is the incumbent" in decision.reason and decision.incumbent_uri == model


def test_bad_inputs_fail_the_shard_and_are_dead_lettered(platform: Platform, tiny_models):
    model = upload_checkpoint(tiny_models["candidate"], platform.store, "checkpoints/test/it-1")
    platform.store.put_bytes("benchmarks/bad.jsonl", b'{"id": "x", "query": "q"}\n')
    missing = eval_task(platform, [platform.store.uri("benchmarks/none.jsonl")], {"model": model}, iteration="eval-missing")
    malformed = eval_task(platform, [platform.store.uri("benchmarks/bad.jsonl")], {"model": model}, iteration="eval-bad")
    misrouted = eval_task(platform, [platform.store.uri("benchmarks/bad.jsonl")], {"model": model}, iteration="eval-wrong", stage=Stage.TRAINING)
    for task in (missing, malformed, misrouted):
        platform.bus.publish(platform.topics.tasks(Stage.EVALUATION), task.shard.key, task)
    build_worker(platform.settings, platform.bus, platform.store).run(max_messages=3, idle_timeout_s=60)

    with platform.bus.consumer([platform.topics.dlq], "dlq-reader") as consumer:
        letters = [DeadLetter.model_validate_json(r.value) for r in drain(consumer, 3, timeout_s=30)]
    assert [letter.reason for letter in letters] == [DeadLetterReason.HANDLER_FAILED] * 3
    details = " ".join(letter.detail for letter in letters)
    assert "benchmarks/none.jsonl does not exist" in details
    assert "benchmarks/bad.jsonl row 1: missing field 'response'" in details
    assert "is for stage training" in details
    failed: list[StageEvent] = events(platform, 3, "reader-eval-3")
    assert {e.type for e in failed} == {EventType.SHARD_FAILED}
    assert sorted(e.reason.value for e in failed) == ["InvalidInput", "InvalidInput", "MissingInput"]
    assert not any(platform.store.exists(marker_key(t.shard)) for t in (missing, malformed, misrouted))


def test_redelivery_reannounces_and_a_recomputation_writes_identical_bytes(platform: Platform, tiny_models):
    bench = benchmark(platform)
    model = upload_checkpoint(tiny_models["candidate"], platform.store, "checkpoints/test/it-1")
    task = eval_task(platform, [bench], {"model": model, "evaluation": {"max_examples": 8}})
    run(platform, task)
    first = outputs(platform, task)
    assert marker_key(task.shard) in first
    before = scored("candidate")
    run(platform, task)  # a redelivery: answered from the marker, nothing scored
    assert scored("candidate") == before
    platform.store.delete(marker_key(task.shard))  # as if killed before the marker: computed again
    run(platform, task)
    assert scored("candidate") == before + 8
    assert outputs(platform, task) == first
    assert [e.type for e in events(platform, 3, "reader-eval-4")] == [EventType.SHARD_DONE] * 3
