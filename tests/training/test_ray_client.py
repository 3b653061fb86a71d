"""The trainer drives a Ray cluster it is not part of, through Ray Client (``ray://``), as the
Helm chart's trainer does with its KubeRay RayCluster: a real Ray head in its own processes,
a driver process configured only by ``VLGENRM_RAY__ADDRESS``, the exported model loading here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_ports
from tests.support.ray import RAY_CLIENT_HEAD_ENV
from tests.training.conftest import colour_records
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM
from vlgenrm.store import LocalStore
from vlgenrm.training.data import write_training_set

pytestmark = [pytest.mark.slow, pytest.mark.integration]
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture
def ray_head(tmp_path):
    """``ray start --head --block`` with its own ports, worker-port range and temp dir, so it
    never meets the session's local Ray; the whole process group goes at the end."""
    gcs, client, agent, agent_grpc, metrics, runtime_env = free_ports(6)
    temp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # Ray's unix sockets need a short path
    log = open(tmp_path / "ray-head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            f"--ray-client-server-port={client}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--object-store-memory=268435456",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
            "--min-worker-port=31000",
            "--max-worker-port=31999",
            f"--temp-dir={temp}",
        ],
        env=os.environ | {"RAY_AUTH_MODE": "disabled", **RAY_CLIENT_HEAD_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", client), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "ray-head.log").read_text()[-3000:]
            time.sleep(0.5)
    yield f"ray://127.0.0.1:{client}", temp
    # `ray start --block` takes its time on SIGTERM; the group kill takes every Ray daemon with it.
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(10)
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


DRIVER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from pathlib import Path
from vlgenrm.settings import StoreKind, StoreSettings, load_settings
from vlgenrm.store import LocalStore
from vlgenrm.training.config import TrainingConfig, TrainingTaskSettings
from vlgenrm.training.run import run_training
root, start, key = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
settings = load_settings()  # VLGENRM_RAY__ADDRESS, as the chart sets it for the trainer
out = run_training(TrainingTaskSettings(base_model=start, training=TrainingConfig(batch_size=4, max_steps=4, checkpoint_every=2)),
                   store=LocalStore(root), store_settings=StoreSettings(kind=StoreKind.LOCAL, root=root), ray_settings=settings.ray,
                   data_key=key, storage_prefix="checkpoints/test/client/ray", export_prefix="checkpoints/test/client/model", label="client")
print("CHECKPOINT", out.checkpoint_uri)
"""


def test_the_trainer_drives_a_separate_ray_cluster_through_ray_client(ray_head, tmp_path, tiny_start):
    address, temp = ray_head
    store = LocalStore(tmp_path / "store")
    key = write_training_set(store, "sets/colour.jsonl", colour_records(store, 16, seed=0))
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path / "store"), str(tiny_start), key],
        cwd=REPO,
        env=os.environ | {"VLGENRM_RAY__ADDRESS": address, "RAY_AUTH_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    server_logs = "".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(temp.glob("session_latest/logs/ray_client_server*")))
    assert driver.returncode == 0, driver.stderr[-3000:] + server_logs
    assert f"connecting to the Ray cluster at {address}" in driver.stderr, "the driver started its own Ray"
    assert "started a local Ray" not in driver.stderr
    uri = driver.stdout.split("CHECKPOINT", 1)[1].strip()
    trained = GenRM.load(uri, GenRMSettings(), store=store)
    assert trained.version != GenRM.load(tiny_start).version
