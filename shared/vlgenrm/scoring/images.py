"""Image bytes for a scoring request, from the sources a client may name, and no others.

The scorer runs inside the cluster, so a URL in a request body is a server-side request
forgery waiting to happen (cloud metadata at 169.254.169.254, internal services, the
filesystem). Hence:

- s3:// images only from the platform store, and only when its bucket is allowed;
- http(s):// images only from configured hosts, with no credentials in the URL, no redirects
  (a redirect could point anywhere), no proxies or .netrc from the environment;
- every source bounded in size (``max_image_bytes``) and http fetches bounded in time
  (``image_fetch_timeout_s``, for the whole fetch: a server dripping bytes is cut off too);
- any other scheme (file:, ftp:, gopher:, ...) refused.

A host on the allow-list is trusted as a whole: its DNS answers are not checked, so list
only hosts that are yours. This module returns bytes; decoding the image is the GenRM's job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re

import httpx

from vlgenrm.scoring.config import SecuritySettings
from vlgenrm.scoring.errors import ApiError
from vlgenrm.store import BlobStore, InvalidKeyError, ObjectNotFoundError, StoreError

LOCAL_BUCKET = "local"  # the bucket name of a LocalStore, for allowed_buckets
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")  # base64 never contains ':'
_DATA_HEADER = re.compile(r"^data:image/[A-Za-z0-9.+-]+(;[^;,]*)*;base64$", re.IGNORECASE)


class ImageError(ApiError):
    """An image that cannot be used: ``status`` is the HTTP status the caller should answer."""


def host_allowed(host: str, port: int | None, patterns: list[str]) -> bool:
    """Whether ``host`` matches a pattern: ``name`` exactly, or ``*.suffix`` for any subdomain.

    A pattern may carry a port (``name:8443``, ``*.suffix:443``) to allow only that port;
    without one every port of the host is allowed. ``*.example.com`` does not match
    ``example.com`` itself, nor ``example.com.evil.org``. IP addresses match only exactly
    (``*.0.0.1`` is no way to allow 127.0.0.1).
    """
    host = host.lower().rstrip(".")
    if not host:
        return False
    is_ip = _is_ip(host)
    for raw in patterns:
        pattern, want_port = _split_port(raw.strip().lower())
        pattern = pattern.rstrip(".")
        if want_port is not None and want_port != port:
            continue
        if pattern.startswith("*."):
            if is_ip:
                continue
            suffix = pattern[1:]  # ".example.com": the dot keeps "badexample.com" out
            if len(suffix) > 1 and host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif pattern and host == pattern:
            return True
    return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split_port(pattern: str) -> tuple[str, int | None]:
    if pattern.startswith("["):  # [ipv6] or [ipv6]:port
        addr, _, rest = pattern[1:].partition("]")
        return addr, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if pattern.count(":") == 1:
        name, _, port = pattern.partition(":")
        if port.isdigit():
            return name, int(port)
    return pattern, None


def store_bucket(store: BlobStore) -> str:
    """The bucket name ``allowed_buckets`` refers to: the S3 bucket, or "local"."""
    bucket = getattr(store, "bucket", None)
    return bucket if isinstance(bucket, str) and bucket else LOCAL_BUCKET


class ImageFetcher:
    """Turns an image source string into bytes under the limits of ``SecuritySettings``."""

    def __init__(self, settings: SecuritySettings, store: BlobStore | None) -> None:
        self.settings = settings
        self.store = store

    async def fetch(self, source: str) -> bytes:
        """The bytes of ``source``; ImageError (with an HTTP status) when refused or failed."""
        source = source.strip()
        if not source:
            raise ImageError(400, "invalid_image", "empty image source")
        if source[:5].lower() == "data:":
            return self._decode(_data_url_payload(source))
        match = _SCHEME.match(source)
        if match is None:
            return self._decode(source)
        scheme = match.group(1).lower()
        key = self._store_key(source)
        if key is not None:
            return await self._from_store(source, key)
        if scheme in ("http", "https"):
            return await self._from_http(source)
        if scheme == "s3":
            bucket = source.split("://", 1)[-1].split("/", 1)[0]
            if self.store is not None and bucket == getattr(self.store, "bucket", None):
                raise ImageError(403, "forbidden_image_source", f"{source} is not a valid object URI of the platform store")
            raise ImageError(403, "forbidden_image_source", f"s3 bucket {bucket!r} is not the platform store's; images come only from allowed buckets")
        raise ImageError(403, "forbidden_image_source", f"image scheme {scheme!r} is not allowed (use s3://, http(s):// of an allowed host, or base64)")

    # -- base64 -------------------------------------------------------------------------------
    def _decode(self, text: str) -> bytes:
        text = text.strip()
        limit = self.settings.max_image_bytes
        # Refuse before decoding: 4 base64 characters hold 3 bytes.
        if len(text) // 4 * 3 > limit + 2:
            raise ImageError(413, "too_large", f"image exceeds {limit} bytes")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(400, "invalid_image", f"image is not valid base64 ({exc})") from exc
        if not data:
            raise ImageError(400, "invalid_image", "image is empty")
        if len(data) > limit:
            raise ImageError(413, "too_large", f"image of {len(data)} bytes exceeds {limit}")
        return data

    # -- the platform store ---------------------------------------------------------------------
    def _store_key(self, source: str) -> str | None:
        """The store key when ``source`` is a URI of the platform store; None otherwise.

        Only URIs (with ``://``) qualify: a bare string is base64, never an object key.
        """
        if self.store is None or "://" not in source:
            return None
        try:
            return self.store.key_for(source)
        except InvalidKeyError:
            return None

    async def _from_store(self, source: str, key: str) -> bytes:
        assert self.store is not None
        store, limit = self.store, self.settings.max_image_bytes
        bucket = store_bucket(store)
        allowed = self.settings.allowed_buckets
        if allowed is not None and bucket not in allowed:
            raise ImageError(403, "forbidden_image_source", f"bucket {bucket!r} is not in allowed_buckets")

        def read() -> bytes:
            info = store.stat(key)
            if info is None:
                raise ObjectNotFoundError(source)
            if info.size > limit:
                raise ImageError(413, "too_large", f"image {source} of {info.size} bytes exceeds {limit}")
            # Read at most one byte past the limit: the object may have been replaced since stat.
            with store.open(key) as f:
                return f.read(limit + 1)

        try:
            data = await asyncio.to_thread(read)
        except ObjectNotFoundError as exc:
            raise ImageError(422, "image_not_found", f"no image at {source}") from exc
        except StoreError as exc:
            raise ImageError(502, "image_fetch_failed", f"reading {source} failed: {exc}") from exc
        if len(data) > limit:
            raise ImageError(413, "too_large", f"image {source} exceeds {limit} bytes")
        if not data:
            raise ImageError(400, "invalid_image", f"image {source} is empty")
        return data

    # -- http(s) -------------------------------------------------------------------------------
    async def _from_http(self, source: str) -> bytes:
        # Parse with httpx, the same parser that makes the request: checking one parse and
        # fetching another is a classic way around allow-lists.
        try:
            url = httpx.URL(source)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ImageError(400, "invalid_image", f"malformed image URL ({exc})") from exc
        if url.userinfo:
            raise ImageError(403, "forbidden_image_source", "image URLs may not carry credentials (user:password@)")
        if not host_allowed(url.host, url.port, self.settings.allowed_hosts):
            raise ImageError(403, "forbidden_image_source", f"image host {url.host!r} is not in allowed_hosts")
        timeout = self.settings.image_fetch_timeout_s
        try:
            return await asyncio.wait_for(self._download(url), timeout)
        except TimeoutError as exc:
            raise ImageError(504, "image_fetch_timeout", f"fetching the image from {url.host} took over {timeout:g} s") from exc

    async def _download(self, url: httpx.URL) -> bytes:
        limit = self.settings.max_image_bytes
        # trust_env=False: no proxy or .netrc credentials from the environment reach an image host.
        # A client per fetch: httpx pools are bound to one event loop, fetches are not hot.
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=self.settings.image_fetch_timeout_s) as client:
            try:
                # identity: images are compressed already, and a gzip body could inflate far past its size
                async with client.stream("GET", url, headers={"Accept": "image/*", "Accept-Encoding": "identity"}) as response:
                    if response.is_redirect or 300 <= response.status_code < 400:
                        raise ImageError(502, "image_fetch_failed", f"image host {url.host} answered {response.status_code} (redirects are not followed)")
                    if response.status_code != 200:
                        raise ImageError(502, "image_fetch_failed", f"image host {url.host} answered {response.status_code}")
                    length = response.headers.get("content-length")
                    if length is not None and length.strip().isdigit() and int(length) > limit:
                        raise ImageError(413, "too_large", f"image of {int(length)} bytes exceeds {limit}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > limit:  # stop reading now: the rest is never downloaded
                            raise ImageError(413, "too_large", f"image exceeds {limit} bytes")
            except httpx.TimeoutException as exc:
                raise ImageError(504, "image_fetch_timeout", f"fetching the image from {url.host} timed out") from exc
            except httpx.HTTPError as exc:
                raise ImageError(502, "image_fetch_failed", f"fetching the image from {url.host} failed: {type(exc).__name__}") from exc
        if not body:
            raise ImageError(400, "invalid_image", f"image from {url.host} is empty")
        return bytes(body)


def _data_url_payload(source: str) -> str:
    """The base64 part of ``data:image/<type>[;param];base64,<data>``."""
    header, sep, payload = source.partition(",")
    if not sep or not _DATA_HEADER.match(header.strip()):
        raise ImageError(400, "invalid_image", "data URLs must be data:image/<type>;base64,<data>")
    return payload
