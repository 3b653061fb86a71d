"""§3.6 with a model: score a VL-RewardBench-format benchmark with a GenRM and report.

Pairwise: ``P(response 0 is better)`` averaged over both presentation orders
(``GenRM.pairwise_probs``), with Wilson intervals and a collapse check of those
probabilities (a model that answers the same to everything is flagged). Pointwise (optional): ``P("Yes")`` of each response on its own,
which gives hallucination detection (a response is flagged when ``P(Yes)`` is below the
threshold) and best-of-N selection over the pair's two responses. The metrics themselves are
the model-free harness (benchmark, metrics, report).

torch is imported only when a model is actually scored, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import Field

from vlgenrm.contracts.base import Contract, utcnow
from vlgenrm.contracts.data import Id, Probability
from vlgenrm.evaluation.benchmark import BenchmarkExample
from vlgenrm.evaluation.config import EvaluationSettings
from vlgenrm.evaluation.metrics import (
    BestOfNGroup,
    HallucinationPrediction,
    PairPrediction,
    best_of_n_accuracy,
    confidence_report,
    credit,
    hallucination_detection,
    pairwise_accuracy,
)
from vlgenrm.evaluation.report import EvaluationReport

if TYPE_CHECKING:
    from vlgenrm.genrm.model import GenRM

#: Called after each scored chunk with (examples done, examples total).
Progress = Callable[[int, int], None]


class EvaluationPrediction(Contract):
    """What the model said about one benchmark example, and whether it was right."""

    example_id: Id
    category: str = Field(min_length=1)
    p_first: Probability = Field(description="P(response 0 is better), averaged over both orders.")
    better: int = Field(ge=0, le=1, description="Index of the human-preferred response.")
    correct: float = Field(ge=0.0, le=1.0, description="Pairwise credit: 1 right, 0 wrong, 0.5 for an exact 0.5 (as pairwise_accuracy counts it).")
    pointwise: list[Probability] | None = Field(None, min_length=2, max_length=2, description="P(Yes) of each response; None when pointwise scoring is off.")
    flagged: list[bool] | None = Field(
        None, min_length=2, max_length=2, description="P(Yes) < hallucination_threshold per response; None when pointwise is off."
    )
    hallucinated: list[bool] | None = Field(None, min_length=2, max_length=2, description="The benchmark's hallucination labels, when it has them.")


@dataclass(frozen=True)
class EvaluationResult:
    """The report (what promotion reads) and the per-example predictions behind it."""

    report: EvaluationReport
    predictions: list[EvaluationPrediction]
    model_version: str


def evaluate_genrm(
    genrm: GenRM,
    examples: Sequence[BenchmarkExample],
    settings: EvaluationSettings | None = None,
    *,
    model: str | None = None,
    dataset: str = "benchmark",
    created_at: datetime | None = None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Score ``examples`` (the first ``settings.max_examples``) with ``genrm`` and report.

    ``model`` names the model in the report (default: its version); ``created_at`` stamps it
    (default: now; a stage passes its task's time so a recomputation writes the same bytes).
    Raises ValueError when there is nothing to evaluate.
    """
    from vlgenrm.genrm.model import PairwiseQuery, PointwiseQuery

    settings = settings or EvaluationSettings()
    chosen = list(examples[: settings.max_examples])
    if not chosen:
        raise ValueError("evaluate_genrm needs at least one example")
    p_first: list[float] = []
    p_yes: list[float] = []
    # Chunks only pace the progress reports; batching within a chunk is the GenRM's.
    step = 8 * genrm.settings.batch_size
    for start in range(0, len(chosen), step):
        chunk = chosen[start : start + step]
        p_first += genrm.pairwise_probs([PairwiseQuery(ex.image, ex.query, ex.responses[0], ex.responses[1]) for ex in chunk])
        if settings.pointwise:
            p_yes += genrm.pointwise_probs([PointwiseQuery(ex.image, ex.query, r) for ex in chunk for r in ex.responses])
        if progress is not None:
            progress(start + len(chunk), len(chosen))

    predictions: list[EvaluationPrediction] = []
    pairs: list[PairPrediction] = []
    flags: list[HallucinationPrediction] = []
    groups: list[BestOfNGroup] = []
    for i, ex in enumerate(chosen):
        pairs.append(PairPrediction(example_id=ex.id, category=ex.category, p_first=p_first[i], better=ex.better))
        scores = flagged = None
        if settings.pointwise:
            scores = p_yes[2 * i : 2 * i + 2]
            flagged = [s < settings.hallucination_threshold for s in scores]
            groups.append(BestOfNGroup(group_id=ex.id, scores=scores, best=ex.better))
            if ex.hallucinated is not None:  # unlabelled responses would count as false positives
                flags += [HallucinationPrediction(example_id=ex.id, response=r, predicted=flagged[r], actual=ex.hallucinated[r]) for r in (0, 1)]
        predictions.append(
            EvaluationPrediction(
                example_id=ex.id,
                category=ex.category,
                p_first=p_first[i],
                better=ex.better,
                correct=float(credit(p_first[i], ex.better)),
                pointwise=scores,
                flagged=flagged,
                hallucinated=ex.hallucinated,
            )
        )
    report = EvaluationReport(
        model=model or genrm.version,
        dataset=dataset,
        created_at=created_at or utcnow(),
        accuracy=pairwise_accuracy(pairs),
        confidence=confidence_report(pairs),
        hallucination=hallucination_detection(flags) if flags else None,
        best_of_n=best_of_n_accuracy(groups) if groups else None,
    )
    return EvaluationResult(report=report, predictions=predictions, model_version=genrm.version)
