"""Model-independent metrics (§3.6): typed predictions into pairwise accuracy (overall, per
category, macro mean) with Wilson 95 % intervals, a collapse check on the confidences,
hallucination-detection precision/recall/F1 and best-of-N selection accuracy. One credit rule
(:func:`credit`) for every pairwise verdict.

Sums are kept exact (``Fraction``) and divided once, so a hand-computed accuracy such as
11/20 comes back as exactly ``0.55`` whatever the order of the predictions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vlgenrm.contracts.data import Id, Probability

#: Index of the better response of a pair.
Better = Literal[0, 1]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PairPrediction(_Model):
    """A model's verdict on one pair; ``p_first`` is already averaged over both presentation orders.

    Correct iff ``(p_first > 0.5) == (better == 0)``. Exactly 0.5 (no epsilon) is a coin flip and
    counts as half-correct, so an undecided model scores 0.5 rather than being biased to one side.
    """

    example_id: Id
    category: str = Field(min_length=1)
    p_first: Probability = Field(allow_inf_nan=False, description="P(response 0 is better).")
    better: Better


class HallucinationPrediction(_Model):
    """Whether the model flags one response as hallucinating, and the truth."""

    example_id: Id
    response: int = Field(ge=0, description="Index of the response within its example.")
    predicted: bool
    actual: bool


class BestOfNGroup(_Model):
    """Scores for N candidates answering the same query, and the index of the truly best one."""

    group_id: Id
    scores: list[float] = Field(min_length=1)
    best: int = Field(ge=0)

    @field_validator("scores")
    @classmethod
    def _no_nan(cls, scores: list[float]) -> list[float]:
        if any(math.isnan(s) for s in scores):
            raise ValueError("scores must not be NaN (argmax would be meaningless)")
        return scores

    @model_validator(mode="after")
    def _best_in_range(self) -> BestOfNGroup:
        if self.best >= len(self.scores):
            raise ValueError(f"best={self.best} is out of range for {len(self.scores)} scores")
        return self


Interval = tuple[float, float]

#: Mean |p - 0.5| below this (or a spread of p below it) means the verdicts carry no signal.
COLLAPSE_THRESHOLD = 0.02
#: Equal-width bins of p over [0, 1] in :class:`ConfidenceReport`.
CONFIDENCE_BINS = 10


def wilson_interval(successes: float, n: int, z: float = 1.96) -> Interval:
    """Wilson score interval of ``successes / n`` (default: 95 %); ``n == 0`` gives ``(0, 1)``.

    ``successes`` may be fractional (ties count half). Wilson rather than the normal
    approximation because it stays inside [0, 1] and is honest at 0/n and n/n.
    """
    if n < 0 or z <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and z > 0, got {successes}/{n}, z={z}")
    if n == 0:
        return (0.0, 1.0)  # no evidence: every rate is possible
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Exact at 0/n and n/n, clamped elsewhere: float rounding can put a bound a hair past the estimate.
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if successes == n else min(1.0, max(p, centre + half))
    return (low, high)


class AccuracyReport(_Model):
    """Pairwise accuracy overall, per category and as the unweighted mean of categories.

    Every accuracy but the macro mean has its Wilson 95 % interval (``*_ci``); the macro mean has
    none, as its categories' sizes differ. Reports written before the intervals existed get them
    derived from their accuracies and counts when read.
    """

    overall: float = Field(ge=0.0, le=1.0)
    per_category: dict[str, float]
    macro: float = Field(ge=0.0, le=1.0, description="Mean of per-category accuracies.")
    counts: dict[str, int]
    n: int = Field(ge=1)
    overall_ci: Interval = Field((0.0, 1.0), description="Wilson 95 % interval of the overall accuracy.")
    per_category_ci: dict[str, Interval] = Field(default_factory=dict, description="Wilson 95 % interval per category.")

    @model_validator(mode="before")
    @classmethod
    def _derive_intervals(cls, data: Any) -> Any:
        # accuracy * n is the (half-integer) credit, so an old report's intervals are recoverable.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "overall_ci" not in data and _numbers(data.get("overall"), data.get("n")):
            data["overall_ci"] = _interval_of(data["overall"], data["n"])
        per_cat, counts = data.get("per_category"), data.get("counts")
        if "per_category_ci" not in data and isinstance(per_cat, dict) and isinstance(counts, dict):
            data["per_category_ci"] = {c: _interval_of(a, counts[c]) for c, a in per_cat.items() if _numbers(a, counts.get(c))}
        return data


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values)


def _interval_of(accuracy: float, n: int) -> Interval:
    """The interval of a stored rate; rounding to half-credits undoes float error in ``accuracy * n``."""
    if not 0 <= accuracy <= 1:
        return (0.0, 1.0)  # the field validator reports the bad accuracy itself
    return wilson_interval(min(round(accuracy * n * 2) / 2, n), int(n))


class ConfidenceReport(_Model):
    """How decided the pairwise verdicts are: the check that a constant answer is not read as signal.

    ``mean_confidence`` is mean |p - 0.5| (0 = always undecided, 0.5 = always certain);
    ``p_std`` is the standard deviation of p. ``collapsed`` is true when either is below
    ``threshold``: an undecided model (p ~ 0.5) and a model that gives one answer to everything
    (p constant) both reach an accuracy that is only the benchmark's label balance.
    ``histogram`` counts p in ``len(histogram)`` equal bins over [0, 1] (the last bin includes 1).
    """

    mean_confidence: float = Field(ge=0.0, le=0.5, description="Mean |p - 0.5|.")
    p_std: float = Field(ge=0.0, le=0.5, description="Population standard deviation of p.")
    histogram: list[int] = Field(min_length=1, description="Counts of p in equal-width bins over [0, 1].")
    threshold: float = Field(COLLAPSE_THRESHOLD, ge=0.0, le=0.5)
    collapsed: bool
    collapse_reason: Literal["undecided", "constant"] | None = Field(None, description="undecided: mean |p - 0.5| < threshold; constant: std of p < threshold.")
    n: int = Field(ge=1)

    @model_validator(mode="after")
    def _counts_add_up(self) -> ConfidenceReport:
        if sum(self.histogram) != self.n or any(c < 0 for c in self.histogram):
            raise ValueError(f"histogram counts {self.histogram} do not add up to n={self.n}")
        if self.collapsed != (self.collapse_reason is not None):
            raise ValueError("collapse_reason is set exactly when collapsed is true")
        return self


class DetectionReport(_Model):
    """Hallucination detection with 'hallucinates' as the positive class.

    0/0 is reported as 0.0 (precision with no positive predictions, recall with no positive
    truths, F1 when both are 0): a detector that never fires earns no credit.
    """

    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    f1: float = Field(ge=0.0, le=1.0)
    tp: int = Field(ge=0)
    fp: int = Field(ge=0)
    fn: int = Field(ge=0)
    tn: int = Field(ge=0)


class BestOfNReport(_Model):
    """How often the highest-scored candidate is the truly best one (ties share credit)."""

    accuracy: float = Field(ge=0.0, le=1.0)
    mean_n: float = Field(ge=1.0)
    groups: int = Field(ge=1)


def _ratio(num: Fraction | int, den: int) -> float:
    return float(Fraction(num) / den) if den else 0.0


def credit(p_first: float, better: int) -> Fraction:
    """Pairwise credit of one verdict: 1 when ``p_first`` sides with the better response, 0 when
    against it, 1/2 for exactly 0.5 (a coin flip, so an undecided model scores 0.5)."""
    if p_first == 0.5:
        return Fraction(1, 2)
    return Fraction(int((p_first > 0.5) == (better == 0)))


def pairwise_accuracy(preds: list[PairPrediction]) -> AccuracyReport:
    """Accuracy of ``preds`` (0.5 ties count half); raises ValueError when empty."""
    if not preds:
        # An empty evaluation must not read as 0.0 accuracy and still drive a promotion decision.
        raise ValueError("pairwise_accuracy needs at least one prediction")
    credits: dict[str, Fraction] = defaultdict(Fraction)
    counts: dict[str, int] = defaultdict(int)
    for p in preds:
        credits[p.category] += credit(p.p_first, p.better)
        counts[p.category] += 1
    cats = sorted(counts)
    per_cat = {c: credits[c] / counts[c] for c in cats}
    total = sum(credits.values(), Fraction())
    return AccuracyReport(
        overall=_ratio(total, len(preds)),
        per_category={c: float(per_cat[c]) for c in cats},
        macro=_ratio(sum(per_cat.values(), Fraction()), len(cats)),
        counts={c: counts[c] for c in cats},
        n=len(preds),
        overall_ci=wilson_interval(float(total), len(preds)),
        per_category_ci={c: wilson_interval(float(credits[c]), counts[c]) for c in cats},
    )


def confidence_report(preds: list[PairPrediction], threshold: float = COLLAPSE_THRESHOLD, bins: int = CONFIDENCE_BINS) -> ConfidenceReport:
    """Mean |p - 0.5|, spread and histogram of ``preds``' p, and the collapse verdict."""
    if not preds:
        raise ValueError("confidence_report needs at least one prediction")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    ps = [p.p_first for p in preds]
    n = len(ps)
    mean = math.fsum(ps) / n
    histogram = [0] * bins
    for p in ps:
        histogram[min(int(p * bins), bins - 1)] += 1
    mean_confidence = math.fsum(abs(p - 0.5) for p in ps) / n
    p_std = math.sqrt(math.fsum((p - mean) ** 2 for p in ps) / n)
    reason: Literal["undecided", "constant"] | None = None
    if mean_confidence < threshold:
        reason = "undecided"
    elif n > 1 and p_std < threshold:  # one prediction has no spread to measure
        reason = "constant"
    return ConfidenceReport(
        mean_confidence=min(mean_confidence, 0.5),
        p_std=min(p_std, 0.5),
        histogram=histogram,
        threshold=threshold,
        collapsed=reason is not None,
        collapse_reason=reason,
        n=n,
    )


def hallucination_detection(flags: list[HallucinationPrediction]) -> DetectionReport:
    """Precision, recall and F1 of hallucination flags; 0/0 is 0.0 (see :class:`DetectionReport`)."""
    tp = sum(f.predicted and f.actual for f in flags)
    fp = sum(f.predicted and not f.actual for f in flags)
    fn = sum(not f.predicted and f.actual for f in flags)
    tn = len(flags) - tp - fp - fn
    # F1 as 2tp/(2tp+fp+fn): equal to 2PR/(P+R) but one exact division.
    return DetectionReport(precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn), f1=_ratio(2 * tp, 2 * tp + fp + fn), tp=tp, fp=fp, fn=fn, tn=tn)


def best_of_n_accuracy(groups: list[BestOfNGroup]) -> BestOfNReport:
    """Argmax selection accuracy; a group whose best is among k tied maxima counts 1/k."""
    if not groups:
        raise ValueError("best_of_n_accuracy needs at least one group")
    won = Fraction()
    for g in groups:
        top = max(g.scores)
        tied = [i for i, s in enumerate(g.scores) if s == top]
        if g.best in tied:
            won += Fraction(1, len(tied))
    return BestOfNReport(accuracy=_ratio(won, len(groups)), mean_n=_ratio(sum(len(g.scores) for g in groups), len(groups)), groups=len(groups))
