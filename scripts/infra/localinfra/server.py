"""The abstract base: a build cached once per version (``CachedInstall``) and a server started,
probed, stopped and restarted across processes from its state directory (``Server``)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from localinfra.common import (
    DEFAULT_STATE_DIR,
    INFRA_HOME,
    START_BANNER,
    InfraError,
    cmdline,
    file_lock,
    log_tail,
    pid_alive,
    port_is_free,
    signal_group,
    write_atomic,
)

# Popen objects of servers this process launched. Keeping a reference stops
# Python from warning "subprocess is still running" when the object is collected
# (the servers are meant to outlive us).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class CachedInstall:
    """A build kept in the cache under ``infra_home/<name>-<version>``, made atomically once."""

    name: str = ""
    version: str = ""

    def __init__(self, infra_home: Path = INFRA_HOME) -> None:
        self.infra_home = Path(infra_home).resolve()

    @property
    def install_dir(self) -> Path:
        return self.infra_home / f"{self.name}-{self.version}"

    def is_installed(self) -> bool:
        raise NotImplementedError

    def _build(self, tmp: Path, log: Path) -> None:
        """Populate ``tmp``; it is renamed to ``install_dir`` only when this returns."""
        raise NotImplementedError

    def install(self) -> float:
        """Install into the cache if missing; returns seconds spent (≈0 when cached)."""
        t0 = time.monotonic()
        if self.is_installed():
            return time.monotonic() - t0
        self.infra_home.mkdir(parents=True, exist_ok=True)
        with file_lock(self.infra_home / f".{self.name}.install.lock"):
            if self.is_installed():  # another process finished it while we waited
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
            if not self.is_installed():
                raise InfraError(f"{self.name}: install finished but {self.install_dir} looks incomplete")
        return time.monotonic() - t0


class Server(CachedInstall):
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
    def state_file(self) -> Path:
        return self.state_dir / f"{self.name}.json"

    @property
    def _lock_file(self) -> Path:
        return self.state_dir / f".{self.name}.lock"

    # -- to be provided by subclasses (with is_installed and _build) ----------------

    def _initial_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write configs / initialise storage before a launch (must keep existing data)."""

    def _command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def _marker(self) -> str:
        """A string only our server's command line contains (tells stale pid files apart)."""
        raise NotImplementedError

    def probe(self) -> bool:
        """True when the server answers a real protocol request."""
        raise NotImplementedError

    # -- persisted state (ports, credentials) ---------------------------------

    def _state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            pass
        # First use: choose ports/credentials once and persist them, so the
        # address stays the same across restarts and across processes. Own lock file:
        # flock is per open file, so re-locking _lock_file (held by start) would deadlock.
        with file_lock(self.state_dir / f".{self.name}.state.lock"):
            try:
                return dict(json.loads(self.state_file.read_text()))
            except (OSError, ValueError):
                state = self._initial_state()
                write_atomic(self.state_file, json.dumps(state, indent=2) + "\n")
                return state

    # -- process control -------------------------------------------------------

    def pid(self) -> int | None:
        """Pid of our running server, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        # The pid may have been reused by an unrelated program after a reboot/crash.
        if not any(self._marker() in arg for arg in cmdline(pid)):
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None and self.probe()

    def start(self, timeout: float = 120) -> float:
        """Start (or reuse) the server; returns seconds until it answered requests."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        with file_lock(self._lock_file):
            pid = self.pid()
            if pid is None:
                self.install()
                self.pid_file.unlink(missing_ok=True)
                pid = self._launch()
            self._wait_ready(pid, deadline)
        return time.monotonic() - t0

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; data stays on disk."""
        with file_lock(self._lock_file):
            pid = self.pid()
            if pid is not None:
                signal_group(pid, signal.SIGTERM)
                if not self._wait_gone(pid, timeout):
                    signal_group(pid, signal.SIGKILL)
                    if not self._wait_gone(pid, 10):
                        raise InfraError(f"{self.name}: pid {pid} survived SIGKILL")
            self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would. No lock: it must work even while a start hangs."""
        pid = self.pid()
        if pid is not None:
            signal_group(pid, signal.SIGKILL)
            self._wait_gone(pid, 10)
        self.pid_file.unlink(missing_ok=True)

    def _launch(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for port in self._ports():
            # Give a just-stopped instance (possibly stopped by another process) a moment
            # to release its sockets before blaming a foreign program.
            deadline = time.monotonic() + 10
            while not port_is_free(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not port_is_free(port):
                raise InfraError(
                    f"{self.name}: port {port} (persisted in {self.state_file}) is in use by another "
                    f"program; stop it, or delete {self.state_file} to choose new ports"
                )
        self._prepare()
        cmd, env = self._command()
        with self.log_file.open("ab") as log:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            log.write(f"\n{START_BANNER} {self.name} at {stamp}: {' '.join(cmd)}\n".encode())
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
        write_atomic(self.pid_file, f"{proc.pid}\n")
        return proc.pid

    def _wait_ready(self, pid: int, deadline: float) -> None:
        while True:
            if not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise InfraError(f"{self.name}: process {pid} exited during start; last lines of {self.log_file}:\n{log_tail(self.log_file)}")
            if self.probe():
                return
            if time.monotonic() > deadline:
                raise InfraError(f"{self.name}: not ready before timeout (pid {pid} still running); last lines of {self.log_file}:\n{log_tail(self.log_file)}")
            time.sleep(0.25)

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _ports(self) -> list[int]:
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._ports()[0]}"
