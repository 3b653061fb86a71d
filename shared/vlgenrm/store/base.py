"""The BlobStore interface: keyed objects, streamed, atomically visible.

Semantics every implementation keeps (proven by tests/store/test_store_contract.py):
- Writes are atomic: a reader sees the old object, the new one, or none; never a part.
- Reads and writes are streamed: an object of any size passes through bounded memory.
- ``list`` returns keys in byte order, page by page.
- Content-addressed images: ``put_image`` stores bytes under ``images/<sha256>.<ext>``.
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from vlgenrm import layout
from vlgenrm.contracts import Contract, ImageRef
from vlgenrm.errors import PermanentError, TransientError, VlgenrmError

C = TypeVar("C", bound=Contract)
CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough to bound memory


class StoreError(VlgenrmError):
    """A store operation failed."""


class StoreUnavailableError(StoreError, TransientError):
    """The store could not be reached within the retry budget (names the endpoint)."""


class StoreAuthError(StoreError, PermanentError):
    """The store rejected the credentials."""


class ObjectNotFoundError(StoreError, PermanentError, KeyError):
    """No object under that key."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else "object not found"


class InvalidKeyError(StoreError, PermanentError, ValueError):
    """Keys are relative, '/'-separated, without empty, '.' or '..' segments."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing; pass ``next_token`` to ``list_page`` for the next one."""

    items: list[ObjectInfo]
    next_token: str | None


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
        raise InvalidKeyError(f"invalid object key {key!r}")
    return key


IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "webp", "gif", "bmp"})


class BlobStore(abc.ABC):
    """Where datasets, images, stage outputs, checkpoints and reports live."""

    # -- primitives each backend implements ---------------------------------------------
    @abc.abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, length: int | None = None, content_type: str | None = None) -> ObjectInfo:
        """Store everything ``stream`` yields under ``key``, streamed; visible only when complete."""

    @abc.abstractmethod
    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A streaming reader of the object. Raises ObjectNotFoundError."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and time of the object, or None when it does not exist."""

    @abc.abstractmethod
    def list_page(self, prefix: str = "", *, limit: int = 1000, token: str | None = None) -> Page:
        """Up to ``limit`` objects under ``prefix`` in key order, after ``token``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """A URI naming the object (s3://bucket/key or file:///path)."""

    def key_for(self, uri: str) -> str:
        """The key of an object named by a URI of this store (or a bare key), the inverse of ``uri``."""
        if "://" in uri:
            raise InvalidKeyError(f"{uri} is not an object of {type(self).__name__}")
        return check_key(uri)

    def presigned_url(self, key: str, *, method: str = "GET", expires_s: int = 3600) -> str:
        """A URL granting temporary access without credentials (S3 only)."""
        raise StoreError(f"{type(self).__name__} has no presigned URLs; use an S3 store")

    def close(self) -> None:  # noqa: B027 - optional hook: stores without connections need no close
        """Release connections."""

    # -- conveniences built on the primitives -------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        return self.put_stream(key, io.BytesIO(data), len(data), content_type)

    def put_file(self, key: str, path: str | os.PathLike[str], content_type: str | None = None) -> ObjectInfo:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            return self.put_stream(key, f, size, content_type)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def get_file(self, key: str, path: str | os.PathLike[str]) -> Path:
        """Download to ``path`` atomically (temp file beside it, then rename), streamed."""
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, self.open(key) as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def list(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, fetched page by page."""
        token = None
        while True:
            page = self.list_page(prefix, limit=page_size, token=token)
            yield from page.items
            if page.next_token is None:
                return
            token = page.next_token

    def put_model(self, key: str, model: Contract) -> ObjectInfo:
        return self.put_bytes(key, model.to_json_bytes(), "application/json")

    def get_model(self, key: str, model: type[C]) -> C:
        return model.model_validate_json(self.get_bytes(key))

    def put_image(self, data: bytes, ext: str) -> ImageRef:
        """Store image bytes content-addressed; the same bytes are stored once."""
        ext = ext.lower().lstrip(".")
        if ext not in IMAGE_EXTENSIONS:
            raise InvalidKeyError(f"image extension {ext!r} not in {sorted(IMAGE_EXTENSIONS)}")
        digest = hashlib.sha256(data).hexdigest()
        key = layout.image_key(digest, ext)
        if not self.exists(key):
            self.put_bytes(key, data, f"image/{'jpeg' if ext == 'jpg' else ext}")
        return ImageRef(key=key, sha256=digest)

    def get_image(self, ref: ImageRef) -> bytes:
        """Image bytes, verified against the digest in the reference."""
        data = self.get_bytes(ref.key)
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise StoreError(f"{self.uri(ref.key)} does not match its sha256 {ref.sha256}")
        return data
