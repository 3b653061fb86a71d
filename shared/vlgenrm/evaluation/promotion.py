"""§3.6 promotion: the promoted-model pointer, its history, and the promotion rule.

The pointer ``models/<namespace>/promoted.json`` names the model the scorer serves. The
evaluation stage only *decides* (:func:`decide`, recorded as a :class:`PromotionDecision`);
the Promoting phase writes the pointer with :func:`promote`.
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import Field

from vlgenrm.contracts.base import Contract, utcnow
from vlgenrm.contracts.data import Probability
from vlgenrm.layout import history_key, history_prefix, promoted_key
from vlgenrm.store.base import BlobStore, ObjectNotFoundError

_K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
#: Accuracies are ratios of small integers rounded to floats: a gain equal to ``min_gain`` on
#: paper (0.55 vs 0.5 + 0.05) must not lose to the last bit of rounding.
_TOLERANCE = 1e-12


class PromotionRecord(Contract):
    """Which model the scorer serves in a namespace, and the evidence it was promoted on."""

    namespace: str = Field(pattern=_K8S_NAME, max_length=253)
    iteration: str = Field(pattern=_K8S_NAME, max_length=253, description="The Iteration that produced (or promoted) the model.")
    model: str = Field(min_length=1, description="Checkpoint URI or folder of the promoted model.")
    model_version: str = Field(min_length=1, description="GenRM.version: a digest of the weights.")
    accuracy: Probability = Field(description="Pairwise accuracy on ``dataset``.")
    dataset: str = Field(min_length=1, description="URI of the benchmark the accuracy was measured on.")
    examples: int | None = Field(None, ge=1, description="How many benchmark examples the accuracy covers (None = unknown).")
    promoted_at: datetime = Field(default_factory=utcnow)


class PromotionDecision(Contract):
    """The evaluation stage's verdict on a candidate, with what it was compared against."""

    promote: bool
    candidate_uri: str = Field(min_length=1)
    candidate_version: str = Field(min_length=1)
    candidate_accuracy: Probability
    incumbent_uri: str | None = Field(None, description="The model compared against; None when nothing is promoted yet.")
    incumbent_version: str | None = None
    incumbent_accuracy: Probability | None = None
    min_gain: float = Field(allow_inf_nan=False)
    dataset: str = Field(min_length=1, description="URI of the benchmark both accuracies are on.")
    reason: str = Field(min_length=1, description="Why, for a human.")
    decided_at: datetime = Field(default_factory=utcnow)


def decide(candidate_accuracy: float, incumbent_accuracy: float | None, min_gain: float = 0.0) -> tuple[bool, str]:
    """(promote, reason): promote when nothing is promoted, else iff cand >= inc + min_gain."""
    values = [candidate_accuracy, min_gain] + ([] if incumbent_accuracy is None else [incumbent_accuracy])
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"accuracies and min_gain must be finite, got {values}")
    if incumbent_accuracy is None:
        return True, f"no promoted model yet; candidate accuracy {candidate_accuracy:.4f}"
    needed = incumbent_accuracy + min_gain
    if candidate_accuracy >= needed - _TOLERANCE:
        return True, f"candidate accuracy {candidate_accuracy:.4f} >= incumbent {incumbent_accuracy:.4f} + min_gain {min_gain:g}"
    return False, f"candidate accuracy {candidate_accuracy:.4f} < incumbent {incumbent_accuracy:.4f} + min_gain {min_gain:g}"


def read_promoted(store: BlobStore, namespace: str) -> PromotionRecord | None:
    """The namespace's promoted model, None when nothing has been promoted."""
    try:
        return store.get_model(promoted_key(namespace), PromotionRecord)
    except ObjectNotFoundError:
        return None


def promote(store: BlobStore, record: PromotionRecord) -> str:
    """Make ``record`` the promoted model; returns the pointer's URI.

    The history entry is written first, so the pointer never names a promotion the history lacks.
    """
    store.put_model(history_key(record.namespace, record.iteration), record)
    store.put_model(promoted_key(record.namespace), record)
    return store.uri(promoted_key(record.namespace))


def read_history(store: BlobStore, namespace: str) -> list[PromotionRecord]:
    """Every promotion of the namespace, oldest first."""
    prefix = history_prefix(namespace)
    records = [store.get_model(info.key, PromotionRecord) for info in store.list(prefix) if info.key.endswith(".json")]
    return sorted(records, key=lambda r: (r.promoted_at, r.iteration))
