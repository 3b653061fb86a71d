"""The kopf operator against a real kube-apiserver, real Kafka and S3, with the stage services
as subprocesses on tiny models: an Iteration reaches Succeeded with its status filled, even
when the operator is killed and restarted mid-run; a deleted Iteration is cleaned up and its
queued tasks are not processed; a stage that keeps failing fails the Iteration with the reason."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import yaml

from tests.conftest import REPO
from tests.operators.conftest import Procs, manifest, wait_for
from tests.support.kube import get_iteration as get
from vlgenrm.layout import cancelled_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_an_iteration_succeeds_even_with_the_operator_killed_mid_run(cluster_setup):
    kube, platform, namespace, base, procs = cluster_setup
    kube.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest("it-0", base))
    wait_for(kube, namespace, "it-0", lambda b: b.get("status", {}).get("phase") in ("Rationalizing", "Sampling", "Training"), procs)
    procs.kill("operator")  # mid-iteration; its status and the store are all the next one has
    procs.start("operator", "vlgenrm.operators.iteration", "--standalone", "--namespace", namespace, "--log-format", "json")
    body = wait_for(kube, namespace, "it-0", lambda b: b.get("status", {}).get("phase") in ("Succeeded", "Failed"), procs)
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert status["stages"]["experts"]["attempts"] == 1, "the restarted operator redid a finished stage"
    assert {s: (v["shardsDone"], v["shardsTotal"]) for s, v in status["stages"].items()} == {
        "experts": (1, 1),
        "rationale": (1, 1),
        "sampling": (1, 1),
        "training": (1, 1),
        "evaluation": (1, 1),
    }
    assert 0 <= status["metrics"]["accuracy"] <= 1 and status["checkpointUri"].endswith(f"checkpoints/{namespace}/it-0/model")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Progressing"]["status"] == "False"
    table = kube.run_kubectl("get", "iterations", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "PHASE", "PROGRESS", "ACCURACY"] and table[1].split()[1:3] == ["Succeeded", "done"]
    structured = [json.loads(line) for line in (procs.logs / "operator.log").read_text().splitlines() if line.startswith("{")]
    assert any(entry.get("name") == "vlgenrm.operator" and "it-0" in entry.get("message", "") for entry in structured)
    assert not any(entry.get("message") == "Timer 'on_timer' succeeded." for entry in structured), "a log line per reconcile tick"
    events = kube.run_kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"StageRunning", "Promoted"} <= reasons or {"StageRunning", "NotPromoted"} <= reasons, reasons


def test_a_stage_that_keeps_failing_fails_the_iteration_with_the_reason(cluster_setup):
    kube, platform, namespace, base, procs = cluster_setup
    # The transformers engine without a model is an invalid task for the rationale service.
    kube.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest("broken", base, backoffLimit=1, rationale={"engine": {"kind": "transformers"}}))
    body = wait_for(kube, namespace, "broken", lambda b: b.get("status", {}).get("phase") in ("Succeeded", "Failed"), procs)
    status = body["status"]
    assert status["phase"] == "Failed" and status["reason"] == "BackoffLimitExceeded", status
    assert "rationale shard 0 failed 2 time(s)" in status["message"] and "engine.model" in status["message"]
    assert {c["type"]: c for c in status["conditions"]}["Degraded"]["status"] == "True"


def test_a_deleted_iteration_is_cleaned_up_and_its_queued_tasks_are_skipped(cluster_setup):
    kube, platform, namespace, base, procs = cluster_setup
    kube.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest("doomed", base, cleanup="delete"))
    wait_for(kube, namespace, "doomed", lambda b: b.get("status", {}).get("phase") not in (None, "Pending"), procs)
    kube.run_kubectl("delete", "iteration", "doomed", "-n", namespace, "--wait=true", "--timeout=60s")
    assert get(kube, namespace, "doomed") == {}, "the finalizer did not let go"
    store = platform.store
    assert store.exists(cancelled_key(namespace, "doomed"))
    time.sleep(5)  # anything still queued for it is consumed and skipped
    leftovers = [o.key for o in store.list(f"iterations/{namespace}/doomed/") if o.key != cancelled_key(namespace, "doomed")]
    assert leftovers == [], leftovers


def test_a_stage_service_killed_mid_shard_is_retried_and_the_iteration_succeeds(cluster_setup):
    kube, platform, namespace, base, procs = cluster_setup
    kube.run_kubectl(
        "apply", "-n", namespace, "-f", "-", input=manifest("it-kill", base, training={"batchSize": 4, "maxSteps": 40, "checkpointEvery": 5, "logEvery": 5})
    )
    trainer_log = procs.logs / "trainer.log"
    deadline = time.monotonic() + 300
    while "it-kill/training/00000: step 10/40" not in trainer_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    procs.kill("trainer")  # mid-shard: the training task stays uncommitted
    procs.start("trainer", "vlgenrm.services.trainer")
    body = wait_for(kube, namespace, "it-kill", lambda b: b.get("status", {}).get("phase") in ("Succeeded", "Failed"), procs)
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert status["metrics"]["training.steps"] == 40
    assert "it-kill/training/00000: resumed at step" in trainer_log.read_text()


def test_iterations_whose_previous_iterations_form_a_cycle_fail_with_the_reason(cluster_setup):
    kube, platform, namespace, base, procs = cluster_setup
    kube.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest("cyc-a", base, previousIteration="cyc-b", index=1))
    # cyc-a waits for a cyc-b that does not exist yet; once it does, cyc-b fails of the cycle
    # first, and cyc-a must still say why (not merely that its previousIteration failed).
    wait_for(kube, namespace, "cyc-a", lambda b: "waiting for previousIteration" in b.get("status", {}).get("message", ""), procs, timeout_s=120)
    kube.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest("cyc-b", base, previousIteration="cyc-a", index=1))
    for name, cycle in (("cyc-a", "cyc-a -> cyc-b -> cyc-a"), ("cyc-b", "cyc-b -> cyc-a -> cyc-b")):
        status = wait_for(kube, namespace, name, lambda b: b.get("status", {}).get("phase") == "Failed", procs, timeout_s=120)["status"]
        assert status["reason"] == "PreviousIterationCycle" and cycle in status["message"], status


def test_two_operator_replicas_with_peering_one_active(cluster_setup, tmp_path):
    kube, platform, namespace, base, procs = cluster_setup
    other = f"peer-{uuid.uuid4().hex[:6]}"
    kube.run_kubectl("create", "namespace", other)
    kube.run_kubectl("apply", "--server-side", "-f", str(REPO / "charts/vlgenrm/crds/kopf.dev_peerings.yaml"))
    for crd in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        kube.wait_crd_established(crd)
    kube.run_kubectl(
        "apply", "-n", other, "-f", "-", input=yaml.safe_dump({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "vlgenrm"}})
    )
    replicas = Procs(procs.env, tmp_path)

    def wait_log(name: str, text: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in (tmp_path / f"{name}.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert text in (tmp_path / f"{name}.log").read_text(), replicas.tail(name)

    try:
        replicas.start("replica-b", "vlgenrm.operators.iteration", "--namespace", other, "--priority", "20")
        wait_log("replica-b", "Resuming operations")  # the only peer: it runs
        replicas.start("replica-a", "vlgenrm.operators.iteration", "--namespace", other, "--priority", "10")
        wait_log("replica-a", "Initial authentication has finished")
        time.sleep(3)  # a's first look at the peers: it sees b's higher priority and stays paused
        kube.run_kubectl("apply", "-n", other, "-f", "-", input=manifest("peered", base))
        body = wait_for(kube, other, "peered", lambda b: b.get("status", {}).get("phase") in ("Succeeded", "Failed"), replicas)
        assert body["status"]["phase"] == "Succeeded", body["status"]
        assert "peered" in replicas.tail("replica-b", 1000)
        a_log = replicas.tail("replica-a", 1000)
        assert "peered" not in a_log and "Resuming operations" not in a_log, "the lower-priority replica ran"
    finally:
        replicas.stop_all()
