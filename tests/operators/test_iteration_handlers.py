"""The operator's event and dead-letter consumer (Runtime.consume) on both buses: poison
records on its topics are skipped and committed past, and the failure reports after them
still reach the failure log."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support.bus import task
from vlgenrm.bus import Topics
from vlgenrm.contracts import DeadLetter, DeadLetterReason, EventType, FailureReason, StageEvent
from vlgenrm.iteration.observe import FailureLog
from vlgenrm.operators.iteration.handlers import Runtime
from vlgenrm.settings import BusKind, Settings
from vlgenrm.store import LocalStore

POISON = [
    b'{"schema_version":1,"event_id":' + b"9" * 5000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"schema_version":NaN}',
    b"",
    b"\xff\xfe\x00",
]


def letter(original: bytes, offset: int) -> DeadLetter:
    return DeadLetter(reason=DeadLetterReason.UNDECODABLE, detail="test", original=original, topic="t", partition=0, offset=offset, group="g")


def test_poison_on_the_operators_topics_is_skipped_and_later_failures_are_seen(bus_backend, unique, tmp_path: Path):
    bus = bus_backend.new_bus()
    topics = Topics(unique("op"))
    bus.ensure_topics([topics.events, topics.dlq])
    for i, value in enumerate(POISON):
        bus.publish(topics.events, "k", value)
        bus.publish(topics.dlq, "k", value)
        bus.publish(topics.dlq, "k", letter(value, i))  # a dead letter whose original is poison too
    if bus_backend.kind is BusKind.KAFKA:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bus_backend.settings.bootstrap_servers)
        for topic in (topics.events, topics.dlq):
            producer.send(topic, key=b"\xff\xfe", value=None).get(timeout=30)  # a tombstone under a binary key
        producer.close()
    failed = StageEvent(event_id="e-1", task_id="task-1", shard=task(1).shard, type=EventType.SHARD_FAILED, reason=FailureReason.INTERNAL, message="boom")
    bus.publish(topics.events, "k", failed)
    bus.publish(topics.dlq, "k", letter(task(2).to_json_bytes(), 99))

    runtime = Runtime(Settings(), bus, LocalStore(tmp_path / "store"), topics, FailureLog(topics))
    consumer = threading.Thread(target=runtime.consume, daemon=True)
    consumer.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(runtime.failures.of("test", "it")) < 2:
            assert consumer.is_alive(), "a record on the events or dead-letter topic ended the operator's consumer"
            time.sleep(0.2)
        seen = sorted(e.task_id for e in runtime.failures.of("test", "it"))
        assert seen == ["task-1", "task-2"]
        assert consumer.is_alive()
    finally:
        runtime.stop.set()
        consumer.join(30)
    assert not consumer.is_alive()
