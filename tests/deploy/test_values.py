"""The chart's values are typed (vlgenrm.deploy.values): the generated values.yaml and
values.schema.json are current, and every values file and example we ship validates."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO
from vlgenrm.deploy.values import CHART_DIR, CHART_OWNED, README_PATH, SCHEMA_PATH, VALUES_PATH, ChartValues, export, json_schema, stale_files
from vlgenrm.iteration.spec import IterationSpec

VALUES_FILES = [REPO / "examples" / "values-dev.yaml", REPO / "examples" / "values-gpu.yaml", REPO / "tests" / "charts" / "values-everything.yaml"]


def test_generated_chart_files_are_current():
    assert stale_files(REPO) == [], "run `vlgenrm chart export`"


def test_values_yaml_is_exactly_the_typed_defaults():
    shipped = yaml.safe_load((REPO / VALUES_PATH).read_text())
    assert shipped == ChartValues().model_dump(by_alias=True, mode="json")
    assert ChartValues.model_validate(shipped) == ChartValues()


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_shipped_values_files_validate(path):
    ChartValues.model_validate(yaml.safe_load(path.read_text()))


def test_the_schema_closes_config_to_typos_and_to_chart_owned_fields():
    schema = json_schema()
    assert schema["additionalProperties"] is False and schema["properties"]["config"]["additionalProperties"] is False
    bus = schema["$defs"]["BusSettings"]
    assert bus["additionalProperties"] is False and not CHART_OWNED["bus"] & set(bus["properties"])
    assert "secret_key" not in schema["$defs"]["StoreSettings"]["properties"]
    assert set(schema["$defs"]["Kafka"]["required"]) == {"bootstrapServers"} and "endpoint" in schema["$defs"]["S3"]["required"]
    assert SCHEMA_PATH.name == "values.schema.json"


def test_the_example_iterations_are_valid_specs():
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / "iteration.yaml").read_text()) if d]
    assert [d["metadata"]["name"] for d in docs] == ["genrm-iter-0", "genrm-iter-1"]
    first, second = (IterationSpec.model_validate(d["spec"]) for d in docs)
    assert first.training.workers == 4 and first.rationale.engine.kind == "vllm"
    assert second.previous_iteration == "genrm-iter-0" and second.index == 1


def test_the_generators_write_under_the_root_they_are_given(tmp_path):
    (tmp_path / CHART_DIR).mkdir(parents=True)
    assert stale_files(tmp_path) == [tmp_path / p for p in (SCHEMA_PATH, VALUES_PATH, README_PATH)]
    assert all(p.is_relative_to(tmp_path) for p in export(tmp_path))
    assert stale_files(tmp_path) == [] and (tmp_path / VALUES_PATH).read_text() == (REPO / VALUES_PATH).read_text()
