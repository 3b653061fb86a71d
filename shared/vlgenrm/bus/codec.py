"""Encoding of contracts to message bytes, and decoding that explains every failure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from vlgenrm.contracts import Contract, DeadLetterReason

M = TypeVar("M", bound=Contract)


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


def _version_key(model: type[Contract]) -> str:
    field = model.model_fields["schema_version"]
    return field.serialization_alias or field.alias or "schema_version"


def decode(data: bytes, model: type[M]) -> Decoded[M] | DecodeFailure:
    """Parse ``data`` as ``model``, reporting undecodable, unknown-version and invalid input."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return DecodeFailure(DeadLetterReason.UNDECODABLE, f"not UTF-8 JSON: {exc}")
    if not isinstance(obj, dict):
        return DecodeFailure(DeadLetterReason.INVALID, f"expected a JSON object for {model.__name__}, got {type(obj).__name__}")
    key = _version_key(model)
    version = obj.get(key, obj.get("schema_version"))
    if version is None:
        return DecodeFailure(DeadLetterReason.INVALID, f"{model.__name__} without '{key}'")
    if version not in model.SUPPORTED_VERSIONS:
        return DecodeFailure(
            DeadLetterReason.UNKNOWN_SCHEMA_VERSION,
            f"{model.__name__} {key}={version!r}; this reader supports {list(model.SUPPORTED_VERSIONS)}",
        )
    try:
        return Decoded(model.model_validate(obj))
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:10])
        return DecodeFailure(DeadLetterReason.INVALID, f"not a valid {model.__name__}: {errors}")
