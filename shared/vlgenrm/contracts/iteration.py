"""The ``Iteration`` custom resource's status and the pieces its spec shares (§4).

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
The spec lives in :mod:`vlgenrm.iteration.spec`: it types every stage's config with the
stage's own model, which imports from here.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, create_model

from vlgenrm.contracts.base import CAMEL, Contract
from vlgenrm.contracts.enums import ConditionStatus, ConditionType, FailureReason, IterationReason, Phase, Stage

#: Per-stage wall-clock limits in seconds, one field per ``Stage`` (its ``default_deadline_s``):
#: a new stage gets its field, and the CRD its ``spec.deadlines`` entry, from the enum alone.
StageDeadlines = create_model(
    "StageDeadlines",
    __config__=CAMEL,
    __doc__="Per-stage wall-clock limits in seconds; a stage past its deadline fails the Iteration.",
    **{stage.value: (int, Field(stage.default_deadline_s, ge=1, description=f"Seconds the {stage.value} stage may take.")) for stage in Stage},
)


class ShardRetry(BaseModel):
    """A shard past its first attempt: which attempt is out, and why the last one failed."""

    model_config = CAMEL
    attempt: int = Field(ge=2, description="The attempt now outstanding (or waiting for retryAt).")
    retry_at: datetime | None = Field(None, description="When the attempt is published; None once it has been.")
    last_reason: FailureReason | None = None
    last_message: str = ""


class StageProgress(BaseModel):
    """Shards done out of total, and attempts spent, for one stage."""

    model_config = CAMEL
    shards_done: int = Field(0, ge=0)
    shards_total: int = Field(0, ge=0)
    attempts: int = Field(0, ge=0, description="Tasks published for this stage, retries included.")
    retries: dict[int, ShardRetry] = Field(default_factory=dict, description="Shards beyond their first attempt, by shard number.")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Condition(BaseModel):
    """A Kubernetes condition (type, status, reason, message, lastTransitionTime)."""

    model_config = CAMEL
    type: ConditionType
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class IterationStatus(Contract):
    """What the operator has observed about an Iteration."""

    model_config = CAMEL
    phase: Phase = Phase.PENDING
    reason: IterationReason = Field(IterationReason.CREATED, description="Why the Iteration is in its phase.")
    message: str = Field("", description="What happened last, for a human.")
    resume_phase: Phase | None = Field(None, description="The phase a Suspended Iteration returns to.")
    progress: str = Field("", description="Shards done of the current stage, e.g. 'sampling 3/8' (a printer column).")
    stages: dict[Stage, StageProgress] = Field(default_factory=dict)
    conditions: list[Condition] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    checkpoint_uri: str | None = None
    observed_generation: int = Field(0, ge=0)
    start_time: datetime | None = None
    finish_time: datetime | None = None
