"""Typed configuration of the training stage (§3.5); no torch or Ray import, so the CLI,
the operator and CRD generation can load it cheaply."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vlgenrm.contracts.base import camel
from vlgenrm.genrm.config import GenRMSettings, LoraSettings, LossAverage, Objective


class Init(StrEnum):
    """Where M_{t+1} starts from."""

    BASE = "base"
    PREVIOUS = "previous"


class Precision(StrEnum):
    """Numeric precision of the forward/backward pass; master weights stay float32."""

    AUTO = "auto"  # bf16 autocast on GPUs, fp32 on CPUs
    FP32 = "fp32"
    BF16 = "bf16"


class Strategy(StrEnum):
    """How the model is spread over the workers."""

    DDP = "ddp"  # a full replica per worker, gradients all-reduced
    FSDP = "fsdp"  # parameters, gradients and optimizer state sharded (large models)


class Schedule(StrEnum):
    CONSTANT = "constant"
    COSINE = "cosine"


class TrainingConfig(BaseModel):
    """An Iteration's ``spec.training``: what one training run of the GenRM does."""

    model_config = camel(extra="forbid")
    learning_rate: float = Field(1e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    schedule: Schedule = Field(Schedule.CONSTANT, description="Learning rate after warm-up: constant or cosine decay to 0.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up from 0 over this many optimizer steps.")
    epochs: int = Field(1, ge=1, description="Passes over the training set.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs when set).")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step, over all workers together (the global batch).")
    accumulation: int = Field(1, ge=1, description="Micro-batches per worker per optimizer step (gradient accumulation).")
    max_length: int = Field(2048, ge=16, description="Longest prompt + target in tokens; longer examples are skipped and counted.")
    image_size: int | None = Field(None, ge=16, description="Resize images so their longer side is at most this (None = as stored).")
    init: Init = Field(Init.BASE, description="Start from the base model or from the previous iteration's checkpoint M_t.")
    objective: Objective = Field(Objective.SFT, description="sft, or sft+dpo using the sampler's rejected critiques.")
    loss_average: LossAverage = Field(
        LossAverage.SEQUENCE,
        description="SFT loss averaged per sequence (each critique and each bare verdict weighs the same) or per target token (long critiques dominate).",
    )
    dpo_beta: float = Field(0.1, gt=0, description="DPO temperature beta.")
    dpo_weight: float = Field(1.0, ge=0, description="Weight of the DPO term added to the SFT loss.")
    verdict_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the verdict loss added to the SFT loss: -log P(labelled option) on each bare verdict row, P over the two options' continuations as direct scoring computes it, divided by all rows (0 = SFT alone); exact through length buckets with loss_average sequence.",
    )
    both_orders: bool = Field(False, description="Also train every record in the swapped A/B order (use when the data holds one order only).")
    direct_verdict: bool = Field(
        True, description="Also train each record's bare verdict line, so direct scoring (no critique, §3.7) is something the model learned."
    )
    length_buckets: int = Field(
        2,
        ge=1,
        le=16,
        description="Run each micro-batch as this many forward passes of similar lengths (bare verdicts apart from critiques), weighted so loss and gradient equal the unsplit batch's; sft only.",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters instead of all weights; the exported checkpoint has them merged.")
    precision: Precision = Field(Precision.AUTO, description="auto = bf16 on GPUs, fp32 on CPUs.")
    strategy: Strategy = Field(Strategy.DDP, description="ddp, or fsdp for models too large for one GPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    workers: int = Field(1, ge=1, description="Ray Train workers (one process each).")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker (0 = train on CPU).")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker.")
    checkpoint_every: int = Field(50, ge=1, description="Save a resumable checkpoint every this many optimizer steps (and at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Resumable checkpoints kept in storage.")
    log_every: int = Field(10, ge=1, description="Log and report metrics every this many steps.")
    seed: int = Field(0, description="Seeds the data order and initialisation; same seed, same run.")

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainingConfig:
        per_step = self.workers * self.accumulation
        if self.batch_size % per_step:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of workers x accumulation = {per_step}")
        return self

    @property
    def micro_batch_size(self) -> int:
        """Examples per forward pass on one worker."""
        return self.batch_size // (self.workers * self.accumulation)

    def digest(self) -> str:
        """Changes whenever a field that shapes the run changes: resumable checkpoints are kept
        per digest, so an edited spec starts over instead of resuming a different run."""
        shaping = self.model_dump(
            mode="json", exclude={"checkpoint_every", "keep_checkpoints", "log_every", "workers", "cpus_per_worker", "gpus_per_worker", "accumulation"}
        )
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]


class TrainingTaskSettings(BaseModel):
    """The ``config`` of a training StageTask: the Iteration's training block and its models."""

    model_config = ConfigDict(extra="forbid")
    base_model: str = Field(description="Base checkpoint: a folder or a store URI (s3://bucket/checkpoints/...).")
    previous_model: str | None = Field(None, description="M_t, the previous iteration's checkpoint (used when init=previous).")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    genrm: GenRMSettings = Field(default_factory=GenRMSettings)

    @property
    def init_model(self) -> str:
        """The checkpoint training starts from."""
        if self.training.init is Init.PREVIOUS and self.previous_model:
            return self.previous_model
        return self.base_model
