"""The generated CRD on a real kube-apiserver: installed and established, valid Iterations
accepted, invalid ones rejected with the schema's (or the CEL rule's) message, printer
columns and `kubectl explain` from the field descriptions."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.kube import apply, fresh_namespace, install_iteration_crd, iteration_manifest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crd(kube_server):
    return install_iteration_crd(kube_server)


@pytest.fixture
def namespace(crd) -> str:
    return fresh_namespace(crd, "it")


def test_valid_iterations_are_accepted_with_typed_stage_configs(crd, namespace):
    ok = apply(crd, namespace, iteration_manifest("it-0", training={"batchSize": 8, "workers": 2, "lora": {"r": 4}}, sampling={"tau0": 0.5}))
    assert ok.returncode == 0, ok.stderr
    got = json.loads(crd.run_kubectl("get", "iteration", "it-0", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["training"]["lora"]["r"] == 4
    assert apply(crd, namespace, iteration_manifest("it-1", previousIteration="it-0", index=1)).returncode == 0
    no_experts = apply(crd, namespace, iteration_manifest("it-ctl", experts={"enabled": False}, rationale={"teacherSees": "label", "withEvidence": False}))
    assert no_experts.returncode == 0, no_experts.stderr


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"backoffLimit": -1}, "should be greater than or equal to 0"),
        ({"training": {"batchSize": 6, "workers": 4}}, "must be a multiple of training.workers x training.accumulation"),
        ({"training": {"objective": "ppo"}}, 'Unsupported value: "ppo"'),
        ({"baseModel": None, "previousIteration": None}, "set baseModel or previousIteration"),
        ({"previousIteration": "it-0", "index": 0}, "index >= 1"),
        ({"sampling": {"topN": 0}}, "should be greater than or equal to 1"),
        ({"previousIteration": "Not_A_Name", "index": 1}, "should match"),
        ({"training": {"batch_size": 8}}, 'unknown field "spec.training.batch_size"'),  # camelCase at every level
        ({"experts": {"enabled": False}}, "set rationale.teacherSees=label"),  # the no-experts arm's teacher must not expect a report
    ],
)
def test_invalid_iterations_are_rejected_with_the_schemas_message(crd, namespace, spec, message):
    manifest = iteration_manifest("bad", **spec)
    if spec.get("baseModel", "") is None:
        body = yaml.safe_load(manifest)
        body["spec"].pop("baseModel")
        body["spec"].pop("previousIteration", None)
        manifest = yaml.safe_dump(body)
    out = apply(crd, namespace, manifest)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_an_iteration_naming_itself_as_previous_iteration_is_rejected(crd, namespace):
    out = apply(crd, namespace, iteration_manifest("loop", previousIteration="loop", index=1))
    assert out.returncode != 0 and "names this Iteration itself" in out.stderr, out.stderr
    assert apply(crd, namespace, iteration_manifest("loop", previousIteration="loop-0", index=1)).returncode == 0
    # Also on update: an accepted Iteration cannot be edited into its own predecessor.
    out = apply(crd, namespace, iteration_manifest("loop", previousIteration="loop", index=1))
    assert out.returncode != 0 and "names this Iteration itself" in out.stderr, out.stderr


def test_printer_columns_short_names_status_and_explain(crd, namespace):
    assert apply(crd, namespace, iteration_manifest("shown")).returncode == 0
    status = {"phase": "Sampling", "progress": "sampling 3/8", "metrics": {"accuracy": 0.625, "experts.coverage": 0.875}}
    crd.run_kubectl("patch", "iteration", "shown", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))
    table = crd.run_kubectl("get", "it", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:6] == ["NAME", "PHASE", "PROGRESS", "ACCURACY", "COVERAGE", "AGE"]
    assert row.split()[:6] == ["shown", "Sampling", "sampling", "3/8", "0.625", "0.875"]
    assert "shown" in crd.run_kubectl("get", "vlgenrm", "-n", namespace).stdout  # the category
    explained = crd.run_kubectl("explain", "iteration.spec.training.learningRate").stdout
    assert "Peak AdamW learning rate" in explained
