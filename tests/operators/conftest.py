"""The operator's cluster for the integration tests: a real kube-apiserver, Kafka and S3, the
four stage services and the operator as subprocesses on tiny models, one namespace per module."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.services.conftest import Platform, make_platform
from tests.support.kube import fresh_namespace, get_iteration, install_iteration_crd, iteration_manifest
from tests.support.procs import service_env
from vlgenrm.genrm.model import upload_checkpoint
from vlgenrm.synth.dataset import SynthConfig, generate_dataset

SERVICES = ["experts", "rationale", "sampler", "trainer"]


class Procs:
    """Subprocesses in their own sessions (a kill takes a service's local Ray with it)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, {}

    def start(self, name: str, *args: str) -> None:
        out = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def tail(self, name: str, lines: int = 40) -> str:
        return "".join((self.logs / f"{name}.log").read_text().splitlines(True)[-lines:])

    def post_mortem(self) -> str:
        """Every process's stacks (SIGUSR1: faulthandler) and log tail, for a wait that timed out."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(2)
        return "".join(f"\n--- {name} ---\n{self.tail(name, 80)}" for name in self.procs)


@pytest.fixture(scope="module")
def cluster_setup(request, kube_server, tmp_path_factory) -> Iterator[tuple]:
    tmp = tmp_path_factory.mktemp("operator")
    platform: Platform = next(make_platform("cluster", request, tmp))
    namespace = fresh_namespace(install_iteration_crd(kube_server), "op")
    generate_dataset(SynthConfig(name="tiny", n_train=8, n_eval=8, image_size=192, shard_size=8), platform.store)
    from vlgenrm.genrm.tiny import build_tiny_genrm

    base = upload_checkpoint(build_tiny_genrm(tmp / "base", "qwen2_vl"), platform.store, f"checkpoints/{namespace}/base/model")
    env = service_env(platform) | {"KUBECONFIG": str(kube_server.kubeconfig), "VLGENRM_WORKER__POLL_TIMEOUT_S": "0.2"}
    procs = Procs(env, tmp)
    for service in SERVICES:
        procs.start(service, f"vlgenrm.services.{service}")
    procs.start("operator", "vlgenrm.operators.iteration", "--standalone", "--namespace", namespace)
    yield kube_server, platform, namespace, base, procs
    procs.stop_all()


def manifest(name: str, base: str, **spec) -> str:
    """An Iteration on the tiny dataset, sized to finish in a minute or two (``spec`` overrides)."""
    defaults = {
        "dataset": "tiny",
        "evalSet": "tiny",
        "baseModel": base,
        "rationale": {"k": 1},
        "sampling": {"tau0": -50.0},
        "training": {"batchSize": 4, "maxSteps": 2, "checkpointEvery": 2},
        "evaluation": {"pointwise": False},
    }
    return iteration_manifest(name, **(defaults | spec))


def wait_for(kube, namespace: str, name: str, predicate, procs: Procs, timeout_s: float = 420) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = get_iteration(kube, namespace, name)
        if predicate(body):
            return body
        time.sleep(1)
    raise AssertionError(f"{name}: {json.dumps(body.get('status'), indent=1)[:2000]}{procs.post_mortem()}")
