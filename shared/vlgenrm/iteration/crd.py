"""The ``Iteration`` CustomResourceDefinition, generated from the pydantic spec and status.

Kubernetes wants a *structural* OpenAPI v3 schema: no ``$ref``, no ``anyOf`` for optional
fields (``nullable`` instead), ``additionalProperties`` only for maps. This module turns
pydantic's JSON Schema into that, adds CEL rules for the checks that span fields, printer
columns, short names and categories. ``vlgenrm crd export`` writes it into the Helm chart; a
test fails when the file there is stale.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

GROUP, VERSION, KIND, PLURAL = "vlgenrm.io", "v1alpha1", "Iteration", "iterations"
CRD_PATH = Path("charts/vlgenrm/crds") / f"{GROUP}_{PLURAL}.yaml"

#: Checks across fields, evaluated by the API server (messages are what kubectl shows).
SPEC_RULES = [
    {"rule": "has(self.baseModel) || has(self.previousIteration)", "message": "set baseModel or previousIteration: training needs a model to start from"},
    {
        "rule": "!has(self.training) || !has(self.training.batchSize) || "
        "self.training.batchSize % ((has(self.training.workers) ? self.training.workers : 1) * "
        "(has(self.training.accumulation) ? self.training.accumulation : 1)) == 0",
        "message": "training.batchSize must be a multiple of training.workers x training.accumulation",
    },
    {"rule": "!has(self.previousIteration) || self.index >= 1", "message": "an Iteration continuing a previousIteration has index >= 1"},
    {
        "rule": "!has(self.experts) || !has(self.experts.enabled) || self.experts.enabled || "
        "(has(self.rationale) && has(self.rationale.teacherSees) && self.rationale.teacherSees == 'label')",
        "message": "experts.enabled=false writes no expert report: set rationale.teacherSees=label",
    },
]
#: Checks that need the object's own name, so they sit at the root: CEL there may read
#: ``self.metadata.name`` (and only name and generateName of the metadata).
ROOT_RULES = [
    {
        "rule": "!has(self.spec.previousIteration) || self.spec.previousIteration != self.metadata.name",
        "message": "spec.previousIteration names this Iteration itself: it would wait forever for its own result",
    },
]
DROP = {"title", "default", "examples", "propertyNames"}
#: JSONSchemaProps fields the API server accepts; anything else pydantic emits (writeOnly, ...) goes.
ALLOWED = {
    "description",
    "type",
    "format",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "properties",
    "additionalProperties",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
}
#: OpenAPI formats the API server knows; others (pydantic's "path") are dropped.
FORMATS = {"date-time", "date", "password", "uri", "email", "hostname", "ipv4", "ipv6", "uuid", "byte", "int32", "int64", "float", "double"}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$defs`` and rewrite pydantic's JSON Schema into a Kubernetes structural schema."""
    defs = schema.get("$defs", {})

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref" and k not in DROP}
            return convert(target | extra)
        for combinator in ("anyOf", "oneOf"):
            if combinator in node:
                options = [o for o in node[combinator] if o.get("type") != "null"]
                nullable = len(options) < len(node[combinator])
                rest = {k: v for k, v in node.items() if k != combinator and k not in DROP}
                if len(options) == 1:
                    out = convert(options[0]) | {k: convert(v) for k, v in rest.items()}
                else:  # a union of shapes: let the service validate it
                    out = {"x-kubernetes-preserve-unknown-fields": True} | {k: v for k, v in rest.items() if k == "description"}
                if nullable:
                    out["nullable"] = True
                return out
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in DROP or key == "$defs" or (key not in ALLOWED and key not in ("const", "prefixItems")):
                continue
            if key == "format" and value not in FORMATS:
                continue
            if key == "const":
                out["enum"] = [value]
            elif key == "prefixItems":  # tuples: a fixed-length array of one type in practice
                out["items"] = convert(value[0]) if value else {}
                out["minItems"] = out["maxItems"] = len(value)
            elif key == "properties":
                out[key] = {k: convert(v) for k, v in value.items()}
            elif key == "additionalProperties":
                if value is False or "properties" in node:
                    continue  # structural schemas forbid both; unknown fields are pruned anyway
                out[key] = convert(value) if isinstance(value, dict) else value
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                out[key.replace("exclusive", "").lower()] = value
                out[key] = True
            else:
                out[key] = convert(value)
        if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True  # a free-form dict[str, Any]
        if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out and "enum" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True  # Any
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        return out

    return convert({k: v for k, v in schema.items() if k != "$defs"})


def crd_manifest() -> dict[str, Any]:
    """The CRD as a dict (what ``kubectl apply`` gets)."""
    from vlgenrm.contracts import IterationStatus
    from vlgenrm.iteration.spec import IterationSpec

    spec = structural(IterationSpec.model_json_schema(by_alias=True, mode="validation"))
    spec["properties"].pop("schemaVersion", None)
    spec["required"] = [r for r in spec.get("required", []) if r != "schemaVersion"]
    spec["x-kubernetes-validations"] = SPEC_RULES
    status = structural(IterationStatus.model_json_schema(by_alias=True, mode="serialization"))
    status["properties"].pop("schemaVersion", None)
    status.pop("required", None)
    schema = {
        "type": "object",
        "description": "One iteration of VL-GenRM: experts, rationales, rejection sampling, training, evaluation, promotion.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": ROOT_RULES,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "vlgenrm"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": "iteration",
                "listKind": f"{KIND}List",
                "shortNames": ["it", "iters"],
                "categories": ["vlgenrm"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Where the Iteration is."},
                        {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "Shards done in the current stage."},
                        {"name": "Accuracy", "type": "number", "jsonPath": ".status.metrics.accuracy", "description": "Held-out pairwise accuracy of M_{t+1}."},
                        # The metric's key has a dot in it: escaped, as kubectl's JSONPath wants.
                        {
                            "name": "Coverage",
                            "type": "number",
                            "jsonPath": ".status.metrics.experts\\.coverage",
                            "description": "Share of the pairs with at least one claim some expert can check (experts stage).",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `vlgenrm crd export` from vlgenrm.iteration.spec and vlgenrm.contracts.iteration: do not edit.\n"
    return header + yaml.safe_dump(crd_manifest(), sort_keys=False, width=120)


def is_stale(path: Path) -> bool:
    return not path.exists() or path.read_text() != render()
