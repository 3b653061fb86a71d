"""Encoding of contracts to message bytes, and decoding that explains every failure.

:func:`decode` is total: whatever bytes arrive (a console producer, a buggy or hostile client,
a tombstone), it returns either the contract or a :class:`DecodeFailure` the worker
dead-letters. One record that raised here would be redelivered forever and wedge its stage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError

from vlgenrm.contracts import Contract, DeadLetterReason

M = TypeVar("M", bound=Contract)

#: Longest failure detail kept; details end up in dead letters, logs and Kubernetes Events.
MAX_DETAIL_CHARS = 2000


def encode(message: BaseModel | bytes) -> bytes:
    """Contracts go on the wire as UTF-8 JSON; raw bytes pass through (tests, forwarding)."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, Contract):
        return message.to_json_bytes()
    return message.model_dump_json(by_alias=True).encode()


@dataclass(frozen=True)
class DecodeFailure:
    """Why bytes could not become the expected contract; becomes a DeadLetter."""

    reason: DeadLetterReason
    detail: str


@dataclass(frozen=True)
class Decoded(Generic[M]):
    message: M


class _Rejected(ValueError):
    """Raised from json.loads hooks for input that is JSON-shaped but not acceptable."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; a reader must not guess what the writer meant.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Rejected(f"duplicate key {key[:100]!r}")
        obj[key] = value
    return obj


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number {text[:40]}{'...' if len(text) > 40 else ''} overflows a float")
    return value


def clip_detail(text: str) -> str:
    """``text`` cut to :data:`MAX_DETAIL_CHARS`, saying so."""
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 15] + " ...(truncated)"


def _undecodable(why: str) -> DecodeFailure:
    return DecodeFailure(DeadLetterReason.UNDECODABLE, clip_detail(why))


def _invalid(why: str) -> DecodeFailure:
    return DecodeFailure(DeadLetterReason.INVALID, clip_detail(why))


def _show(number: int) -> str:
    text = str(number)
    return text if len(text) <= 40 else f"<an integer of {len(text.lstrip('-'))} digits>"


def _version_key(model: type[Contract]) -> str:
    field = model.model_fields["schema_version"]
    return field.serialization_alias or field.alias or "schema_version"


def parse_json(data: bytes | bytearray | memoryview | None) -> Any | DecodeFailure:
    """Strict JSON (RFC 8259, I-JSON's rules) of ``data``, or why it is not."""
    if data is None:
        return _undecodable("no value (a tombstone record)")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return _undecodable(f"expected bytes, got {type(data).__name__}")
    if not data:
        return _undecodable("an empty record (no value)")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        return _undecodable(f"not UTF-8: {exc}")
    # pydantic-core's parser first: its nesting limit does not depend on Python's recursion
    # limit (a raised limit would let json.loads overflow the C stack), and it rejects NaN,
    # Infinity, lone surrogates, and numbers of thousands of digits, all in linear time.
    try:
        pydantic_core.from_json(text, allow_inf_nan=False, cache_strings=False)
    except ValueError as exc:
        return _undecodable(f"not JSON: {exc}")
    # Then json.loads on input known to be shallow, for what pydantic-core lets through:
    # duplicate keys and literals such as 1e999 that overflow to infinity.
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        return _undecodable(f"not JSON: {exc}")


def decode(data: bytes, model: type[M]) -> Decoded[M] | DecodeFailure:
    """Parse ``data`` as ``model``; never raises, whatever the bytes."""
    try:
        return _decode(data, model)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not become a poison pill
        return _invalid(f"{model.__name__} could not be decoded: {type(exc).__name__}: {exc}")


def _decode(data: bytes, model: type[M]) -> Decoded[M] | DecodeFailure:
    obj = parse_json(data)
    if isinstance(obj, DecodeFailure):
        return obj
    if not isinstance(obj, dict):
        return _invalid(f"expected a JSON object for {model.__name__}, got {type(obj).__name__}")
    key = _version_key(model)
    version = obj.get(key, obj.get("schema_version"))
    if version is None:
        return _invalid(f"{model.__name__} without '{key}'")
    # bool is an int in Python, and 1.0 == 1: only a JSON integer is a version.
    if type(version) is not int:
        return _invalid(f"{model.__name__} {key} must be an integer, got {type(version).__name__}")
    if version not in model.SUPPORTED_VERSIONS:
        return DecodeFailure(
            DeadLetterReason.UNKNOWN_SCHEMA_VERSION,
            clip_detail(f"{model.__name__} {key}={_show(version)}; this reader supports {list(model.SUPPORTED_VERSIONS)}"),
        )
    try:
        # JSON mode, as the wire means it: strict about types and bytes fields read as base64.
        return Decoded(model.model_validate_json(bytes(data)))
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:10])
        return _invalid(f"not a valid {model.__name__}: {errors}")
