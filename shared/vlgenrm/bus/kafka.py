"""KafkaBus: the Bus over Apache Kafka (kafka-python), for clusters."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    CommitFailedError as KafkaCommitFailedError,
)
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata
from pydantic import BaseModel

from vlgenrm.bus.base import Bus, BusUnavailableError, CommitFailedError, Consumer, Record, TopicError
from vlgenrm.bus.codec import encode
from vlgenrm.retry import retry_call
from vlgenrm.settings import BusSettings

log = logging.getLogger(__name__)


def _is_transient(exc: BaseException) -> bool:
    """Broker unreachable, leader moving, request timed out: worth another try."""
    if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


class KafkaBus(Bus):
    """Kafka-backed Bus. Publishing waits for acks=all; consumers commit explicitly."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._known_topics: set[str] = set()

    # -- connection settings shared by producer, consumer and admin ----------------------
    def _common(self) -> dict[str, Any]:
        s = self.settings
        cfg: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers.split(","),
            "client_id": s.client_id,
            "request_timeout_ms": int(s.request_timeout_s * 1000),
            # kafka-python otherwise probes for 30 s when no broker answers (see DESIGN §8).
            "bootstrap_timeout_ms": int(s.connect_timeout_s * 1000),
            "reconnect_backoff_max_ms": 2000,
            "security_protocol": s.security_protocol,
        }
        if s.sasl_mechanism:
            cfg["sasl_mechanism"] = s.sasl_mechanism
            cfg["sasl_plain_username"] = s.sasl_username
            cfg["sasl_plain_password"] = s.sasl_password.get_secret_value() if s.sasl_password else None
        return cfg

    def _unavailable(self, what: str, exc: BaseException) -> BusUnavailableError:
        return BusUnavailableError(f"Kafka at {self.settings.bootstrap_servers}: {what} failed: {exc!r}")

    def _with_retry(self, fn: Any, what: str) -> Any:
        try:
            return retry_call(fn, is_transient=_is_transient, backoff=self.settings.publish_retry, what=what)
        except Exception as exc:
            if _is_transient(exc):
                raise self._unavailable(what, exc) from exc
            raise

    @property
    def admin(self) -> KafkaAdminClient:
        with self._lock:
            if self._admin is None:
                self._admin = self._with_retry(lambda: KafkaAdminClient(**self._common()), "connect admin client")
            return self._admin

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                s = self.settings
                cfg = self._common() | {
                    "acks": "all",
                    "linger_ms": 2,
                    "max_block_ms": int(s.publish_timeout_s * 1000),
                    "delivery_timeout_ms": int(s.publish_timeout_s * 1000) + int(s.request_timeout_s * 1000),
                }
                self._producer = self._with_retry(lambda: KafkaProducer(**cfg), "connect producer")
            return self._producer

    # -- topics ------------------------------------------------------------------------
    def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        missing = [t for t in topics if t not in self._known_topics]
        if not missing:
            return
        new = [NewTopic(t, partitions or self.settings.partitions, self.settings.replication_factor) for t in missing]

        def create() -> None:
            try:
                self.admin.create_topics(new, timeout_ms=int(self.settings.request_timeout_s * 1000), wait_for_metadata=True)
            except TopicAlreadyExistsError:
                pass  # errors are per topic: the batch's other topics were still created

        try:
            self._with_retry(create, f"create topics {missing}")
        except KafkaError as exc:
            raise TopicError(f"cannot create topics {missing} at {self.settings.bootstrap_servers}: {exc!r}") from exc
        self._known_topics.update(missing)

    # -- producing ---------------------------------------------------------------------
    def publish(self, topic: str, key: str, message: BaseModel | bytes) -> None:
        value = encode(message)
        self.ensure_topics([topic])
        timeout = self.settings.publish_timeout_s

        def send() -> None:
            producer = self.producer
            try:
                producer.send(topic, key=key.encode(), value=value).get(timeout=timeout)
            except KafkaError:
                # A producer that lost its broker can wedge on a batch it retries forever
                # (seen with kafka-python 3 across a broker restart); a fresh producer gets a
                # new producer id and clean metadata. The record may then arrive twice:
                # at-least-once allows it.
                self._discard_producer(producer)
                raise

        self._with_retry(send, f"publish to {topic}")

    def _discard_producer(self, producer: KafkaProducer) -> None:
        with self._lock:
            if self._producer is producer:
                self._producer = None
        try:
            producer.close(timeout=0)
        except KafkaError as exc:
            log.debug("discarding a producer: %r", exc)

    # -- consuming ---------------------------------------------------------------------
    def consumer(self, topics: Sequence[str], group: str) -> KafkaBusConsumer:
        self.ensure_topics(topics)
        s = self.settings
        cfg = self._common() | {
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": int(s.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(s.heartbeat_interval_s * 1000),
            "max_poll_interval_ms": int(s.max_poll_interval_s * 1000),
            "max_poll_records": 500,
        }
        consumer = self._with_retry(lambda: KafkaConsumer(**cfg), f"connect consumer of {group}")
        try:
            self._await_partitions(consumer, topics)
        except BaseException:
            consumer.close(autocommit=False)
            raise
        # Subscribed only now: a group's first assignment made before the client has its topics'
        # partitions gives this member nothing ("No partition metadata"), and when the metadata
        # arrives kafka-python usually, not always, rejoins; a trainer once waited for 7 minutes,
        # assigned nothing, beside its queued task.
        consumer.subscribe(list(topics))
        return KafkaBusConsumer(consumer, self)

    def _await_partitions(self, consumer: KafkaConsumer, topics: Sequence[str]) -> None:
        """Wait until ``consumer``'s metadata lists partitions for every one of ``topics``."""
        deadline = time.monotonic() + self.settings.connect_timeout_s + self.settings.request_timeout_s
        missing = list(topics)
        while True:
            try:
                missing = [t for t in missing if not consumer.partitions_for_topic(t)]
            except KafkaError as exc:
                if not _is_transient(exc):
                    raise
            if not missing:
                return
            if time.monotonic() > deadline:
                raise self._unavailable(f"finding the partitions of {missing}", TimeoutError("no partition metadata"))
            time.sleep(0.1)

    def committed_offsets(self, group: str, topic: str) -> dict[int, int]:
        offsets = self._with_retry(lambda: self.admin.list_group_offsets({group: None}), f"fetch offsets of {group}")
        return {tp.partition: om.offset for tp, om in offsets.get(group, {}).items() if tp.topic == topic and om.offset >= 0}

    def end_offsets(self, topic: str) -> dict[int, int]:
        from kafka.protocol.consumer.offsets import OffsetSpec

        def fetch() -> dict[int, int]:
            meta = self.admin.describe_topics([topic])
            parts = [TopicPartition(topic, p["partition_index"]) for t in meta for p in t["partitions"]]
            result = self.admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in parts})
            return {tp.partition: ot.offset for tp, ot in result.items()}

        return self._with_retry(fetch, f"fetch end offsets of {topic}")

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                try:
                    self._producer.close(timeout=5)
                except KafkaError as exc:  # only records whose publish() already failed remain
                    log.warning("closing the producer left records unsent: %r", exc)
                self._producer = None
            if self._admin is not None:
                self._admin.close()
                self._admin = None


class KafkaBusConsumer(Consumer):
    def __init__(self, consumer: KafkaConsumer, bus: KafkaBus) -> None:
        self._c = consumer
        self._bus = bus

    def poll(self, timeout_s: float = 1.0, max_records: int = 100) -> list[Record]:
        try:
            batches = self._c.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            if _is_transient(exc):
                # The client reconnects by itself; report "nothing yet" rather than failing the loop.
                log.warning("poll from %s failed: %r", self._bus.settings.bootstrap_servers, exc)
                return []
            raise
        # Any producer can write here: a key that is not UTF-8 or a tombstone (no value) must
        # reach the worker as a record it can dead-letter, not raise out of poll().
        return [
            Record(
                r.topic,
                r.partition,
                r.offset,
                r.key.decode("utf-8", "backslashreplace") if r.key is not None else None,
                r.value if r.value is not None else b"",
                r.timestamp,
            )
            for records in batches.values()
            for r in records
        ]

    def commit(self, records: Record | Iterable[Record]) -> None:
        records = [records] if isinstance(records, Record) else list(records)
        highest: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            highest[tp] = max(highest.get(tp, -1), r.offset)
        offsets = {tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in highest.items()}
        try:
            self._c.commit(offsets, timeout_ms=int(self._bus.settings.request_timeout_s * 1000))
        except (KafkaCommitFailedError, KafkaError) as exc:
            raise CommitFailedError(f"commit of {offsets} failed: {exc!r}; the records will be redelivered") from exc

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._c.assignment()}

    def close(self) -> None:
        self._c.close(autocommit=False)
