"""Configuration of the rationale stage (§3.3) and of its engines: a leaf module, so the
Iteration spec and the CRD load it without an engine."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

from vlgenrm.contracts.base import camel
from vlgenrm.genrm.config import GenRMSettings, SamplingParams
from vlgenrm.retry import Backoff


class EngineSettings(BaseModel):
    """Which generator writes the critiques, and how to reach it."""

    model_config = camel()

    kind: Literal["template", "transformers", "vllm", "openai"] = Field("template", description="Engine implementation.")
    model: str | None = Field(None, description="Checkpoint path/URI (transformers, vllm) or served model name (openai).")
    base_url: str | None = Field(None, description="OpenAI-compatible API root, e.g. http://host:8000/v1.")
    api_key: SecretStr | None = Field(None, description="Bearer token for the openai engine.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once (openai).")
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one HTTP request (openai).")
    retry: Backoff = Field(default_factory=Backoff, description="Retries on 429, 5xx and connection errors (openai).")
    vllm_args: dict[str, Any] = Field(default_factory=dict, description="Extra vllm.LLM(...) arguments, e.g. tensor_parallel_size.")
    genrm: GenRMSettings = Field(default_factory=GenRMSettings, description="Device, dtype and batching of the transformers engine's model.")


class TeacherView(StrEnum):
    """What the critique generator is given besides the image, the question and the responses."""

    #: The ExpertReport (the template teacher decides from its findings) and, with
    #: ``with_evidence``, the evidence block in the prompt: the method (§3.3).
    EXPERTS = "experts"
    #: Only the pair's training label (original order), no report, no evidence block: the
    #: template teacher rationalises that label; model engines get the bare prompt. The
    #: no-experts and no-evidence arms.
    LABEL = "label"


class RationaleSettings(BaseModel):
    """An Iteration's ``spec.rationale`` block (it travels in each rationale task's config)."""

    model_config = camel()

    engine: EngineSettings = Field(default_factory=EngineSettings, description="Which generator writes the critiques.")
    k: int = Field(4, ge=1, description="Candidate critiques per pair and order.")
    both_orders: bool = Field(False, description="Also ask with the responses swapped (position-bias debiasing).")
    teacher_sees: TeacherView = Field(
        TeacherView.EXPERTS,
        description="What the generator is given: experts = the expert report (+ evidence block), label = only the pair's label (no report, no evidence).",
    )
    with_evidence: bool = Field(True, description="Show the generator the experts' evidence block (teacher_sees=experts only; never with label).")
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.8, max_new_tokens=256))
    batch_size: int = Field(8, ge=1, description="Prompts per engine call.")
    hard_pool: list[str] = Field(default_factory=list, description="Hard-pool shards of the previous iteration: their pairs get k + extra_samples candidates.")
