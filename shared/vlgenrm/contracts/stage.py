"""Messages on the Kafka topics (§4): stage tasks, stage events and dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from vlgenrm.contracts.base import Contract, utcnow
from vlgenrm.contracts.data import Id
from vlgenrm.contracts.enums import DeadLetterReason, EventType, FailureReason, Stage

K8sName = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)


class ShardRef(Contract):
    """Identifies one shard of one stage of one Iteration; also the Kafka key."""

    namespace: str = K8sName
    iteration: str = K8sName
    stage: Stage
    shard: int = Field(ge=0)

    @property
    def key(self) -> str:
        """``<namespace>/<iteration>/<stage>/<shard>``: per-key ordering keeps a shard's messages in order."""
        return f"{self.namespace}/{self.iteration}/{self.stage.value}/{self.shard:05d}"


class StageTask(Contract):
    """Work for a stage service: process one input shard, write one output shard."""

    task_id: Id
    shard: ShardRef
    shard_count: int = Field(ge=1)
    attempt: int = Field(1, ge=1)
    iteration_index: int = Field(0, ge=0, description="t in tau_t and the lineage.")
    inputs: list[str] = Field(description="URIs of the input objects.")
    output_prefix: str = Field(description="Store prefix the stage writes under.")
    config: dict[str, Any] = Field(default_factory=dict, description="Stage config from the Iteration spec.")
    created_at: datetime = Field(default_factory=utcnow)


class StageEvent(Contract):
    """A stage's report about a shard: started, done (with counts) or failed (with a reason)."""

    event_id: Id
    task_id: Id
    shard: ShardRef
    attempt: int = Field(1, ge=1)
    type: EventType
    output_uri: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(default_factory=dict, description="Named URIs the stage wrote, e.g. the checkpoint.")
    promote: bool | None = Field(None, description="Evaluation shards: the promotion rule's decision (None for other stages).")
    reason: FailureReason | None = None
    message: str = ""
    at: datetime = Field(default_factory=utcnow)


class DeadLetter(Contract):
    """A message that could not be processed, kept whole with the reason and its origin."""

    # Raw bytes in Python, base64 in JSON: the original may not even be text.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    reason: DeadLetterReason
    detail: str = Field(description="What exactly was wrong, for a human.")
    original: bytes = Field(description="The original message bytes (base64 in JSON).")
    original_key: str | None = None
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    group: str
    attempts: int = Field(1, ge=1)
    failed_at: datetime = Field(default_factory=utcnow)


class ShardDone(Contract):
    """The completion marker of one stage shard: written after its outputs, before its event.

    The store is the source of truth for what is done: a marker exists only when every output
    it names exists. It holds no timestamp, so a repeated run writes the same bytes.
    """

    task_id: Id
    shard: ShardRef
    outputs: list[str] = Field(description="Store keys the shard wrote.")
    counts: dict[str, int] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict, description="Per-item errors (item id -> reason); the shard still completed.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Stage metrics, e.g. final loss or accuracy.")
    artifacts: dict[str, str] = Field(default_factory=dict, description="Named URIs the stage wrote itself, e.g. the checkpoint.")
    promote: bool | None = Field(None, description="Evaluation shards: the promotion rule's decision (None for other stages).")
