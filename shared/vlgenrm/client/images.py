"""Images for scoring requests, from whatever a trainer holds.

The scorer takes one string per image (docs/scoring.md): base64 or a ``data:image/`` URL, an
``s3://`` URI of the platform's store, or an ``http(s)://`` URL of a host it allows. The client
turns what a trainer's dataset carries into that string:

=====================================  ==================================================
``bytes`` / ``bytearray``               base64 of the bytes (the scorer decodes them)
``PIL.Image.Image``                     PNG, base64
``pathlib.Path`` / ``os.PathLike``      the file's bytes, base64
``"file:///..."``                       the file's bytes, base64
``"s3://..."``, ``"http(s)://..."``     as given: the scorer fetches it under its rules
``"data:image/...;base64,..."``         as given
a ``str`` naming an existing file       the file's bytes, base64
any other ``str``                       base64 (FileNotFoundError when it cannot be)
``{"bytes": ..., "path": ...}``         a ``datasets`` Image feature's undecoded form
=====================================  ==================================================
"""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ImageLike = str | bytes | bytearray | os.PathLike | Any  # Any: a PIL image (PIL is optional for the client)
PASSED_THROUGH = ("s3://", "http://", "https://", "data:")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def image_source(image: ImageLike) -> str:
    """The string the scorer takes for ``image``."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(image)).decode("ascii")
    if isinstance(image, os.PathLike):
        return _file(Path(image))
    if isinstance(image, str):
        if image.startswith(PASSED_THROUGH):
            return image
        if image.startswith("file://"):
            return _file(Path(unquote(urlparse(image).path)))
        if len(image) < 4096:
            try:
                if os.path.isfile(image):
                    return _file(Path(image))
            except (OSError, ValueError):
                pass
        if not _BASE64.fullmatch(image):
            raise FileNotFoundError(f"no image file {image[:200]!r} (and not base64, nor an s3://, http(s):// or data: URL)")
        return image
    if isinstance(image, dict) and ("bytes" in image or "path" in image):  # datasets.Image(decode=False)
        if image.get("bytes"):
            return image_source(image["bytes"])
        return image_source(Path(image["path"]))
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image
        buf = io.BytesIO()
        picture = image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")
        picture.save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")
    raise TypeError(f"cannot send a {type(image).__name__} as an image: give bytes, a PIL image, a path, or an s3://, http(s):// or data: URL")


def _file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


class SourceCache:
    """:func:`image_source` once per image object within a call (the G completions of one
    prompt share their image object, which should be encoded once)."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, str]] = {}

    def __call__(self, image: ImageLike) -> str:
        if isinstance(image, str) and image.startswith(PASSED_THROUGH):
            return image
        hit = self._by_id.get(id(image))
        if hit is not None and hit[0] is image:
            return hit[1]
        source = image_source(image)
        self._by_id[id(image)] = (image, source)  # the object is kept, so its id is not reused
        return source
