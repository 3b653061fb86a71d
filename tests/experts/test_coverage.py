"""Coverage: how much of each response the registered experts could check, per report, per
shard (the experts stage's counts and metrics) and per Iteration (status metrics)."""

from __future__ import annotations

import datetime

import numpy as np

from tests.experts.conftest import render_scene
from vlgenrm.contracts import Choice, Example, ExpertReport, ImageRef, ResponseCoverage, ShardDone, ShardRef, Stage
from vlgenrm.experts.config import AnnotationSettings
from vlgenrm.experts.pipeline import Annotator, coverage

WHEN = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _example(i: int, a: str, b: str) -> Example:
    return Example(
        id=f"cov-{i}", image=ImageRef(key="images/x.png", sha256="0" * 64), question="Describe the image.", response_a=a, response_b=b, human_label="A"
    )


def test_reports_and_counts_say_what_could_be_checked():
    scene = render_scene(np.random.default_rng(4), objects=[("circle", "red")], sign=False)
    annotator = Annotator(AnnotationSettings(experts={"ocr": {"enabled": False}}))  # colour/shape only
    examples = [
        _example(0, "A red circle and a dog.", "Two cats and a blue square."),
        _example(1, "A dog on a sofa.", "A cat. The sign says STOP."),  # nothing checkable at all
    ]
    out = annotator.annotate(examples, [scene.image, scene.image], WHEN)
    first, second = out.reports
    assert first.coverage[Choice.A] == ResponseCoverage(claims=1, covered=1, judged=1, uncheckable=["dog"])
    assert first.coverage[Choice.B] == ResponseCoverage(claims=1, covered=1, judged=1, uncheckable=["cat"])
    assert second.coverage[Choice.A] == ResponseCoverage(claims=0, covered=0, judged=0, uncheckable=["dog", "couch"])
    assert second.coverage[Choice.B].uncheckable == ["cat", "text"]  # OCR is off: the text claim is uncheckable too
    assert ExpertReport.model_validate_json(first.to_json_bytes()) == first
    counts = out.counts
    assert (counts["claims"], counts["covered_claims"], counts["uncheckable_words"]) == (2, 2, 6)
    assert (counts["checkable_pairs"], counts["judged_pairs"]) == (1, 1)
    assert counts["claim_type_existence"] == 2
    assert coverage(counts) == 0.5 and coverage({}) is None


def test_coverage_reaches_the_iteration_status_metrics():
    from vlgenrm.contracts import IterationStatus
    from vlgenrm.iteration.machine import Observation, _aggregate_metrics

    def marker(shard: int, **counts: int) -> ShardDone:
        ref = ShardRef(namespace="ns", iteration="it", stage=Stage.EXPERTS, shard=shard)
        return ShardDone(task_id=f"t{shard}", shard=ref, outputs=[], counts=counts)

    obs = Observation(
        namespace="ns",
        name="it",
        dataset_shards=[],
        eval_uri=None,
        uri=str,
        base_model=None,
        current_model=None,
        done={Stage.EXPERTS: {0: marker(0, kept=3, dropped=1, checkable_pairs=2), 1: marker(1, kept=4, checkable_pairs=4)}},
    )
    status = IterationStatus()
    _aggregate_metrics(status, obs)
    assert status.metrics["experts.checkable_pairs"] == 6 and status.metrics["experts.coverage"] == 0.75


def test_the_experts_service_reports_coverage_per_shard(tmp_path):
    import io

    from PIL import Image

    from vlgenrm.contracts import StageTask
    from vlgenrm.services.experts.service import ExpertsStage
    from vlgenrm.stages import jsonl, output_key
    from vlgenrm.store import LocalStore

    store = LocalStore(tmp_path)
    buf = io.BytesIO()
    Image.fromarray(render_scene(np.random.default_rng(4), objects=[("circle", "red")], sign=False).image).save(buf, format="PNG")
    ref = store.put_image(buf.getvalue(), "png")
    examples = [_example(0, "A red circle.", "A dog.").model_copy(update={"image": ref}), _example(1, "A sofa.", "A cat.").model_copy(update={"image": ref})]
    store.put_bytes("datasets/x/shards/00000.jsonl", jsonl(examples))
    shard = ShardRef(namespace="ns", iteration="it", stage=Stage.EXPERTS, shard=0)
    task = StageTask(
        task_id="t",
        shard=shard,
        shard_count=1,
        inputs=[store.uri("datasets/x/shards/00000.jsonl")],
        output_prefix="iterations/ns/it/experts/",
        config={"experts": {"ocr": {"enabled": False}}},
        created_at=WHEN,
    )
    result = ExpertsStage(store).process(task)
    assert (result.counts["checkable_pairs"], result.counts["uncheckable_words"]) == (1, 3)
    assert result.metrics == {"coverage": 0.5}
    reports = [ExpertReport.model_validate_json(line) for line in result.objects[output_key(shard, "reports")].splitlines()]
    assert [r.coverage[Choice.B].uncheckable for r in reports] == [["dog"], ["cat"]]
