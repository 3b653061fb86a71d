"""versitygw, an Apache-2.0 S3 gateway on a plain directory, and a SigV4-signed request helper."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import os
from pathlib import Path
from typing import Any

from localinfra.common import S3_DEFAULT_ACCESS_KEY, S3_DEFAULT_SECRET_KEY, S3_REGION, VERSITYGW_MODULE, VERSITYGW_VERSION, pick_free_port
from localinfra.golang import go_install
from localinfra.server import Server


class S3Server(Server):
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

    def is_installed(self) -> bool:
        return os.access(self.binary, os.X_OK)

    def _build(self, tmp: Path, log: Path) -> None:
        go_install("s3", VERSITYGW_MODULE, VERSITYGW_VERSION, tmp, log)

    def _initial_state(self) -> dict[str, Any]:
        return {"port": pick_free_port(), "access_key": S3_DEFAULT_ACCESS_KEY, "secret_key": S3_DEFAULT_SECRET_KEY}

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

    def probe(self) -> bool:
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
