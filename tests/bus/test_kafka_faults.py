"""Kafka-only faults: the broker stops and restarts in the middle of a stream."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.conftest import kafka_settings
from vlgenrm.bus.kafka import KafkaBus
from vlgenrm.retry import Backoff

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_broker_restart_mid_stream_loses_nothing(kafka_server, unique):
    settings = kafka_settings(
        kafka_server,
        publish_timeout_s=5.0,
        request_timeout_s=5.0,
        publish_retry=Backoff(max_attempts=30, initial_s=0.5, max_s=2.0),
    )
    producer_bus, consumer_bus = KafkaBus(settings), KafkaBus(settings)
    topic, group, n = unique("stream"), unique("g"), 300
    producer_bus.ensure_topics([topic])
    received: Counter[int] = Counter()
    published = 0
    done = threading.Event()

    def produce() -> None:
        nonlocal published
        for i in range(n):
            producer_bus.publish(topic, f"k{i % 16}", str(i).encode())
            published += 1
            time.sleep(0.01)

    def consume() -> None:
        with consumer_bus.consumer([topic], group) as consumer:
            deadline = time.monotonic() + 240
            while len(received) < n and time.monotonic() < deadline:
                records = consumer.poll(0.5, 100)
                received.update(int(r.value) for r in records)
                if records:
                    try:
                        consumer.commit(records)
                    except Exception:  # noqa: BLE001 - a failed commit only means redelivery
                        pass
        done.set()

    producer, consumer = threading.Thread(target=produce), threading.Thread(target=consume)
    producer.start(), consumer.start()
    while published < n // 3:
        time.sleep(0.05)
    kafka_server.stop()
    stopped_at = published
    time.sleep(3)
    kafka_server.start()
    producer.join(240)
    consumer.join(240)
    producer_bus.close(), consumer_bus.close()
    duplicates = sum(received.values()) - len(received)
    print(f"\nbroker stopped after {stopped_at} published; received {len(received)}/{n} distinct, {duplicates} duplicates")
    assert published == n
    assert sorted(received) == list(range(n)), f"lost {sorted(set(range(n)) - set(received))[:20]}"
