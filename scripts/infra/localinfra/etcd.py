"""etcd, one member: the store of the kube-apiserver."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path
from typing import Any

from localinfra.common import ETCD_MODULE, ETCD_VERSION, http_get, pick_free_port, run_logged
from localinfra.golang import go_binary, go_env
from localinfra.server import Server


class EtcdServer(Server):
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

    def is_installed(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def _build(self, tmp: Path, log: Path) -> None:
        # `go install go.etcd.io/etcd/server/v3@…` refuses the module: its go.mod has replace
        # directives. A throwaway wrapper module requiring it builds the same main package.
        go = go_binary("etcd")
        src = tmp / "src"
        src.mkdir()
        (src / "go.mod").write_text("module localinfra.invalid/etcd\n\ngo 1.24\n")
        env = go_env()
        run_logged([go, "get", f"{ETCD_MODULE}@{ETCD_VERSION}"], cwd=src, env=env, log=log, what=f"etcd: go get {ETCD_MODULE}@{ETCD_VERSION}")
        run_logged([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp / "bin" / "etcd"), ETCD_MODULE], cwd=src, env=env, log=log, what="etcd: go build")
        shutil.rmtree(src)

    def _initial_state(self) -> dict[str, Any]:
        port = pick_free_port()
        return {"port": port, "peer_port": pick_free_port((port,))}

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

    def probe(self) -> bool:
        try:
            status, body = http_get(f"{self.client_url}/health")
            return status == 200 and json.loads(body).get("health") == "true"
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            return False


# --------------------------------------------------------------------------- kube-apiserver
