"""The evaluation stage's metrics and report, with a stub GenRM: intervals, per-category accuracy, collapse."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.genrm.conftest import png
from vlgenrm.contracts import ShardRef, Stage, StageTask
from vlgenrm.evaluation.report import EvaluationReport
from vlgenrm.evaluation.stage import EvaluationStage
from vlgenrm.stages import stage_prefix
from vlgenrm.store.local import LocalStore

BENCH_KEY = "benchmarks/tiny.jsonl"


class StubGenRM:
    """Answers ``p`` to every pair (or the right answer when ``p`` is None) and P(Yes)=0.5."""

    def __init__(self, p: float | None, truth: list[int]) -> None:
        self.p, self.truth = p, truth
        self.settings, self.version = SimpleNamespace(batch_size=4), f"stub-{p}"
        self._done = 0

    def pairwise_probs(self, queries: list) -> list[float]:
        out = []
        for _ in queries:
            better = self.truth[self._done % len(self.truth)]
            out.append(self.p if self.p is not None else (0.95 if better == 0 else 0.05))
            self._done += 1
        return out

    def pointwise_probs(self, queries: list) -> list[float]:
        return [0.5] * len(queries)


class StubCache:
    def __init__(self, genrm: StubGenRM) -> None:
        self.genrm = genrm

    def get(self, source: str, settings: object) -> StubGenRM:
        return self.genrm


def rows(n: int = 12) -> list[dict]:
    b64 = base64.b64encode(png((200, 10, 10))).decode()
    return [
        {
            "id": f"e{i}",
            "query": "q",
            "response": ["a", "b"],
            "human_ranking": [0, 1] if i % 2 == 0 else [1, 0],
            "category": ["object", "attribute", "count"][i % 3],
            "image_b64": b64,
        }
        for i in range(n)
    ]


def run_stage(tmp_path: Path, p: float | None) -> tuple[dict[str, float], EvaluationReport, str]:
    store = LocalStore(tmp_path / "store")
    bench = rows()
    store.put_bytes(BENCH_KEY, "\n".join(json.dumps(r) for r in bench).encode())
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    truth = [0 if r["human_ranking"] == [0, 1] else 1 for r in bench]
    ref = ShardRef(namespace="test", iteration="it-0", stage=Stage.EVALUATION, shard=0)
    task = StageTask(
        task_id="t",
        shard=ref,
        shard_count=1,
        inputs=[store.uri(BENCH_KEY)],
        output_prefix=stage_prefix(ref) + "/",
        config={"model": str(model)},
        created_at=datetime(2026, 11, 26, tzinfo=UTC),
    )
    result = EvaluationStage(store, StubCache(StubGenRM(p, truth))).process(task)  # type: ignore[arg-type]
    base = stage_prefix(ref)
    report = EvaluationReport.model_validate_json(result.objects[f"{base}/report/00000.json"])
    return result.metrics, report, result.objects[f"{base}/report/00000.md"].decode()


@pytest.mark.parametrize("p", [0.5, 0.51])
def test_a_constant_model_is_reported_collapsed(tmp_path, p):
    metrics, report, md = run_stage(tmp_path, p)
    assert metrics["collapsed"] == 1.0 and metrics["mean_confidence"] == pytest.approx(abs(p - 0.5))
    assert metrics["accuracy_low"] <= metrics["accuracy"] <= metrics["accuracy_high"]
    assert metrics["accuracy_low"] < 0.5 < metrics["accuracy_high"]
    assert report.confidence is not None and report.confidence.collapsed
    assert "accuracy is not signal" in md


def test_a_confident_correct_model_emits_flat_metrics_per_category(tmp_path):
    metrics, report, md = run_stage(tmp_path, None)
    assert metrics["collapsed"] == 0.0 and metrics["accuracy"] == 1.0
    assert (metrics["accuracy_low"], metrics["accuracy_high"]) == pytest.approx(report.accuracy.overall_ci)
    assert {k: v for k, v in metrics.items() if k.startswith("accuracy.")} == {"accuracy.attribute": 1.0, "accuracy.count": 1.0, "accuracy.object": 1.0}
    assert all(isinstance(v, float) for v in metrics.values())
    assert "accuracy is not signal" not in md and "95 % CI" in md
