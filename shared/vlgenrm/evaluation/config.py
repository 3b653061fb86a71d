"""Configuration of the evaluation stage (§3.6): a leaf module, so the Iteration spec and the CRD
load it without the harness."""

from __future__ import annotations

from pydantic import BaseModel, Field

class EvaluationSettings(BaseModel):
    """An Iteration's ``spec.evaluation`` block (it travels in the evaluation task's config)."""

    pointwise: bool = Field(True, description="Also score each response pointwise (P(Yes)): hallucination detection and best-of-N.")
    hallucination_threshold: float = Field(0.5, ge=0.0, le=1.0, description="A response with P(Yes) below this is flagged as hallucinating.")
    min_gain: float = Field(0.0, allow_inf_nan=False, description="Promote when candidate accuracy >= incumbent accuracy + min_gain.")
    max_examples: int | None = Field(None, ge=1, description="Evaluate only the first N benchmark examples (None = all).")
    category_map: dict[str, str] | None = Field(None, description="Source -> category for rows without one (None = the VL-RewardBench default map).")
