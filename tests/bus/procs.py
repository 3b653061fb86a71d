"""Run bus clients in child processes, so tests can kill them for real (SIGKILL, SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vlgenrm.settings import BusSettings

REPO = Path(__file__).resolve().parents[2]


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
