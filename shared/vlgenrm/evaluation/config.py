"""Configuration of the evaluation stage (§3.6): a leaf module, so the Iteration spec and the CRD
load it without the harness."""

from __future__ import annotations

from pydantic import BaseModel, Field

from vlgenrm.contracts.base import camel
from vlgenrm.genrm.config import GenRMSettings


class EvaluationSettings(BaseModel):
    """An Iteration's ``spec.evaluation`` block (it travels in the evaluation task's config)."""

    model_config = camel()

    pointwise: bool = Field(True, description="Also score each response pointwise (P(Yes)): hallucination detection and best-of-N.")
    hallucination_threshold: float = Field(0.5, ge=0.0, le=1.0, description="A response with P(Yes) below this is flagged as hallucinating.")
    min_gain: float = Field(0.0, allow_inf_nan=False, description="Promote when candidate accuracy >= incumbent accuracy + min_gain.")
    max_examples: int | None = Field(None, ge=1, description="Evaluate only the first N benchmark examples (None = all).")
    category_map: dict[str, str] | None = Field(None, description="Source -> category for rows without one (None = the VL-RewardBench default map).")


class EvaluationTaskSettings(BaseModel):
    """An Iteration's ``spec.evaluation`` block plus the checkpoint under test."""

    model: str = Field(min_length=1, description="The candidate M_{t+1}: a checkpoint folder or store URI.")
    genrm: GenRMSettings = Field(default_factory=GenRMSettings, description="How the candidate (and incumbent) are loaded and fed.")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings, description="Metrics and the promotion rule.")
    incumbent: str | None = Field(None, description="Compare against this checkpoint instead of the namespace's promoted model.")
