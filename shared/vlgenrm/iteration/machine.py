"""The Iteration state machine (§4): one pure function from (spec, status, what was observed,
now) to (new status, actions). The kopf operator and the local driver are shells around it:
they gather observations, execute the actions, persist the status.

Observations are recounted from completion markers in the store (the store is the truth), so
a lost, duplicated or reordered event can delay progress but never make it wrong; failure
events only matter for the attempt that is outstanding. Every transition is idempotent: a
shell that crashes after publishing tasks but before saving the status publishes them again,
and the stage services answer a repeated task from its marker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vlgenrm.contracts import (
    Condition,
    ConditionStatus,
    ConditionType,
    FailureReason,
    IterationReason,
    IterationStatus,
    Phase,
    ShardDone,
    ShardRef,
    ShardRetry,
    Stage,
    StageEvent,
    StageProgress,
    StageTask,
)
from vlgenrm.iteration.registry import STAGES
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.stages import part_key, stage_prefix

# --------------------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class Observation:
    """What the shell saw: the dataset, markers in the store, failure events, the models."""

    namespace: str
    name: str
    dataset_shards: list[str]  # URIs of the training split's Example shards (empty: missing)
    eval_uri: str | None  # the benchmark file of spec.evalSet
    uri: Callable[[str], str]  # store key -> URI
    base_model: str | None  # resolved spec.baseModel
    current_model: str | None  # M_t: the previous iteration's checkpoint, else the base model
    done: dict[Stage, dict[int, ShardDone]] = field(default_factory=dict)
    failures: list[StageEvent] = field(default_factory=list)
    hard_pool: list[str] = field(default_factory=list)  # the previous iteration's hard-pool shards


@dataclass(frozen=True)
class PublishTask:
    task: StageTask


@dataclass(frozen=True)
class Promote:
    """Write the promotion pointer from the evaluation stage's decision object."""

    decision_key: str


@dataclass(frozen=True)
class Announce:
    """A Kubernetes Event (or a log line in the local driver) about a transition."""

    reason: IterationReason
    message: str
    warning: bool = False


Action = PublishTask | Promote | Announce


@dataclass
class Reconciliation:
    status: IterationStatus
    actions: list[Action] = field(default_factory=list)

    @property
    def tasks(self) -> list[StageTask]:
        return [a.task for a in self.actions if isinstance(a, PublishTask)]


# --------------------------------------------------------------------------- the machine


def retry_delay(attempt: int) -> timedelta:
    """Backoff before attempt ``attempt`` (2, 3, ...): 10 s, 20 s, 40 s ... capped at 5 min."""
    return timedelta(seconds=min(300, 10 * 2 ** max(0, attempt - 2)))


def reconcile(spec: IterationSpec, status: IterationStatus, obs: Observation, now: datetime, generation: int = 1) -> Reconciliation:
    """The next status and what to do to get there."""
    r = Reconciliation(status.model_copy(deep=True))
    s = r.status
    s.observed_generation = generation
    if s.phase.is_terminal:
        return r
    if s.start_time is None:
        s.start_time = now
    _aggregate_metrics(s, obs)
    if spec.suspend and s.phase is not Phase.SUSPENDED:
        s.resume_phase, s.phase = s.phase, Phase.SUSPENDED
        _set(r, IterationReason.SUSPENDED, "suspended by spec.suspend; in-flight shards may still finish", now)
        return r
    if s.phase is Phase.SUSPENDED:
        if spec.suspend:
            return r
        s.phase, s.resume_phase = s.resume_phase or Phase.PENDING, None
        _set(r, IterationReason.RESUMED, f"resumed in {s.phase.value}", now)
        if s.phase.stage is not None:
            _publish_outstanding(r, spec, obs, s.phase.stage, now, resume=True)
    if s.phase is Phase.PENDING:
        problem = _missing_inputs(spec, obs)
        if problem:
            return fail(r, IterationReason.MISSING_INPUT, problem, now)
        _enter(r, spec, obs, Phase.PENDING.next, now)
    # Several stages may complete in one pass when their markers are already in the store
    # (an operator restarted after the services finished): advance as far as the truth allows.
    while (stage := s.phase.stage) is not None:
        progress = s.stages[stage]
        done = obs.done.get(stage, {})
        progress.shards_done = sum(1 for i in range(progress.shards_total) if i in done)
        s.progress = f"{stage.value} {progress.shards_done}/{progress.shards_total}"
        if progress.shards_done == progress.shards_total:
            progress.finished_at = progress.finished_at or now
            nxt = s.phase.next
            if nxt.stage is None:  # past the last stage: Promoting
                s.phase = Phase.PROMOTING
                break
            _enter(r, spec, obs, nxt, now)
            continue
        if not _handle_failures(r, spec, obs, stage, now):
            return r  # failed
        deadline = STAGES[stage].deadline_s(spec)
        if progress.started_at is not None and now - progress.started_at > timedelta(seconds=deadline):
            return fail(
                r,
                IterationReason.DEADLINE_EXCEEDED,
                f"{stage.value} ran past its deadline of {deadline} s ({progress.shards_done}/{progress.shards_total} shards done)",
                now,
            )
        _publish_due_retries(r, spec, obs, stage, now)
        break
    if s.phase is Phase.PROMOTING:
        _promote(r, obs, now)
    return r


# --------------------------------------------------------------------------- transitions


def _enter(r: Reconciliation, spec: IterationSpec, obs: Observation, phase: Phase, now: datetime) -> None:
    s = r.status
    s.phase = phase
    stage = phase.stage
    assert stage is not None, phase
    total = STAGES[stage].shard_count(obs)
    s.stages[stage] = StageProgress(shards_total=total, started_at=now)
    _set(r, IterationReason.STAGE_RUNNING, f"{stage.value}: {total} shard(s) published", now)
    _publish_outstanding(r, spec, obs, stage, now)


def _publish_outstanding(r: Reconciliation, spec: IterationSpec, obs: Observation, stage: Stage, now: datetime, resume: bool = False) -> None:
    """Publish every shard not done, at its outstanding attempt (already-published retries
    again only when resuming: a suspended Iteration may have missed them)."""
    progress = r.status.stages[stage]
    done = obs.done.get(stage, {})
    for shard in range(progress.shards_total):
        if shard in done:
            continue
        retry = progress.retries.get(shard)
        if retry is not None and retry.retry_at is not None and not resume:
            continue  # waits for its backoff
        attempt = retry.attempt if retry else 1
        if retry is not None:
            retry.retry_at = None
        r.actions.append(PublishTask(make_task(spec, obs, stage, shard, attempt, now)))
        progress.attempts += 1


def _handle_failures(r: Reconciliation, spec: IterationSpec, obs: Observation, stage: Stage, now: datetime) -> bool:
    """Schedule retries for failed outstanding attempts; False once one exhausts backoffLimit."""
    progress = r.status.stages[stage]
    done = obs.done.get(stage, {})
    for event in sorted(obs.failures, key=lambda e: (e.shard.shard, e.attempt)):
        if event.shard.stage is not stage or event.shard.iteration != obs.name or event.shard.namespace != obs.namespace:
            continue
        shard = event.shard.shard
        if shard in done or shard >= progress.shards_total:
            continue
        retry = progress.retries.get(shard)
        outstanding = retry.attempt if retry else 1
        if event.attempt != outstanding or (retry is not None and retry.retry_at is not None):
            continue  # stale, duplicate, or already scheduled
        if outstanding > spec.backoff_limit:
            reason = event.reason.value if event.reason else FailureReason.INTERNAL.value
            fail(
                r,
                IterationReason.BACKOFF_LIMIT_EXCEEDED,
                f"{stage.value} shard {shard} failed {outstanding} time(s), backoffLimit {spec.backoff_limit}: {reason}: {event.message}",
                now,
            )
            return False
        nxt = outstanding + 1
        progress.retries[shard] = ShardRetry(attempt=nxt, retry_at=now + retry_delay(nxt), last_reason=event.reason, last_message=event.message[:500])
        _set(r, IterationReason.RETRYING, f"{stage.value} shard {shard} attempt {outstanding} failed ({event.message[:200]}); retrying", now, warning=True)
    return True


def _publish_due_retries(r: Reconciliation, spec: IterationSpec, obs: Observation, stage: Stage, now: datetime) -> None:
    progress = r.status.stages[stage]
    done = obs.done.get(stage, {})
    for shard, retry in sorted(progress.retries.items()):
        if shard not in done and retry.retry_at is not None and retry.retry_at <= now:
            retry.retry_at = None
            r.actions.append(PublishTask(make_task(spec, obs, stage, shard, retry.attempt, now)))
            progress.attempts += 1


def _promote(r: Reconciliation, obs: Observation, now: datetime) -> None:
    s = r.status
    evaluation = obs.done.get(Stage.EVALUATION, {}).get(0)
    training = obs.done.get(Stage.TRAINING, {}).get(0)
    s.checkpoint_uri = training.artifacts.get("checkpoint") if training else None
    promote = bool(evaluation and evaluation.promote)
    s.phase, s.finish_time, s.progress = Phase.SUCCEEDED, now, "done"
    if promote and evaluation is not None:
        ref = ShardRef(namespace=obs.namespace, iteration=obs.name, stage=Stage.EVALUATION, shard=0)
        r.actions.append(Promote(part_key(ref, "decision", "json")))
        _set(r, IterationReason.PROMOTED, f"promoted {s.checkpoint_uri} (accuracy {s.metrics.get('accuracy', float('nan')):.4f})", now)
    else:
        _set(r, IterationReason.NOT_PROMOTED, f"succeeded; {s.checkpoint_uri} not promoted (accuracy {s.metrics.get('accuracy', float('nan')):.4f})", now)


def chain_cycle(name: str, previous_of: Callable[[str], str | None]) -> list[str] | None:
    """The previousIteration chain from ``name`` back to ``name`` (``[a, b, a]``) when it is a
    cycle: every Iteration in it waits for another one to succeed, so none can ever start.
    None when the chain ends, or loops without passing ``name`` (that loop's own members fail)."""
    path, seen = [name], {name}
    while (previous := previous_of(path[-1])) is not None:
        path.append(previous)
        if previous == name:
            return path
        if previous in seen:
            return None
        seen.add(previous)
    return None


def fail(r: Reconciliation, reason: IterationReason, message: str, now: datetime) -> Reconciliation:
    r.status.phase, r.status.finish_time = Phase.FAILED, now
    _set(r, reason, message, now, warning=True)
    return r


def _missing_inputs(spec: IterationSpec, obs: Observation) -> str | None:
    if not obs.dataset_shards:
        return f"dataset {spec.dataset!r} has no training shards in the store"
    if obs.eval_uri is None:
        return f"eval set {spec.eval_set!r} was not found in the store"
    if obs.current_model is None or obs.base_model is None:
        return "no model to start from: set baseModel, or previousIteration to a succeeded Iteration"
    return None


# --------------------------------------------------------------------------- tasks


def make_task(spec: IterationSpec, obs: Observation, stage: Stage, shard: int, attempt: int, now: datetime) -> StageTask:
    """The task of one shard: inputs from the previous stage's outputs, config from the spec
    (the stage registry builds both)."""
    ref = ShardRef(namespace=obs.namespace, iteration=obs.name, stage=stage, shard=shard)
    definition = STAGES[stage]
    inputs, config = definition.task(spec, obs, shard)
    return StageTask(
        task_id=f"{obs.namespace}.{obs.name}.{stage.value}.{shard:05d}.{attempt}",
        shard=ref,
        shard_count=definition.shard_count(obs),
        attempt=attempt,
        iteration_index=spec.index,
        inputs=inputs,
        output_prefix=stage_prefix(ref) + "/",
        config=config,
        created_at=now,
    )


# --------------------------------------------------------------------------- status details


def _aggregate_metrics(s: IterationStatus, obs: Observation) -> None:
    """Each stage's metrics as its registry entry derives them from its markers."""
    for stage, markers in obs.done.items():
        s.metrics.update(STAGES[stage].metrics(markers))


def _set(r: Reconciliation, reason: IterationReason, message: str, now: datetime, warning: bool = False) -> None:
    """Phase reason and the four conditions, changed only when their status/reason change."""
    s = r.status
    s.reason, s.message = reason, message
    running = s.phase.is_running
    wanted = {
        ConditionType.READY: (s.phase is Phase.SUCCEEDED, reason),
        ConditionType.PROGRESSING: (running, reason),
        ConditionType.DEGRADED: (s.phase is Phase.FAILED or reason is IterationReason.RETRYING, reason),
        ConditionType.SUSPENDED: (s.phase is Phase.SUSPENDED, reason),
    }
    by_type = {c.type: c for c in s.conditions}
    for ctype, (true, why) in wanted.items():
        status = ConditionStatus.TRUE if true else ConditionStatus.FALSE
        old = by_type.get(ctype)
        if old is None or old.status is not status or old.reason != why.value:
            by_type[ctype] = Condition(
                type=ctype, status=status, reason=why.value, message=message[:1000], last_transition_time=now, observed_generation=s.observed_generation
            )
    s.conditions = [by_type[t] for t in ConditionType]
    r.actions.append(Announce(reason, message, warning))
