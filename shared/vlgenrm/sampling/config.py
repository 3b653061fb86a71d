"""Configuration of the sampling stage (§3.4): a leaf module, so the Iteration spec and the CRD
load it without the sampler."""

from __future__ import annotations

from pydantic import BaseModel, Field

from vlgenrm.contracts.base import camel
from vlgenrm.genrm.config import GenRMSettings

_DEFAULT_THRESHOLDS = tuple(-2.0 + 0.5 * i for i in range(13))  # -2.0 .. 4.0


class SamplerSettings(BaseModel):
    """Knobs of §3.4 (defaults = the design's)."""

    model_config = camel()

    tau0: float = Field(0.0, description="Margin threshold at iteration 0.")
    delta_tau: float = Field(0.5, description="Threshold increase per iteration: tau_t = tau0 + t * delta_tau.")
    margin_filter: bool = Field(True, description="Require m >= tau_t; false = accept every candidate whose verdict is the label (the no-margin arm).")
    top_n: int = Field(1, ge=1, description="Accepted candidates kept per pair (highest margins).")
    hard_pool_extra_samples: int = Field(4, ge=0, description="Extra candidates a hard pair gets next iteration.")
    dpo: bool = Field(True, description="Attach the lowest-margin rejected critique of the same order for DPO.")
    histogram_bins: int = Field(30, ge=1, description="Bins of the margin histogram in the stage report.")
    thresholds: tuple[float, ...] = Field(_DEFAULT_THRESHOLDS, description="Grid for the kept-ratio-per-threshold curve.")
    critique_probe: int = Field(
        64,
        ge=0,
        description="Labelled pairs (the first ones) whose candidates are also scored without their critique, to show whether the GenRM reads critiques (SamplingStats.critique_probe); 0 = off.",
    )


class SamplingTaskSettings(BaseModel):
    """An Iteration's ``spec.sampling`` block plus the checkpoint that computes the margins."""

    model: str = Field(description="The current GenRM M_t: a checkpoint folder or s3:// URI.")
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    genrm: GenRMSettings = Field(default_factory=GenRMSettings)
