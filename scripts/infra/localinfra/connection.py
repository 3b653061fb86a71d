"""connection.json and connection.env: where the running servers are, for tests and make."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localinfra.common import DEFAULT_STATE_DIR, S3_REGION, write_atomic
from localinfra.kafka import KafkaServer
from localinfra.kube import KubeApiServer
from localinfra.s3 import S3Server


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
    write_atomic(path, json.dumps(info, indent=2) + "\n")
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
    write_atomic(state_dir / "connection.env", "\n".join(env_lines) + "\n")
    return path


def read_connection_file(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The dict written by write_connection_file, or None when there is none (yet)."""
    try:
        data = json.loads((Path(state_dir) / "connection.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
