"""Enumerations shared by the contracts: phases, stages, labels, reasons."""

from enum import StrEnum


class Choice(StrEnum):
    """One of the two responses of a pair."""

    A = "A"
    B = "B"


class HumanLabel(StrEnum):
    """The label that came with the data; ``unknown`` when annotators gave none."""

    A = "A"
    B = "B"
    UNKNOWN = "unknown"


class ClaimType(StrEnum):
    """What a response asserts about the image (§3.1)."""

    EXISTENCE = "existence"
    COUNT = "count"
    ATTRIBUTE = "attribute"
    TEXT = "text"
    NEGATED_EXISTENCE = "negated_existence"


class VerdictLabel(StrEnum):
    """An expert's finding about one claim."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    UNVERIFIABLE = "unverifiable"


class LabelSource(StrEnum):
    """Where a refined label came from (§3.2)."""

    AGREE = "agree"
    EXPERT = "expert"
    HUMAN = "human"
    EXPERT_OVERRIDE = "expert_override"
    CONFLICT = "conflict"


class Order(StrEnum):
    """Order in which the two responses were shown (position-bias debiasing)."""

    AB = "AB"
    BA = "BA"


class Stage(StrEnum):
    """Pipeline stages; each has a task topic ``<prefix>.tasks.<stage>``."""

    EXPERTS = "experts"
    RATIONALE = "rationale"
    SAMPLING = "sampling"
    TRAINING = "training"
    EVALUATION = "evaluation"


class EventType(StrEnum):
    """What a stage reports on the events topic."""

    SHARD_STARTED = "shard_started"
    SHARD_DONE = "shard_done"
    SHARD_FAILED = "shard_failed"


class FailureReason(StrEnum):
    """Why a shard failed, typed so the state machine can decide on retries."""

    INVALID_INPUT = "InvalidInput"
    MISSING_INPUT = "MissingInput"
    TRANSIENT = "Transient"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    INTERNAL = "Internal"


class DeadLetterReason(StrEnum):
    """Why a message was moved to the dead-letter topic instead of being processed."""

    UNDECODABLE = "undecodable"  # not UTF-8 JSON at all
    INVALID = "invalid"  # JSON, but not the expected shape
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    RETRIES_EXHAUSTED = "retries_exhausted"  # transient failures outlasted the retry budget
    HANDLER_FAILED = "handler_failed"  # the handler raised a permanent error


class Phase(StrEnum):
    """Phases of an Iteration (§4)."""

    PENDING = "Pending"
    ANNOTATING = "Annotating"
    RATIONALIZING = "Rationalizing"
    SAMPLING = "Sampling"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ConditionType(StrEnum):
    """Kubernetes-style conditions reported on an Iteration."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class IterationReason(StrEnum):
    """Why an Iteration is where it is: the reason of its conditions and of Failed."""

    CREATED = "Created"
    STAGE_RUNNING = "StageRunning"
    RETRYING = "Retrying"
    SUSPENDED = "Suspended"
    RESUMED = "Resumed"
    PROMOTED = "Promoted"
    NOT_PROMOTED = "NotPromoted"
    INVALID_SPEC = "InvalidSpec"
    MISSING_INPUT = "MissingInput"
    PREVIOUS_ITERATION_CYCLE = "PreviousIterationCycle"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
