#!/usr/bin/env python3
"""Real Kafka, S3 and Kubernetes API servers on 127.0.0.1 for the vlgenrm test suite.

Installs (from Maven Central and the Go module proxy only), starts, stops and
restarts these servers:

* Apache Kafka in KRaft mode, one node acting as broker and controller;
* versitygw, an Apache-2.0 S3 gateway, on a plain directory;
* etcd, one member;
* kube-apiserver on that etcd, plus kubectl: a control plane without controllers, as
  controller-runtime's envtest runs it (RBAC, static bearer tokens, a test CA).

and builds the Helm client the chart tests run (a tool: installed, never started).

Builds are cached under ``INFRA_HOME``; runtime data, pid files, logs, ports and
credentials live under a state directory, so a server started by one process
(``make``) can be stopped or restarted by another (``pytest``).

Stdlib only, so it runs before any virtualenv exists.  Usage::

    python scripts/infra/localinfra.py up            # install if needed, start, write connection files
    python scripts/infra/localinfra.py down kafka    # stop one server, keep its data
    python scripts/infra/localinfra.py up kube       # etcd + kube-apiserver; writes .infra/kubeconfig
    python scripts/infra/localinfra.py --help
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_HOME = Path(os.environ.get("VLGENRM_INFRA_HOME") or Path.home() / ".cache" / "vlgenrm" / "infra")
DEFAULT_STATE_DIR = Path(os.environ.get("VLGENRM_INFRA_STATE") or REPO_ROOT / ".infra")

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
# Kafka 4.4 still logs through SLF4J 1.7.36 (see its pom), so the matching log4j2
# binding is log4j-slf4j-impl, not log4j-slf4j2-impl (which would leave SLF4J 1.x
# without a binding and silently drop every log line). Same version as the
# log4j-core that kafka_2.13 pulls in.
LOG4J_VERSION = "2.25.5"
VERSITYGW_VERSION = "v1.7.0"
VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
ETCD_VERSION = "v3.6.16"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
# The staging modules (k8s.io/api, k8s.io/apiserver, …) are published as v0.<minor>.<patch>.
KUBE_VERSION = "v1.36.3"
HELM_VERSION = "v3.22.0"
KUBE_MODULE = "k8s.io/kubernetes"
KUBE_SERVICE_CIDR = "10.0.0.0/24"
KUBE_SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: first address of the range
KUBE_ADMIN_USER = "vlgenrm-admin"
KUBE_TEST_USER = "vlgenrm-user"

S3_REGION = "us-east-1"
# Fixed, obviously-fake test credentials: tests and the connection file read them
# from the state dir, so changing them here only affects fresh state dirs.
S3_DEFAULT_ACCESS_KEY = "vlgenrm-test"
S3_DEFAULT_SECRET_KEY = "vlgenrm-test-secret-key"

LOG_TAIL_LINES = 30


class InfraError(RuntimeError):
    """A server could not be installed, started or stopped."""


# --------------------------------------------------------------------------- helpers


_START_BANNER = "===== localinfra: starting"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last lines of a log, from the latest start banner on (older runs are noise)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            # The tail of a log is all we need; don't read a multi-MB file whole.
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    if _START_BANNER in text:
        text = text[text.rindex(_START_BANNER) :]
    return "\n".join(text.splitlines()[-lines:])


def _write_atomic(path: Path, text: str) -> None:
    # Readers in other processes must never see a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise install/start/stop across processes (pytest workers, make, CLI)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR like the servers themselves, so TIME_WAIT leftovers of our
        # own previous run don't count as "taken".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_free_port(exclude: tuple[int, ...] = ()) -> int:
    """A free port below the kernel's ephemeral range.

    Ports are persisted and reused across restarts. A port from the ephemeral
    range (what bind(0) returns) could meanwhile be used as the local end of some
    client connection, and the restart would then fail with EADDRINUSE.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    hi = max(low - 1, 20001)
    for _ in range(200):
        port = random.randint(20000, hi)
        if port not in exclude and _port_is_free(port):
            return port
    raise InfraError("could not find a free TCP port on 127.0.0.1")


def _pid_alive(pid: int) -> bool:
    # If we spawned it ourselves, reap it so a dead child doesn't linger as a zombie
    # (a zombie still "exists" for kill(pid, 0)).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state not in ("Z", "X"):
        return True
    # A zombie main thread does not mean the process is gone: the JVM's other threads
    # may still be tearing down, and they hold the listening sockets until the last one exits.
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Servers run in their own session, so the pid is also the process group id;
    # signalling the group catches any helper processes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _run_logged(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise InfraError(f"{what} failed (exit {proc.returncode}); last lines of {log}:\n{_tail(log)}")


# Popen objects of servers this process launched. Keeping a reference stops
# Python from warning "subprocess is still running" when the object is collected
# (the servers are meant to outlive us).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- base server


class _CachedInstall:
    """A build kept in the cache under ``infra_home/<name>-<version>``, made atomically once."""

    name: str = ""
    version: str = ""

    def __init__(self, infra_home: Path = INFRA_HOME) -> None:
        self.infra_home = Path(infra_home).resolve()

    @property
    def install_dir(self) -> Path:
        return self.infra_home / f"{self.name}-{self.version}"

    def _is_installed(self) -> bool:
        raise NotImplementedError

    def _build(self, tmp: Path, log: Path) -> None:
        """Populate ``tmp``; it is renamed to ``install_dir`` only when this returns."""
        raise NotImplementedError

    def install(self) -> float:
        """Install into the cache if missing; returns seconds spent (≈0 when cached)."""
        t0 = time.monotonic()
        if self._is_installed():
            return time.monotonic() - t0
        self.infra_home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.infra_home / f".{self.name}.install.lock"):
            if self._is_installed():  # another process finished it while we waited
                return time.monotonic() - t0
            for stale in self.infra_home.glob(f".tmp-{self.name}-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted install
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{self.name}-", dir=self.infra_home))
            log = self.infra_home / f"{self.name}-install.log"
            log.write_text("")
            try:
                self._build(tmp, log)
                if self.install_dir.exists():  # an incomplete dir from an older layout
                    shutil.rmtree(self.install_dir)
                tmp.chmod(0o755)  # mkdtemp makes it owner-only
                os.rename(tmp, self.install_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if not self._is_installed():
                raise InfraError(f"{self.name}: install finished but {self.install_dir} looks incomplete")
        return time.monotonic() - t0


class _Server(_CachedInstall):
    """Shared life cycle: atomic cached install, pid files, persisted ports."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, infra_home: Path = INFRA_HOME) -> None:
        super().__init__(infra_home)
        self.state_dir = Path(state_dir).resolve()

    # -- paths -----------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.state_dir / self.name

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    @property
    def _lock_file(self) -> Path:
        return self.state_dir / f".{self.name}.lock"

    # -- to be provided by subclasses (with _is_installed and _build) ----------------

    def _initial_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write configs / initialise storage before a launch (must keep existing data)."""

    def _command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def _marker(self) -> str:
        """A string only our server's command line contains (tells stale pid files apart)."""
        raise NotImplementedError

    def _probe(self) -> bool:
        """True when the server answers a real protocol request."""
        raise NotImplementedError

    # -- persisted state (ports, credentials) ---------------------------------

    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self._state_file.read_text()))
        except (OSError, ValueError):
            pass
        # First use: choose ports/credentials once and persist them, so the
        # address stays the same across restarts and across processes. Own lock file:
        # flock is per open file, so re-locking _lock_file (held by start) would deadlock.
        with _file_lock(self.state_dir / f".{self.name}.state.lock"):
            try:
                return dict(json.loads(self._state_file.read_text()))
            except (OSError, ValueError):
                state = self._initial_state()
                _write_atomic(self._state_file, json.dumps(state, indent=2) + "\n")
                return state

    # -- process control -------------------------------------------------------

    def pid(self) -> int | None:
        """Pid of our running server, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _pid_alive(pid):
            return None
        # The pid may have been reused by an unrelated program after a reboot/crash.
        if not any(self._marker() in arg for arg in _cmdline(pid)):
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None and self._probe()

    def start(self, timeout: float = 120) -> float:
        """Start (or reuse) the server; returns seconds until it answered requests."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        with _file_lock(self._lock_file):
            pid = self.pid()
            if pid is None:
                self.install()
                self.pid_file.unlink(missing_ok=True)
                pid = self._launch()
            self._wait_ready(pid, deadline)
        return time.monotonic() - t0

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; data stays on disk."""
        with _file_lock(self._lock_file):
            pid = self.pid()
            if pid is not None:
                _signal_group(pid, signal.SIGTERM)
                if not self._wait_gone(pid, timeout):
                    _signal_group(pid, signal.SIGKILL)
                    if not self._wait_gone(pid, 10):
                        raise InfraError(f"{self.name}: pid {pid} survived SIGKILL")
            self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would. No lock: it must work even while a start hangs."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)
            self._wait_gone(pid, 10)
        self.pid_file.unlink(missing_ok=True)

    def _launch(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for port in self._ports():
            # Give a just-stopped instance (possibly stopped by another process) a moment
            # to release its sockets before blaming a foreign program.
            deadline = time.monotonic() + 10
            while not _port_is_free(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _port_is_free(port):
                raise InfraError(
                    f"{self.name}: port {port} (persisted in {self._state_file}) is in use by another "
                    f"program; stop it, or delete {self._state_file} to choose new ports"
                )
        self._prepare()
        cmd, env = self._command()
        with self.log_file.open("ab") as log:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            log.write(f"\n{_START_BANNER} {self.name} at {stamp}: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: survives the launching shell/pytest and can be killed as a group.
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        _write_atomic(self.pid_file, f"{proc.pid}\n")
        return proc.pid

    def _wait_ready(self, pid: int, deadline: float) -> None:
        while True:
            if not _pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise InfraError(f"{self.name}: process {pid} exited during start; last lines of {self.log_file}:\n{_tail(self.log_file)}")
            if self._probe():
                return
            if time.monotonic() > deadline:
                raise InfraError(f"{self.name}: not ready before timeout (pid {pid} still running); last lines of {self.log_file}:\n{_tail(self.log_file)}")
            time.sleep(0.25)

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _ports(self) -> list[int]:
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._ports()[0]}"


# --------------------------------------------------------------------------- Kafka


_KAFKA_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Throwaway pom: only used to let Maven resolve Kafka's runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>vlgenrm.localinfra</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <!-- Not transitive: without a binding SLF4J drops every broker log line. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
      <scope>runtime</scope>
    </dependency>
  </dependencies>
</project>
"""

# Console appender: the process's stdout is redirected into <state>/kafka.log, so
# JVM crash output and log4j output end up in one file.
_KAFKA_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# The chattiest INFO sources: full config dumps and per-partition/segment chatter.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.storage.name = org.apache.kafka.storage.internals.log
logger.storage.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class KafkaServer(_Server):
    """Single-node Kafka in KRaft mode (broker + controller in one JVM)."""

    name = "kafka"
    version = KAFKA_VERSION

    @property
    def libs_dir(self) -> Path:
        return self.install_dir / "libs"

    @property
    def bootstrap_servers(self) -> str:
        return self.address

    @property
    def _config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def _log_dir(self) -> Path:
        return self.data_dir / "data"

    def _is_installed(self) -> bool:
        return (self.libs_dir / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").is_file()

    def _build(self, tmp: Path, log: Path) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise InfraError("kafka: 'mvn' not found on PATH (Kafka is installed from Maven Central)")
        (tmp / "pom.xml").write_text(_KAFKA_POM.format(scala=SCALA_VERSION, kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
        _run_logged(
            [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory=libs"],
            cwd=tmp,
            env=dict(os.environ),
            log=log,
            what="kafka: mvn dependency:copy-dependencies",
        )

    def _initial_state(self) -> dict[str, Any]:
        port = _pick_free_port()
        return {"port": port, "controller_port": _pick_free_port((port,))}

    def _ports(self) -> list[int]:
        state = self._state()
        return [int(state["port"]), int(state["controller_port"])]

    def _marker(self) -> str:
        return str(self._config_file)

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java or not Path(java).exists():
            raise InfraError("kafka: 'java' (17+) not found; set JAVA_HOME or put java on PATH")
        return java

    def _server_properties(self) -> str:
        port, cport = self._ports()
        return "\n".join(
            [
                "# Written by scripts/infra/localinfra.py on every start; edits are overwritten.",
                "process.roles=broker,controller",
                "node.id=1",
                # Static quorum: needs no --standalone/--initial-controllers at format time and
                # keeps working when restarted with the same data.
                f"controller.quorum.voters=1@127.0.0.1:{cport}",
                "controller.listener.names=CONTROLLER",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={self._log_dir}",
                # One node: every internal topic must fit on it.
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "share.coordinator.state.topic.num.partitions=4",
                "default.replication.factor=1",
                "min.insync.replicas=1",
                "num.partitions=4",
                "auto.create.topics.enable=true",
                # Tests create consumer groups all the time; the default 3 s delay is pure waiting.
                "group.initial.rebalance.delay.ms=0",
                # After a crash (kill()) the restarted broker's registration waits until the
                # controller expires the dead incarnation's session: 9 s by default. Shorter, but
                # with headroom for GC/CPU stalls on a busy 2-core CI machine.
                "broker.heartbeat.interval.ms=1000",
                "broker.session.timeout.ms=4500",
                # The cleaner (needed for compacted __consumer_offsets) defaults to a 128 MiB
                # buffer, a quarter of our 512 MiB heap.
                "log.cleaner.dedupe.buffer.size=33554432",
                "",
            ]
        )

    def _prepare(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._config_file, self._server_properties())
        _write_atomic(self.data_dir / "log4j2.properties", _KAFKA_LOG4J2)
        if (self._log_dir / "meta.properties").exists():
            return  # formatted before: keep the cluster id and all data
        # Kafka's cluster ids are url-safe base64 UUIDs; Kafka itself re-rolls ids
        # starting with '-' since they look like CLI options.
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        _run_logged(
            [
                self._java(),
                "-Xmx256m",
                *self._log_opts(),
                "-cp",
                f"{self.libs_dir}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self._config_file),
            ],
            cwd=self.data_dir,
            env=dict(os.environ),
            log=self.log_file,
            what="kafka: StorageTool format",
        )

    def _log_opts(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}"]

    def _command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [
            self._java(),
            "-Xmx512m",
            "-Xms128m",
            # Kafka's own launcher defaults: short GC pauses keep client timeouts quiet.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *self._log_opts(),
            "-cp",
            f"{self.libs_dir}/*",
            "kafka.Kafka",
            str(self._config_file),
        ]
        return cmd, dict(os.environ)

    def _probe(self) -> bool:
        try:
            return _kafka_broker_ready(self._ports()[0])
        except (OSError, struct.error, ValueError):
            return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def _kafka_call(sock: socket.socket, api_key: int, version: int, body: bytes, corr: int) -> bytes:
    client_id = b"localinfra"
    msg = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    if struct.unpack_from(">i", resp)[0] != corr:
        raise ValueError("correlation id mismatch")
    return resp[4:]


def _kafka_broker_ready(port: int, timeout: float = 2.0) -> bool:
    """Ask the broker for cluster metadata over the wire protocol.

    An open port is not enough: Kafka binds its listener early but only serves
    requests once the broker has registered with the controller, and only lists
    itself in Metadata once it is unfenced, i.e. can host partitions. That is the
    moment topic auto-creation starts to work.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # ApiVersions v0 works on every Kafka; use it to pick a Metadata version we can encode.
        resp = _kafka_call(sock, 18, 0, b"", 1)
        (error,) = struct.unpack_from(">h", resp)
        if error:
            return False
        (count,) = struct.unpack_from(">i", resp, 2)
        entries = (struct.unpack_from(">hhh", resp, 6 + 6 * i) for i in range(count))
        versions = {key: (lo, hi) for key, lo, hi in entries}
        lo, hi = versions.get(3, (0, -1))
        version = max(lo, 1)
        if version > min(hi, 8):  # only the flexible (v9+) encoding left: ApiVersions answered, good enough
            return True
        body = struct.pack(">i", 0)  # empty topic list (v1+): brokers only
        if version >= 4:
            body += b"\x00"  # allow_auto_topic_creation
        if version >= 8:
            body += b"\x00\x00"  # include cluster / topic authorized operations
        resp = _kafka_call(sock, 3, version, body, 2)
        offset = 4 if version >= 3 else 0  # throttle_time_ms
        (brokers,) = struct.unpack_from(">i", resp, offset)
        return int(brokers) > 0


# --------------------------------------------------------------------------- S3 (versitygw)


class S3Server(_Server):
    """versitygw serving a directory over the S3 API (POSIX backend, sidecar metadata)."""

    name = "s3"
    version = VERSITYGW_VERSION

    @property
    def install_dir(self) -> Path:
        return self.infra_home / f"versitygw-{self.version}"

    @property
    def binary(self) -> Path:
        return self.install_dir / "bin" / "versitygw"

    @property
    def endpoint(self) -> str:
        return self.address

    @property
    def access_key(self) -> str:
        return str(self._state()["access_key"])

    @property
    def secret_key(self) -> str:
        return str(self._state()["secret_key"])

    @property
    def region(self) -> str:
        return S3_REGION

    @property
    def _objects_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def _meta_dir(self) -> Path:
        return self.data_dir / "meta"

    def _is_installed(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def _build(self, tmp: Path, log: Path) -> None:
        _go_install("s3", VERSITYGW_MODULE, VERSITYGW_VERSION, tmp, log)

    def _initial_state(self) -> dict[str, Any]:
        return {"port": _pick_free_port(), "access_key": S3_DEFAULT_ACCESS_KEY, "secret_key": S3_DEFAULT_SECRET_KEY}

    def _ports(self) -> list[int]:
        return [int(self._state()["port"])]

    def _marker(self) -> str:
        return str(self._objects_dir)

    def _prepare(self) -> None:
        self._objects_dir.mkdir(parents=True, exist_ok=True)
        self._meta_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [
            str(self.binary),
            "--port",
            self.endpoint,
            "--region",
            S3_REGION,
            # Per-request access logging would grow the log without bound during tests.
            "--quiet",
            # --sidecar keeps object metadata in files: no xattr support needed on the FS.
            "posix",
            "--sidecar",
            str(self._meta_dir),
            str(self._objects_dir),
        ]
        # Credentials through the environment so they don't show up in `ps`.
        env = dict(os.environ, ROOT_ACCESS_KEY=self.access_key, ROOT_SECRET_KEY=self.secret_key)
        return cmd, env

    def _probe(self) -> bool:
        try:
            status, _ = s3_request(self.endpoint, self.access_key, self.secret_key, "GET", "/")
        except (OSError, http.client.HTTPException):
            return False
        return status == 200


def s3_request(
    endpoint: str, access_key: str, secret_key: str, method: str, path: str, body: bytes = b"", region: str = S3_REGION, timeout: float = 2.0
) -> tuple[int, bytes]:
    """One SigV4-signed S3 request (path-style, no query string); returns (status, body).

    Readiness means "authenticated S3 calls work", which a bare TCP connect or an
    anonymous GET can't tell.
    """
    now = datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    signed_headers = "host;x-amz-content-sha256;x-amz-date"
    canonical = "\n".join(
        [
            method,
            path,
            "",
            f"host:{endpoint}",
            f"x-amz-content-sha256:{payload_hash}",
            f"x-amz-date:{amz_date}",
            "",
            signed_headers,
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {
        "Host": endpoint,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
    }
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- Go builds


def _go(what: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise InfraError(f"{what}: 'go' not found on PATH (it is built from the Go module proxy)")
    return go


def _go_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    # Fail clearly instead of fetching another Go toolchain if a module ever asks for a newer one.
    env.setdefault("GOTOOLCHAIN", "local")
    # Pure-Go, static binaries (how upstream ships them); also skips compiling cgo parts.
    env.setdefault("CGO_ENABLED", "0")
    return env


def _go_install(what: str, package: str, version: str, tmp: Path, log: Path, ldflags: str = "-s -w") -> None:
    """``go install package@version`` into ``tmp/bin`` (a module whose go.mod allows it)."""
    _run_logged(
        [_go(what), "install", "-trimpath", f"-ldflags={ldflags}", f"{package}@{version}"],
        cwd=tmp,
        env=_go_env(GOBIN=str(tmp / "bin")),
        log=log,
        what=f"{what}: go install {package}@{version}",
    )


KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
KUBERAY_VERSION = "v1.5.0"


def kuberay_crds(version: str = KUBERAY_VERSION) -> Path:
    """KubeRay's own CRDs (``config/crd/bases`` of its Go module), fetched through the Go module
    proxy into the module cache: the tests install what a user's cluster gets, from upstream."""
    with tempfile.TemporaryDirectory(prefix="vlgenrm-kuberay-") as tmp:
        (Path(tmp) / "go.mod").write_text("module vlgenrm.local/kuberaycrds\n")
        done = subprocess.run(
            [_go("kuberay CRDs"), "mod", "download", "-json", f"{KUBERAY_MODULE}@{version}"],
            cwd=tmp,
            env=_go_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
    if done.returncode != 0:
        raise InfraError(f"kuberay CRDs: go mod download {KUBERAY_MODULE}@{version} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    bases = Path(json.loads(done.stdout)["Dir"]) / "config" / "crd" / "bases"
    if not sorted(bases.glob("ray.io_*.yaml")):
        raise InfraError(f"kuberay CRDs: no ray.io_*.yaml in {bases}")
    return bases


def _go_line(go_mod: str) -> str:
    """The ``go 1.xx[.y]`` directive of a go.mod (our wrapper must not ask for less)."""
    for line in go_mod.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "go":
            return parts[1]
    return "1.22"


# --------------------------------------------------------------------------- etcd


class EtcdServer(_Server):
    """A single-member etcd, the storage of :class:`KubeApiServer` (plain HTTP on 127.0.0.1)."""

    name = "etcd"
    version = ETCD_VERSION

    @property
    def binary(self) -> Path:
        return self.install_dir / "bin" / "etcd"

    @property
    def client_url(self) -> str:
        return f"http://{self.address}"

    @property
    def _db_dir(self) -> Path:
        return self.data_dir / "data"

    def _is_installed(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def _build(self, tmp: Path, log: Path) -> None:
        # `go install go.etcd.io/etcd/server/v3@…` refuses the module: its go.mod has replace
        # directives. A throwaway wrapper module requiring it builds the same main package.
        go = _go("etcd")
        src = tmp / "src"
        src.mkdir()
        (src / "go.mod").write_text("module localinfra.invalid/etcd\n\ngo 1.24\n")
        env = _go_env()
        _run_logged([go, "get", f"{ETCD_MODULE}@{ETCD_VERSION}"], cwd=src, env=env, log=log, what=f"etcd: go get {ETCD_MODULE}@{ETCD_VERSION}")
        _run_logged(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp / "bin" / "etcd"), ETCD_MODULE], cwd=src, env=env, log=log, what="etcd: go build"
        )
        shutil.rmtree(src)

    def _initial_state(self) -> dict[str, Any]:
        port = _pick_free_port()
        return {"port": port, "peer_port": _pick_free_port((port,))}

    def _ports(self) -> list[int]:
        state = self._state()
        return [int(state["port"]), int(state["peer_port"])]

    def _marker(self) -> str:
        return str(self._db_dir)

    def _command(self) -> tuple[list[str], dict[str, str]]:
        port, peer = self._ports()
        client, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
        cmd = [
            str(self.binary),
            "--name",
            "vlgenrm",
            "--data-dir",
            str(self._db_dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"vlgenrm={peer_url}",
            # Test data: losing the last writes in a machine crash is fine, fsync latency is not.
            "--unsafe-no-fsync",
            # The apiserver compacts every 5 min; keep the db small on long CI runs anyway.
            "--quota-backend-bytes",
            str(2 * 1024**3),
            "--log-level",
            "warn",
        ]
        return cmd, dict(os.environ)

    def _probe(self) -> bool:
        try:
            status, body = _http_get(f"{self.client_url}/health")
            return status == 200 and json.loads(body).get("health") == "true"
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            return False


# --------------------------------------------------------------------------- kube-apiserver


def _http_get(url: str, *, token: str | None = None, cafile: Path | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """A GET that returns (status, body) for any status (urllib raises on 4xx/5xx)."""
    scheme, rest = url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, port = hostport.rsplit(":", 1)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn: http.client.HTTPConnection
    if scheme == "https":
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class KubeApiServer(_Server):
    """kube-apiserver on etcd: a Kubernetes control plane without controllers (envtest-style).

    ``start()`` starts :class:`EtcdServer` first; ``stop()`` stops both. Authentication is by
    static bearer tokens (an admin in ``system:masters`` and a plain user without any RBAC
    grants), authorisation is RBAC. There is no controller-manager and no scheduler: no
    ``default`` ServiceAccounts or token Secrets appear by themselves (the TokenRequest API
    works: :meth:`service_account_token`), no garbage collection, namespaces never finish
    deleting, pods stay Pending. Tests create fresh namespaces instead of cleaning up.
    """

    name = "kube"
    version = KUBE_VERSION
    admin_name = KUBE_ADMIN_USER  # group system:masters
    user_name = KUBE_TEST_USER  # no groups, no RBAC grants

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, infra_home: Path = INFRA_HOME) -> None:
        super().__init__(state_dir, infra_home)
        self.etcd = EtcdServer(state_dir, infra_home)

    # -- install ---------------------------------------------------------------

    @property
    def install_dir(self) -> Path:
        return self.infra_home / f"kubernetes-{self.version}"

    @property
    def apiserver_binary(self) -> Path:
        return self.install_dir / "bin" / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        """The kubectl built from the same Kubernetes release."""
        return self.install_dir / "bin" / "kubectl"

    def _is_installed(self) -> bool:
        return os.access(self.apiserver_binary, os.X_OK) and os.access(self.kubectl, os.X_OK)

    def install(self) -> float:
        """Install etcd and Kubernetes (kube-apiserver + kubectl) into the cache if missing."""
        return self.etcd.install() + super().install()

    def _build(self, tmp: Path, log: Path) -> None:
        # k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/apiserver, …)
        # with ./staging/src paths, so neither `go install` nor a plain `require` resolves
        # them. A wrapper module requires k8s.io/kubernetes and points every staging module
        # at its published release, v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>.
        go = _go("kube")
        src = tmp / "src"
        src.mkdir()
        env = _go_env()
        with log.open("ab") as fh:
            fh.write(f"$ go mod download -json {KUBE_MODULE}@{KUBE_VERSION}\n".encode())
        proc = subprocess.run(
            [go, "mod", "download", "-json", f"{KUBE_MODULE}@{KUBE_VERSION}"], cwd=src, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        with log.open("a") as fh:
            fh.write(proc.stderr)
        try:
            info = json.loads(proc.stdout)
            upstream = Path(info["GoMod"]).read_text()
        except (ValueError, KeyError, OSError) as exc:
            raise InfraError(
                f"kube: go mod download {KUBE_MODULE}@{KUBE_VERSION} failed ({exc}): {proc.stdout.strip()[-2000:]} {proc.stderr.strip()[-2000:]}"
            ) from exc
        staging = sorted({m.group(1) for m in re.finditer(r"^\s*(?:replace\s+)?(\S+)\s*=>\s*\./staging/src/\S+\s*$", upstream, re.M)})
        if not staging:
            raise InfraError(f"kube: no staging replaces found in {info['GoMod']}")
        staging_version = "v0." + KUBE_VERSION.split(".", 1)[1]
        godebug = [line for line in upstream.splitlines() if line.startswith("godebug ")]
        lines = [
            "module localinfra.invalid/kubernetes",
            "",
            f"go {_go_line(upstream)}",
            "",
            *godebug,
            f"require {KUBE_MODULE} {KUBE_VERSION}",
            "",
            "replace (",
            *(f"\t{mod} => {mod} {staging_version}" for mod in staging),
            ")",
            "",
        ]
        (src / "go.mod").write_text("\n".join(lines))
        pkgs = [f"{KUBE_MODULE}/cmd/kube-apiserver", f"{KUBE_MODULE}/cmd/kubectl"]
        _run_logged([go, "get", *(f"{pkg}@{KUBE_VERSION}" for pkg in pkgs)], cwd=src, env=env, log=log, what=f"kube: go get {KUBE_MODULE}@{KUBE_VERSION}")
        # What Kubernetes' own build stamps in (hack/lib/version.sh), so `kubectl version`
        # and /version report the release instead of v0.0.0-master.
        major, minor = KUBE_VERSION.lstrip("v").split(".")[:2]
        stamps = [
            f"-X {pkg}.{key}={value}"
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for key, value in (("gitVersion", KUBE_VERSION), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean"))
        ]
        (tmp / "bin").mkdir()
        _run_logged(
            [go, "build", "-trimpath", f"-ldflags=-s -w {' '.join(stamps)}", "-o", str(tmp / "bin") + "/", *pkgs],
            cwd=src,
            env=env,
            log=log,
            what="kube: go build kube-apiserver kubectl",
        )
        shutil.rmtree(src)

    # -- state, credentials, PKI ---------------------------------------------------

    def _initial_state(self) -> dict[str, Any]:
        return {"port": _pick_free_port(), "admin_token": secrets.token_hex(24), "user_token": secrets.token_hex(24)}

    def _ports(self) -> list[int]:
        return [int(self._state()["port"])]

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    @property
    def admin_token(self) -> str:
        """Bearer token of ``vlgenrm-admin`` (group ``system:masters``: everything, impersonation too)."""
        return str(self._state()["admin_token"])

    @property
    def user_token(self) -> str:
        """Bearer token of :attr:`user_name`, a user with no RBAC grants at all."""
        return str(self._state()["user_token"])

    @property
    def _pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the serving certificate (kubeconfigs embed it)."""
        return self._pki_dir / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig, (re)written on every start: ``KUBECONFIG=<this> kubectl …``."""
        return self.state_dir / "kubeconfig"

    @property
    def _token_file(self) -> Path:
        return self.data_dir / "tokens.csv"

    def _marker(self) -> str:
        return str(self._token_file)

    def _make_pki(self) -> None:
        """CA, serving cert (127.0.0.1 + the in-cluster names) and service-account key, once."""
        if (self._pki_dir / "sa.key").is_file():
            return
        openssl = shutil.which("openssl")
        if openssl is None:
            raise InfraError("kube: 'openssl' not found on PATH (it makes the test CA and keys)")
        self._pki_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".pki-", dir=self._pki_dir.parent))
        try:
            # Own config: nothing depends on the system's openssl.cnf.
            (tmp / "req.cnf").write_text(
                "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n"
                "[dn]\nCN = vlgenrm-test-ca\n"
                "[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
                "subjectKeyIdentifier = hash\n"
            )
            sans = [
                "IP:127.0.0.1",
                f"IP:{KUBE_SERVICE_IP}",
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
            ]
            (tmp / "serving.ext").write_text(
                "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
                f"subjectAltName = {','.join(sans)}\n"
            )
            log, env = self.log_file, dict(os.environ)
            days = "3650"
            for cmd in (
                [openssl, "req", "-x509", "-config", "req.cnf", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", days],
                [
                    openssl,
                    "req",
                    "-new",
                    "-config",
                    "req.cnf",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "serving.key",
                    "-out",
                    "serving.csr",
                    "-subj",
                    "/CN=kube-apiserver",
                ],
                [
                    openssl,
                    "x509",
                    "-req",
                    "-in",
                    "serving.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "serving.crt",
                    "-days",
                    days,
                    "-extfile",
                    "serving.ext",
                ],
                [openssl, "genrsa", "-out", "sa.key", "2048"],
            ):
                _run_logged(cmd, cwd=tmp, env=env, log=log, what=f"kube: openssl {cmd[1]}")
            tmp.chmod(0o700)
            shutil.rmtree(self._pki_dir, ignore_errors=True)  # an incomplete one from an older layout
            os.rename(tmp, self._pki_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def write_kubeconfig(
        self, path: Path | None = None, *, token: str | None = None, namespace: str | None = None, as_user: str | None = None, as_groups: tuple[str, ...] = ()
    ) -> Path:
        """Write a kubeconfig for this server (default: the admin one at :attr:`kubeconfig`).

        ``token`` authenticates as someone else (e.g. :meth:`service_account_token`);
        ``as_user``/``as_groups`` make kubectl and client-go impersonate (as the admin).
        """
        path = Path(path) if path is not None else self.kubeconfig
        user: dict[str, Any] = {"token": token or self.admin_token}
        if as_user:
            user["as"] = as_user
        if as_groups:
            user["as-groups"] = list(as_groups)
        context: dict[str, Any] = {"cluster": "vlgenrm", "user": "vlgenrm"}
        if namespace:
            context["namespace"] = namespace
        config = {  # JSON is YAML: every kubeconfig reader takes it
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "vlgenrm",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": "vlgenrm", "user": user}],
            "contexts": [{"name": "vlgenrm", "context": context}],
            "current-context": "vlgenrm",
        }
        _write_atomic(path, json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def _prepare(self) -> None:
        self._make_pki()
        # token,user,uid,"group1,group2" (read once at start by the apiserver)
        _write_atomic(
            self._token_file,
            (f'{self.admin_token},{KUBE_ADMIN_USER},{KUBE_ADMIN_USER},"system:masters"\n{self.user_token},{KUBE_TEST_USER},{KUBE_TEST_USER}\n'),
        )
        self._token_file.chmod(0o600)
        self.write_kubeconfig()

    def _command(self) -> tuple[list[str], dict[str, str]]:
        pki = self._pki_dir
        cmd = [
            str(self.apiserver_binary),
            f"--etcd-servers={self.etcd.client_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self._ports()[0]}",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={self.data_dir / 'certs'}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={self.ca_file}",
            f"--token-auth-file={self._token_file}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={KUBE_SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--allow-privileged=true",
            # No controller-manager creates the `default` service accounts this plugin insists on.
            "--disable-admission-plugins=ServiceAccount",
            # Nothing listens on 127.0.0.1 from inside a pod anyway: no endpoints for `kubernetes`.
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ]
        return cmd, dict(os.environ)

    def api_get(self, path: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` (e.g. ``/readyz``, ``/api/v1/namespaces``) with ``token`` (default: the
        admin's), TLS verified against the test CA; returns (status, body) for any status."""
        return _http_get(f"{self.url}{path}", token=token or self.admin_token, cafile=self.ca_file, timeout=timeout)

    def _probe(self) -> bool:
        try:
            status, _ = self.api_get("/readyz", timeout=2.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    # -- life cycle: etcd first ---------------------------------------------------

    def start(self, timeout: float = 120) -> float:
        """Start (or reuse) etcd, then kube-apiserver; returns seconds until /readyz said 200."""
        t0 = time.monotonic()
        self.etcd.start(timeout=timeout)
        super().start(timeout=max(5.0, timeout - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def stop(self, timeout: float = 30) -> None:
        """Stop kube-apiserver, then its etcd (data stays: CRDs and objects survive a restart)."""
        super().stop(timeout)
        self.etcd.stop(timeout)

    # -- kubectl ------------------------------------------------------------------

    def kubectl_args(self, *args: str, as_user: str | None = None, as_groups: tuple[str, ...] = (), kubeconfig: Path | None = None) -> list[str]:
        """A kubectl command line against this server: as the admin, unless ``kubeconfig`` says
        otherwise (see :meth:`write_kubeconfig`); ``as_user``/``as_groups`` impersonate."""
        cmd = [
            str(self.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            # Discovery cache in the state dir, not ~/.kube (servers come and go on one port).
            f"--cache-dir={self.data_dir / 'kubectl-cache'}",
        ]
        if as_user:
            cmd.append(f"--as={as_user}")
        cmd += [f"--as-group={group}" for group in as_groups]
        return cmd + list(args)

    def run_kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        as_user: str | None = None,
        as_groups: tuple[str, ...] = (),
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (arguments as for :meth:`kubectl_args`); with ``check`` a non-zero exit
        raises InfraError carrying stderr."""
        cmd = self.kubectl_args(*args, as_user=as_user, as_groups=as_groups, kubeconfig=kubeconfig)
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise InfraError(f"kubectl {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
        return proc

    def wait_crd_established(self, name: str, timeout: float = 60) -> None:
        """Poll until CustomResourceDefinition ``name`` is Established (its kind is then served).

        ``kubectl wait --for=condition=Established`` errors out instead of waiting when it
        looks before the apiserver has written the first conditions.
        """
        deadline = time.monotonic() + timeout
        while True:
            proc = self.run_kubectl("get", "crd", name, "-o", 'jsonpath={.status.conditions[?(@.type=="Established")].status}', check=False)
            if proc.returncode == 0 and proc.stdout.strip() == "True":
                return
            if time.monotonic() > deadline:
                raise InfraError(f"CRD {name} not Established after {timeout:.0f}s: {proc.stdout.strip()} {proc.stderr.strip()}")
            time.sleep(0.2)

    def service_account_token(self, namespace: str, name: str, duration: str = "1h") -> str:
        """A real token of ServiceAccount ``namespace/name`` (TokenRequest API), creating the account if missing.

        Lets a test authenticate as an operator would in a pod, e.g. via
        ``write_kubeconfig(path, token=...)``; its permissions are whatever RBAC grants.
        """
        sa = json.dumps({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}})
        self.run_kubectl("apply", "-f", "-", input=sa)
        return self.run_kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").stdout.strip()


# --------------------------------------------------------------------------- helm


class Helm(_CachedInstall):
    """The Helm 3 client (``helm lint``, ``helm template``), built with ``go install``: a tool, not a server."""

    name = "helm"
    version = HELM_VERSION

    @property
    def binary(self) -> Path:
        return self.install_dir / "bin" / "helm"

    def _is_installed(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def _build(self, tmp: Path, log: Path) -> None:
        # The version stamp Helm's own release build sets (`helm version` would say v3.22 otherwise).
        _go_install("helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION, tmp, log, ldflags=f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}")

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``helm ARGS`` (installed on first use); ``check`` raises with helm's stderr."""
        self.install()
        proc = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(
                os.environ,
                HELM_CACHE_HOME=str(self.infra_home / "helm-home" / "cache"),
                HELM_CONFIG_HOME=str(self.infra_home / "helm-home" / "config"),
                HELM_DATA_HOME=str(self.infra_home / "helm-home" / "data"),
            ),
        )
        if check and proc.returncode != 0:
            raise InfraError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout.strip()[-3000:]}\n{proc.stderr.strip()}")
        return proc


# --------------------------------------------------------------------------- connection files


def write_connection_file(state_dir: Path, kafka: KafkaServer, s3: S3Server, kube: KubeApiServer | None = None) -> Path:
    """Write <state_dir>/connection.json and connection.env; returns the json path.

    The ``kube`` part (kubeconfig, kubectl, API URL) is included once that server has been
    started at least once, i.e. its kubeconfig exists.
    """
    state_dir = Path(state_dir)
    info = {
        "kafka": {"bootstrap_servers": kafka.bootstrap_servers},
        "s3": {
            "endpoint": s3.endpoint,
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
            "secure": False,
            "region": S3_REGION,
        },
    }
    with_kube = kube is not None and kube.kubeconfig.is_file()
    if kube is not None and with_kube:
        info["kube"] = {
            "server": kube.url,
            "kubeconfig": str(kube.kubeconfig),
            "kubectl": str(kube.kubectl),
            "etcd": kube.etcd.client_url,
        }
    path = state_dir / "connection.json"
    _write_atomic(path, json.dumps(info, indent=2) + "\n")
    env_lines = [
        "VLGENRM_BUS__KIND=kafka",
        f"VLGENRM_BUS__BOOTSTRAP_SERVERS={kafka.bootstrap_servers}",
        "VLGENRM_STORE__KIND=s3",
        f"VLGENRM_STORE__ENDPOINT={s3.endpoint}",
        f"VLGENRM_STORE__ACCESS_KEY={s3.access_key}",
        f"VLGENRM_STORE__SECRET_KEY={s3.secret_key}",
        "VLGENRM_STORE__SECURE=false",
    ]
    if kube is not None and with_kube:
        env_lines += [f"KUBECONFIG={kube.kubeconfig}", f"VLGENRM_KUBECTL={kube.kubectl}"]
    _write_atomic(state_dir / "connection.env", "\n".join(env_lines) + "\n")
    return path


def read_connection_file(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The dict written by write_connection_file, or None when there is none (yet)."""
    try:
        data = json.loads((Path(state_dir) / "connection.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- CLI


def _servers(target: str, state_dir: Path, infra_home: Path) -> list[_Server]:
    all_servers: dict[str, _Server] = {
        "kafka": KafkaServer(state_dir, infra_home),
        "s3": S3Server(state_dir, infra_home),
        "etcd": EtcdServer(state_dir, infra_home),
        "kube": KubeApiServer(state_dir, infra_home),  # needs etcd: starts it first, stops it too
    }
    if target == "helm":
        return []  # a tool: installed by install/up, nothing to start or stop
    return list(all_servers.values()) if target == "all" else [all_servers[target]]


def _install_note(server: _CachedInstall) -> tuple[bool, float]:
    cached = server._is_installed()
    return cached, server.install()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="localinfra.py",
        description=(
            f"Run real test servers on 127.0.0.1: Kafka {KAFKA_VERSION} (KRaft, single node, from Maven "
            f"Central), versitygw {VERSITYGW_VERSION} (S3, built with `go install`), etcd {ETCD_VERSION} and "
            f"kube-apiserver {KUBE_VERSION} + kubectl (built with `go build` from the Go module proxy; "
            f"`kube` starts etcd first and stops it too), and the Helm {HELM_VERSION} client (`go install`). Builds are cached in "
            "$VLGENRM_INFRA_HOME (default ~/.cache/vlgenrm/infra); data, logs, pid files, ports and "
            "connection files live in $VLGENRM_INFRA_STATE (default <repo>/.infra)."
        ),
        epilog=(
            "commands: install = build into the cache only; up = install if needed, start, write "
            "connection.json/connection.env; down = stop (data kept); restart = down + up; status = "
            "print state (exit 3 if a selected server is not running). Ports are chosen once and "
            "reused, so addresses survive restarts. Remove the state dir to start from scratch."
        ),
    )
    parser.add_argument("command", choices=["install", "up", "down", "status", "restart"])
    parser.add_argument("target", nargs="?", default="all", choices=["kafka", "s3", "etcd", "kube", "helm", "all"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: %(default)s")
    parser.add_argument("--infra-home", type=Path, default=INFRA_HOME, help="default: %(default)s")
    parser.add_argument("--timeout", type=float, default=120, help="start timeout per server, seconds")
    args = parser.parse_args(argv)

    servers = _servers(args.target, args.state_dir, args.infra_home)
    rc = 0
    try:
        if args.command in ("install", "up") and args.target in ("all", "helm"):
            helm = Helm(args.infra_home)  # a client the chart tests run: built with the servers, never started
            cached, secs = _install_note(helm)
            print(f"helm: install {secs:.1f}s{' (cached)' if cached else ''}, {helm.binary}")
        if args.command == "install":
            for srv in servers:
                cached, secs = _install_note(srv)
                print(f"{srv.name}: install {secs:.1f}s{' (cached)' if cached else ''}, {srv.install_dir}")
        elif args.command in ("up", "restart"):
            for srv in servers:
                cached, install_secs = _install_note(srv)
                stop_note = ""
                if args.command == "restart":
                    t0 = time.monotonic()
                    srv.stop()
                    stop_note = f"stop {time.monotonic() - t0:.1f}s, "
                already = srv.pid() is not None
                start_secs = srv.start(timeout=args.timeout)
                print(
                    f"{srv.name}: install {install_secs:.1f}s{' (cached)' if cached else ''}, {stop_note}"
                    f"start {start_secs:.1f}s{' (already running)' if already else ''}, {srv.address}"
                )
            conn = write_connection_file(
                args.state_dir,
                KafkaServer(args.state_dir, args.infra_home),
                S3Server(args.state_dir, args.infra_home),
                KubeApiServer(args.state_dir, args.infra_home),
            )
            print(f"connection: {conn} (+ connection.env)")
        elif args.command == "down":
            for srv in reversed(servers):  # kube before the etcd it stores into
                pid = srv.pid()
                etcd_pid = srv.etcd.pid() if isinstance(srv, KubeApiServer) else None
                srv.stop()
                print(f"{srv.name}: " + (f"stopped (pid {pid})" if pid else "not running") + (f", its etcd too (pid {etcd_pid})" if etcd_pid else ""))
        elif args.command == "status":
            for srv in servers:
                pid = srv.pid()
                up = pid is not None and srv._probe()
                if not up:
                    rc = 3
                state = "running" if up else ("starting/unresponsive" if pid else "stopped")
                address = srv.address if srv._state_file.exists() else "no port assigned yet"
                print(
                    f"{srv.name}: {state}" + (f" pid {pid}" if pid else "") + f", {address}, "
                    f"installed={'yes' if srv._is_installed() else 'no'}, log {srv.log_file}"
                )
    except InfraError as exc:
        print(f"localinfra: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
