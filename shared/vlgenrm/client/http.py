"""The scorer's HTTP client: :class:`ScorerClient` (threads) and :class:`AsyncScorerClient`
(asyncio), the same methods with the same answers.

Bodies and answers are the scorer's own models (:mod:`vlgenrm.scoring.protocol`). Each client
keeps one pooled ``httpx`` connection pool, sends the API key as ``Authorization: Bearer``,
retries what is worth retrying (429 and 503 after their ``Retry-After``, connection failures,
timeouts, a proxy's 502/504) a bounded number of times with exponential backoff, and raises a
typed :class:`~vlgenrm.client.errors.ScorerError` for everything else.

Batching helpers: :meth:`ScorerClient.score` takes any number of responses (more than one
request holds are split); :meth:`ScorerClient.score_completions` scores flat, aligned lists
(the shape RL trainers hand a reward function) by grouping the completions that share an image
and question into one request each and sending the requests concurrently; ``batch=False``
sends one request per completion instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field, ValidationError

from vlgenrm.client.errors import (
    ImageFetchError,
    InvalidRequestError,
    RateLimitedError,
    ScorerConnectionError,
    ScorerError,
    ScorerResponseError,
    ScorerTimeoutError,
    ServerError,
    UnavailableError,
    from_response,
)
from vlgenrm.client.images import ImageLike, SourceCache, image_source
from vlgenrm.retry import Backoff
from vlgenrm.scoring.protocol import (
    CompareRequest,
    CompareResponse,
    ModelList,
    ResponseScore,
    RewardRequest,
    RewardResponse,
    ScoreRequest,
    ScoreResponse,
)

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

URL_ENV, KEY_ENV = "VLGENRM_SCORER_URL", "VLGENRM_API_KEY"
_POOL = "vlgenrm-client"
#: Route suffixes stripped from a base URL (OpenRLHF users paste ``.../get_reward``).
_ROUTES = ("/get_reward", "/v1/score", "/v1/compare", "/v1/models", "/v1")


def _max_len(model: type[BaseModel], name: str) -> int:
    return next(m.max_length for m in model.model_fields[name].metadata if getattr(m, "max_length", None))


MAX_SCORE_RESPONSES = _max_len(ScoreRequest, "responses")  # per /v1/score request
MAX_COMPARE_RESPONSES = _max_len(CompareRequest, "responses")


class RetryPolicy(Backoff):
    """Which failures are retried and how long to wait: exponential backoff (``Backoff``), or
    the answer's ``Retry-After`` when it names one."""

    max_attempts: int = Field(5, ge=1, description="Attempts in total, the first one included.")
    initial_s: float = Field(0.5, gt=0, description="Backoff before the second attempt (no Retry-After).")
    max_s: float = Field(10.0, gt=0, description="Longest backoff delay.")
    max_retry_after_s: float = Field(60.0, ge=0, description="A Retry-After longer than this fails at once instead of waiting.")
    retry_timeouts: bool = Field(True, description="Retry a request that timed out (scoring is idempotent).")
    deadline_s: float | None = Field(None, gt=0, description="Give up when the next wait would pass this many seconds since the first attempt.")


@dataclass(frozen=True)
class ScoreItem:
    """One /v1/score request for :meth:`ScorerClient.score_many`."""

    image: ImageLike
    question: str
    responses: Sequence[str]


@dataclass
class _Attempts:
    """The retry state of one logical request."""

    policy: RetryPolicy
    started: float = field(default_factory=time.monotonic)
    count: int = 0
    delays: Iterator[float] = field(init=False)

    def __post_init__(self) -> None:
        self.delays = self.policy.delays()

    def wait_before_next(self, error: ScorerError, retryable: bool) -> float | None:
        """Seconds to wait before trying again, or None to give up with ``error``."""
        error.attempts = self.count
        if not retryable:
            return None
        backoff = next(self.delays, None)
        if backoff is None:
            return None
        delay = backoff
        if error.retry_after is not None:
            if error.retry_after > self.policy.max_retry_after_s:
                return None
            delay = error.retry_after * (1 + random.uniform(0, 0.1))  # never sooner than asked, spread a little
        if self.policy.deadline_s is not None and time.monotonic() - self.started + delay > self.policy.deadline_s:
            return None
        log.info("scorer request failed (attempt %d, %s); retrying in %.2f s", self.count, error, delay)
        return delay


def _retryable(error: ScorerError, policy: RetryPolicy) -> bool:
    if isinstance(error, ScorerTimeoutError):
        return policy.retry_timeouts
    if isinstance(error, (ScorerConnectionError, RateLimitedError, UnavailableError)):
        return True
    # A proxy's 502/504 (no error body of ours) is transient; the scorer's own image-fetch
    # failures are about the image and stay failures.
    return isinstance(error, ServerError) and error.status in (502, 504) and not isinstance(error, ImageFetchError)


def _transport_error(exc: httpx.HTTPError, url: str) -> ScorerError:
    if isinstance(exc, httpx.TimeoutException):
        return ScorerTimeoutError(f"no answer in time ({type(exc).__name__}: {exc})", code="timeout", url=url)
    return ScorerConnectionError(f"{type(exc).__name__}: {exc}", code="connection_error", url=url)


def _parse(response: httpx.Response, model: type[M], attempts: int) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ScorerResponseError(
            f"the answer is not a {model.__name__}: {exc}", status=response.status_code, code="bad_response", attempts=attempts, url=str(response.request.url)
        ) from exc


def _body(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """A request body validated here (a bad argument fails before anything is sent)."""
    try:
        return model(**fields).model_dump(mode="json", exclude_defaults=True)
    except ValidationError as exc:
        raise InvalidRequestError(f"invalid {model.__name__}: {exc}", code="invalid_request") from exc


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [items]


def _merge_scores(parts: list[ScoreResponse]) -> ScoreResponse:
    """Answers of a split request, as one (indices renumbered in request order)."""
    if len(parts) == 1:
        return parts[0]
    scores, offset = [], 0
    for part in parts:
        scores += [s.model_copy(update={"index": s.index + offset}) for s in part.scores]
        offset += len(part.scores)
    return parts[0].model_copy(update={"scores": scores})


def _groups(sources: list[str], questions: Sequence[str], batch: bool) -> list[list[int]]:
    """Indices of the completions that go into one request: those sharing (image, question),
    at most a request's worth each; one each when not batching."""
    if not batch:
        return [[i] for i in range(len(sources))]
    grouped: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(sources, questions, strict=True)):
        grouped.setdefault(key, []).append(i)
    return [list(chunk) for indices in grouped.values() for chunk in _chunks(indices, MAX_SCORE_RESPONSES)]


def _aligned(name: str, values: Sequence[Any], n: int) -> None:
    if len(values) != n:
        raise InvalidRequestError(f"{name}: {len(values)} values for {n} completions", code="invalid_request")


class _Common:
    """Configuration both clients share."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 32,
        concurrency: int = 16,
        headers: dict[str, str] | None = None,
        **httpx_options: Any,
    ) -> None:
        base_url = base_url or os.environ.get(URL_ENV)
        if not base_url:
            raise ValueError(f"no scorer URL: pass base_url or set ${URL_ENV}")
        base_url = base_url.rstrip("/")
        for route in _ROUTES:
            if base_url.endswith(route):
                base_url = base_url[: -len(route)]
        self.base_url = base_url
        api_key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        self.retry = retry or RetryPolicy()
        self.concurrency = max(1, concurrency)
        self._options: dict[str, Any] = dict(
            base_url=base_url,
            headers={"User-Agent": "vlgenrm-client", **({"Authorization": f"Bearer {api_key}"} if api_key else {}), **(headers or {})},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False,
            **httpx_options,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    @staticmethod
    def _score_fields(
        question: str, with_critique: bool, max_critique_tokens: int | None, samples: int, temperature: float | None, seed: int | None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"question": question, "with_critique": with_critique, "samples": samples}
        for name, value in (("max_critique_tokens", max_critique_tokens), ("temperature", temperature), ("seed", seed)):
            if value is not None:
                fields[name] = value
        return fields


class ScorerClient(_Common):
    """Blocking client; thread-safe, so one instance serves a whole trainer process.

    ``ScorerClient("http://scorer:8000", api_key=...)``, or with neither argument, from
    ``$VLGENRM_SCORER_URL`` and ``$VLGENRM_API_KEY``. ``timeout`` bounds each attempt,
    ``retry`` the attempts; ``concurrency`` is how many requests a batching helper has in
    flight at once. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._http = httpx.Client(**self._options)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def __enter__(self) -> ScorerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, model: type[M], body: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None) -> M:
        """One logical request: retried per ``retry`` (the client's policy by default)."""
        policy = retry or self.retry
        attempts = _Attempts(policy)
        while True:
            attempts.count += 1
            try:
                response = self._http.request(method, path, json=body)
            except httpx.HTTPError as exc:
                error = _transport_error(exc, self.base_url + path)
            else:
                if response.is_success:
                    return _parse(response, model, attempts.count)
                error = from_response(response, attempts.count)
            delay = attempts.wait_before_next(error, _retryable(error, policy))
            if delay is None:
                raise error
            time.sleep(delay)

    def _map(self, fn: Callable[[T], Any], items: Sequence[T]) -> list[Any]:
        # Inline when there is nothing to overlap, and inside the pool's own threads (a nested
        # map could wait forever on a pool whose every thread is waiting too).
        if len(items) <= 1 or self.concurrency == 1 or threading.current_thread().name.startswith(_POOL):
            return [fn(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=_POOL)
        return list(self._pool.map(fn, items))

    # -- routes ------------------------------------------------------------------------------
    def score(
        self,
        image: ImageLike,
        question: str,
        responses: Sequence[str],
        *,
        with_critique: bool = False,
        max_critique_tokens: int | None = None,
        samples: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> ScoreResponse:
        """``POST /v1/score``: P("Yes") per response; more responses than one request takes are
        split over several (sent concurrently) and answered as one."""
        fields = self._score_fields(question, with_critique, max_critique_tokens, samples, temperature, seed)
        source = image_source(image)
        bodies = [_body(ScoreRequest, image=source, responses=list(chunk), **fields) for chunk in _chunks(list(responses), MAX_SCORE_RESPONSES)]
        return _merge_scores(self._map(lambda body: self.request("POST", "/v1/score", ScoreResponse, body, retry=retry), bodies))

    def compare(
        self,
        image: ImageLike,
        question: str,
        responses: Sequence[str],
        *,
        samples: int = 1,
        max_critique_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> CompareResponse:
        """``POST /v1/compare``: every pair's P(first better), win rates and the ranking."""
        fields = {k: v for k, v in (("max_critique_tokens", max_critique_tokens), ("temperature", temperature), ("seed", seed)) if v is not None}
        body = _body(CompareRequest, image=image_source(image), question=question, responses=list(responses), samples=samples, **fields)
        return self.request("POST", "/v1/compare", CompareResponse, body, retry=retry)

    def get_reward(
        self,
        query: Sequence[str],
        prompts: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
        images: Sequence[ImageLike] | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> RewardResponse:
        """``POST /get_reward``, OpenRLHF's protocol: the image of each query in ``images``, or
        in ``labels`` (an s3:// URI or data URL)."""
        cache = SourceCache()
        body = _body(
            RewardRequest,
            query=list(query),
            prompts=list(prompts) if prompts is not None else None,
            labels=list(labels) if labels is not None else None,
            images=[cache(i) for i in images] if images is not None else None,
        )
        return self.request("POST", "/get_reward", RewardResponse, body, retry=retry)

    def models(self, *, retry: RetryPolicy | None = None) -> ModelList:
        """``GET /v1/models``: the served checkpoint and its version."""
        return self.request("GET", "/v1/models", ModelList, retry=retry)

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 now (a model is loaded)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 1.0) -> None:
        """Block until the scorer has a model loaded; UnavailableError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise UnavailableError(f"not ready within {timeout_s:.0f} s", code="not_ready", url=self.base_url + "/readyz")
            time.sleep(poll_s)

    # -- batching helpers ----------------------------------------------------------------------
    def score_many(self, items: Sequence[ScoreItem], **options: Any) -> list[ScoreResponse]:
        """One :meth:`score` per item, ``concurrency`` at a time, answers in item order."""
        return self._map(lambda item: self.score(item.image, item.question, item.responses, **options), list(items))

    def score_completions(
        self, images: Sequence[ImageLike], questions: Sequence[str], completions: Sequence[str], *, batch: bool = True, **options: Any
    ) -> list[ResponseScore]:
        """The score of each completion of flat, aligned lists (one image and question per
        completion, as trainers pass them). ``batch``: one request per (image, question) group;
        otherwise one request per completion. ``options`` are :meth:`score`'s."""
        n = len(completions)
        _aligned("images", images, n)
        _aligned("questions", questions, n)
        cache = SourceCache()
        sources = [cache(image) for image in images]
        groups = _groups(sources, questions, batch)
        answers = self._map(lambda g: self.score(sources[g[0]], questions[g[0]], [completions[i] for i in g], **options), groups)
        out: list[ResponseScore | None] = [None] * n
        for group, answer in zip(groups, answers, strict=True):
            for i, score in zip(group, answer.scores, strict=True):
                out[i] = score
        return out  # type: ignore[return-value]

    def rewards(self, images: Sequence[ImageLike], questions: Sequence[str], completions: Sequence[str], *, batch: bool = True, **options: Any) -> list[float]:
        """:meth:`score_completions`, rewards only."""
        return [s.reward for s in self.score_completions(images, questions, completions, batch=batch, **options)]

    def preferences(
        self, images: Sequence[ImageLike], questions: Sequence[str], completions: Sequence[str], references: Sequence[str], **options: Any
    ) -> list[float]:
        """P(completion better than its reference) per completion: one /v1/compare each, concurrently."""
        n = len(completions)
        for name, values in (("images", images), ("questions", questions), ("references", references)):
            _aligned(name, values, n)
        cache = SourceCache()
        sources = [cache(image) for image in images]
        answers = self._map(lambda i: self.compare(sources[i], questions[i], [completions[i], references[i]], **options), list(range(n)))
        return [answer.pairs[0].p_first for answer in answers]


class AsyncScorerClient(_Common):
    """The asyncio twin of :class:`ScorerClient`: the same methods, awaited."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self._http = httpx.AsyncClient(**self._options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncScorerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, model: type[M], body: dict[str, Any] | None = None, *, retry: RetryPolicy | None = None) -> M:
        policy = retry or self.retry
        attempts = _Attempts(policy)
        while True:
            attempts.count += 1
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.HTTPError as exc:
                error = _transport_error(exc, self.base_url + path)
            else:
                if response.is_success:
                    return _parse(response, model, attempts.count)
                error = from_response(response, attempts.count)
            delay = attempts.wait_before_next(error, _retryable(error, policy))
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def _map(self, fn: Callable[[T], Awaitable[Any]], items: Sequence[T]) -> list[Any]:
        if len(items) <= 1:
            return [await fn(item) for item in items]
        gate = asyncio.Semaphore(self.concurrency)

        async def gated(item: T) -> Any:
            async with gate:
                return await fn(item)

        tasks = [asyncio.ensure_future(gated(item)) for item in items]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def score(
        self,
        image: ImageLike,
        question: str,
        responses: Sequence[str],
        *,
        with_critique: bool = False,
        max_critique_tokens: int | None = None,
        samples: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> ScoreResponse:
        fields = self._score_fields(question, with_critique, max_critique_tokens, samples, temperature, seed)
        source = image_source(image)
        bodies = [_body(ScoreRequest, image=source, responses=list(chunk), **fields) for chunk in _chunks(list(responses), MAX_SCORE_RESPONSES)]
        return _merge_scores(await self._map(lambda body: self.request("POST", "/v1/score", ScoreResponse, body, retry=retry), bodies))

    async def compare(
        self,
        image: ImageLike,
        question: str,
        responses: Sequence[str],
        *,
        samples: int = 1,
        max_critique_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> CompareResponse:
        fields = {k: v for k, v in (("max_critique_tokens", max_critique_tokens), ("temperature", temperature), ("seed", seed)) if v is not None}
        body = _body(CompareRequest, image=image_source(image), question=question, responses=list(responses), samples=samples, **fields)
        return await self.request("POST", "/v1/compare", CompareResponse, body, retry=retry)

    async def get_reward(
        self,
        query: Sequence[str],
        prompts: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
        images: Sequence[ImageLike] | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> RewardResponse:
        cache = SourceCache()
        body = _body(
            RewardRequest,
            query=list(query),
            prompts=list(prompts) if prompts is not None else None,
            labels=list(labels) if labels is not None else None,
            images=[cache(i) for i in images] if images is not None else None,
        )
        return await self.request("POST", "/get_reward", RewardResponse, body, retry=retry)

    async def models(self, *, retry: RetryPolicy | None = None) -> ModelList:
        return await self.request("GET", "/v1/models", ModelList, retry=retry)

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 1.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.ready():
            if time.monotonic() > deadline:
                raise UnavailableError(f"not ready within {timeout_s:.0f} s", code="not_ready", url=self.base_url + "/readyz")
            await asyncio.sleep(poll_s)

    async def score_many(self, items: Sequence[ScoreItem], **options: Any) -> list[ScoreResponse]:
        return await self._map(lambda item: self.score(item.image, item.question, item.responses, **options), list(items))

    async def score_completions(
        self, images: Sequence[ImageLike], questions: Sequence[str], completions: Sequence[str], *, batch: bool = True, **options: Any
    ) -> list[ResponseScore]:
        n = len(completions)
        _aligned("images", images, n)
        _aligned("questions", questions, n)
        cache = SourceCache()
        sources = [cache(image) for image in images]
        groups = _groups(sources, questions, batch)
        answers = await self._map(lambda g: self.score(sources[g[0]], questions[g[0]], [completions[i] for i in g], **options), groups)
        out: list[ResponseScore | None] = [None] * n
        for group, answer in zip(groups, answers, strict=True):
            for i, score in zip(group, answer.scores, strict=True):
                out[i] = score
        return out  # type: ignore[return-value]

    async def rewards(
        self, images: Sequence[ImageLike], questions: Sequence[str], completions: Sequence[str], *, batch: bool = True, **options: Any
    ) -> list[float]:
        return [s.reward for s in await self.score_completions(images, questions, completions, batch=batch, **options)]

    async def preferences(
        self, images: Sequence[ImageLike], questions: Sequence[str], completions: Sequence[str], references: Sequence[str], **options: Any
    ) -> list[float]:
        n = len(completions)
        for name, values in (("images", images), ("questions", questions), ("references", references)):
            _aligned(name, values, n)
        cache = SourceCache()
        sources = [cache(image) for image in images]
        answers = await self._map(lambda i: self.compare(sources[i], questions[i], [completions[i], references[i]], **options), list(range(n)))
        return [answer.pairs[0].p_first for answer in answers]
