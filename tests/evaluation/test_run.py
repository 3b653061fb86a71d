"""evaluate_genrm on a tiny GenRM: the same probabilities as direct calls, the harness's metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.genrm.conftest import load, png
from vlgenrm.evaluation.benchmark import BenchmarkExample
from vlgenrm.evaluation.config import EvaluationSettings
from vlgenrm.evaluation.metrics import (
    BestOfNGroup,
    HallucinationPrediction,
    PairPrediction,
    best_of_n_accuracy,
    confidence_report,
    hallucination_detection,
    pairwise_accuracy,
)
from vlgenrm.evaluation.run import EvaluationPrediction, evaluate_genrm
from vlgenrm.genrm.model import GenRM, PairwiseQuery, PointwiseQuery
from vlgenrm.genrm.tiny import build_tiny_genrm

COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (250, 10, 250)]
NAMES = ["red", "green", "blue", "yellow", "purple"]
STAMP = datetime(2026, 11, 26, tzinfo=UTC)


def examples(n: int = 18) -> list[BenchmarkExample]:
    """Pairs over 3 categories; every third one carries no hallucination labels."""
    out = []
    for i in range(n):
        c, other = i % len(COLOURS), (i + 2) % len(COLOURS)
        better = i % 2
        right, wrong = f"A {NAMES[c]} square.", f"Two {NAMES[other]} circles and a star."
        responses = [right, wrong] if better == 0 else [wrong, right]
        out.append(
            BenchmarkExample(
                id=f"ex-{i}",
                query="What is in the image?",
                responses=responses,
                better=better,
                category=["hallucination", "reasoning", "general"][i % 3],
                image=png(COLOURS[c]),
                hallucinated=None if i % 3 == 2 else [better == 1, better == 0],
            )
        )
    return out


@pytest.fixture(scope="module")
def genrm(tmp_path_factory: pytest.TempPathFactory) -> GenRM:
    # batch 2 -> chunks of 16 examples: 18 examples take two chunks, exercising the progress path.
    return load(build_tiny_genrm(tmp_path_factory.mktemp("tiny") / "m", "qwen2_vl", seed=1), settings={"batch_size": 2})


def test_probabilities_equal_direct_calls_and_metrics_equal_the_harness(genrm: GenRM):
    exs = examples()
    calls: list[tuple[int, int]] = []
    result = evaluate_genrm(
        genrm, exs, EvaluationSettings(), model="tiny", dataset="bench", created_at=STAMP, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(16, 18), (18, 18)]
    direct = genrm.pairwise_probs([PairwiseQuery(e.image, e.query, *e.responses) for e in exs])
    assert [p.p_first for p in result.predictions] == pytest.approx(direct, abs=1e-6)
    yes = genrm.pointwise_probs([PointwiseQuery(e.image, e.query, r) for e in exs for r in e.responses])
    assert [s for p in result.predictions for s in p.pointwise] == pytest.approx(yes, abs=1e-6)

    preds = result.predictions
    pairs = [PairPrediction(example_id=p.example_id, category=p.category, p_first=p.p_first, better=p.better) for p in preds]
    assert result.report.accuracy == pairwise_accuracy(pairs)
    assert result.report.confidence == confidence_report(pairs)
    assert sum(p.correct for p in preds) / len(preds) == pytest.approx(result.report.accuracy.overall)
    flags = [
        HallucinationPrediction(example_id=p.example_id, response=r, predicted=p.pointwise[r] < 0.5, actual=p.hallucinated[r])
        for p in preds
        if p.hallucinated is not None
        for r in (0, 1)
    ]
    assert result.report.hallucination == hallucination_detection(flags)
    groups = [BestOfNGroup(group_id=p.example_id, scores=p.pointwise, best=p.better) for p in preds]
    assert result.report.best_of_n == best_of_n_accuracy(groups)
    assert result.report.model == "tiny" and result.report.dataset == "bench" and result.report.created_at == STAMP
    assert result.model_version == genrm.version
    assert set(result.report.accuracy.per_category) == {"hallucination", "reasoning", "general"}


def test_hallucination_is_scored_only_where_labelled(genrm: GenRM):
    exs = examples()
    result = evaluate_genrm(genrm, exs)
    h = result.report.hallucination
    labelled = sum(e.hallucinated is not None for e in exs)
    assert h is not None and h.tp + h.fp + h.fn + h.tn == 2 * labelled == 24
    unlabelled = [p for p in result.predictions if p.hallucinated is None]
    assert len(unlabelled) == 6 and all(p.flagged is not None for p in unlabelled)  # scored, just not counted
    # Only unlabelled examples: best-of-N still works, detection has nothing to report.
    only = evaluate_genrm(genrm, [e for e in exs if e.hallucinated is None])
    assert only.report.hallucination is None and only.report.best_of_n is not None


def test_threshold_bounds_and_pointwise_off(genrm: GenRM):
    exs = examples(6)
    never = evaluate_genrm(genrm, exs, EvaluationSettings(hallucination_threshold=0.0)).report.hallucination
    always = evaluate_genrm(genrm, exs, EvaluationSettings(hallucination_threshold=1.0)).report.hallucination
    assert never.tp == never.fp == 0 and never.recall == 0.0
    assert always.fn == always.tn == 0 and always.recall == 1.0
    off = evaluate_genrm(genrm, exs, EvaluationSettings(pointwise=False))
    assert off.report.hallucination is None and off.report.best_of_n is None
    assert all(p.pointwise is None and p.flagged is None for p in off.predictions)


def test_max_examples_takes_the_first_n_and_empty_input_is_an_error(genrm: GenRM):
    exs = examples(8)
    result = evaluate_genrm(genrm, exs, EvaluationSettings(max_examples=3, pointwise=False))
    assert [p.example_id for p in result.predictions] == ["ex-0", "ex-1", "ex-2"] and result.report.accuracy.n == 3
    with pytest.raises(ValueError, match="at least one"):
        evaluate_genrm(genrm, [])


def test_prediction_round_trips_and_counts_an_exact_tie_as_half():
    p = EvaluationPrediction(
        example_id="x", category="general", p_first=0.5, better=1, correct=0.5, pointwise=[0.2, 0.9], flagged=[True, False], hallucinated=[True, False]
    )
    assert EvaluationPrediction.from_json_bytes(p.to_json_bytes()) == p
    from vlgenrm.evaluation.metrics import credit

    assert (credit(0.5, 0), credit(0.7, 0), credit(0.7, 1), credit(0.2, 1)) == (0.5, 1.0, 0.0, 1.0)


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, vlgenrm.evaluation, vlgenrm.evaluation.stage; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    assert out.stdout.strip() == "False"
