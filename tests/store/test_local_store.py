"""LocalStore specifics that have no S3 twin."""

from __future__ import annotations

import pytest

from vlgenrm.store import LocalStore, StoreError


def test_local_store_reports_an_unusable_root_and_has_no_presigned_urls(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="not usable"):
        LocalStore(blocker / "store")
    with pytest.raises(StoreError, match="presigned"):
        LocalStore(tmp_path / "ok").presigned_url("k")


def test_temporary_files_never_show_in_listings(tmp_path):
    store = LocalStore(tmp_path)
    (tmp_path / ".tmp" / "half-written").write_bytes(b"partial")
    store.put_bytes("a/b", b"x")
    assert [o.key for o in store.list()] == ["a/b"]
    with pytest.raises(StoreError, match="reserved"):
        store.put_bytes(".tmp/x", b"y")
