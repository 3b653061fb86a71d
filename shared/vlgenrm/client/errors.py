"""Typed errors of the scorer client, one class per ``error.code`` of the scorer's error body.

Every error the scorer answers is ``{"error": {"code": ..., "message": ...}}``
(:class:`vlgenrm.scoring.protocol.ErrorResponse`); the client raises the class registered for
its code (or, for a body without one, for its status), carrying the status, code, message,
``Retry-After`` and how many attempts were made. Trainers see these exceptions, never a
silent reward of 0.
"""

from __future__ import annotations

import email.utils
import time

import httpx
from pydantic import ValidationError

from vlgenrm.scoring.protocol import ErrorResponse


class ScorerError(Exception):
    """Anything that kept the scorer from answering a request with numbers."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str = "error", retry_after: float | None = None, attempts: int = 1, url: str | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.retry_after, self.attempts, self.url = message, status, code, retry_after, attempts, url

    def __str__(self) -> str:
        where = f" from {self.url}" if self.url else ""
        status = f"{self.status} " if self.status is not None else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{status}{self.code}{where}{tries}: {self.message}"


class ScorerTimeoutError(ScorerError):
    """No answer within the client's timeout (connect, read, write or pool)."""


class ScorerConnectionError(ScorerError):
    """The scorer could not be reached (refused, reset, DNS)."""


class ScorerResponseError(ScorerError):
    """A 200 whose body is not what the route promises (a proxy or version mismatch)."""


class ScorerHTTPError(ScorerError):
    """The scorer answered with an error status."""


class AuthenticationError(ScorerHTTPError):
    """401: no API key, or an unknown one."""


class PermissionDeniedError(ScorerHTTPError):
    """403: the key lacks the endpoint's scope."""


class ForbiddenImageSourceError(PermissionDeniedError):
    """403: the image URL's host or bucket is not allowed, or its scheme is refused."""


class NotFoundError(ScorerHTTPError):
    """404: no such route (a wrong base URL)."""


class InvalidRequestError(ScorerHTTPError):
    """422 (or 400): the body is invalid; the message names the field."""


class InvalidInputError(InvalidRequestError):
    """422: the GenRM rejected the input (an empty question, say)."""


class InvalidImageError(ScorerHTTPError):
    """400: the image cannot be decoded."""


class CritiqueDisabledError(ScorerHTTPError):
    """400: critiques (with_critique, samples > 1) are switched off on this scorer."""


class TooLargeError(ScorerHTTPError):
    """413: the body or the image is over the scorer's limit."""


class PromptTooLongError(TooLargeError):
    """413: the prompt (with critique and verdict) is longer than the model's max_length."""


class ImageFetchError(ScorerHTTPError):
    """502/504: the scorer could not fetch the image URL (upstream error, redirect, timeout)."""


class RateLimitedError(ScorerHTTPError):
    """429: the key is over its rate; ``retry_after`` says when to come back."""


class UnavailableError(ScorerHTTPError):
    """503: no model is loaded yet (or the model deployment is unreachable)."""


class ServerError(ScorerHTTPError):
    """500 and other 5xx: a fault in the scorer."""


BY_CODE: dict[str, type[ScorerHTTPError]] = {
    "unauthorized": AuthenticationError,
    "invalid_api_key": AuthenticationError,
    "forbidden": PermissionDeniedError,
    "forbidden_image_source": ForbiddenImageSourceError,
    "not_found": NotFoundError,
    "invalid_request": InvalidRequestError,
    "invalid_input": InvalidInputError,
    "invalid_image": InvalidImageError,
    "critique_disabled": CritiqueDisabledError,
    "too_large": TooLargeError,
    "too_long": PromptTooLongError,
    "image_fetch_failed": ImageFetchError,
    "image_fetch_timeout": ImageFetchError,
    "rate_limited": RateLimitedError,
    "no_model": UnavailableError,
    "not_ready": UnavailableError,
}
BY_STATUS: dict[int, type[ScorerHTTPError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: TooLargeError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_response(response: httpx.Response, attempts: int = 1) -> ScorerHTTPError:
    """The typed error of a non-2xx answer, from the scorer's error body when it has one."""
    code, message = None, None
    try:
        body = ErrorResponse.model_validate_json(response.content)
        code, message = body.error.code, body.error.message
    except (ValidationError, ValueError):
        message = response.text[:500] or response.reason_phrase
    cls = BY_CODE.get(code or "") or BY_STATUS.get(response.status_code) or (ServerError if response.status_code >= 500 else ScorerHTTPError)
    return cls(
        message or "",
        status=response.status_code,
        code=code or f"http_{response.status_code}",
        retry_after=retry_after(response),
        attempts=attempts,
        url=str(response.request.url),
    )
