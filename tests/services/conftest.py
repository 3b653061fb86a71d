"""A whole platform per backend pair: MemoryBus + LocalStore (embedded) or Kafka + S3 (cluster)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import kafka_settings, s3_settings
from vlgenrm.bus import Bus, MemoryBus, Topics
from vlgenrm.retry import Backoff
from vlgenrm.settings import BusKind, BusSettings, Settings, StoreKind, StoreSettings, WorkerSettings
from vlgenrm.store import BlobStore, LocalStore


@dataclass
class Platform:
    kind: str
    settings: Settings
    bus: Bus
    store: BlobStore

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.bus.topic_prefix)


@pytest.fixture(params=["embedded", pytest.param("cluster", marks=pytest.mark.integration)])
def platform(request: pytest.FixtureRequest, tmp_path) -> Iterator[Platform]:
    yield from make_platform(request.param, request, tmp_path)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path) -> Iterator[Platform]:
    """Kafka + S3 only: for faults that an in-process bus cannot survive by design (SIGKILL)."""
    yield from make_platform("cluster", request, tmp_path)


def make_platform(kind: str, request: pytest.FixtureRequest, tmp_path) -> Iterator[Platform]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    worker = WorkerSettings(poll_timeout_s=0.2, retry=Backoff(max_attempts=2, initial_s=0.05, max_s=0.1))
    if kind == "embedded":
        settings = Settings(
            bus=BusSettings(kind=BusKind.MEMORY, topic_prefix=prefix),
            store=StoreSettings(kind=StoreKind.LOCAL, root=tmp_path / "store"),
            worker=worker,
        )
        yield Platform("embedded", settings, MemoryBus(), LocalStore(tmp_path / "store"))
        return
    from vlgenrm.bus.kafka import KafkaBus
    from vlgenrm.store.s3 import S3Store

    bus_settings = kafka_settings(request.getfixturevalue("kafka_server"), topic_prefix=prefix)
    store_settings = s3_settings(request.getfixturevalue("s3_server"), bucket=f"vlgenrm-{prefix}")
    settings = Settings(bus=bus_settings, store=store_settings, worker=worker)
    bus, store = KafkaBus(bus_settings), S3Store(store_settings)
    yield Platform("cluster", settings, bus, store)
    bus.close()
    store.close()
