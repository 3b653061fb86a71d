"""The base of the ``Iteration`` custom resource's spec and status (§4).

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
Stage configurations stay open dictionaries here; each stage's milestone types its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from vlgenrm.contracts.base import Contract
from vlgenrm.contracts.enums import ConditionStatus, ConditionType, Phase, Stage

_CAMEL = ConfigDict(
    alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    populate_by_name=True,
    extra="forbid",
)


class StageDeadlines(BaseModel):
    """Per-stage wall-clock limits in seconds; a stage past its deadline fails the Iteration."""

    model_config = _CAMEL
    experts: int = Field(3600, ge=1)
    rationale: int = Field(4 * 3600, ge=1)
    sampling: int = Field(4 * 3600, ge=1)
    training: int = Field(24 * 3600, ge=1)
    evaluation: int = Field(3600, ge=1)


class IterationSpec(Contract):
    """What one iteration of the method should do."""

    model_config = _CAMEL
    dataset: str = Field(description="Dataset name in the store (datasets/<name>/manifest.json).")
    eval_set: str = Field(description="Held-out dataset for evaluation.")
    base_model: str | None = Field(None, description="Model path or URI to start from.")
    previous_iteration: str | None = Field(None, description="Iteration whose checkpoint and hard pool to continue from.")
    index: int = Field(0, ge=0, description="t: the iteration's position in its chain.")
    experts: dict[str, Any] = Field(default_factory=dict)
    rationale: dict[str, Any] = Field(default_factory=dict)
    sampling: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    deadlines: StageDeadlines = Field(default_factory=StageDeadlines)
    backoff_limit: int = Field(3, ge=0, description="Retries per shard before the Iteration fails.")
    suspend: bool = False


class StageProgress(BaseModel):
    """Shards done out of total, and attempts spent, for one stage."""

    model_config = _CAMEL
    shards_done: int = Field(0, ge=0)
    shards_total: int = Field(0, ge=0)
    attempts: int = Field(0, ge=0)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Condition(BaseModel):
    """A Kubernetes condition (type, status, reason, message, lastTransitionTime)."""

    model_config = _CAMEL
    type: ConditionType
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class IterationStatus(Contract):
    """What the operator has observed about an Iteration."""

    model_config = _CAMEL
    phase: Phase = Phase.PENDING
    stages: dict[Stage, StageProgress] = Field(default_factory=dict)
    conditions: list[Condition] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    checkpoint_uri: str | None = None
    observed_generation: int = Field(0, ge=0)
    start_time: datetime | None = None
    finish_time: datetime | None = None
