"""Connecting to an existing Ray cluster retries what is transient (a restarting KubeRay head,
Ray Client's per-driver server failing to start) and nothing else. Ray's own init is replaced
here: a transient failure cannot be produced on demand (tests/training/test_ray_client.py runs
the real connection)."""

from __future__ import annotations

import pytest

from vlgenrm.ray_cluster import ensure_ray
from vlgenrm.retry import Backoff
from vlgenrm.settings import RaySettings


@pytest.fixture
def fake_init(monkeypatch):
    import ray

    calls, failures = [], []

    def init(**kwargs):
        calls.append(kwargs)
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    return calls, failures


SETTINGS = RaySettings(address="ray://head:10001", connect_retry=Backoff(max_attempts=3, initial_s=0.01, max_s=0.01))


def test_a_failed_client_handshake_is_retried(fake_init):
    calls, failures = fake_init
    failures += [ConnectionAbortedError("Initialization failure from server"), RuntimeError("Starting Ray client server failed. See …")]
    ensure_ray(SETTINGS)
    assert len(calls) == 3 and all(c["address"] == "ray://head:10001" for c in calls)


def test_retries_end_and_the_last_error_surfaces(fake_init):
    calls, failures = fake_init
    failures += [ConnectionError("ray client connection timeout")] * 3
    with pytest.raises(ConnectionError, match="timeout"):
        ensure_ray(SETTINGS)
    assert len(calls) == 3


def test_other_errors_are_not_retried(fake_init):
    calls, failures = fake_init
    failures.append(ValueError("bad address"))
    with pytest.raises(ValueError):
        ensure_ray(SETTINGS)
    assert len(calls) == 1
