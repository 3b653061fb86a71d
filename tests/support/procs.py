"""Child processes the tests can kill for real (SIGKILL, SIGTERM): bus clients (programs in
tests/bus/child.py) and stage services (``python -m vlgenrm.services.<name>``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO
from tests.services.conftest import Platform
from vlgenrm.settings import BusSettings


def spawn(mode: str, args: dict) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bus.child", mode, json.dumps(args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


def wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout_s: float = 90) -> str:
    """Read the child's output until a line starts with ``prefix``; fail with its output otherwise."""
    seen = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    proc.kill()
    raise AssertionError(f"child never printed {prefix!r}; output:\n{''.join(seen[-40:])}")


def kill_consumer_process_after_receiving(settings: BusSettings, topic: str, group: str, n: int, tmp_path: Path) -> list[int]:
    """A child consumes ``n`` records without committing and is then SIGKILLed."""
    proc = spawn("consume-no-commit", {"settings": settings.model_dump(mode="json"), "topic": topic, "group": group, "n": n})
    values = json.loads(wait_for_line(proc, "RECEIVED "))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return values


def service_env(platform: Platform) -> dict[str, str]:
    """The platform's settings as the VLGENRM_* environment a service process reads."""
    s = platform.settings
    return os.environ | {
        "PYTHONUNBUFFERED": "1",
        "VLGENRM_BUS__KIND": "kafka",
        "VLGENRM_BUS__BOOTSTRAP_SERVERS": s.bus.bootstrap_servers,
        "VLGENRM_BUS__TOPIC_PREFIX": s.bus.topic_prefix,
        "VLGENRM_BUS__SESSION_TIMEOUT_S": "6",
        "VLGENRM_BUS__HEARTBEAT_INTERVAL_S": "1",
        "VLGENRM_STORE__KIND": "s3",
        "VLGENRM_STORE__ENDPOINT": s.store.endpoint,
        "VLGENRM_STORE__ACCESS_KEY": s.store.access_key,
        "VLGENRM_STORE__SECRET_KEY": s.store.secret_key.get_secret_value(),
        "VLGENRM_STORE__BUCKET": s.store.bucket,
    }


def kill_mid_shard_then_restart(platform: Platform, module: str, progress: str, marker: str, timeout_s: float = 240) -> None:
    """Start ``python -m module``, SIGKILL it once it logs ``progress`` (before the shard's
    ``marker`` exists), start it again, wait for the marker, then stop it with SIGTERM."""

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO, env=service_env(platform), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    first, seen = start(), []
    assert first.stdout is not None
    for line in first.stdout:
        seen.append(line)
        if progress in line:
            break
    first.kill()
    first.wait(10)
    assert any(progress in line for line in seen), "".join(seen[-20:])
    assert not platform.store.exists(marker), "the process was to be killed before the marker"
    second = start()
    deadline = time.monotonic() + timeout_s
    while not platform.store.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    second.send_signal(signal.SIGTERM)
    assert second.wait(60) == 0
    assert platform.store.exists(marker), "the restarted service never completed the shard"
