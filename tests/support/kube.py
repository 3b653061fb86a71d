"""Kubernetes test helpers for the real kube-apiserver of ``localinfra``: the Iteration CRD
installed, fresh namespaces, Iteration manifests in their wire form, apply and get."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import yaml

from tests.conftest import REPO
from vlgenrm.iteration.crd import CRD_PATH, GROUP, PLURAL, VERSION


def install_iteration_crd(kube: Any) -> Any:
    """Apply the chart's Iteration CRD (server-side, idempotent) and wait until it is served."""
    kube.run_kubectl("apply", "--server-side", "-f", str(REPO / CRD_PATH))
    kube.wait_crd_established(f"{PLURAL}.{GROUP}")
    return kube


def fresh_namespace(kube: Any, prefix: str = "t") -> str:
    """A new namespace: the test server runs no controllers, so nothing is ever cleaned up for us."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kube.run_kubectl("create", "namespace", name)
    return name


def iteration_manifest(name: str, **spec: Any) -> str:
    """An Iteration's YAML; ``spec`` is its wire form (camelCase) over a minimal valid spec."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Iteration",
        "metadata": {"name": name},
        "spec": {"dataset": "synth", "evalSet": "synth", "baseModel": "s3://vlgenrm/checkpoints/base"} | spec,
    }
    return yaml.safe_dump(body)


def apply(kube: Any, namespace: str, manifest: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``kubectl apply -n NAMESPACE -f -`` of a manifest; unchecked by default (tests read stderr)."""
    return kube.run_kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=check)


def get_iteration(kube: Any, namespace: str, name: str) -> dict:
    """The Iteration as the API server has it, or {} when it does not exist."""
    out = kube.run_kubectl("get", "iteration", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}
