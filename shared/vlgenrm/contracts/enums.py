"""Enumerations shared by the contracts: phases, stages, labels, reasons."""

from __future__ import annotations

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

    @property
    def phase(self) -> Phase:
        """The Iteration phase in which this stage runs."""
        return _STAGE_PHASE[self]

    @property
    def sharded(self) -> bool:
        """One task per dataset shard (else one task for the whole Iteration)."""
        return self not in (Stage.TRAINING, Stage.EVALUATION)

    @property
    def default_deadline_s(self) -> int:
        """Seconds the stage may take unless ``spec.deadlines`` says otherwise."""
        return _STAGE_DEADLINE_S[self]


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

    @property
    def stage(self) -> Stage | None:
        """The stage that runs in this phase (None outside the stage phases)."""
        return _PHASE_STAGE.get(self)

    @property
    def is_terminal(self) -> bool:
        """Nothing happens to an Iteration after this phase."""
        return self in (Phase.SUCCEEDED, Phase.FAILED)

    @property
    def is_running(self) -> bool:
        """The Iteration progresses (neither finished nor suspended)."""
        return not self.is_terminal and self is not Phase.SUSPENDED

    @property
    def stages_done(self) -> int:
        """Stages finished on the way to this phase (what a progress bar shows): each stage's
        phase counts the ones before it; Promoting and the terminal phases all of them."""
        if self.stage is not None:
            return list(Stage).index(self.stage)
        return 0 if self in (Phase.PENDING, Phase.SUSPENDED) else len(Stage)

    @property
    def next(self) -> Phase:
        """The phase that follows when this one's work is done (Pending -> each stage's phase in
        order -> Promoting -> Succeeded)."""
        return PHASE_ORDER[PHASE_ORDER.index(self) + 1] if self in PHASE_ORDER[:-1] else self


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


_STAGE_PHASE: dict[Stage, Phase] = {
    Stage.EXPERTS: Phase.ANNOTATING,
    Stage.RATIONALE: Phase.RATIONALIZING,
    Stage.SAMPLING: Phase.SAMPLING,
    Stage.TRAINING: Phase.TRAINING,
    Stage.EVALUATION: Phase.EVALUATING,
}
_STAGE_DEADLINE_S: dict[Stage, int] = {
    Stage.EXPERTS: 3600,
    Stage.RATIONALE: 4 * 3600,
    Stage.SAMPLING: 4 * 3600,
    Stage.TRAINING: 24 * 3600,
    Stage.EVALUATION: 3600,
}
_PHASE_STAGE: dict[Phase, Stage] = {phase: stage for stage, phase in _STAGE_PHASE.items()}
#: The phases an Iteration passes through when nothing fails: the stages in declaration order.
PHASE_ORDER: tuple[Phase, ...] = (Phase.PENDING, *(stage.phase for stage in Stage), Phase.PROMOTING, Phase.SUCCEEDED)
