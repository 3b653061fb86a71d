"""KubeRay's CRDs, fetched from its Go module (what a user's cluster installs)."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from localinfra.common import InfraError
from localinfra.golang import go_binary, go_env

KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
KUBERAY_VERSION = "v1.5.0"


def kuberay_crds(version: str = KUBERAY_VERSION) -> Path:
    """KubeRay's own CRDs (``config/crd/bases`` of its Go module), fetched through the Go module
    proxy into the module cache: the tests install what a user's cluster gets, from upstream."""
    with tempfile.TemporaryDirectory(prefix="vlgenrm-kuberay-") as tmp:
        (Path(tmp) / "go.mod").write_text("module vlgenrm.local/kuberaycrds\n")
        done = subprocess.run(
            [go_binary("kuberay CRDs"), "mod", "download", "-json", f"{KUBERAY_MODULE}@{version}"],
            cwd=tmp,
            env=go_env(),
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
