"""The store contract: the same tests run against LocalStore and a real S3 server."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from vlgenrm.contracts import ImageRef, ShardRef, Stage
from vlgenrm.store import BlobStore, InvalidKeyError, ObjectNotFoundError, StoreError


def test_bytes_round_trip_stat_exists_delete(store: BlobStore, unique):
    key = f"{unique('rt')}/a/b.bin"
    assert not store.exists(key) and store.stat(key) is None
    info = store.put_bytes(key, b"\x00payload\xff")
    assert info.size == 9 and info.key == key
    assert store.get_bytes(key) == b"\x00payload\xff"
    assert store.exists(key)
    store.put_bytes(key, b"v2")  # overwrite
    assert store.get_bytes(key) == b"v2"
    store.delete(key)
    store.delete(key)  # idempotent
    assert not store.exists(key)
    with pytest.raises(ObjectNotFoundError, match="no"):
        store.get_bytes(key)


def test_file_round_trip_and_uri(store: BlobStore, unique, tmp_path: Path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    key = f"{unique('file')}/obj.bin"
    store.put_file(key, src)
    dest = store.get_file(key, tmp_path / "out" / "dest.bin")
    assert dest.read_bytes() == src.read_bytes()
    assert not list((tmp_path / "out").glob(".*part"))  # no temp files left behind
    assert store.uri(key).endswith(key)


def test_contract_objects_and_images(store: BlobStore, unique):
    shard = ShardRef(namespace="ns", iteration="it", stage=Stage.SAMPLING, shard=2)
    key = f"{unique('model')}/shard.json"
    store.put_model(key, shard)
    assert store.get_model(key, ShardRef) == shard
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(100)
    ref = store.put_image(png, "PNG")
    assert ref.key == f"images/{hashlib.sha256(png).hexdigest()}.png"
    assert store.put_image(png, "png") == ref  # content-addressed: same bytes, same key
    assert store.get_image(ref) == png
    with pytest.raises(StoreError, match="sha256"):
        store.get_image(ImageRef(key=ref.key, sha256="0" * 64))


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/"])
def test_invalid_keys_are_rejected(store: BlobStore, key: str):
    with pytest.raises(InvalidKeyError):
        store.put_bytes(key, b"x")


def test_listing_more_than_a_thousand_keys_in_pages(store: BlobStore, unique):
    prefix = unique("many") + "/"
    keys = sorted(f"{prefix}{i:05d}.json" for i in range(1050))
    for key in keys:
        store.put_bytes(key, b"{}")
    store.put_bytes(prefix.rstrip("/") + "-sibling/x", b"not under the prefix")
    listed = [o.key for o in store.list(prefix)]
    assert listed == keys
    pages, token = [], None
    while True:
        page = store.list_page(prefix, limit=400, token=token)
        pages.append([o.key for o in page.items])
        if page.next_token is None:
            break
        token = page.next_token
    assert [len(p) for p in pages] == [400, 400, 250]
    assert sum(pages, []) == keys


@pytest.mark.slow
def test_a_200_mb_object_streams_through_bounded_memory(store: BlobStore, unique, tmp_path: Path):
    size = 200 << 20
    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        for i in range(size >> 20):
            chunk = block[i:] + block[:i]  # every MiB differs
            f.write(chunk)
            digest.update(chunk)
    key = f"{unique('big')}/blob.bin"
    tracemalloc.start()
    try:
        store.put_file(key, src)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        dest = store.get_file(key, tmp_path / "back.bin")
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    src.unlink()
    back = hashlib.sha256()
    with open(dest, "rb") as f:
        while chunk := f.read(1 << 20):
            back.update(chunk)
    assert back.hexdigest() == digest.hexdigest()
    assert store.stat(key).size == size
    print(f"\n{type(store).__name__}: peak Python memory put {put_peak / 2**20:.1f} MiB, get {get_peak / 2**20:.1f} MiB for a {size >> 20} MiB object")
    assert put_peak < 64 << 20 and get_peak < 64 << 20


def test_concurrent_writers_to_one_key_leave_one_complete_object(store: BlobStore, unique):
    key = f"{unique('race')}/obj"
    size, writers, rounds = 1 << 20, 6, 4
    payloads = [bytes([i]) * size for i in range(writers)]
    torn: list[str] = []
    stop = threading.Event()

    def write(i: int) -> None:
        for _ in range(rounds):
            store.put_bytes(key, payloads[i])

    def read() -> None:
        while not stop.is_set():
            try:
                data = store.get_bytes(key)
            except ObjectNotFoundError:
                continue
            if data not in payloads:
                torn.append(f"read {len(data)} bytes of {set(data[:10])}...")

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    stop.set()
    reader.join()
    assert not torn, torn[:3]
    assert store.get_bytes(key) in payloads


def test_uris_map_back_to_keys(store: BlobStore):
    assert store.key_for(store.uri("a/b/c.jsonl")) == "a/b/c.jsonl"
    assert store.key_for("a/b") == "a/b"
    with pytest.raises(InvalidKeyError):
        store.key_for("s3://some-other-bucket/a/b")
