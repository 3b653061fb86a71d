"""The consume loop every stage service runs: decode, handle, retry, dead-letter, commit.

Guarantees, in order of importance:
1. Nothing is lost: a record is committed only after its handler succeeded or after it was
   durably written to the dead-letter topic. A process killed at any moment leaves the
   record uncommitted, so it is delivered again.
2. Bad input never stops the line: undecodable, invalid or unknown-version messages and
   permanently failing handlers go to the dead-letter topic with the reason, and the loop
   continues.
3. Transient failures are retried in place (so per-key order holds) with bounded backoff.
4. SIGTERM/SIGINT stop gracefully: the current message is finished and committed, the
   consumer leaves its group, and ``run`` returns.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from vlgenrm.bus.base import Bus, CommitFailedError, Record
from vlgenrm.bus.codec import DecodeFailure, clip_detail, decode
from vlgenrm.contracts import Contract, DeadLetter, DeadLetterReason
from vlgenrm.errors import TransientError
from vlgenrm.settings import WorkerSettings

M = TypeVar("M", bound=Contract)
Handler = Callable[[M, Record], None]
log = logging.getLogger(__name__)

#: Handler exceptions retried in place before the message is dead-lettered.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError)

#: Most bytes of the original a dead letter carries. Base64 grows it by a third, and a letter
#: over the broker's message limit (1 MiB by default) could never be published: the record
#: would stay uncommitted and come back forever.
MAX_DEAD_LETTER_ORIGINAL = 512 << 10


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, even when its ``__str__`` itself fails."""
    try:
        text = str(exc)
    except Exception as inner:  # noqa: BLE001 - the failure is reported, not the formatting
        text = f"<unprintable: {type(inner).__name__}>"
    return clip_detail(f"{type(exc).__name__}: {text}")


class Interrupted(Exception):
    """Stop was requested mid-message: leave it uncommitted so it is delivered again.

    The worker raises it while a message waits for a retry; a long handler (training) raises
    it itself when it sees ``Worker.stopping`` rather than finishing hours of work.
    """


@dataclass
class WorkerStats:
    """What a worker did; services export these as metrics."""

    processed: int = 0
    dead_lettered: Counter[DeadLetterReason] = field(default_factory=Counter)
    retries: int = 0
    commit_failures: int = 0

    @property
    def handled(self) -> int:
        return self.processed + sum(self.dead_lettered.values())


class Worker(Generic[M]):
    """Consumes ``topics`` as ``group``, decoding each record as ``model`` for ``handler``."""

    def __init__(
        self,
        bus: Bus,
        topics: Sequence[str],
        group: str,
        model: type[M],
        handler: Handler[M],
        *,
        dlq_topic: str,
        settings: WorkerSettings | None = None,
    ) -> None:
        self.bus, self.topics, self.group, self.model, self.handler = bus, list(topics), group, model, handler
        self.dlq_topic = dlq_topic
        self.settings = settings or WorkerSettings()
        self.stats = WorkerStats()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the loop to finish the current message and return. Thread- and signal-safe."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, max_messages: int | None = None, idle_timeout_s: float | None = None) -> WorkerStats:
        """Process until stopped, ``max_messages`` handled, or ``idle_timeout_s`` without input."""
        restore = self._install_signal_handlers()
        # A consumer of a topic that does not exist yet may wait minutes for its metadata
        # refresh to see it appear: create what this worker reads and writes up front.
        self.bus.ensure_topics([*self.topics, self.dlq_topic])
        consumer = self.bus.consumer(self.topics, self.group)
        log.info("worker %s consuming %s", self.group, self.topics)
        try:
            idle_since = time.monotonic()
            while not self._stop.is_set():
                records = consumer.poll(self.settings.poll_timeout_s, self.settings.max_records)
                if not records:
                    if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                        break
                    continue
                idle_since = time.monotonic()
                for record in records:
                    if self._stop.is_set():
                        break  # the rest stays uncommitted and is redelivered
                    try:
                        self._process(record)
                    except Interrupted:
                        break
                    try:
                        consumer.commit(record)
                    except CommitFailedError as exc:
                        self.stats.commit_failures += 1
                        log.warning("%s", exc)
                    if max_messages is not None and self.stats.handled >= max_messages:
                        self._stop.set()
        finally:
            consumer.close()
            restore()
            log.info("worker %s stopped: %s", self.group, self.stats)
        return self.stats

    def _process(self, record: Record) -> None:
        decoded = decode(record.value, self.model)
        if isinstance(decoded, DecodeFailure):
            self._dead_letter(record, decoded.reason, decoded.detail, attempts=1)
            return
        delays = self.settings.retry.delays()
        attempt = 1
        while True:
            try:
                self.handler(decoded.message, record)
                self.stats.processed += 1
                return
            except Interrupted:
                raise
            except TRANSIENT_ERRORS as exc:
                delay = next(delays, None)
                if delay is None:
                    self._dead_letter(record, DeadLetterReason.RETRIES_EXHAUSTED, describe(exc), attempt)
                    return
                log.warning("%s@%d transient failure (attempt %d): %s", record.topic, record.offset, attempt, exc)
                self.stats.retries += 1
                if self._stop.wait(delay):
                    raise Interrupted from exc
                attempt += 1
            # SystemExit too: a library that calls sys.exit() on one record's input would
            # otherwise end the process, and the uncommitted record would end the next one.
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a permanent failure is dead-lettered, never swallowed
                self._dead_letter(record, DeadLetterReason.HANDLER_FAILED, describe(exc), attempt)
                return

    def _dead_letter(self, record: Record, reason: DeadLetterReason, detail: str, attempts: int) -> None:
        detail = clip_detail(detail)
        original = bytes(record.value) if isinstance(record.value, (bytes, bytearray, memoryview)) else b""
        if len(original) > MAX_DEAD_LETTER_ORIGINAL:
            detail += f" (original cut to its first {MAX_DEAD_LETTER_ORIGINAL} of {len(original)} bytes)"
            original = original[:MAX_DEAD_LETTER_ORIGINAL]
        letter = DeadLetter(
            reason=reason,
            detail=detail,
            original=original,
            original_key=record.key,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            group=self.group,
            attempts=attempts,
        )
        # If this raises (bus down), the record stays uncommitted: delayed, not lost.
        self.bus.publish(self.dlq_topic, record.key or f"{record.topic}/{record.partition}/{record.offset}", letter)
        self.stats.dead_lettered[reason] += 1
        log.error("dead-lettered %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, reason.value, detail)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # only the main thread may set handlers; stop() still works
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received %s: finishing the current message", signal.Signals(signum).name)
            self._stop.set()

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        for sig in previous:
            signal.signal(sig, on_signal)
        return restore
