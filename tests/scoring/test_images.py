"""Image sources of scoring requests: base64, the platform store, allowed http hosts, nothing else."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlgenrm.scoring.config import SecuritySettings
from vlgenrm.scoring.images import ImageError, ImageFetcher, host_allowed, store_bucket
from vlgenrm.store import BlobStore

LIMIT = 4096
TIMEOUT_S = 0.5
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # bytes are opaque here; only the GenRM decodes


def fetch(fetcher: ImageFetcher, source: str) -> bytes:
    return asyncio.run(fetcher.fetch(source))


def refused(fetcher: ImageFetcher, source: str) -> ImageError:
    with pytest.raises(ImageError) as info:
        fetch(fetcher, source)
    return info.value


def fetcher_for(store: BlobStore | None = None, **overrides: object) -> ImageFetcher:
    base: dict[str, object] = {"max_image_bytes": LIMIT, "image_fetch_timeout_s": TIMEOUT_S, "allowed_hosts": ["127.0.0.1"]}
    return ImageFetcher(SecuritySettings(**(base | overrides)), store)


# -- base64 -------------------------------------------------------------------------------------
def test_base64_and_data_urls_round_trip():
    fetcher = fetcher_for()
    b64 = base64.b64encode(PNG).decode()
    assert fetch(fetcher, b64) == PNG
    assert fetch(fetcher, f"  {b64}\n") == PNG  # surrounding whitespace is tolerated
    assert fetch(fetcher, f"data:image/png;base64,{b64}") == PNG
    assert fetch(fetcher, f"DATA:image/jpeg;name=x.jpg;base64,{b64}") == PNG
    exact = base64.b64encode(b"x" * LIMIT).decode()
    assert len(fetch(fetcher, exact)) == LIMIT


@pytest.mark.parametrize(
    "source",
    [
        "",
        "   ",
        "abc$",  # not in the alphabet
        "abc",  # bad padding
        "aGVs bG8=",  # inner whitespace: strict decoding
        "data:text/plain;base64,aGVsbG8=",  # not an image
        "data:image/png,aGVsbG8=",  # not base64-encoded
        "data:image/png;base64,",  # empty
        "data:image/png;base64,%%%",
    ],
)
def test_invalid_base64_is_400(source):
    error = refused(fetcher_for(), source)
    assert (error.status, error.code) == (400, "invalid_image")


def test_too_large_base64_is_413():
    fetcher = fetcher_for()
    for data in (b"x" * (LIMIT + 1), b"x" * (LIMIT * 100)):
        b64 = base64.b64encode(data).decode()
        for source in (b64, f"data:image/png;base64,{b64}"):
            error = refused(fetcher, source)
            assert (error.status, error.code) == (413, "too_large")


@pytest.mark.parametrize("source", ["file:///etc/passwd", "ftp://x", "gopher://127.0.0.1:70/", "javascript:alert(1)", "C:\\images\\a.png"])
def test_other_schemes_are_403(source, tmp_path):
    from vlgenrm.store import LocalStore

    for store in (None, LocalStore(tmp_path / "store")):
        error = refused(fetcher_for(store), source)
        assert (error.status, error.code) == (403, "forbidden_image_source")


# -- the platform store ---------------------------------------------------------------------------
def test_store_images_of_the_platform_bucket_are_read(store):
    key = store.put_image(PNG, "png").key
    assert fetch(fetcher_for(store), store.uri(key)) == PNG
    assert fetch(fetcher_for(store, allowed_buckets=[store_bucket(store), "other"]), store.uri(key)) == PNG


def test_missing_store_image_is_422(store):
    error = refused(fetcher_for(store), store.uri("images/missing.png"))
    assert (error.status, error.code) == (422, "image_not_found")


def test_too_large_store_image_is_413(store):
    store.put_bytes("images/big.png", b"x" * (LIMIT + 1))
    error = refused(fetcher_for(store), store.uri("images/big.png"))
    assert (error.status, error.code) == (413, "too_large")


def test_store_bucket_not_in_allowed_buckets_is_403(store):
    key = store.put_image(PNG, "png").key
    error = refused(fetcher_for(store, allowed_buckets=["someone-elses"]), store.uri(key))
    assert (error.status, error.code) == (403, "forbidden_image_source")
    assert repr(store_bucket(store)) in error.message


def test_foreign_bucket_or_no_store_is_403(store):
    for fetcher in (fetcher_for(store), fetcher_for(store, allowed_buckets=["other-bucket"]), fetcher_for(None)):
        error = refused(fetcher, "s3://other-bucket/x.png")
        assert (error.status, error.code) == (403, "forbidden_image_source")
        assert "other-bucket" in error.message


def test_store_uri_escaping_the_store_is_403(store):
    error = refused(fetcher_for(store), store.uri("images/x.png").replace("images/x.png", "../outside.png"))
    assert error.status == 403


# -- http(s) --------------------------------------------------------------------------------------
@dataclass
class ImageServer:
    port: int
    hits: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def make_handler(server: ImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def reply(self, status: int, body: bytes = b"", length: int | None = None, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)

        def pause(self, seconds: float) -> bool:
            """Sleep unless the server is stopping; True when the full time passed."""
            return not server.stop.wait(seconds)

        def do_GET(self) -> None:
            server.hits[self.path] += 1
            try:
                if self.path == "/ok.png":
                    self.reply(200, PNG, len(PNG), {"Content-Type": "image/png"})
                elif self.path == "/big":
                    self.reply(200, b"x" * (LIMIT * 4), LIMIT * 4)
                elif self.path == "/big-unsized":
                    # No Content-Length (HTTP/1.0: the body ends at close), and far more than the
                    # limit: the client has to stop reading by itself.
                    self.reply(200)
                    for _ in range(10_000):
                        self.wfile.write(b"x" * 1024)
                elif self.path == "/slow":
                    if self.pause(TIMEOUT_S * 6):
                        self.reply(200, PNG, len(PNG))
                elif self.path == "/drip":
                    self.reply(200, length=len(PNG))
                    for byte in PNG:
                        if not self.pause(0.05):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                elif self.path == "/redirect":
                    self.reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}, length=0)
                elif self.path == "/500":
                    self.reply(500, b"boom", 4)
                else:
                    self.reply(404, b"", 0)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up, as it should on too large or too slow

    return Handler


@pytest.fixture(scope="module")
def image_server() -> Iterator[ImageServer]:
    state = ImageServer(port=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_allowed_host_is_fetched(image_server):
    assert fetch(fetcher_for(), image_server.url("/ok.png")) == PNG
    assert fetch(fetcher_for(allowed_hosts=[f"127.0.0.1:{image_server.port}"]), image_server.url("/ok.png")) == PNG


def test_unlisted_host_is_403_without_a_request(image_server):
    before = image_server.hits["/ok.png"]
    for fetcher in (fetcher_for(allowed_hosts=[]), fetcher_for(allowed_hosts=["example.org", "*.0.0.1", "127.0.0.1:1"])):
        error = refused(fetcher, image_server.url("/ok.png"))
        assert (error.status, error.code) == (403, "forbidden_image_source")
        assert "127.0.0.1" in error.message
    assert refused(fetcher_for(), image_server.url("/ok.png", host="localhost")).status == 403  # names are not resolved
    assert image_server.hits["/ok.png"] == before


def test_credentials_in_the_url_are_403(image_server):
    before = sum(image_server.hits.values())
    for userinfo in ("user:pass@", "user@", "example.org@"):
        error = refused(fetcher_for(), f"http://{userinfo}127.0.0.1:{image_server.port}/ok.png")
        assert (error.status, error.code) == (403, "forbidden_image_source")
    assert sum(image_server.hits.values()) == before


def test_host_patterns():
    patterns = ["*.example.com", "images.test", "cdn.test:8443", "::1"]
    assert host_allowed("a.example.com", None, patterns)
    assert host_allowed("A.B.Example.COM.", 443, patterns)
    assert not host_allowed("example.com", None, patterns)  # the wildcard is for subdomains
    assert not host_allowed("example.com.evil.org", None, patterns)
    assert not host_allowed("badexample.com", None, patterns)
    assert host_allowed("images.test", 8080, patterns)
    assert not host_allowed("x.images.test", 8080, patterns)
    assert host_allowed("cdn.test", 8443, patterns)
    assert not host_allowed("cdn.test", 443, patterns)
    assert host_allowed("::1", 80, patterns)
    assert not host_allowed("", None, ["*."])


def test_redirect_is_not_followed(image_server):
    error = refused(fetcher_for(), image_server.url("/redirect"))
    assert (error.status, error.code) == (502, "image_fetch_failed")
    assert "302" in error.message


def test_server_error_is_502(image_server):
    error = refused(fetcher_for(), image_server.url("/500"))
    assert (error.status, error.code) == (502, "image_fetch_failed")
    assert "500" in error.message


def test_connection_refused_is_502(image_server):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = refused(fetcher_for(), f"http://127.0.0.1:{port}/ok.png")
    assert (error.status, error.code) == (502, "image_fetch_failed")


@pytest.mark.parametrize("path", ["/slow", "/drip"])
def test_slow_server_is_504_within_the_timeout(image_server, path):
    started = time.monotonic()
    error = refused(fetcher_for(), image_server.url(path))
    elapsed = time.monotonic() - started
    assert (error.status, error.code) == (504, "image_fetch_timeout")
    assert elapsed < TIMEOUT_S + 1


@pytest.mark.parametrize("path", ["/big", "/big-unsized"])
def test_too_large_download_is_413(image_server, path):
    started = time.monotonic()
    error = refused(fetcher_for(), image_server.url(path))
    assert (error.status, error.code) == (413, "too_large")
    assert time.monotonic() - started < TIMEOUT_S  # stopped early, not cut off by the timeout


def test_wildcards_never_match_ip_addresses():
    assert not host_allowed("127.0.0.1", None, ["*.0.0.1", "*.1"])
    assert host_allowed("127.0.0.1", None, ["127.0.0.1"])
