"""Errors that cross module boundaries, grouped by who should react to them."""


class VlgenrmError(Exception):
    """Base of every error this library raises on purpose."""


class TransientError(VlgenrmError):
    """Worth retrying: the same call may succeed later (a server restarting, a timeout)."""


class PermanentError(VlgenrmError):
    """Retrying cannot help (bad input, a missing object, a bug): fail or dead-letter now."""


class ConfigError(VlgenrmError):
    """Settings are invalid or inconsistent."""
