"""The metrics and the report built from them, on hand-computed cases."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vlgenrm.evaluation.metrics import (
    COLLAPSE_THRESHOLD,
    AccuracyReport,
    BestOfNGroup,
    ConfidenceReport,
    HallucinationPrediction,
    PairPrediction,
    best_of_n_accuracy,
    confidence_report,
    hallucination_detection,
    pairwise_accuracy,
    wilson_interval,
)
from vlgenrm.evaluation.report import EvaluationReport


def pred(category: str, p_first: float, better: int, i: int = 0) -> PairPrediction:
    return PairPrediction(example_id=f"{category}-{i}", category=category, p_first=p_first, better=better)


def test_known_accuracies_overall_per_category_and_macro():
    preds = [
        # hallucination: 3 of 4 right -> 3/4
        pred("hallucination", 0.9, 0),
        pred("hallucination", 0.2, 1),
        pred("hallucination", 0.6, 0),
        pred("hallucination", 0.7, 1),
        # reasoning: 1 of 3 right -> 1/3
        pred("reasoning", 0.1, 1),
        pred("reasoning", 0.4, 0),
        pred("reasoning", 0.51, 1),
        # general: right, tie (half), wrong -> 1.5/3 = 1/2
        pred("general", 0.8, 0),
        pred("general", 0.5, 1),
        pred("general", 0.3, 0),
    ]
    report = pairwise_accuracy(preds)
    # overall = (3 + 1 + 1.5) / 10 = 0.55; macro = (3/4 + 1/3 + 1/2) / 3 = 19/36 ≈ 0.5278 (differs)
    assert report.overall == 0.55
    assert report.macro == 19 / 36
    assert report.per_category == {"general": 0.5, "hallucination": 0.75, "reasoning": 1 / 3}
    assert report.counts == {"general": 3, "hallucination": 4, "reasoning": 3}
    assert report.n == 10
    assert pairwise_accuracy(list(reversed(preds))) == report  # exact sums: order does not matter


def test_a_probability_of_exactly_one_half_is_half_correct_either_way():
    assert pairwise_accuracy([pred("c", 0.5, 0)]).overall == 0.5
    assert pairwise_accuracy([pred("c", 0.5, 1)]).overall == 0.5
    assert pairwise_accuracy([pred("c", 0.5000001, 0)]).overall == 1.0
    with pytest.raises(ValueError, match="at least one"):
        pairwise_accuracy([])
    with pytest.raises(ValidationError):
        pred("c", 1.5, 0)


no_tie = st.floats(0.0, 1.0).filter(lambda p: p != 0.5 and 1 - p != 0.5)  # 0.49999999999999994 -> 1-p == 0.5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), no_tie, st.integers(0, 1)), min_size=1, max_size=40))
def test_accuracy_is_a_rate_and_flipping_every_prediction_complements_it(items):
    preds = [pred(c, p, b, i) for i, (c, p, b) in enumerate(items)]
    flipped = [p.model_copy(update={"p_first": 1 - p.p_first}) for p in preds]
    report, inverse = pairwise_accuracy(preds), pairwise_accuracy(flipped)
    assert 0.0 <= report.overall <= 1.0 and 0.0 <= report.macro <= 1.0
    assert inverse.overall == pytest.approx(1 - report.overall, abs=1e-12)
    assert inverse.macro == pytest.approx(1 - report.macro, abs=1e-12)


def flag(predicted: bool, actual: bool, i: int) -> HallucinationPrediction:
    return HallucinationPrediction(example_id=f"e{i}", response=i % 2, predicted=predicted, actual=actual)


def test_detection_precision_recall_f1_on_a_hand_computed_confusion_matrix():
    # tp=3 fp=1 fn=2 tn=4: P = 3/4, R = 3/5, F1 = 2PR/(P+R) = 0.9/1.35 = 2/3
    cells = [(True, True)] * 3 + [(True, False)] + [(False, True)] * 2 + [(False, False)] * 4
    report = hallucination_detection([flag(p, a, i) for i, (p, a) in enumerate(cells)])
    assert (report.tp, report.fp, report.fn, report.tn) == (3, 1, 2, 4)
    assert (report.precision, report.recall, report.f1) == (0.75, 0.6, 2 / 3)


def test_detection_zero_over_zero_is_zero():
    never_fires = hallucination_detection([flag(False, True, 0), flag(False, False, 1)])
    assert (never_fires.precision, never_fires.recall, never_fires.f1) == (0.0, 0.0, 0.0)
    nothing_to_find = hallucination_detection([flag(False, False, 0)])
    assert (nothing_to_find.precision, nothing_to_find.recall, nothing_to_find.f1, nothing_to_find.tn) == (0, 0, 0, 1)
    assert hallucination_detection([]).tn == 0


def test_best_of_n_with_ties_shares_credit():
    groups = [
        BestOfNGroup(group_id="g1", scores=[0.1, 0.9, 0.3], best=1),  # clear win: 1
        BestOfNGroup(group_id="g2", scores=[0.5, 0.5, 0.2], best=0),  # best among 2 tied maxima: 1/2
        BestOfNGroup(group_id="g3", scores=[0.7, 0.7, 0.7, 0.1], best=3),  # best not at the max: 0
        BestOfNGroup(group_id="g4", scores=[0.2, 0.8], best=0),  # wrong: 0
    ]
    report = best_of_n_accuracy(groups)
    # accuracy = 1.5 / 4 = 0.375; mean N = (3 + 3 + 4 + 2) / 4 = 3
    assert (report.accuracy, report.mean_n, report.groups) == (0.375, 3.0, 4)
    assert best_of_n_accuracy([BestOfNGroup(group_id="g", scores=[1.0, 1.0, 1.0], best=2)]).accuracy == 1 / 3
    with pytest.raises(ValidationError, match="out of range"):
        BestOfNGroup(group_id="g", scores=[1.0], best=1)
    with pytest.raises(ValidationError, match="NaN"):
        BestOfNGroup(group_id="g", scores=[float("nan"), 1.0], best=1)
    with pytest.raises(ValueError, match="at least one"):
        best_of_n_accuracy([])


def full_report() -> EvaluationReport:
    preds = [pred("hallucination", 0.9, 0), pred("reasoning", 0.4, 0), pred("general", 0.5, 1)]
    return EvaluationReport(
        model="genrm-it3|ckpt-500",
        dataset="vl-rewardbench",
        accuracy=pairwise_accuracy(preds),
        confidence=confidence_report(preds),
        hallucination=hallucination_detection([flag(True, True, 0), flag(True, False, 1)]),
        best_of_n=best_of_n_accuracy([BestOfNGroup(group_id="g", scores=[0.2, 0.8], best=1)]),
    )


def test_markdown_names_every_category_and_the_overall_number():
    report = full_report()
    md = report.to_markdown()
    for category, count in report.accuracy.counts.items():
        assert f"| {category} | {count} |" in md
    assert f"**{report.accuracy.overall:.4f}**" in md and "**0.5000**" in md
    assert "genrm-it3\\|ckpt-500" in md  # a pipe in a name must not break the table
    assert "| 0.5000 | 1.0000 | 0.6667 | 1 | 1 | 0 | 0 |" in md
    assert "Best-of-N" in md and "Hallucination" in md
    bare = report.model_copy(update={"hallucination": None, "best_of_n": None}).to_markdown()
    assert "Best-of-N" not in bare and "Hallucination detection" not in bare


def test_report_json_round_trips():
    report = full_report()
    assert EvaluationReport.model_validate_json(report.to_json_bytes()) == report
    bare = EvaluationReport(model="m", dataset="d", accuracy=report.accuracy)
    assert EvaluationReport.model_validate_json(bare.to_json_bytes()) == bare
    with pytest.raises(ValidationError):
        EvaluationReport.model_validate_json(report.model_dump_json() + "x")


# --------------------------------------------------------------------------- intervals and collapse


def test_wilson_interval_known_values_and_edges():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0  # clamped, never outside [0, 1]
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no evidence, no claim
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # symmetric about 0.5
    # Ties count half: 1.5 of 3 is the same rate as 5 of 10 but a wider interval.
    lo, hi = wilson_interval(1.5, 3)
    assert lo < 0.2366 and hi > 0.7634 and (lo + hi) / 2 == pytest.approx(0.5)
    for bad in [(11, 10), (-1, 10), (1, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, z=0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, 2 * n).map(lambda k: k / 2), st.just(n))))
def test_wilson_interval_contains_the_estimate(case):
    successes, n = case
    lo, hi = wilson_interval(successes, n)
    assert 0.0 <= lo <= successes / n <= hi <= 1.0


def test_accuracy_report_carries_overall_and_per_category_intervals():
    preds = [pred("hallucination", 0.9, 0, i) for i in range(8)] + [pred("hallucination", 0.9, 1, 8 + i) for i in range(2)]
    preds += [pred("object", 0.2, 0, 20 + i) for i in range(10)]
    report = pairwise_accuracy(preds)
    assert report.per_category_ci["hallucination"] == pytest.approx((0.4902, 0.9433), abs=1e-4)  # 8/10
    assert report.per_category_ci["object"] == pytest.approx((0.0, 0.2775), abs=1e-4)  # 0/10
    assert report.overall_ci == pytest.approx(wilson_interval(8, 20))
    for c, (lo, hi) in report.per_category_ci.items():
        assert lo <= report.per_category[c] <= hi


def test_an_old_report_without_the_new_fields_still_validates_and_gets_its_intervals():
    report = full_report()
    old = json.loads(report.to_json_bytes())
    del old["confidence"], old["accuracy"]["overall_ci"], old["accuracy"]["per_category_ci"]
    loaded = EvaluationReport.model_validate_json(json.dumps(old))
    assert loaded.confidence is None
    assert loaded.accuracy == report.accuracy  # intervals recomputed from the stored accuracies and counts
    assert "## Confidence" not in loaded.to_markdown() and "95 % CI" in loaded.to_markdown()
    # A third of 3 stored as a float still recovers the exact credit.
    acc = AccuracyReport(overall=1 / 3, per_category={"c": 1 / 3}, macro=1 / 3, counts={"c": 3}, n=3)
    assert acc.overall_ci == wilson_interval(1, 3) and acc.per_category_ci == {"c": wilson_interval(1, 3)}


def constant(p: float, n: int = 40) -> list[PairPrediction]:
    """The same p for every pair, half of them with response 0 better."""
    return [pred(f"type{i % 3}", p, i % 2, i) for i in range(n)]


@pytest.mark.parametrize(("p", "reason"), [(0.5, "undecided"), (0.51, "undecided"), (0.49, "undecided"), (0.9, "constant")])
def test_a_constant_predictor_is_collapsed(p, reason):
    conf = confidence_report(constant(p))
    assert conf.collapsed and conf.collapse_reason == reason
    assert conf.mean_confidence == pytest.approx(abs(p - 0.5))
    assert sum(conf.histogram) == conf.n == 40 and max(conf.histogram) == 40


def test_a_confident_correct_predictor_is_not_collapsed():
    preds = [pred("c", 0.95 if i % 2 == 0 else 0.03, i % 2, i) for i in range(40)]
    conf = confidence_report(preds)
    assert not conf.collapsed and conf.collapse_reason is None
    assert conf.mean_confidence == pytest.approx((0.45 + 0.47) / 2)
    assert conf.histogram == [20] + [0] * 8 + [20]
    assert pairwise_accuracy(preds).overall == 1.0


def test_undecided_noise_around_one_half_is_collapsed():
    # Spread is not decision: p within 0.5 +- 0.015 carries no verdict, whatever its std.
    preds = [pred("c", 0.5 + (0.015 if i % 2 else -0.015), i % 2, i) for i in range(40)]
    conf = confidence_report(preds)
    assert conf.collapsed and conf.collapse_reason == "undecided"
    assert conf.threshold == COLLAPSE_THRESHOLD


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60), st.integers(1, 20))
def test_histogram_counts_sum_to_n(ps, bins):
    conf = confidence_report([pred("c", p, 0, i) for i, p in enumerate(ps)], bins=bins)
    assert len(conf.histogram) == bins and sum(conf.histogram) == conf.n == len(ps)
    assert 0.0 <= conf.mean_confidence <= 0.5 and 0.0 <= conf.p_std <= 0.5


def test_confidence_edges_and_consistency():
    assert confidence_report([pred("c", 1.0, 0)]).histogram[-1] == 1  # the last bin includes 1
    assert confidence_report([pred("c", 0.0, 0)]).histogram[0] == 1
    assert not confidence_report([pred("c", 0.9, 0)]).collapsed  # one prediction has no spread to judge
    with pytest.raises(ValueError, match="at least one"):
        confidence_report([])
    with pytest.raises(ValidationError, match="add up"):
        ConfidenceReport(mean_confidence=0.1, p_std=0.1, histogram=[1, 1], collapsed=False, n=3)
    with pytest.raises(ValidationError, match="collapse_reason"):
        ConfidenceReport(mean_confidence=0.0, p_std=0.0, histogram=[1], collapsed=True, n=1)


def test_markdown_shows_intervals_confidence_and_the_collapse_line():
    report = full_report()
    md = report.to_markdown()
    lo, hi = report.accuracy.overall_ci
    assert f"| **Overall** | 3 | **{report.accuracy.overall:.4f}** | [{lo:.4f}, {hi:.4f}] |" in md
    h_lo, h_hi = report.accuracy.per_category_ci["hallucination"]
    assert f"| hallucination | 1 | 1.0000 | [{h_lo:.4f}, {h_hi:.4f}] |" in md
    assert "per category (hallucination type on the synthetic set)" in md.lower()
    assert "Mean |p − 0.5| = " in md and "| [0.90, 1.00] | 1 |" in md
    assert "not distinguishable from a coin flip" in md  # 3 pairs: chance is inside the interval
    assert "accuracy is not signal" not in md

    collapsed = EvaluationReport(model="m", dataset="d", accuracy=pairwise_accuracy(constant(0.51)), confidence=confidence_report(constant(0.51)))
    cmd = collapsed.to_markdown()
    assert "the model gives the same answer to everything: accuracy is not signal" in cmd
    assert cmd.index("accuracy is not signal") < cmd.index("## Pairwise accuracy")  # before any number
