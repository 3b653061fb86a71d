"""The stage registry holds every stage's facts, and the enums carry theirs: nothing about a stage
can be defined in one place and missed in another."""

from __future__ import annotations

import ast
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tests.conftest import REPO
from tests.support.source import docstring_ids
from vlgenrm.contracts import PHASE_ORDER, Phase, ShardDone, ShardRef, Stage, StageDeadlines
from vlgenrm.iteration.machine import Observation, make_task
from vlgenrm.iteration.registry import STAGES
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.services import stage_workers

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def observation(**fields) -> Observation:
    return Observation(
        namespace="ns",
        name="it",
        dataset_shards=["s3://b/d/0.jsonl", "s3://b/d/1.jsonl"],
        eval_uri="s3://b/eval.jsonl",
        uri=lambda key: f"s3://b/{key}",
        base_model="s3://b/base",
        current_model="s3://b/base",
        **fields,
    )


def test_every_stage_has_one_definition_and_one_phase():
    assert list(STAGES) == list(Stage)
    assert [s.phase.stage for s in Stage] == list(Stage)
    assert {p for p in Phase if p.stage is not None} == {s.phase for s in Stage}
    assert PHASE_ORDER == (Phase.PENDING, *(s.phase for s in Stage), Phase.PROMOTING, Phase.SUCCEEDED)
    assert [p.next for p in PHASE_ORDER[:-1]] == list(PHASE_ORDER[1:]) and Phase.SUCCEEDED.next is Phase.SUCCEEDED


def test_phases_carry_their_facts():
    assert {p for p in Phase if p.is_terminal} == {Phase.SUCCEEDED, Phase.FAILED}
    assert {p for p in Phase if not p.is_running} == {Phase.SUCCEEDED, Phase.FAILED, Phase.SUSPENDED}
    assert [p.stages_done for p in PHASE_ORDER] == [0, 0, 1, 2, 3, 4, 5, 5]
    assert Phase.FAILED.stages_done == len(Stage) and Phase.SUSPENDED.stages_done == 0


def test_every_stage_has_a_deadline_field_named_by_it():
    assert set(StageDeadlines.model_fields) == {s.value for s in Stage}
    spec = IterationSpec.model_validate({"dataset": "d", "evalSet": "e", "baseModel": "b", "deadlines": {"training": 99}})
    assert STAGES[Stage.TRAINING].deadline_s(spec) == 99 and STAGES[Stage.EXPERTS].deadline_s(spec) == StageDeadlines().experts
    assert [StageDeadlines.model_fields[s.value].default for s in Stage] == [s.default_deadline_s for s in Stage] == [3600, 14400, 14400, 86400, 3600]


def test_every_consumer_group_is_a_service_package_and_services_use_the_registry():
    workers = stage_workers()
    assert list(workers) == list(dict.fromkeys(d.group for d in STAGES.values()))
    for group in workers:
        source = (REPO / "services" / group / "service.py").read_text()
        assert "GROUP = STAGES[" in source, f"services/{group} names its consumer group itself"


@pytest.mark.parametrize("stage", list(Stage))
def test_tasks_are_built_by_the_registry_and_fit_their_config_model(stage):
    spec = IterationSpec.model_validate({"dataset": "d", "evalSet": "e", "baseModel": "b", "genrm": {"batch_size": 2}})
    training = ShardRef(namespace="ns", iteration="it", stage=Stage.TRAINING, shard=0)
    obs = observation(done={Stage.TRAINING: {0: ShardDone(task_id="t", shard=training, outputs=[], artifacts={"checkpoint": "s3://b/ck"})}})
    task = make_task(spec, obs, stage, 0, 1, NOW)
    definition = STAGES[stage]
    definition.config.model_validate(task.config)
    assert task.shard_count == (2 if stage.sharded else 1) == definition.shard_count(obs)
    assert all(uri.startswith("s3://b/") for uri in task.inputs)


def test_a_builder_that_breaks_its_config_model_is_caught_before_publishing():
    broken = replace(STAGES[Stage.SAMPLING], build=lambda spec, obs, shard: ([], {"sampler": {"tau0": "high"}}))
    spec = IterationSpec.model_validate({"dataset": "d", "evalSet": "e", "baseModel": "b"})
    with pytest.raises(ValueError, match="model"):
        broken.task(spec, observation(), 0)


def test_markers_become_status_metrics_as_each_stage_defines():
    def marker(stage: Stage, shard: int, counts: dict, metrics: dict | None = None) -> ShardDone:
        ref = ShardRef(namespace="ns", iteration="it", stage=stage, shard=shard)
        return ShardDone(task_id=f"t{shard}", shard=ref, outputs=[], counts=counts, metrics=metrics or {})

    experts = STAGES[Stage.EXPERTS].metrics(
        {0: marker(Stage.EXPERTS, 0, {"kept": 3, "dropped": 1, "checkable_pairs": 2}), 1: marker(Stage.EXPERTS, 1, {"kept": 4, "checkable_pairs": 4})}
    )
    assert experts == {"experts.kept": 7, "experts.dropped": 1, "experts.checkable_pairs": 6, "experts.coverage": 0.75}
    training = STAGES[Stage.TRAINING].metrics({0: marker(Stage.TRAINING, 0, {"records": 5}, {"loss": 0.5})})
    assert training == {"training.records": 5, "training.loss": 0.5}
    evaluation = STAGES[Stage.EVALUATION].metrics({0: marker(Stage.EVALUATION, 0, {"examples": 9}, {"accuracy": 0.8})})
    assert evaluation == {"evaluation.examples": 9, "accuracy": 0.8}
    assert STAGES[Stage.RATIONALE].metrics({0: marker(Stage.RATIONALE, 0, {"n": 1}, {"ignored": 1.0})}) == {"rationale.n": 1}


PHASE_NAMES = {p.value for p in Phase}


def phase_literals(path) -> list[str]:
    """String constants in ``path`` that are a phase's name (docstrings and f-string text aside)."""
    tree = ast.parse(path.read_text())
    docstrings = docstring_ids(tree)
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in PHASE_NAMES and id(n) not in docstrings]


def test_no_phase_name_is_spelt_outside_the_contracts():
    roots = [REPO / "shared" / "vlgenrm", REPO / "services", REPO / "operators"]
    found = {str(p.relative_to(REPO)): hits for root in roots for p in sorted(root.rglob("*.py")) if "contracts" not in p.parts and (hits := phase_literals(p))}
    assert found == {}


def test_the_phase_literal_check_catches_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Succeeded in a docstring is fine."""\nif phase == "Succeeded":\n    pass\n')
    assert phase_literals(bad) == ["Succeeded"]
