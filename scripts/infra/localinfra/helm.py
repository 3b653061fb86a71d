"""The Helm client the chart tests run (a tool: installed, never started)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from localinfra.common import HELM_VERSION, InfraError
from localinfra.golang import go_install
from localinfra.server import CachedInstall


class Helm(CachedInstall):
    """The Helm 3 client (``helm lint``, ``helm template``), built with ``go install``: a tool, not a server."""

    name = "helm"
    version = HELM_VERSION

    @property
    def binary(self) -> Path:
        return self.install_dir / "bin" / "helm"

    def is_installed(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def _build(self, tmp: Path, log: Path) -> None:
        # The version stamp Helm's own release build sets (`helm version` would say v3.22 otherwise).
        go_install("helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION, tmp, log, ldflags=f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}")

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
