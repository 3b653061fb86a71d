"""The CRD generated from the pydantic spec/status: in sync with the chart, structural."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import REPO
from vlgenrm.iteration.crd import CRD_PATH, crd_manifest, is_stale


def walk(node: Any, path: str = "") -> list[tuple[str, dict]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out += walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += walk(value, f"{path}[{i}]")
    return out


def test_the_chart_crd_is_generated_from_the_code():
    assert not is_stale(REPO / CRD_PATH), "run `vlgenrm crd export`"


def test_the_schema_is_structural():
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "$defs", "propertyNames", "const"} & set(node), path
        if path.endswith(".properties") or path.endswith("x-kubernetes-validations") or "x-kubernetes-validations[" in path:
            continue
        if {"type", "properties", "items"} & set(node) or node.get("x-kubernetes-preserve-unknown-fields"):
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
            assert not ("properties" in node and "additionalProperties" in node), path


def test_every_field_at_every_level_is_camel_case():
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = [(path, name) for path, node in walk(schema) if path.endswith(".properties") for name in node]
    assert len(fields) > 100  # the nested stage configs are in the schema, not left open
    assert [f"{path}.{name}" for path, name in fields if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", name)] == []
    # every rule names fields by their wire names
    rules = " ".join(rule["rule"] for _, node in walk(schema) for rule in node.get("x-kubernetes-validations", []))
    assert "_" not in rules.replace("self.metadata", ""), rules


def test_printer_columns_short_names_status_and_descriptions():
    crd = crd_manifest()["spec"]
    version = crd["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Progress", "Accuracy", "Coverage", "Age"]
    assert version["subresources"] == {"status": {}}
    assert crd["names"]["shortNames"] == ["it", "iters"] and "vlgenrm" in crd["names"]["categories"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["dataset", "evalSet"]
    assert "learning" in spec["properties"]["training"]["properties"]["learningRate"]["description"].lower()
    assert any("baseModel" in rule["rule"] for rule in spec["x-kubernetes-validations"])


def test_an_iteration_cannot_continue_itself():
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert any("self.spec.previousIteration != self.metadata.name" in rule for rule in rules)
