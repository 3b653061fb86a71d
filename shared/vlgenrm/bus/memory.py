"""MemoryBus: the embedded default. Kafka's semantics in one process, thread-safe.

Partitions, consumer groups, committed offsets, rebalancing and session timeouts behave as
Kafka's do, so code tested on the MemoryBus behaves the same on a cluster. What it cannot do
is outlive its process: it is the transport of the one-command local run, not of a cluster.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from vlgenrm.bus.base import Bus, CommitFailedError, Consumer, Record
from vlgenrm.bus.codec import encode

TopicPartition = tuple[str, int]


@dataclass
class _Member:
    id: str
    topics: tuple[str, ...]
    last_seen: float
    assigned: set[TopicPartition] = field(default_factory=set)
    positions: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass
class _Group:
    members: dict[str, _Member] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class MemoryBus(Bus):
    """In-process bus. ``session_timeout_s``: a member silent that long loses its partitions."""

    def __init__(self, partitions: int = 4, session_timeout_s: float = 10.0) -> None:
        self.default_partitions = partitions
        self.session_timeout_s = session_timeout_s
        self._cond = threading.Condition()
        self._log: dict[str, list[list[tuple[str | None, bytes, int]]]] = {}
        self._groups: dict[str, _Group] = {}
        self._ids = itertools.count(1)

    # -- producing ---------------------------------------------------------------------
    def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        with self._cond:
            for topic in topics:
                if topic not in self._log:
                    self._log[topic] = [[] for _ in range(partitions or self.default_partitions)]

    def publish(self, topic: str, key: str, message: BaseModel | bytes) -> None:
        value = encode(message)
        with self._cond:
            self.ensure_topics([topic])
            partitions = self._log[topic]
            # crc32 is stable across processes, unlike hash(): the same key keeps its partition.
            partition = zlib.crc32(key.encode()) % len(partitions)
            partitions[partition].append((key, value, int(time.time() * 1000)))
            self._cond.notify_all()

    # -- consuming ---------------------------------------------------------------------
    def consumer(self, topics: Sequence[str], group: str) -> MemoryConsumer:
        self.ensure_topics(topics)
        return MemoryConsumer(self, tuple(topics), group, f"{group}-{next(self._ids)}")

    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Next offset to read per partition for ``group`` (absent = nothing committed)."""
        with self._cond:
            committed = self._groups.get(group, _Group()).committed
            return {p: off for (t, p), off in committed.items() if t == topic}

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self._cond:
            return {p: len(log) for p, log in enumerate(self._log.get(topic, []))}

    # -- group membership (callers hold self._cond) --------------------------------------
    def _join(self, group: str, member_id: str, topics: tuple[str, ...]) -> None:
        g = self._groups.setdefault(group, _Group())
        g.members[member_id] = _Member(member_id, topics, time.monotonic())
        self._rebalance(g)

    def _leave(self, group: str, member_id: str) -> None:
        g = self._groups.get(group)
        if g is not None and g.members.pop(member_id, None) is not None:
            self._rebalance(g)

    def _expire(self, group: str) -> None:
        g = self._groups[group]
        now = time.monotonic()
        dead = [m for m in g.members.values() if now - m.last_seen > self.session_timeout_s]
        for member in dead:
            del g.members[member.id]
        if dead:
            self._rebalance(g)

    def _rebalance(self, g: _Group) -> None:
        """Round-robin partitions over the members subscribed to each topic.

        Like Kafka's eager protocol, every member restarts from the committed offsets, so
        whatever was received but not committed is delivered again.
        """
        for member in g.members.values():
            member.assigned = set()
        for topic in sorted({t for m in g.members.values() for t in m.topics}):
            subscribers = sorted((m for m in g.members.values() if topic in m.topics), key=lambda m: m.id)
            for partition in range(len(self._log[topic])):
                subscribers[partition % len(subscribers)].assigned.add((topic, partition))
        for member in g.members.values():
            member.positions = {tp: g.committed.get(tp, 0) for tp in member.assigned}
        self._cond.notify_all()


class MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, topics: tuple[str, ...], group: str, member_id: str) -> None:
        self._bus, self._topics, self._group, self.member_id = bus, topics, group, member_id
        self._closed = False
        with bus._cond:
            bus._join(group, member_id, topics)

    def _member(self) -> _Member:
        g = self._bus._groups[self._group]
        member = g.members.get(self.member_id)
        if member is None:  # evicted after a session timeout: rejoin, like a Kafka consumer
            self._bus._join(self._group, self.member_id, self._topics)
            member = g.members[self.member_id]
        member.last_seen = time.monotonic()
        return member

    def poll(self, timeout_s: float = 1.0, max_records: int = 100) -> list[Record]:
        if self._closed:
            raise RuntimeError("consumer is closed")
        deadline = time.monotonic() + timeout_s
        bus = self._bus
        with bus._cond:
            while True:
                member = self._member()
                bus._expire(self._group)
                records: list[Record] = []
                for tp in sorted(member.assigned):
                    log = bus._log[tp[0]][tp[1]]
                    start = member.positions[tp]
                    end = min(len(log), start + max_records - len(records))
                    records += [Record(tp[0], tp[1], off, *log[off]) for off in range(start, end)]
                    member.positions[tp] = max(start, end)
                    if len(records) >= max_records:
                        break
                if records:
                    return records
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                # Wake periodically: other members' liveness is checked on polls.
                bus._cond.wait(min(remaining, 0.1))

    def commit(self, records: Record | Iterable[Record]) -> None:
        records = [records] if isinstance(records, Record) else list(records)
        with self._bus._cond:
            g = self._bus._groups[self._group]
            member = g.members.get(self.member_id)
            if member is None:
                raise CommitFailedError(f"{self.member_id} was removed from group {self._group} (session timeout)")
            highest: dict[TopicPartition, int] = {}
            for r in records:
                highest[(r.topic, r.partition)] = max(highest.get((r.topic, r.partition), -1), r.offset)
            lost = [tp for tp in highest if tp not in member.assigned]
            if lost:
                raise CommitFailedError(f"partitions {lost} were reassigned; their records will be redelivered")
            for tp, offset in highest.items():
                g.committed[tp] = offset + 1
            member.last_seen = time.monotonic()

    def assignment(self) -> set[tuple[str, int]]:
        with self._bus._cond:
            member = self._bus._groups[self._group].members.get(self.member_id)
            return set(member.assigned) if member else set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._bus._cond:
                self._bus._leave(self._group, self.member_id)
