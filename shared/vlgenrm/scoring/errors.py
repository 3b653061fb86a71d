"""The one error type of the scoring API: an HTTP status, a machine-readable code, a message."""

from __future__ import annotations


class ApiError(Exception):
    """An answer other than 200; the ingress turns it into an ErrorResponse as it is."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
