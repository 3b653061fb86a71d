"""The Bus interface: keyed, partitioned topics with consumer groups and explicit commits.

Semantics every implementation keeps (proven by tests/bus/test_bus_contract.py):
- ``publish`` returns only once the message is durable (Kafka: acknowledged by the broker).
- Messages with the same key land in the same partition and are delivered in order.
- Consumers in one group share a topic's partitions; each message goes to one of them.
- Nothing is marked done until ``commit``; whatever a consumer received but did not commit
  is delivered again to whoever owns the partition next (at-least-once).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

from pydantic import BaseModel

from vlgenrm.contracts import Stage
from vlgenrm.errors import PermanentError, TransientError


class BusUnavailableError(TransientError):
    """The broker could not be reached in time; the message may be retried later."""


class CommitFailedError(TransientError):
    """The commit was not recorded (e.g. the partition moved to another consumer).

    Safe to ignore: the uncommitted messages are redelivered, never lost.
    """


class TopicError(PermanentError):
    """A topic could not be created or has an unusable configuration."""


@dataclass(frozen=True)
class Record:
    """One delivered message with its position, as the consumer saw it."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    timestamp_ms: int


class Consumer(abc.ABC):
    """A member of a consumer group. Not thread-safe: use it from one thread."""

    @abc.abstractmethod
    def poll(self, timeout_s: float = 1.0, max_records: int = 100) -> list[Record]:
        """Wait up to ``timeout_s`` for messages from the partitions assigned to this member."""

    @abc.abstractmethod
    def commit(self, records: Record | Iterable[Record]) -> None:
        """Mark these records (and everything before them in their partitions) as processed."""

    @abc.abstractmethod
    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member owns now (updated by ``poll``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Leave the group; uncommitted records go to the remaining members."""

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Bus(abc.ABC):
    """Where services exchange typed messages. ``KafkaBus`` in clusters, ``MemoryBus`` embedded."""

    @abc.abstractmethod
    def publish(self, topic: str, key: str, message: BaseModel | bytes) -> None:
        """Send one message; returns when it is durable. Raises BusUnavailableError."""

    @abc.abstractmethod
    def consumer(self, topics: Sequence[str], group: str) -> Consumer:
        """Join ``group`` subscribed to ``topics`` (created if missing)."""

    @abc.abstractmethod
    def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet."""

    @abc.abstractmethod
    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the next offset ``group`` will read (partitions never committed are absent)."""

    @abc.abstractmethod
    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next published message will get."""

    def lag(self, group: str, topic: str) -> int:
        """Messages of ``topic`` that ``group`` has not committed yet."""
        committed = self.committed_offsets(group, topic)
        return sum(end - committed.get(p, 0) for p, end in self.end_offsets(topic).items())

    def close(self) -> None:  # noqa: B027 - optional hook: buses without connections need no close
        """Release connections. The bus must not be used afterwards."""

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class Topics:
    """Topic names of §4 under a configurable prefix."""

    prefix: str = "vlgenrm"

    def tasks(self, stage: Stage) -> str:
        return f"{self.prefix}.tasks.{stage.value}"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    def all(self) -> list[str]:
        return [self.tasks(s) for s in Stage] + [self.events, self.dlq]

    def group(self, name: str) -> str:
        """Consumer group ``name`` of this install. Groups are cluster-wide in Kafka: two installs
        sharing a group would rebalance together, and a trainer busy for hours (its poll interval
        raised to match) would hold the other install's trainers out of the group meanwhile."""
        return f"{self.prefix}-{name}"
