"""Faults of the stores: a stopped S3 server, wrong credentials, an unusable local folder."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.conftest import s3_settings
from vlgenrm.retry import Backoff
from vlgenrm.store import StoreAuthError, StoreUnavailableError

pytestmark = pytest.mark.integration


def test_stopped_s3_server_gives_a_clear_error_in_bounded_time_then_recovers(s3_server, unique):
    from vlgenrm.store.s3 import S3Store

    store = S3Store(s3_settings(s3_server, retry=Backoff(max_attempts=3, initial_s=0.2, max_s=1.0)))
    key = f"{unique('fault')}/obj"
    store.put_bytes(key, b"before")
    s3_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            store.get_bytes(key)
        elapsed = time.monotonic() - started
        assert s3_server.endpoint in str(info.value)
        assert elapsed < 10, f"took {elapsed:.1f}s to give up"
    finally:
        s3_server.start()
    assert store.get_bytes(key) == b"before"
    store.put_bytes(key, b"after")
    assert store.get_bytes(key) == b"after"


def test_wrong_credentials_are_named_as_such(s3_server):
    from vlgenrm.store.s3 import S3Store

    store = S3Store(s3_settings(s3_server, secret_key="not-the-secret"))
    with pytest.raises(StoreAuthError, match=s3_server.endpoint):
        store.put_bytes("x/y", b"z")


def test_presigned_urls_grant_get_and_put_without_credentials(s3_server, unique):
    from vlgenrm.store.s3 import S3Store

    store = S3Store(s3_settings(s3_server))
    key = f"{unique('presign')}/obj.txt"
    put_url = store.presigned_url(key, method="PUT", expires_s=300)
    urllib.request.urlopen(urllib.request.Request(put_url, data=b"via presigned put", method="PUT"), timeout=10).read()
    assert store.get_bytes(key) == b"via presigned put"
    with urllib.request.urlopen(store.presigned_url(key, expires_s=300), timeout=10) as response:
        assert response.read() == b"via presigned put"
