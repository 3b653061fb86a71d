"""Shared fixtures: real servers (session-scoped) and the backends every contract suite runs on.

Kafka and S3 come from scripts/infra/localinfra.py. When `make test` already started them
they are reused; otherwise the first test that needs one starts it and the session stops it.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import localinfra  # scripts/infra, on sys.path through pytest's pythonpath (pyproject.toml)
import pytest

from vlgenrm.bus import Bus, MemoryBus
from vlgenrm.settings import BusKind, BusSettings, StoreKind, StoreSettings
from vlgenrm.store import BlobStore, LocalStore

REPO = Path(__file__).resolve().parents[1]


def _serve(server: localinfra.KafkaServer | localinfra.S3Server | localinfra.KubeApiServer) -> Iterator:
    started_here = not server.is_running()
    server.install()
    server.start()
    yield server
    if started_here:
        server.stop()


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[localinfra.KafkaServer]:
    yield from _serve(localinfra.KafkaServer())


@pytest.fixture(scope="session")
def s3_server() -> Iterator[localinfra.S3Server]:
    yield from _serve(localinfra.S3Server())


@pytest.fixture(scope="session")
def kube_server() -> Iterator[localinfra.KubeApiServer]:
    """etcd + kube-apiserver, envtest-style: RBAC and CRDs work, no controllers (use fresh namespaces).

    ``kube_server.kubeconfig`` is an admin kubeconfig, ``kube_server.run_kubectl(...)`` runs its kubectl.
    The build takes 10+ minutes the first time: `make infra-up` fills the cache before pytest runs.
    """
    yield from _serve(localinfra.KubeApiServer())


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (held together while choosing)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def png(colour: tuple[int, int, int], size: int = 56) -> bytes:
    """A one-colour PNG: the tests' image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


@contextlib.contextmanager
def serve_image(data: bytes) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering every GET with ``data`` as a PNG; yields its base URL."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def wait_http_ok(url: str, timeout_s: float = 120) -> None:
    """Poll ``url`` until it answers 200 (a service starting up); fail after ``timeout_s``."""
    import httpx

    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=5).status_code
            if last == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered 200 (last: {last})")


@pytest.fixture(scope="session")
def helm() -> localinfra.Helm:
    """The Helm client (built once into the cache; `make infra-up` builds it before pytest runs)."""
    tool = localinfra.Helm()
    tool.install()
    return tool


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names no other test uses (topics, groups, prefixes), so tests can share servers."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- bus backends ---------------------------------------------------------------------------
@dataclass
class BusBackend:
    """How a test obtains buses of one kind. ``new_bus`` is a fresh client (a new process's
    view for Kafka); the MemoryBus lives in one process, so it returns the same instance."""

    kind: BusKind
    settings: BusSettings
    new_bus: Callable[[], Bus]
    _opened: list[Bus] = field(default_factory=list)


def kafka_settings(server: localinfra.KafkaServer, **overrides: object) -> BusSettings:
    # group.min.session.timeout.ms is 6 s on a stock broker: the shortest a test may use.
    base = dict(kind=BusKind.KAFKA, bootstrap_servers=server.bootstrap_servers, session_timeout_s=6.0, heartbeat_interval_s=1.0, connect_timeout_s=10.0)
    return BusSettings(**(base | overrides))


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
def bus_backend(request: pytest.FixtureRequest) -> Iterator[BusBackend]:
    if request.param == "memory":
        settings = BusSettings(kind=BusKind.MEMORY, session_timeout_s=1.0)
        bus = MemoryBus(partitions=settings.partitions, session_timeout_s=settings.session_timeout_s)
        yield BusBackend(BusKind.MEMORY, settings, lambda: bus)
        return
    from vlgenrm.bus.kafka import KafkaBus

    settings = kafka_settings(request.getfixturevalue("kafka_server"))
    backend = BusBackend(BusKind.KAFKA, settings, lambda: None)  # type: ignore[arg-type,return-value]

    def new_bus() -> Bus:
        bus = KafkaBus(settings)
        backend._opened.append(bus)
        return bus

    backend.new_bus = new_bus
    yield backend
    for bus in backend._opened:
        bus.close()


# -- store backends -------------------------------------------------------------------------
def s3_settings(server: localinfra.S3Server, **overrides: object) -> StoreSettings:
    base = dict(
        kind=StoreKind.S3,
        endpoint=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        bucket="vlgenrm-test",
        secure=False,
    )
    return StoreSettings(**(base | overrides))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    from vlgenrm.store.s3 import S3Store

    s3 = S3Store(s3_settings(request.getfixturevalue("s3_server")))
    yield s3
    s3.close()


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the session's in-process training runs (started as the trainer does)."""
    import ray

    from vlgenrm.ray_cluster import ensure_ray
    from vlgenrm.settings import RaySettings

    ensure_ray(RaySettings(num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2-VL checkpoint to train from (built once per session)."""
    from vlgenrm.genrm.tiny import build_tiny_genrm

    return build_tiny_genrm(tmp_path_factory.mktemp("trainer-start") / "qwen2_vl", "qwen2_vl", seed=0)
