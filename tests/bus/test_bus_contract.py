"""The bus contract: the same tests run against MemoryBus and a real Kafka broker."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

import pytest

from tests.support.bus import drain
from vlgenrm.bus import Consumer, Record, Topics
from vlgenrm.contracts import Stage
from vlgenrm.settings import BusKind


def test_publish_then_consume_round_trip(bus_backend, unique):
    bus = bus_backend.new_bus()
    topic, group = unique("t"), unique("g")
    bus.publish(topic, "k1", b"hello")
    with bus.consumer([topic], group) as consumer:
        [record] = drain(consumer, 1)
    assert (record.topic, record.key, record.value) == (topic, "k1", b"hello")
    assert bus.lag(group, topic) == 0


def test_per_key_ordering(bus_backend, unique):
    bus = bus_backend.new_bus()
    topic, group = unique("t"), unique("g")
    keys = [f"key-{i}" for i in range(6)]
    for seq in range(30):
        for key in keys:
            bus.publish(topic, key, f"{seq}".encode())
    with bus.consumer([topic], group) as consumer:
        records = drain(consumer, 30 * len(keys))
    per_key: dict[str, list[int]] = defaultdict(list)
    for r in records:
        per_key[r.key].append(int(r.value))
    assert set(per_key) == set(keys)
    for key, seqs in per_key.items():
        assert seqs == list(range(30)), f"{key} out of order: {seqs}"


def test_two_consumers_in_a_group_share_partitions(bus_backend, unique):
    bus = bus_backend.new_bus()
    topic, group = unique("t"), unique("g")
    bus.ensure_topics([topic], partitions=4)
    first, second = bus.consumer([topic], group), bus_backend.new_bus().consumer([topic], group)
    # Poll both until the group has settled: disjoint assignments covering all partitions.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        first.poll(0.2), second.poll(0.2)
        a, b = first.assignment(), second.assignment()
        if a and b and not a & b and len(a | b) == 4:
            break
    assert first.assignment() and second.assignment(), "the group never gave both members partitions"
    n = 200
    for i in range(n):
        bus.publish(topic, f"key-{i % 40}", str(i).encode())
    got: dict[str, list[Record]] = {"first": [], "second": []}

    def consume(name: str, consumer: Consumer) -> None:
        deadline = time.monotonic() + 60
        while sum(len(v) for v in got.values()) < n and time.monotonic() < deadline:
            records = consumer.poll(0.3, 50)
            got[name] += records
            if records:
                consumer.commit(records)

    threads = [threading.Thread(target=consume, args=item) for item in (("first", first), ("second", second))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    first.close(), second.close()
    values = [int(r.value) for r in got["first"] + got["second"]]
    assert sorted(set(values)) == list(range(n))
    assert got["first"] and got["second"], "one consumer did all the work"
    owners = {(r.partition, name) for name, rs in got.items() for r in rs}
    assert len({p for p, _ in owners}) == len(owners), "a partition was consumed by both members"


def test_uncommitted_messages_are_redelivered_after_close(bus_backend, unique):
    bus = bus_backend.new_bus()
    topic, group = unique("t"), unique("g")
    for i in range(12):
        bus.publish(topic, f"k{i}", str(i).encode())
    with bus.consumer([topic], group) as consumer:
        records = drain(consumer, 12, commit=False)
        assert len(records) == 12
        # Commit the first half of one partition only; everything else stays uncommitted.
        partition = max({r.partition for r in records}, key=lambda p: sum(r.partition == p for r in records))
        mine = sorted((r for r in records if r.partition == partition), key=lambda r: r.offset)
        committed = mine[: max(1, len(mine) // 2)]
        consumer.commit(committed)
    expected = {int(r.value) for r in records} - {int(r.value) for r in committed}
    with bus.consumer([topic], group) as consumer:
        again = drain(consumer, len(expected))
        assert not consumer.poll(1.0), "committed records came back"
    assert {int(r.value) for r in again} == expected
    assert bus.lag(group, topic) == 0


def test_a_dead_consumer_loses_its_partitions_and_its_messages_are_redelivered(bus_backend, unique, tmp_path):
    """A member that dies without committing (SIGKILL for Kafka, a crashed thread for the
    MemoryBus) is evicted after the session timeout; another member gets its messages."""
    bus = bus_backend.new_bus()
    topic, group = unique("t"), unique("g")
    n = 20
    for i in range(n):
        bus.publish(topic, f"k{i}", str(i).encode())
    if bus_backend.kind is BusKind.KAFKA:
        from tests.support.procs import kill_consumer_process_after_receiving

        received = kill_consumer_process_after_receiving(bus_backend.settings, topic, group, n, tmp_path)
    else:
        received = []

        def crash() -> None:
            consumer = bus.consumer([topic], group)
            received.extend(drain(consumer, n, commit=False))
            # The thread ends here without commit or close: a crashed worker.

        thread = threading.Thread(target=crash)
        thread.start()
        thread.join()
        received = [int(r.value) for r in received]
    assert sorted(received) == list(range(n)), "the doomed consumer should have received everything"
    with bus_backend.new_bus().consumer([topic], group) as survivor:
        again = drain(survivor, n, timeout_s=bus_backend.settings.session_timeout_s + 60)
    assert sorted(int(r.value) for r in again) == list(range(n))


@pytest.mark.integration
def test_installs_sharing_a_kafka_cluster_do_not_wait_for_each_others_busy_trainers(kafka_server, unique):
    """A member busy in a handler holds a rebalance of its group for up to its poll interval
    (hours for a trainer): another install's consumers must not be in that group."""
    from tests.conftest import kafka_settings
    from vlgenrm.bus.kafka import KafkaBus

    mine, theirs = Topics(unique("mine")), Topics(unique("theirs"))
    assert Topics().group("trainer") == "vlgenrm-trainer" and mine.group("trainer") != theirs.group("trainer")
    with KafkaBus(kafka_settings(kafka_server, max_poll_interval_s=300)) as busy_bus, KafkaBus(kafka_settings(kafka_server)) as bus:
        busy_bus.publish(theirs.tasks(Stage.TRAINING), "k", b"theirs")
        busy = busy_bus.consumer([theirs.tasks(Stage.TRAINING)], theirs.group("trainer"))
        try:
            assert drain(busy, 1, timeout_s=60), "the other install's trainer never got its task"
            # ... and now trains without polling, as a trainer does for hours.
            bus.publish(mine.tasks(Stage.TRAINING), "k", b"mine")
            started = time.monotonic()
            with bus.consumer([mine.tasks(Stage.TRAINING)], mine.group("trainer")) as consumer:
                got = drain(consumer, 1, timeout_s=60)
            assert [r.value for r in got] == [b"mine"], f"nothing after {time.monotonic() - started:.0f} s"
        finally:
            busy.close()


@pytest.mark.integration
def test_a_consumer_of_topics_just_created_is_assigned_their_partitions_at_its_first_join(kafka_server, unique, caplog):
    """A first assignment made before the client knows a topic's partitions gives the member
    nothing, and kafka-python does not always rejoin when they appear: the consumer must join
    only once it has them."""
    from tests.conftest import kafka_settings
    from vlgenrm.bus.kafka import KafkaBus

    caplog.set_level(logging.WARNING, logger="kafka")
    with KafkaBus(kafka_settings(kafka_server)) as bus:
        for _ in range(3):
            topics = [unique("fresh"), unique("fresh")]
            bus.ensure_topics(topics)
            for topic in topics:
                bus.publish(topic, "k", topic.encode())
            with bus.consumer(topics, unique("g")) as consumer:
                got = drain(consumer, 2, timeout_s=60)
            assert sorted(r.value for r in got) == sorted(t.encode() for t in topics)
    starved = [r.getMessage() for r in caplog.records if "No partition metadata" in r.getMessage()]
    assert starved == [], starved
