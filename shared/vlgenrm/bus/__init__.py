"""Message transport: the Bus interface, its Kafka and in-memory implementations, the worker loop."""

from vlgenrm.bus.base import Bus, BusUnavailableError, CommitFailedError, Consumer, Record, TopicError, Topics
from vlgenrm.bus.codec import Decoded, DecodeFailure, decode, encode
from vlgenrm.bus.memory import MemoryBus
from vlgenrm.bus.worker import Interrupted, Worker, WorkerStats
from vlgenrm.settings import BusKind, BusSettings


def make_bus(settings: BusSettings) -> Bus:
    """The Bus the settings ask for. KafkaBus is imported only when used."""
    if settings.kind is BusKind.KAFKA:
        from vlgenrm.bus.kafka import KafkaBus

        return KafkaBus(settings)
    return MemoryBus(partitions=settings.partitions, session_timeout_s=settings.session_timeout_s)


__all__ = [
    "Bus",
    "BusUnavailableError",
    "CommitFailedError",
    "Consumer",
    "DecodeFailure",
    "Interrupted",
    "Decoded",
    "MemoryBus",
    "Record",
    "TopicError",
    "Topics",
    "Worker",
    "WorkerStats",
    "decode",
    "encode",
    "make_bus",
]
