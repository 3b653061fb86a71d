"""Builds through the Go toolchain and the Go module proxy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from localinfra.common import InfraError, run_logged


def go_binary(what: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise InfraError(f"{what}: 'go' not found on PATH (it is built from the Go module proxy)")
    return go


def go_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    # Fail clearly instead of fetching another Go toolchain if a module ever asks for a newer one.
    env.setdefault("GOTOOLCHAIN", "local")
    # Pure-Go, static binaries (how upstream ships them); also skips compiling cgo parts.
    env.setdefault("CGO_ENABLED", "0")
    return env


def go_install(what: str, package: str, version: str, tmp: Path, log: Path, ldflags: str = "-s -w") -> None:
    """``go install package@version`` into ``tmp/bin`` (a module whose go.mod allows it)."""
    run_logged(
        [go_binary(what), "install", "-trimpath", f"-ldflags={ldflags}", f"{package}@{version}"],
        cwd=tmp,
        env=go_env(GOBIN=str(tmp / "bin")),
        log=log,
        what=f"{what}: go install {package}@{version}",
    )


def go_line(go_mod: str) -> str:
    """The ``go 1.xx[.y]`` directive of a go.mod (our wrapper must not ask for less)."""
    for line in go_mod.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "go":
            return parts[1]
    return "1.22"
