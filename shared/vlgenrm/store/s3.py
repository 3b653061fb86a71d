"""S3Store: the BlobStore over any S3 API (MinIO, AWS S3, versitygw) via the ``minio`` SDK.

S3 makes an object visible only when its PUT (or multipart completion) succeeds, which gives
atomic visibility for free. Memory stays bounded by the part size: uploads go part by part
(one part in flight) and downloads are read in 1 MiB chunks.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from vlgenrm.retry import retry_call
from vlgenrm.settings import StoreSettings
from vlgenrm.store.base import (
    BlobStore,
    ObjectInfo,
    ObjectNotFoundError,
    Page,
    StoreAuthError,
    StoreError,
    StoreUnavailableError,
    check_key,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"})
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (Urllib3HTTPError, ConnectionError, TimeoutError, ServerError)) or (
        isinstance(exc, S3Error) and exc.code in {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}
    )


class S3Store(BlobStore):
    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint
        self.bucket = settings.bucket
        # Retries are ours (bounded, logged, with a clear final error), not urllib3's.
        self._http = http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0),
            maxsize=10,
        )
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            secure=settings.secure,
            region=settings.region,
            http_client=http,
        )
        self._bucket_ready = False

    # -- error handling ------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], what: str, *, retry: bool = True) -> T:
        """Run one S3 call with bounded retries, translating failures into StoreErrors."""
        try:
            if retry:
                return retry_call(fn, is_transient=_is_transient, backoff=self.settings.retry, what=f"S3 {what}")
            return fn()
        except S3Error as exc:
            if exc.code in AUTH_CODES:
                raise StoreAuthError(f"S3 at {self.endpoint} rejected the credentials ({exc.code}) during {what}") from exc
            if exc.code in MISSING_CODES:
                raise ObjectNotFoundError(f"no such object in s3://{self.bucket} ({what})") from exc
            if exc.code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist at {self.endpoint}") from exc
            if _is_transient(exc):
                raise StoreUnavailableError(f"S3 at {self.endpoint} kept failing during {what}: {exc.code}") from exc
            raise StoreError(f"S3 at {self.endpoint}: {what} failed: {exc.code}: {exc.message}") from exc
        except (Urllib3HTTPError, ConnectionError, TimeoutError, ServerError) as exc:
            raise StoreUnavailableError(f"S3 endpoint {self.endpoint} is unreachable during {what}: {exc}") from exc
        except MinioException as exc:
            raise StoreError(f"S3 at {self.endpoint}: {what} failed: {exc}") from exc

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (if allowed); also proves endpoint and credentials work."""
        if self._bucket_ready:
            return
        if not self._call(lambda: self.client.bucket_exists(self.bucket), "bucket check"):
            if not self.settings.create_bucket:
                raise StoreError(f"bucket {self.bucket!r} does not exist at {self.endpoint} and create_bucket is off")
            try:
                self._call(lambda: self.client.make_bucket(self.bucket, location=self.settings.region), "create bucket")
            except StoreError as exc:  # a concurrent creator may have won the race
                if not self._call(lambda: self.client.bucket_exists(self.bucket), "bucket check"):
                    raise exc
        self._bucket_ready = True

    # -- primitives ----------------------------------------------------------------------
    def put_stream(self, key: str, stream: BinaryIO, length: int | None = None, content_type: str | None = None) -> ObjectInfo:
        check_key(key)
        self.ensure_bucket()
        seekable = stream.seekable()
        start = stream.tell() if seekable else 0

        def put() -> None:
            if seekable:
                stream.seek(start)
            self.client.put_object(
                self.bucket,
                key,
                stream,
                length if length is not None else -1,
                content_type=content_type or "application/octet-stream",
                part_size=self.settings.part_size_mb << 20,
                num_parallel_uploads=1,
            )

        # A half-consumed unseekable stream cannot be replayed, so only seekable ones retry.
        self._call(put, f"put {key}", retry=seekable)
        info = self.stat(key)
        if info is None:
            raise StoreError(f"s3://{self.bucket}/{key} vanished right after it was written")
        return info

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        check_key(key)
        self.ensure_bucket()

        @contextmanager
        def reader() -> Iterator[BinaryIO]:
            try:
                response = self._call(lambda: self.client.get_object(self.bucket, key), f"get {key}")
            except ObjectNotFoundError as exc:
                raise ObjectNotFoundError(f"no object {self.uri(key)}") from exc
            try:
                yield response  # urllib3 responses are readable file objects
            finally:
                response.close()
                response.release_conn()

        return reader()

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        self.ensure_bucket()
        try:
            st = self._call(lambda: self.client.stat_object(self.bucket, key), f"stat {key}")
        except ObjectNotFoundError:
            return None
        return ObjectInfo(key, st.size or 0, st.last_modified, st.etag)

    def list_page(self, prefix: str = "", *, limit: int = 1000, token: str | None = None) -> Page:
        self.ensure_bucket()

        def fetch() -> list[ObjectInfo]:
            objects = self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True, start_after=token)
            # One extra item tells whether another page exists.
            return [ObjectInfo(o.object_name, o.size or 0, o.last_modified, o.etag) for o in itertools.islice(objects, limit + 1)]

        items = self._call(fetch, f"list {prefix!r}")
        more = len(items) > limit
        items = items[:limit]
        return Page(items, items[-1].key if more else None)

    def delete(self, key: str) -> None:
        check_key(key)
        self.ensure_bucket()
        self._call(lambda: self.client.remove_object(self.bucket, key), f"delete {key}")

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_for(self, uri: str) -> str:
        prefix = f"s3://{self.bucket}/"
        return check_key(uri[len(prefix) :]) if uri.startswith(prefix) else super().key_for(uri)

    def presigned_url(self, key: str, *, method: str = "GET", expires_s: int = 3600) -> str:
        check_key(key)
        expires = timedelta(seconds=expires_s)
        if method == "GET":
            return self.client.presigned_get_object(self.bucket, key, expires=expires)
        if method == "PUT":
            return self.client.presigned_put_object(self.bucket, key, expires=expires)
        raise StoreError(f"presigned URLs support GET and PUT, not {method}")

    def close(self) -> None:
        self._http.clear()
