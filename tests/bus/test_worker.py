"""The worker loop on both buses: dead letters, bounded retries, graceful SIGTERM."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.support.bus import CORPUS, corpus, drain, task
from tests.support.procs import spawn, wait_for_line
from vlgenrm.bus import Record, Worker
from vlgenrm.bus.worker import MAX_DEAD_LETTER_ORIGINAL
from vlgenrm.contracts import DeadLetter, DeadLetterReason, StageTask
from vlgenrm.errors import TransientError
from vlgenrm.retry import Backoff
from vlgenrm.settings import BusKind, WorkerSettings

FAST = WorkerSettings(poll_timeout_s=0.2, max_records=10, retry=Backoff(max_attempts=3, initial_s=0.01, max_s=0.02))


def read_dead_letters(bus, dlq: str, n: int, unique) -> list[DeadLetter]:
    with bus.consumer([dlq], unique("dlq-reader")) as consumer:
        records = drain(consumer, n)
    return [DeadLetter.model_validate_json(r.value) for r in records]


def test_bad_messages_are_dead_lettered_with_reason_and_the_worker_keeps_going(bus_backend, unique):
    bus = bus_backend.new_bus()
    topic, dlq, group = unique("tasks"), unique("dlq"), unique("g")
    bad = {
        DeadLetterReason.UNDECODABLE: b"\xff\xfe\x00 random bytes \x81",
        DeadLetterReason.INVALID: json.dumps({"schema_version": 1, "hello": "world"}).encode(),
        DeadLetterReason.UNKNOWN_SCHEMA_VERSION: task(99).model_dump_json().replace('"schema_version":1', '"schema_version":7').encode(),
    }
    # Everything under one key, so the good tasks after the bad ones prove the line kept moving.
    bus.publish(topic, "k", task(0))
    for payload in bad.values():
        bus.publish(topic, "k", payload)
    bus.publish(topic, "k", task(1))
    handled: list[int] = []
    worker = Worker(bus, [topic], group, StageTask, lambda m, r: handled.append(m.shard.shard), dlq_topic=dlq, settings=FAST)
    stats = worker.run(max_messages=5, idle_timeout_s=60)
    assert handled == [0, 1]
    assert stats.processed == 2 and sum(stats.dead_lettered.values()) == 3
    letters = {d.reason: d for d in read_dead_letters(bus, dlq, 3, unique)}
    assert set(letters) == set(bad)
    for reason, payload in bad.items():
        letter = letters[reason]
        assert letter.original == payload and letter.topic == topic and letter.group == group
        assert letter.original_key == "k" and letter.detail
    assert "schema_version" in letters[DeadLetterReason.UNKNOWN_SCHEMA_VERSION].detail
    offsets = sorted(d.offset for d in letters.values())
    assert offsets == [1, 2, 3]  # the positions of the bad messages in their partition
    assert bus.lag(group, topic) == 0


def test_the_whole_fuzz_corpus_is_dead_lettered_with_its_reason_and_the_line_keeps_moving(bus_backend, unique):
    bus = bus_backend.new_bus()
    topic, dlq, group = unique("tasks"), unique("dlq"), unique("g")
    inputs = [(reason, case, data) for reason in DeadLetterReason for case, data in corpus(reason).items()]
    assert len(inputs) == len(list(CORPUS.iterdir())) >= 40
    bus.publish(topic, "k", task(0))
    for _, _, data in inputs:
        bus.publish(topic, "k", data)
    bus.publish(topic, "k", task(1))
    handled: list[int] = []
    worker = Worker(bus, [topic], group, StageTask, lambda m, r: handled.append(m.shard.shard), dlq_topic=dlq, settings=FAST)
    stats = worker.run(max_messages=len(inputs) + 2, idle_timeout_s=120)
    assert handled == [0, 1] and stats.processed == 2 and sum(stats.dead_lettered.values()) == len(inputs)
    letters = read_dead_letters(bus, dlq, len(inputs), unique)
    assert [(d.reason, d.original) for d in letters] == [(reason, data) for reason, _, data in inputs]  # one key: in order
    assert all(d.detail for d in letters) and bus.lag(group, topic) == 0


def test_transient_errors_are_retried_then_dead_lettered_permanent_errors_at_once(bus_backend, unique):
    bus = bus_backend.new_bus()
    topic, dlq, group = unique("tasks"), unique("dlq"), unique("g")
    for i in range(3):
        bus.publish(topic, "k", task(i))
    calls: dict[int, int] = {0: 0, 1: 0, 2: 0}

    def handle(message: StageTask, record: Record) -> None:
        i = message.shard.shard
        calls[i] += 1
        if i == 0 and calls[i] < 3:
            raise TransientError("store briefly unavailable")  # succeeds on the third attempt
        if i == 1:
            raise TimeoutError("never recovers")
        if i == 2:
            raise ValueError("input shard is corrupt")

    stats = Worker(bus, [topic], group, StageTask, handle, dlq_topic=dlq, settings=FAST).run(max_messages=3, idle_timeout_s=60)
    assert calls == {0: 3, 1: 3, 2: 1}
    assert stats.processed == 1 and stats.retries == 4
    letters = {d.reason: d for d in read_dead_letters(bus, dlq, 2, unique)}
    assert letters[DeadLetterReason.RETRIES_EXHAUSTED].attempts == 3
    assert "never recovers" in letters[DeadLetterReason.RETRIES_EXHAUSTED].detail
    assert letters[DeadLetterReason.HANDLER_FAILED].detail == "ValueError: input shard is corrupt"


def test_sigterm_finishes_the_current_message_commits_and_exits(bus_backend, unique):
    topic, group, n = unique("tasks"), unique("g"), 5
    if bus_backend.kind is BusKind.KAFKA:
        bus = bus_backend.new_bus()
        for i in range(n):
            bus.publish(topic, task(i).shard.key, task(i))
    args = {"settings": bus_backend.settings.model_dump(mode="json"), "topic": topic, "group": group, "n": n, "handle_s": 1.5}
    proc = spawn("sigterm-worker", args)
    first = int(wait_for_line(proc, "START "))
    second = int(wait_for_line(proc, "START "))
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    result = json.loads(wait_for_line(proc, "RESULT "))
    assert proc.wait(30) == 0
    assert result["done"] == [first, second], "the message in flight at SIGTERM must be finished, no new one started"
    assert result["processed"] == 2 and result["committed"] == 2
    assert time.monotonic() - started < 20
    if bus_backend.kind is BusKind.KAFKA:  # the rest is still there for the next worker
        with bus.consumer([topic], group) as consumer:
            rest = drain(consumer, n - 2)
        rest_ids = sorted(StageTask.model_validate_json(r.value).shard.shard for r in rest)
        assert rest_ids == sorted(set(range(n)) - {first, second})


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("even the message is broken")


def recurse(n: int) -> int:
    return recurse(n + 1) + 1


POISON: dict[str, tuple[bytes, DeadLetterReason]] = {
    "5000-digit integer": (b'{"schema_version":1,"task_id":' + b"9" * 5000 + b"}", DeadLetterReason.UNDECODABLE),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, DeadLetterReason.UNDECODABLE),
    "NaN": (b'{"schema_version":NaN}', DeadLetterReason.UNDECODABLE),
    "duplicate key": (b'{"schema_version":1,"schema_version":1}', DeadLetterReason.UNDECODABLE),
    "lone surrogate": (b'{"schema_version":1,"task_id":"\\udc00"}', DeadLetterReason.UNDECODABLE),
    "empty": (b"", DeadLetterReason.UNDECODABLE),
    "900 kB of junk": (b"x" * 900_000, DeadLetterReason.UNDECODABLE),
    "wrong type": (task(5).model_dump_json().replace('"shard":5', '"shard":"five"').encode(), DeadLetterReason.INVALID),
    "schema_version true": (task(6).model_dump_json().replace('"schema_version":1', '"schema_version":true', 1).encode(), DeadLetterReason.INVALID),
    "unknown version": (task(7).model_dump_json().replace('"schema_version":1', '"schema_version":3', 1).encode(), DeadLetterReason.UNKNOWN_SCHEMA_VERSION),
}
#: Well-formed tasks whose handler raises something that is no declared retryable error.
RAISES = {10: SystemExit(3), 11: RecursionError, 12: Unprintable(), 13: MemoryError("shard too big")}


def test_poison_records_and_raising_handlers_are_dead_lettered_and_the_next_record_is_processed(bus_backend, unique):
    bus = bus_backend.new_bus()
    topic, dlq, group = unique("tasks"), unique("dlq"), unique("g")
    # One key, one partition: the good tasks around the poison prove the line kept moving in order.
    sent: list[tuple[bytes, DeadLetterReason | None]] = [(task(0).to_json_bytes(), None)]
    sent += list(POISON.values())
    sent += [(task(i).to_json_bytes(), DeadLetterReason.HANDLER_FAILED) for i in RAISES]
    sent += [(task(1).to_json_bytes(), None)]
    for value, _ in sent:
        bus.publish(topic, "k", value)
    handled: list[int] = []

    def handle(message: StageTask, record: Record) -> None:
        i = message.shard.shard
        if i == 11:
            recurse(0)
        if i in RAISES:
            raise RAISES[i]
        handled.append(i)

    worker = Worker(bus, [topic], group, StageTask, handle, dlq_topic=dlq, settings=FAST)
    stats = worker.run(max_messages=len(sent), idle_timeout_s=60)
    assert handled == [0, 1]
    bad = [(offset, value, reason) for offset, (value, reason) in enumerate(sent) if reason is not None]
    assert stats.processed == 2 and sum(stats.dead_lettered.values()) == len(bad)
    letters = {d.offset: d for d in read_dead_letters(bus, dlq, len(bad), unique)}
    assert sorted(letters) == [offset for offset, _, _ in bad]
    for offset, value, reason in bad:
        letter = letters[offset]
        assert letter.reason is reason and letter.detail and letter.topic == topic and letter.group == group, letter.detail
        assert len(letter.detail) < 2200
        if len(value) > MAX_DEAD_LETTER_ORIGINAL:
            assert letter.original == value[:MAX_DEAD_LETTER_ORIGINAL] and f"of {len(value)} bytes" in letter.detail
        else:
            assert letter.original == value
    details = [letters[offset].detail for offset, _, _ in bad[-len(RAISES) :]]
    assert details[0].startswith("SystemExit") and details[1].startswith("RecursionError")
    assert details[2] == "Unprintable: <unprintable: RuntimeError>" and details[3] == "MemoryError: shard too big"
    assert bus.lag(group, topic) == 0  # committed past every one of them

    # The same group goes on with what comes next.
    bus.publish(topic, "k", task(2))
    Worker(bus, [topic], group, StageTask, handle, dlq_topic=dlq, settings=FAST).run(max_messages=1, idle_timeout_s=60)
    assert handled == [0, 1, 2] and bus.lag(group, topic) == 0


@pytest.mark.integration
def test_a_tombstone_and_a_key_that_is_not_utf8_reach_the_dead_letter_topic(kafka_server, unique):
    """Kafka lets any client write a null value or a binary key; neither may stop the consumer."""
    from kafka import KafkaProducer

    from tests.conftest import kafka_settings
    from vlgenrm.bus.kafka import KafkaBus

    bus = KafkaBus(kafka_settings(kafka_server, partitions=1))
    topic, dlq, group = unique("tasks"), unique("dlq"), unique("g")
    bus.ensure_topics([topic, dlq])
    producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap_servers)
    producer.send(topic, key=b"\xff\xfe", value=None).get(timeout=30)
    producer.send(topic, key=b"\xff\xfe", value=b"\x80junk").get(timeout=30)
    producer.close()
    bus.publish(topic, "k", task(0))
    handled: list[int] = []
    try:
        stats = Worker(bus, [topic], group, StageTask, lambda m, r: handled.append(m.shard.shard), dlq_topic=dlq, settings=FAST).run(
            max_messages=3, idle_timeout_s=60
        )
        assert handled == [0] and stats.dead_lettered[DeadLetterReason.UNDECODABLE] == 2
        letters = sorted(read_dead_letters(bus, dlq, 2, unique), key=lambda d: d.offset)
        assert [d.original for d in letters] == [b"", b"\x80junk"]
        assert all(d.original_key == "\\xff\\xfe" and d.detail for d in letters)
        assert bus.lag(group, topic) == 0
    finally:
        bus.close()
