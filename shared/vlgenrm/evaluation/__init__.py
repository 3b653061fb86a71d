"""Evaluation and promotion (§3.6): score a GenRM on a held-out benchmark, decide promotion.

The model-free harness (benchmark loader, metrics, EvaluationReport) is
:mod:`vlgenrm.genrm.evaluation`; the stage that runs this in a service is
:mod:`vlgenrm.evaluation.stage` (imported on its own: it needs the store and the GenRM).
"""

from vlgenrm.evaluation.promotion import (
    PromotionDecision,
    PromotionRecord,
    decide,
    history_key,
    promote,
    promoted_key,
    read_history,
    read_promoted,
)
from vlgenrm.evaluation.run import EvaluationPrediction, EvaluationResult, EvaluationSettings, credit, evaluate_genrm

__all__ = [
    "EvaluationPrediction",
    "EvaluationResult",
    "EvaluationSettings",
    "PromotionDecision",
    "PromotionRecord",
    "credit",
    "decide",
    "evaluate_genrm",
    "history_key",
    "promote",
    "promoted_key",
    "read_history",
    "read_promoted",
]
