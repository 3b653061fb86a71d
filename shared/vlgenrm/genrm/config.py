"""Typed settings of the GenRM adapter (no torch import: the CLI and Settings load this)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from vlgenrm.contracts.base import camel


class DType(StrEnum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class Backend(StrEnum):
    """What computes a GenRM's scores and critiques."""

    #: transformers on the model's own weights: the reference, and the only backend that trains.
    TRANSFORMERS = "transformers"
    #: vLLM on GPU clusters (scoring reads prompt log-probabilities, critiques are vLLM's
    #: generations); the processor and prompts stay the transformers ones (docs/genrm.md).
    VLLM = "vllm"


class GenRMSettings(BaseModel):
    """How a GenRM is loaded and fed."""

    model_config = camel()

    device: str = Field("cpu", description="cpu, cuda, cuda:N, or auto (cuda when available).")
    dtype: DType = Field(DType.FLOAT32, description="Weights and activations dtype (bfloat16 on GPUs).")
    max_length: int = Field(4096, ge=16, description="Longest prompt + continuation in tokens.")
    max_image_bytes: int = Field(20 << 20, ge=1, description="Larger encoded images are rejected.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Larger decoded images are rejected.")
    batch_size: int = Field(
        8,
        ge=1,
        description="Rows per forward pass when scoring: prompts with the prefix cache (their two short tails follow in one step), whole sequences without it.",
    )
    attn_implementation: str = Field("sdpa", description="transformers attention backend (sdpa, eager, flash_attention_2).")
    cache_dir: Path = Field(Path("~/.cache/vlgenrm/models"), description="Where checkpoints from the store are cached.")
    prefix_cache: bool = Field(
        True,
        description="Score the two options of a prompt from one forward of their shared prefix (its KV cache), then a 2-row step of their tails, processing an image shown with several prompts once; false = two full sequences per prompt, each prompt processed on its own (the reference path; equal within float error).",
    )
    backend: Backend = Field(
        Backend.TRANSFORMERS,
        description="What scores and generates: transformers (the reference; CPU and GPU) or vllm (GPU serving; needs the vllm package, scores equal within float error).",
    )
    vllm_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra vllm.LLM(...) arguments with backend vllm, e.g. gpu_memory_utilization, tensor_parallel_size (prefix caching, one image per prompt, max_model_len = max_length and the dtype are set already).",
    )
    restate: bool = Field(
        True,
        description="Pairwise answers restate the better response before the verdict line, and scoring compares the two whole answers (docs/genrm.md); false = the verdict line alone. Train and score a model the same way.",
    )


class SamplingParams(BaseModel):
    """Sampling for critique generation."""

    model_config = camel()

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0.0, description="0 = greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, description="Samples per prompt.")
    seed: int | None = Field(None, description="Makes sampling repeatable.")


class Objective(StrEnum):
    """What training optimises (§3.5)."""

    SFT = "sft"
    SFT_DPO = "sft+dpo"


class LossAverage(StrEnum):
    """How the SFT cross-entropy over target tokens is averaged in a micro-batch."""

    #: Every target token weighs the same: a 130-token critique outweighs its 25-token bare
    #: verdict five to one (transformers' own loss).
    TOKEN = "token"
    #: Each sequence's mean token loss, averaged over sequences: a bare verdict, the thing
    #: direct scoring reads, weighs as much as a critique.
    SEQUENCE = "sequence"


class LoraSettings(BaseModel):
    """LoRA adapters on the language model's attention projections (base weights frozen)."""

    model_config = camel()

    r: int = Field(8, ge=1, description="Adapter rank.")
    alpha: int = Field(16, ge=1, description="Adapter scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="Module names that get adapters.")
