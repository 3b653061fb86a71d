"""LocalStore: the embedded default, a folder on the local filesystem.

Atomicity comes from writing a temporary file on the same filesystem and renaming it into
place (rename is atomic on POSIX). Temporary files live under ``.tmp/`` of the root, which
no listing shows. Unlike S3, a key cannot be both an object and a folder ("a" and "a/b").
"""

from __future__ import annotations

import bisect
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from vlgenrm.store.base import CHUNK, BlobStore, ObjectInfo, ObjectNotFoundError, Page, StoreError, check_key

TMP_DIR = ".tmp"


class LocalStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"local store at {self.root} is not usable: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_stream(self, key: str, stream: BinaryIO, length: int | None = None, content_type: str | None = None) -> ObjectInfo:
        path = self._path(key)
        if key.split("/", 1)[0] == TMP_DIR:
            raise StoreError(f"keys under {TMP_DIR}/ are reserved")
        fd, tmp = tempfile.mkstemp(prefix=f"{uuid.uuid4().hex}.", dir=self.root / TMP_DIR)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())  # durable before visible
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        info = self.stat(key)
        assert info is not None
        return info

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        path = self._path(key)

        @contextmanager
        def reader() -> Iterator[BinaryIO]:
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed by the context manager
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
                raise ObjectNotFoundError(f"no object {self.uri(key)}") from exc
            with f:
                yield f

        return reader()

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def _keys(self, prefix: str) -> list[str]:
        # Walk only the deepest folder the prefix pins down; sort by bytes, as S3 does.
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(folder):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
                rel = ""
            for name in filenames:
                key = f"{rel}/{name}" if rel else name
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort(key=lambda k: k.encode())
        return keys

    def list_page(self, prefix: str = "", *, limit: int = 1000, token: str | None = None) -> Page:
        keys = self._keys(prefix)
        start = bisect.bisect_right([k.encode() for k in keys], token.encode()) if token else 0
        chosen = keys[start : start + limit]
        items = [info for k in chosen if (info := self.stat(k)) is not None]
        more = start + limit < len(keys)
        return Page(items, chosen[-1] if more and chosen else None)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def key_for(self, uri: str) -> str:
        root = self.root.as_uri() + "/"
        return check_key(uri[len(root) :]) if uri.startswith(root) else super().key_for(uri)
