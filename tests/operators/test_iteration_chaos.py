"""Chaos on the real servers (issue 16): an Iteration run through faults ends exactly as the
same Iteration run without them — the same shards, the same counts in every stage's markers,
the same records in every output, none lost, none twice.

A fault-free run of the spec comes first (``calm``); each test runs the same spec under another
name while it injects one fault mid-iteration, then compares stage by stage:

* all four stage services and the operator SIGKILLed together, then restarted;
* the Kafka broker SIGKILLed, then restarted on its data;
* the S3 server stopped for longer than a store retry budget mid-stage, then restarted.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.operators.conftest import SERVICES, manifest, wait_for
from vlgenrm import layout
from vlgenrm.contracts import ShardDone, Stage
from vlgenrm.settings import StoreSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
#: Long enough to be mid-iteration when the fault lands: the trainer logs every 5 of 30 steps.
SPEC = {"training": {"batchSize": 4, "maxSteps": 30, "checkpointEvery": 5, "logEvery": 5}}
RUNNING = ("Annotating", "Rationalizing", "Sampling", "Training")
DONE = ("Succeeded", "Failed")


def outcome(store, namespace: str, name: str) -> dict[str, object]:
    """What an Iteration left in the store, without its name and anything time-dependent: each
    stage's marker counts per shard, and the record ids of every output shard, with how often
    each one occurs. The evaluation against the incumbent is left out: the fault-free run was
    promoted first, so only the later runs have one."""
    found: dict[str, object] = {}
    for stage in Stage:
        prefix = layout.stage_prefix(namespace, name, stage)
        for obj in store.list(prefix + "/"):
            rest = obj.key[len(prefix) + 1 :]
            shard = layout.parse_marker(prefix, obj.key)
            if shard is not None:
                counts = store.get_model(obj.key, ShardDone).counts
                found[f"{stage.value}/{shard}.counts"] = {k: v for k, v in counts.items() if not k.startswith("incumbent")}
            elif rest.endswith(".jsonl") and not rest.startswith(("data/", "incumbent/")):
                ids = Counter()
                for line in store.get_bytes(obj.key).splitlines():
                    if line.strip():
                        record = json.loads(line)
                        ids[str(record.get("id") or record.get("example_id") or record.get("pair_id") or line)] += 1
                found[f"{stage.value}/{rest}"] = ids
    return found


def compare(calm: dict[str, object], storm: dict[str, object]) -> None:
    assert sorted(storm) == sorted(calm), "the faulted run wrote other shards"
    for key, expected in calm.items():
        got = storm[key]
        if isinstance(expected, Counter):
            twice = sorted(i for i, n in got.items() if n > 1)
            assert not twice, f"{key}: duplicated records {twice[:10]}"
            assert got == expected, f"{key}: lost {sorted(set(expected) - set(got))[:10]}, extra {sorted(set(got) - set(expected))[:10]}"
        else:
            assert got == expected, f"{key}: counts {got} != fault-free {expected}"


def run(kube, namespace, name, base, procs, fault) -> dict:
    kube.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest(name, base, **SPEC))
    wait_for(kube, namespace, name, lambda b: b.get("status", {}).get("phase") in RUNNING, procs)
    started = time.monotonic()
    fault()
    body = wait_for(kube, namespace, name, lambda b: b.get("status", {}).get("phase") in DONE, procs, timeout_s=600)
    print(
        f"\n{name}: {body['status']['phase']} {time.monotonic() - started:.0f} s after the fault; attempts "
        f"{ {s: v.get('attempts') for s, v in body['status'].get('stages', {}).items()} }"
    )
    assert body["status"]["phase"] == "Succeeded", body["status"]
    return body["status"]


@pytest.fixture(scope="module")
def calm(cluster_setup) -> dict[str, object]:
    kube, platform, namespace, base, procs = cluster_setup
    status = run(kube, namespace, "calm", base, procs, lambda: None)
    assert all(v.get("attempts") == 1 for v in status["stages"].values()), status["stages"]
    found = outcome(platform.store, namespace, "calm")
    assert any(isinstance(v, Counter) and v for v in found.values()), "the fault-free run wrote no records"
    return found


def test_every_stage_service_and_the_operator_sigkilled_together(cluster_setup, calm):
    kube, platform, namespace, base, procs = cluster_setup

    def kill_everything() -> None:
        for name in [*SERVICES, "operator"]:
            procs.kill(name)
        for service in SERVICES:
            procs.start(service, f"vlgenrm.services.{service}")
        procs.start("operator", "vlgenrm.operators.iteration", "--standalone", "--namespace", namespace)

    run(kube, namespace, "killed", base, procs, kill_everything)
    compare(calm, outcome(platform.store, namespace, "killed"))


def test_the_kafka_broker_sigkilled_and_restarted(cluster_setup, calm, kafka_server):
    kube, platform, namespace, base, procs = cluster_setup

    def kill_broker() -> None:
        kafka_server.kill()
        time.sleep(5)
        kafka_server.start()

    run(kube, namespace, "no-broker", base, procs, kill_broker)
    compare(calm, outcome(platform.store, namespace, "no-broker"))


def test_the_s3_server_down_past_a_retry_budget(cluster_setup, calm, s3_server):
    kube, platform, namespace, base, procs = cluster_setup
    budget = sum(StoreSettings().retry.delays())  # what one store call waits at most before it gives up

    def stop_s3() -> None:
        s3_server.stop()
        time.sleep(3 * budget + 5)
        s3_server.start()

    run(kube, namespace, "no-s3", base, procs, stop_s3)
    compare(calm, outcome(platform.store, namespace, "no-s3"))


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_eight_iterations_in_parallel_each_as_if_alone(cluster_setup, calm):
    """Load: 8 Iterations at once through the same services. Each must end exactly as the
    fault-free run of its spec did alone — no cross-talk between their outputs."""
    kube, platform, namespace, base, procs = cluster_setup
    operator = procs.procs["operator"].pid
    rss_before = _rss_mb(operator)
    names = [f"load-{i}" for i in range(8)]
    started = time.monotonic()
    for name in names:
        kube.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest(name, base, **SPEC))
    for name in names:
        body = wait_for(kube, namespace, name, lambda b: b.get("status", {}).get("phase") in DONE, procs, timeout_s=1500)
        assert body["status"]["phase"] == "Succeeded", (name, body["status"])
    rss_after = _rss_mb(operator)
    print(f"\n8 parallel Iterations: {time.monotonic() - started:.0f} s; operator RSS {rss_before:.0f} -> {rss_after:.0f} MB")
    for name in names:
        compare(calm, outcome(platform.store, namespace, name))
    assert rss_after < rss_before + 200, "the operator's memory grew with the Iterations it ran"
