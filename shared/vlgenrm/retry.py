"""Bounded retries with exponential backoff, shared by the bus, the store and workers."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from pydantic import BaseModel, Field

from vlgenrm.contracts.base import camel

T = TypeVar("T")
log = logging.getLogger(__name__)


class Backoff(BaseModel):
    """How long to wait between attempts: initial * multiplier**n, capped, with jitter."""

    model_config = camel()

    max_attempts: int = Field(5, ge=1, description="Attempts in total, the first one included.")
    initial_s: float = Field(0.2, gt=0, description="Delay before the second attempt.")
    max_s: float = Field(5.0, gt=0, description="Upper bound of any single delay.")
    multiplier: float = Field(2.0, ge=1.0, description="Growth factor between delays.")
    jitter: float = Field(0.1, ge=0, le=1, description="Random +-fraction applied to each delay.")

    def delays(self) -> Iterator[float]:
        """The delays before attempts 2..max_attempts."""
        delay = self.initial_s
        for _ in range(self.max_attempts - 1):
            spread = delay * self.jitter
            yield max(0.0, min(self.max_s, delay + random.uniform(-spread, spread)))
            delay = min(self.max_s, delay * self.multiplier)


def retry_call(
    fn: Callable[[], T],
    *,
    is_transient: Callable[[BaseException], bool],
    backoff: Backoff,
    what: str,
    deadline_s: float | None = None,
    stop: threading.Event | None = None,
) -> T:
    """Call ``fn``; retry transient failures per ``backoff`` and within ``deadline_s``.

    The last exception is re-raised when attempts or time run out, or when ``stop`` is set
    (so a SIGTERM never waits out a long backoff).
    """
    start = time.monotonic()
    delays = backoff.delays()
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified just below
            if not is_transient(exc):
                raise
            delay = next(delays, None)
            elapsed = time.monotonic() - start
            if delay is None or (deadline_s is not None and elapsed + delay > deadline_s):
                raise
            log.warning("%s failed (attempt %d): %s; retrying in %.2fs", what, attempt, exc, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise
            else:
                time.sleep(delay)
            attempt += 1
