"""Contracts: versioned, strict, round-trippable; exported schemas match the code."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tests.conftest import REPO
from vlgenrm.contracts import (
    CONTRACTS,
    Claim,
    ClaimType,
    Example,
    ImageRef,
    IterationStatus,
    LabelSource,
    Phase,
    RefinedPair,
    ShardRef,
    Stage,
    StageTask,
)
from vlgenrm.contracts.schemas import export_schemas, stale_schemas

REQUIRED = {
    "Example",
    "Claim",
    "ExpertVerdict",
    "ExpertReport",
    "RefinedPair",
    "RationaleCandidate",
    "ScoredCandidate",
    "TrainingRecord",
    "StageTask",
    "StageEvent",
    "DeadLetter",
    "IterationStatus",
}
IMAGE = ImageRef(key="images/" + "a" * 64 + ".png", sha256="a" * 64)


def example() -> Example:
    return Example(id="ex-1", image=IMAGE, question="What is red?", response_a="A red circle.", response_b="A blue cat.", human_label="A")


def test_every_required_contract_exists_and_is_versioned():
    assert REQUIRED <= set(CONTRACTS)
    for name, model in CONTRACTS.items():
        assert "schema_version" in model.model_fields, name
        assert model.SUPPORTED_VERSIONS[0] == model.model_fields["schema_version"].default


def test_round_trip_through_json_bytes():
    task = StageTask(
        task_id="t",
        shard=ShardRef(namespace="ns", iteration="it", stage=Stage.EXPERTS, shard=7),
        shard_count=8,
        inputs=["s3://b/datasets/x/shards/00007.jsonl"],
        output_prefix="iterations/ns/it/experts/",
    )
    assert StageTask.from_json_bytes(task.to_json_bytes()) == task
    assert task.shard.key == "ns/it/experts/00007"


def test_unknown_fields_and_bad_values_are_rejected():
    with pytest.raises(ValidationError):
        Example.model_validate(example().model_dump() | {"surprise": 1})
    with pytest.raises(ValidationError):
        Claim(id="c", response="A", type=ClaimType.COUNT, subject="dog")  # a count claim without a count
    with pytest.raises(ValidationError):
        ShardRef(namespace="Not_A_K8s_Name", iteration="it", stage=Stage.EXPERTS, shard=0)
    with pytest.raises(ValidationError):
        Example.model_validate(example().model_dump() | {"schema_version": 2})


def test_only_conflicts_may_drop_a_pair():
    kw = dict(id="p", example=example(), human_label="A", expert_label="B")
    assert RefinedPair(**kw, label=None, source=LabelSource.CONFLICT).label is None
    with pytest.raises(ValidationError, match="only a conflict"):
        RefinedPair(**kw, label=None, source=LabelSource.AGREE)


def test_iteration_spec_and_status_speak_camel_case():
    from vlgenrm.iteration.spec import IterationSpec

    spec = IterationSpec.model_validate({"dataset": "synth", "evalSet": "synth-eval", "backoffLimit": 2, "baseModel": "s3://b/m"})
    assert spec.eval_set == "synth-eval" and spec.backoff_limit == 2
    dumped = spec.model_dump(by_alias=True)
    assert "evalSet" in dumped and "backoffLimit" in dumped
    assert IterationStatus().phase is Phase.PENDING


def test_exported_schemas_are_up_to_date():
    """Fails when a contract changed but `vlgenrm schemas export` was not run."""
    stale = stale_schemas(REPO / "schemas")
    assert not stale, f"stale schema files {stale}: run `vlgenrm schemas export --out schemas`"


def test_staleness_is_detected(tmp_path):
    export_schemas(tmp_path)
    assert stale_schemas(tmp_path) == []
    victim = next(tmp_path.glob("Example.*"))
    victim.write_text(victim.read_text().replace("question", "query"))
    (tmp_path / "Gone.v1.schema.json").write_text("{}")
    assert stale_schemas(tmp_path) == sorted([victim.name, "Gone.v1.schema.json"])
