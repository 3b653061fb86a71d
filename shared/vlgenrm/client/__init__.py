"""Clients of the scorer (§3.7) for RL trainers: :class:`ScorerClient` and
:class:`AsyncScorerClient` over HTTP, typed errors, and adapters for TRL
(:mod:`vlgenrm.client.trl`), OpenRLHF (:mod:`vlgenrm.client.openrlhf`) and verl
(:mod:`vlgenrm.client.verl`). docs/integrations.md has a recipe per trainer."""

from vlgenrm.client.errors import (
    AuthenticationError,
    CritiqueDisabledError,
    ForbiddenImageSourceError,
    ImageFetchError,
    InvalidImageError,
    InvalidInputError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PromptTooLongError,
    RateLimitedError,
    ScorerConnectionError,
    ScorerError,
    ScorerHTTPError,
    ScorerResponseError,
    ScorerTimeoutError,
    ServerError,
    TooLargeError,
    UnavailableError,
)
from vlgenrm.client.http import AsyncScorerClient, RetryPolicy, ScoreItem, ScorerClient
from vlgenrm.client.images import image_source

__all__ = [
    "AsyncScorerClient",
    "AuthenticationError",
    "CritiqueDisabledError",
    "ForbiddenImageSourceError",
    "ImageFetchError",
    "InvalidImageError",
    "InvalidInputError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "PromptTooLongError",
    "RateLimitedError",
    "RetryPolicy",
    "ScoreItem",
    "ScorerClient",
    "ScorerConnectionError",
    "ScorerError",
    "ScorerHTTPError",
    "ScorerResponseError",
    "ScorerTimeoutError",
    "ServerError",
    "TooLargeError",
    "UnavailableError",
    "image_source",
]
