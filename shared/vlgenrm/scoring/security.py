"""Who may call the scorer and how often: hashed API keys, scopes, per-key token buckets.

Keys are configured only as SHA-256 digests (``ApiKey.sha256``), so neither the config nor a
mounted Secret holds a usable key, and nothing here logs or echoes the clear key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from vlgenrm.errors import ConfigError
from vlgenrm.scoring.config import ApiKey, Scope, SecuritySettings
from vlgenrm.scoring.errors import ApiError

ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
ANONYMOUS = "anonymous"
MISSING_KEY_MESSAGE = "missing API key: send Authorization: Bearer <key> or X-API-Key"

_KEY_LIST = TypeAdapter(list[ApiKey])


def hash_key(key: str) -> str:
    """Hex SHA-256 of a clear key: what ``ApiKey.sha256`` holds."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class AuthError(ApiError):
    """A refused call: ``status`` 401 (no or unknown key) or 403 (key lacks the scope)."""


@dataclass(frozen=True)
class Principal:
    """The caller a request is accounted to (rate limits, logs, metrics)."""

    name: str
    scopes: frozenset[Scope]
    rate_per_s: float
    burst: int


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes  # raw SHA-256, compared in constant time


def load_api_keys_file(path: Path) -> list[ApiKey]:
    """The keys of a YAML list of ApiKey mappings; ConfigError names the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"API keys file {path}: not found") from exc
    except OSError as exc:
        raise ConfigError(f"API keys file {path}: unreadable ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"API keys file {path}: not valid YAML ({exc})") from exc
    if data is None:  # an empty Secret: no keys, so every call is refused when keys are required
        return []
    if not isinstance(data, list):
        raise ConfigError(f"API keys file {path}: expected a YAML list of keys, got {type(data).__name__}")
    try:
        return _KEY_LIST.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"API keys file {path}: invalid keys ({problems})") from exc


class ApiKeyAuth:
    """Checks API keys against configured digests and the scope of the endpoint called."""

    def __init__(self, settings: SecuritySettings) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self._entries: tuple[_Entry, ...] = ()
        self.reload(settings)

    @property
    def settings(self) -> SecuritySettings:
        return self._settings

    @property
    def key_count(self) -> int:
        return len(self._entries)

    def reload(self, settings: SecuritySettings | None = None) -> None:
        """Re-read ``api_keys`` and ``api_keys_file`` (of new settings, when given).

        On a ConfigError the previous keys stay in force: a broken Secret update must not lock
        every client out (nor let everyone in).
        """
        settings = settings or self._settings
        keys = list(settings.api_keys)
        if settings.api_keys_file is not None:
            keys += load_api_keys_file(Path(settings.api_keys_file))
        entries = self._entries_for(keys, settings)
        with self._lock:
            self._settings = settings
            self._entries = entries

    @staticmethod
    def _entries_for(keys: Iterable[ApiKey], settings: SecuritySettings) -> tuple[_Entry, ...]:
        entries: list[_Entry] = []
        owner: dict[str, str] = {}
        for key in keys:
            # Two names on one digest would make the caller's identity depend on list order.
            if key.sha256 in owner and owner[key.sha256] != key.name:
                raise ConfigError(f"API keys {owner[key.sha256]!r} and {key.name!r} have the same sha256")
            owner[key.sha256] = key.name
            principal = Principal(
                name=key.name,
                scopes=frozenset(key.scopes),
                rate_per_s=key.rate_per_s if key.rate_per_s is not None else settings.rate_per_s,
                burst=key.burst if key.burst is not None else settings.burst,
            )
            entries.append(_Entry(principal, bytes.fromhex(key.sha256)))
        return tuple(entries)

    def authenticate(self, authorization: str | None, api_key_header: str | None, scope: Scope) -> Principal:
        """The principal of the request's key, allowed to call ``scope``; else AuthError."""
        with self._lock:
            settings, entries = self._settings, self._entries
        key = _presented_key(authorization, api_key_header)
        principal = _match(key, entries) if key is not None else None
        if principal is None:
            if not settings.require_api_key:
                return Principal(ANONYMOUS, ALL_SCOPES, settings.rate_per_s, settings.burst)
            if key is None:
                raise AuthError(401, "unauthorized", MISSING_KEY_MESSAGE)
            raise AuthError(401, "invalid_api_key", "invalid API key")
        # A key limits itself even where keys are optional: its holder asked to be that principal.
        if scope not in principal.scopes:
            raise AuthError(403, "forbidden", f"key '{principal.name}' may not call {scope}")
        return principal


def _presented_key(authorization: str | None, api_key_header: str | None) -> str | None:
    """The key of ``Authorization: Bearer <key>``, of ``Authorization: Basic`` (the password, or
    the user name when the password is empty: what an HTTP client sends for a URL such as
    ``http://:KEY@scorer:8000/get_reward``, the one way OpenRLHF's remote caller can carry a key),
    or else of ``X-API-Key``; None when absent."""
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        if scheme.lower() == "basic" and credentials.strip():
            key = _basic_key(credentials.strip())
            if key:
                return key
    if api_key_header and api_key_header.strip():
        return api_key_header.strip()
    return None


def _basic_key(credentials: str) -> str | None:
    try:
        user, colon, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not colon:
        return None
    return password or user or None


def _match(key: str, entries: Iterable[_Entry]) -> Principal | None:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    found: Principal | None = None
    for entry in entries:
        # No early exit: the time taken does not tell which (or whether a) key matched.
        if hmac.compare_digest(digest, entry.digest):
            found = entry.principal
    return found


class RateLimiter:
    """A token bucket per principal name: ``burst`` calls at once, ``rate_per_s`` sustained.

    Buckets start full and read rate and burst from the principal on every call, so a reload
    that changes a key's limits takes effect at once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, time of tokens)

    def acquire(self, principal: Principal) -> float | None:
        """None when the call may proceed (a token is taken), else seconds until one is free."""
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.get(principal.name, (float(principal.burst), now))
            tokens = min(float(principal.burst), tokens + max(0.0, now - then) * principal.rate_per_s)
            if tokens >= 1.0:
                self._buckets[principal.name] = (tokens - 1.0, now)
                return None
            self._buckets[principal.name] = (tokens, now)
            return (1.0 - tokens) / principal.rate_per_s

    def reset(self, name: str | None = None) -> None:
        """Forget one principal's bucket (or all), e.g. after its key was removed."""
        with self._lock:
            if name is None:
                self._buckets.clear()
            else:
                self._buckets.pop(name, None)
