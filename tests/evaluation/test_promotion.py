"""The promotion rule and the promoted-model pointer (on the local and the S3 store)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from vlgenrm.evaluation.promotion import PromotionDecision, PromotionRecord, decide, history_key, promote, promoted_key, read_history, read_promoted
from vlgenrm.store import BlobStore


@pytest.mark.parametrize(
    ("candidate", "incumbent", "min_gain", "expected"),
    [
        (0.40, None, 0.0, True),  # nothing promoted yet: anything goes
        (0.40, None, 0.5, True),
        (0.60, 0.50, 0.0, True),
        (0.50, 0.50, 0.0, True),  # equal accuracy with min_gain 0 promotes (>=)
        (0.49, 0.50, 0.0, False),
        (0.55, 0.50, 0.05, True),  # gain == min_gain, despite float rounding of 0.5 + 0.05
        (0.70, 0.50, 0.1 + 0.1, True),
        (0.54, 0.50, 0.05, False),  # gain < min_gain
        (0.52, 0.50, 0.10, False),
        (0.48, 0.50, -0.05, True),  # a negative min_gain tolerates a small regression
    ],
)
def test_decide_table(candidate, incumbent, min_gain, expected):
    promote_it, reason = decide(candidate, incumbent, min_gain)
    assert promote_it is expected
    assert ("no promoted model" in reason) is (incumbent is None)
    assert (">=" in reason) is (expected and incumbent is not None)


def test_decide_rejects_nan():
    with pytest.raises(ValueError, match="finite"):
        decide(math.nan, 0.5, 0.0)
    with pytest.raises(ValueError, match="finite"):
        decide(0.5, 0.5, math.inf)


def record(iteration: str, accuracy: float, at: int, namespace: str = "team-a") -> PromotionRecord:
    return PromotionRecord(
        namespace=namespace,
        iteration=iteration,
        model=f"s3://b/checkpoints/{namespace}/{iteration}",
        model_version=f"v{at}",
        accuracy=accuracy,
        dataset="s3://b/datasets/synth/eval/vlrewardbench.jsonl",
        examples=24,
        promoted_at=datetime(2026, 11, at, tzinfo=UTC),
    )


def test_pointer_round_trip_and_history(store: BlobStore, unique):
    ns, other = unique("team"), unique("team")  # the S3 bucket outlives a test session
    assert read_promoted(store, ns) is None and read_history(store, ns) == []
    first, second = record("it-1", 0.6, 1, ns), record("it-2", 0.7, 2, ns)
    assert promote(store, first) == store.uri(promoted_key(ns))
    assert read_promoted(store, ns) == first
    promote(store, second)
    assert read_promoted(store, ns) == second
    assert read_history(store, ns) == [first, second]
    assert store.get_model(history_key(ns, "it-1"), PromotionRecord) == first
    assert read_promoted(store, other) is None  # namespaces are separate


def test_contracts_validate():
    with pytest.raises(ValidationError):
        record("it-1", 1.5, 1)  # accuracy is a probability
    with pytest.raises(ValidationError):
        PromotionRecord.model_validate(record("it-1", 0.5, 1).model_dump() | {"namespace": "Not_K8s"})
    decision = PromotionDecision(
        promote=False,
        candidate_uri="c",
        candidate_version="v1",
        candidate_accuracy=0.4,
        incumbent_uri="i",
        incumbent_version="v0",
        incumbent_accuracy=0.5,
        min_gain=0.0,
        dataset="d",
        reason="worse",
    )
    assert PromotionDecision.from_json_bytes(decision.to_json_bytes()) == decision
