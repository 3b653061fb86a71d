"""Paths, versions, the error type and the process/file/port helpers every server uses."""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import random
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
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


START_BANNER = "===== localinfra: starting"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Last lines of a log, from the latest start banner on (older runs are noise)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            # The tail of a log is all we need; don't read a multi-MB file whole.
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    if START_BANNER in text:
        text = text[text.rindex(START_BANNER) :]
    return "\n".join(text.splitlines()[-lines:])


def write_atomic(path: Path, text: str) -> None:
    # Readers in other processes must never see a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise install/start/stop across processes (pytest workers, make, CLI)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR like the servers themselves, so TIME_WAIT leftovers of our
        # own previous run don't count as "taken".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_free_port(exclude: tuple[int, ...] = ()) -> int:
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
        if port not in exclude and port_is_free(port):
            return port
    raise InfraError("could not find a free TCP port on 127.0.0.1")


def pid_alive(pid: int) -> bool:
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


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def signal_group(pid: int, sig: signal.Signals) -> None:
    # Servers run in their own session, so the pid is also the process group id;
    # signalling the group catches any helper processes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def run_logged(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise InfraError(f"{what} failed (exit {proc.returncode}); last lines of {log}:\n{log_tail(log)}")


def http_get(url: str, *, token: str | None = None, cafile: Path | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
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
