"""The Iteration state machine against a simulated world: random completion orders, failures
below and above backoffLimit, duplicated and reordered events, operator restarts, suspend,
deadlines. Properties: never skips a stage, never succeeds with a shard missing, duplicate and
out-of-order events are harmless, and a shard failing past backoffLimit fails the Iteration."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlgenrm.contracts import (
    PHASE_ORDER,
    ConditionStatus,
    ConditionType,
    EventType,
    FailureReason,
    IterationReason,
    IterationStatus,
    Phase,
    ShardDone,
    Stage,
    StageEvent,
    StageTask,
)
from vlgenrm.iteration.machine import Announce, Observation, Promote, chain_cycle, reconcile
from vlgenrm.iteration.spec import IterationSpec

T0 = datetime(2026, 11, 26, tzinfo=UTC)
STAGES = list(Stage)  # in pipeline order


def spec(**kw) -> IterationSpec:
    return IterationSpec.model_validate({"dataset": "synth", "evalSet": "synth", "baseModel": "file:///base", "backoffLimit": 2} | kw)


@dataclass
class World:
    """Stage services simulated: tasks complete (marker) or fail (event) in any order."""

    shards: int
    fail_plan: dict[tuple[Stage, int], int] = field(default_factory=dict)  # failures before success
    promote: bool = True
    queue: list[StageTask] = field(default_factory=list)
    done: dict[Stage, dict[int, ShardDone]] = field(default_factory=dict)
    failures: list[StageEvent] = field(default_factory=list)
    published: list[StageTask] = field(default_factory=list)

    def expected(self, stage: Stage) -> int:
        return 1 if stage in (Stage.TRAINING, Stage.EVALUATION) else self.shards

    def observation(self) -> Observation:
        return Observation(
            namespace="ns",
            name="it",
            dataset_shards=[f"file:///data/{i:05d}.jsonl" for i in range(self.shards)],
            eval_uri="file:///eval.jsonl",
            uri=lambda key: f"file:///store/{key}",
            base_model="file:///base",
            current_model="file:///base",
            done={s: dict(m) for s, m in self.done.items()},
            failures=list(self.failures),
        )

    def take(self, tasks: list[StageTask]) -> None:
        self.published += tasks
        self.queue += tasks

    def process(self, task: StageTask) -> None:
        key = (task.shard.stage, task.shard.shard)
        if self.fail_plan.get(key, 0) > 0:
            self.fail_plan[key] -= 1
            self.failures.append(
                StageEvent(
                    event_id=f"{task.task_id}/f",
                    task_id=task.task_id,
                    shard=task.shard,
                    attempt=task.attempt,
                    type=EventType.SHARD_FAILED,
                    reason=FailureReason.TRANSIENT,
                    message="boom",
                )
            )
            return
        evaluation = task.shard.stage is Stage.EVALUATION
        metrics = {"accuracy": 0.75} if evaluation else {}
        artifacts = {"checkpoint": "file:///store/checkpoints/ns/it/model"} if task.shard.stage is Stage.TRAINING else {}
        self.done.setdefault(task.shard.stage, {})[task.shard.shard] = ShardDone(
            task_id=task.task_id,
            shard=task.shard,
            outputs=[],
            counts={"items": 2},
            metrics=metrics,
            artifacts=artifacts,
            promote=self.promote if evaluation else None,
        )


def run(
    world: World, sp: IterationSpec, rng: random.Random, *, max_steps: int = 400, restarts: bool = False, chaos: bool = True
) -> tuple[IterationStatus, list[Phase], list]:
    status, now, phases, actions = IterationStatus(), T0, [], []
    for _ in range(max_steps):
        r = reconcile(sp, status, world.observation(), now)
        for task in r.tasks:
            assert task.shard.shard not in world.done.get(task.shard.stage, {}), "published a shard that is done"
            # Never skips a stage: a stage's task goes out only when every earlier stage is complete.
            for earlier in STAGES[: STAGES.index(task.shard.stage)]:
                assert len(world.done.get(earlier, {})) == world.expected(earlier), f"{task.shard.stage} published before {earlier} finished"
        world.take(r.tasks)
        actions += r.actions
        # An operator restart loses the reconciliation before the status is saved: before
        # its tasks went out, or after (they then go out twice, which must be harmless).
        crash = rng.random() if restarts else 1.0
        if crash < 0.1:
            world.queue = world.queue[: len(world.queue) - len(r.tasks)]
        elif crash >= 0.2:
            status = r.status
        phases.append(status.phase)
        if status.phase in (Phase.SUCCEEDED, Phase.FAILED):
            return status, phases, actions
        rng.shuffle(world.queue)
        for _ in range(rng.randint(0, len(world.queue))):
            world.process(world.queue.pop())
        if chaos and world.failures:
            if rng.random() < 0.3:
                world.failures.append(rng.choice(world.failures))  # duplicate delivery
            rng.shuffle(world.failures)  # out of order
        now += timedelta(seconds=rng.choice([0, 1, 15, 60]))
    raise AssertionError(f"no terminal phase after {max_steps} steps: {status.phase} {status.message}")


def assert_monotonic(phases: list[Phase]) -> None:
    ranks = [PHASE_ORDER.index(p) for p in phases if p in PHASE_ORDER]
    assert ranks == sorted(ranks), f"phases went backwards: {phases}"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    shards=st.integers(1, 4),
    seed=st.integers(0, 10_000),
    failures=st.dictionaries(st.tuples(st.sampled_from(STAGES), st.integers(0, 3)), st.integers(1, 2), max_size=4),
    restarts=st.booleans(),
)
def test_random_worlds_succeed_in_stage_order_with_every_shard_done(shards, seed, failures, restarts):
    world = World(shards, fail_plan={k: v for k, v in failures.items() if k[1] < shards})
    status, phases, actions = run(world, spec(backoffLimit=2), random.Random(seed), restarts=restarts)
    assert status.phase is Phase.SUCCEEDED, status.message
    assert_monotonic(phases)
    for stage in STAGES:
        expected = world.expected(stage)
        assert sorted(world.done.get(stage, {})) == list(range(expected)), f"{stage} finished with shards missing"
        assert status.stages[stage].shards_done == status.stages[stage].shards_total == expected
    assert [a for a in actions if isinstance(a, Promote)], "a promoting evaluation must promote"
    assert status.checkpoint_uri == "file:///store/checkpoints/ns/it/model" and status.metrics["accuracy"] == 0.75
    ready = {c.type: c for c in status.conditions}[ConditionType.READY]
    assert ready.status is ConditionStatus.TRUE and ready.reason == IterationReason.PROMOTED.value


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(stage=st.sampled_from(STAGES), seed=st.integers(0, 10_000), limit=st.integers(0, 3))
def test_a_shard_failing_past_the_backoff_limit_fails_the_iteration(stage, seed, limit):
    world = World(2, fail_plan={(stage, 0): limit + 1})
    status, phases, _ = run(world, spec(backoffLimit=limit), random.Random(seed))
    assert status.phase is Phase.FAILED and status.reason is IterationReason.BACKOFF_LIMIT_EXCEEDED
    assert f"{stage.value} shard 0 failed {limit + 1} time(s)" in status.message
    attempts = [t.attempt for t in world.published if t.shard.stage is stage and t.shard.shard == 0]
    assert max(attempts) == limit + 1
    assert_monotonic(phases)


def test_retries_wait_for_their_backoff_and_stale_failures_are_ignored():
    world = World(1, fail_plan={(Stage.EXPERTS, 0): 1})
    sp = spec()
    r = reconcile(sp, IterationStatus(), world.observation(), T0)
    [task] = r.tasks
    world.process(task)  # attempt 1 fails
    r2 = reconcile(sp, r.status, world.observation(), T0 + timedelta(seconds=1))
    assert r2.tasks == [] and r2.status.stages[Stage.EXPERTS].retries[0].attempt == 2
    assert r2.status.reason is IterationReason.RETRYING
    degraded = {c.type: c for c in r2.status.conditions}[ConditionType.DEGRADED]
    assert degraded.status is ConditionStatus.TRUE
    r3 = reconcile(sp, r2.status, world.observation(), T0 + timedelta(seconds=12))  # past the 10 s backoff
    [retry] = r3.tasks
    assert retry.attempt == 2 and retry.task_id.endswith(".2")
    r4 = reconcile(sp, r3.status, replace(world.observation(), failures=world.failures * 3), T0 + timedelta(seconds=13))
    assert r4.tasks == [] and r4.status.phase is Phase.ANNOTATING  # the old failure again: nothing new


def test_suspend_publishes_nothing_and_resume_republishes_what_is_not_done():
    world = World(3)
    sp = spec()
    r = reconcile(sp, IterationStatus(), world.observation(), T0)
    world.process(r.tasks[0])
    suspended = reconcile(spec(suspend=True), r.status, world.observation(), T0 + timedelta(seconds=5))
    assert suspended.status.phase is Phase.SUSPENDED and suspended.tasks == []
    assert {c.type: c for c in suspended.status.conditions}[ConditionType.SUSPENDED].status is ConditionStatus.TRUE
    again = reconcile(spec(suspend=True), suspended.status, world.observation(), T0 + timedelta(seconds=6))
    assert again.tasks == [] and again.status.phase is Phase.SUSPENDED
    resumed = reconcile(sp, again.status, world.observation(), T0 + timedelta(seconds=7))
    assert resumed.status.phase is Phase.ANNOTATING and sorted(t.shard.shard for t in resumed.tasks) == [1, 2]


def test_a_stage_past_its_deadline_fails_with_the_reason():
    sp = spec(deadlines={"experts": 60})
    world = World(2)
    r = reconcile(sp, IterationStatus(), world.observation(), T0)
    late = reconcile(sp, r.status, world.observation(), T0 + timedelta(seconds=61))
    assert late.status.phase is Phase.FAILED and late.status.reason is IterationReason.DEADLINE_EXCEEDED
    assert "0/2 shards done" in late.status.message
    assert any(isinstance(a, Announce) and a.warning for a in late.actions)


def test_missing_dataset_fails_at_once_and_an_unpromoted_model_still_succeeds():
    world = World(0)
    r = reconcile(spec(), IterationStatus(), world.observation(), T0)
    assert r.status.phase is Phase.FAILED and r.status.reason is IterationReason.MISSING_INPUT
    world = World(1, promote=False)
    status, _, actions = run(world, spec(), random.Random(0))
    assert status.phase is Phase.SUCCEEDED and status.reason is IterationReason.NOT_PROMOTED
    assert not [a for a in actions if isinstance(a, Promote)]


def test_an_operator_restarted_after_everything_finished_catches_up_in_one_pass():
    """Markers of all stages already in the store: advance through every stage at once,
    publishing nothing that is done."""
    world = World(2)
    status, _, _ = run(world, spec(), random.Random(1))
    r = reconcile(spec(), IterationStatus(), world.observation(), T0)
    assert r.status.phase is Phase.SUCCEEDED and r.tasks == []


def test_tasks_carry_the_previous_outputs_and_the_typed_config():
    world = World(2)
    sp = spec(training={"batch_size": 4, "learning_rate": 1e-4}, sampling={"tau0": 0.5}, index=1)
    status, _, _ = run(world, sp, random.Random(2))
    by_stage = {t.shard.stage: t for t in world.published if t.shard.shard == 1 or t.shard.stage in (Stage.TRAINING, Stage.EVALUATION)}
    assert by_stage[Stage.EXPERTS].inputs == ["file:///data/00001.jsonl"]
    assert by_stage[Stage.RATIONALE].inputs == [
        "file:///store/iterations/ns/it/experts/00001.jsonl",
        "file:///store/iterations/ns/it/experts/reports/00001.jsonl",
    ]
    assert by_stage[Stage.SAMPLING].config["model"] == "file:///base" and by_stage[Stage.SAMPLING].config["sampler"]["tau0"] == 0.5
    assert by_stage[Stage.SAMPLING].iteration_index == 1
    training = by_stage[Stage.TRAINING]
    assert training.inputs == [f"file:///store/iterations/ns/it/sampling/{i:05d}.jsonl" for i in range(2)]
    assert training.config["training"]["batch_size"] == 4 and training.config["base_model"] == "file:///base"
    assert by_stage[Stage.EVALUATION].config["model"] == "file:///store/checkpoints/ns/it/model"
    # the services accept what the machine sends
    from vlgenrm.sampling.config import SamplingTaskSettings
    from vlgenrm.training.config import TrainingTaskSettings

    TrainingTaskSettings.model_validate(training.config)
    SamplingTaskSettings.model_validate(by_stage[Stage.SAMPLING].config)


def test_spec_needs_a_model_to_start_from():
    with pytest.raises(ValueError, match="set baseModel or previousIteration"):
        IterationSpec.model_validate({"dataset": "d", "evalSet": "e"})


def test_a_previous_iteration_chain_that_loops_back_is_a_cycle():
    def previous(chain: dict[str, str]):
        return lambda n: chain.get(n)

    assert chain_cycle("a", previous({"a": "b", "b": "a"})) == ["a", "b", "a"]
    assert chain_cycle("a", previous({"a": "b", "b": "c", "c": "a"})) == ["a", "b", "c", "a"]
    assert chain_cycle("a", previous({"a": "a"})) == ["a", "a"]
    assert chain_cycle("a", previous({"a": "b", "b": "c"})) is None  # ends at c: a waits for it
    assert chain_cycle("a", previous({"a": "b", "b": "c", "c": "b"})) is None  # b and c fail on their own; a then fails as usual
    assert chain_cycle("a", previous({})) is None
