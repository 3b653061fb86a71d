"""The scorer's serving logic, free of HTTP and of Ray Serve: guards, image fetching, jobs,
response shaping, error mapping and per-route metrics.

:class:`ScorerServing` takes a request body (the models of :mod:`vlgenrm.scoring.protocol`) and
the request's headers and returns a response body or raises :class:`ApiError`; the router
(``vlgenrm.services.scorer.router``) only hands requests to it, and the Serve wiring
(``vlgenrm.services.scorer.app``) only builds it with a handle to the model deployment. A test
builds it with any object that has the :class:`ModelHandle` methods.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vlgenrm.genrm.errors import ContextTooLongError, ImageTooLargeError, InvalidImageError
from vlgenrm.scoring.config import Scope, ServingConfig
from vlgenrm.scoring.core import JobResult, PairJob, PointJob, Sampling, rank
from vlgenrm.scoring.errors import ApiError
from vlgenrm.scoring.images import ImageFetcher
from vlgenrm.scoring.protocol import (
    CompareRequest,
    CompareResponse,
    ModelCard,
    ModelList,
    PairPreference,
    ResponseScore,
    RewardRequest,
    RewardResponse,
    ScoreRequest,
    ScoreResponse,
)
from vlgenrm.scoring.queries import image_from_label, parse_query
from vlgenrm.scoring.security import ApiKeyAuth, RateLimiter

T = TypeVar("T")


class ModelHandle(Protocol):
    """What the serving logic needs of the model: Serve's deployment handle, wrapped, or a fake."""

    async def score(self, job: PointJob) -> JobResult: ...

    async def compare(self, job: PairJob) -> JobResult: ...

    async def info(self) -> dict[str, Any] | None: ...


def timed(route: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Count a serving method's calls by status and observe its latency under ``route``."""

    def decorate(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(method)
        async def wrapper(self: ScorerServing, *args: Any, **kwargs: Any) -> T:
            started, status = time.perf_counter(), 200
            try:
                return await method(self, *args, **kwargs)
            except ApiError as exc:
                status = exc.status
                raise
            except Exception:
                status = 500
                raise
            finally:
                self.requests.labels(route, str(status)).inc()
                self.latency.labels(route).observe(time.perf_counter() - started)

        return wrapper

    return decorate


class ScorerServing:
    """One ingress replica's serving state: keys, rate limits, the image fetcher, metrics."""

    def __init__(self, model: ModelHandle, config: ServingConfig, store: Any) -> None:
        self.model, self.config = model, config
        self.auth, self.limiter = ApiKeyAuth(config.security), RateLimiter()
        self.images = ImageFetcher(config.security, store)
        self.registry = CollectorRegistry()
        self.requests = Counter("vlgenrm_scorer_requests", "Requests by route and status", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "vlgenrm_scorer_latency_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batches = Histogram(
            "vlgenrm_scorer_batch_size",
            "Requests merged into the batch that served a request",
            ["route"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.version = Gauge("vlgenrm_scorer_model_info", "The served model (value 1)", ["version"], registry=self.registry)

    # -- guards ---------------------------------------------------------------------------------
    def guard(self, headers: Mapping[str, str], scope: Scope) -> None:
        """Authenticate the request's key for ``scope`` and charge its rate limit (401/403/429)."""
        principal = self.auth.authenticate(headers.get("authorization"), headers.get("x-api-key"), scope)
        wait = self.limiter.acquire(principal)
        if wait is not None:
            raise ApiError(
                429, "rate_limited", f"key '{principal.name}' is over its rate; retry in {wait:.2f} s", {"Retry-After": str(max(1, round(wait + 0.5)))}
            )

    def checked(self, route: str, result: JobResult) -> JobResult:
        """The job's result, or the ApiError its failure maps to (503 without a model)."""
        if result.unavailable:
            raise ApiError(503, "no_model", result.unavailable, {"Retry-After": "5"})
        if result.error is not None:
            status, code = input_error(result.error)
            raise ApiError(status, code, str(result.error))
        self.batches.labels(route).observe(result.batch_size)
        return result

    # -- routes ---------------------------------------------------------------------------------
    @timed("score")
    async def score(self, body: ScoreRequest, headers: Mapping[str, str]) -> ScoreResponse:
        """Pointwise rewards P(Yes), optionally after a critique or a self-consistency vote."""
        self.guard(headers, Scope.SCORE)
        if (body.with_critique or body.samples > 1) and not self.config.critique:
            raise ApiError(
                400, "critique_disabled", "this endpoint does not generate critiques (serving.critique=false): with_critique and samples > 1 need them"
            )
        sampling = sampling_of(body)
        critique_tokens = body.max_critique_tokens if body.with_critique and sampling is None else None
        job = PointJob(await self.images.fetch(body.image), body.question, tuple(body.responses), critique_tokens, sampling)
        result = self.checked("score", await self.model.score(job))
        scores = []
        for i, p in enumerate(result.values):
            score = ResponseScore(index=i, reward=p, verdict="Yes" if p >= 0.5 else "No", critique=result.critiques[i] if result.critiques else None)
            if sampling is not None:
                score.agreement, score.sample_rewards = result.agreement[i], result.samples[i]
                if body.with_critique:
                    score.critiques = result.sample_critiques[i]
                    score.critique = score.critiques[0]
            scores.append(score)
        return ScoreResponse(model=result.model, model_version=result.model_version, scores=scores)

    @timed("compare")
    async def compare(self, body: CompareRequest, headers: Mapping[str, str]) -> CompareResponse:
        """Every pair of responses, both orders, and the ranking their win rates give."""
        self.guard(headers, Scope.COMPARE)
        if body.samples > 1 and not self.config.critique:
            raise ApiError(400, "critique_disabled", "this endpoint does not generate critiques (serving.critique=false): samples > 1 needs them")
        job = PairJob(await self.images.fetch(body.image), body.question, tuple(body.responses), sampling_of(body))
        result = self.checked("compare", await self.model.compare(job))
        ranking, win_rate = rank(len(body.responses), job.pairs, result.values)
        agreements = result.agreement or [1.0] * len(job.pairs)
        pairs = [PairPreference(first=a, second=b, p_first=p, agreement=g) for (a, b), p, g in zip(job.pairs, result.values, agreements, strict=True)]
        return CompareResponse(model=result.model, model_version=result.model_version, ranking=ranking, win_rate=win_rate, pairs=pairs)

    @timed("get_reward")
    async def reward(self, body: RewardRequest, headers: Mapping[str, str]) -> RewardResponse:
        """OpenRLHF's remote reward protocol: one reward per query, each with its own image."""
        self.guard(headers, Scope.REWARD)
        n = len(body.query)
        if body.prompts is not None and len(body.prompts) != n:
            raise ApiError(422, "invalid_request", f"prompts: {len(body.prompts)} prompts for {n} queries")
        images = reward_images(body, n)
        jobs = []
        for i in range(n):
            try:
                question, response = parse_query(body.query[i], body.prompts[i] if body.prompts else None)
            except ValueError as exc:
                raise ApiError(422, "invalid_request", f"query {i}: {exc}") from exc
            jobs.append((images[i], question, response))
        sources = list(dict.fromkeys(src for src, _, _ in jobs))  # fetch each image once
        by_source = dict(zip(sources, await asyncio.gather(*(self.images.fetch(src) for src in sources)), strict=True))
        results = await asyncio.gather(*(self.model.score(PointJob(by_source[src], q, (r,))) for src, q, r in jobs))
        rewards = [self.checked("get_reward", res).values[0] for res in results]
        # extra_logs: numbers only (OpenRLHF turns every value into a tensor); provenance beside them.
        return RewardResponse(
            rewards=rewards,
            scores=rewards,
            extra_logs={"genrm_p_yes": rewards},
            model=results[0].model,
            model_version=results[0].model_version,
            model_versions=[res.model_version for res in results],
        )

    async def models(self, headers: Mapping[str, str]) -> ModelList:
        """The served model; any valid key may look, whatever its scopes."""
        try:
            self.guard(headers, Scope.SCORE)
        except ApiError as exc:
            if exc.status != 403:
                raise
        info = await self.model.info()
        return ModelList(data=[ModelCard(**info)] if info else [])

    async def ready(self) -> dict[str, str]:
        """Readiness: the model deployment answers and has a model loaded; else 503."""
        try:
            info = await asyncio.wait_for(self.model.info(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - unreachable model deployment = not ready
            raise ApiError(503, "not_ready", f"model deployment unreachable: {exc}") from exc
        if info is None:
            raise ApiError(503, "no_model", "no model is loaded yet")
        return {"status": "ready", "model": info["id"], "model_version": info["version"]}

    async def metrics(self) -> bytes:
        """This replica's Prometheus exposition, with the served model's version as a gauge."""
        info = await self.model.info()
        self.version.clear()
        if info:
            self.version.labels(info["version"]).set(1)
        return generate_latest(self.registry)


def reward_images(body: RewardRequest, n: int) -> list[str]:
    """One image per query: the ``images`` extension, else each ``labels[i]`` (OpenRLHF forwards
    dataset labels but no images): an s3:// URI, a data URL or an object with an ``image`` field."""
    if body.images is not None:
        if len(body.images) != n:
            raise ApiError(422, "invalid_request", f"images: {len(body.images)} images for {n} queries (one per query)")
        return list(body.images)
    if body.labels is None or len(body.labels) != n:
        raise ApiError(422, "invalid_request", f"images: one image per query is required ({n} queries), in `images` or in `labels`")
    images = [image_from_label(label) for label in body.labels]
    missing = [i for i, image in enumerate(images) if image is None]
    if missing:
        raise ApiError(
            422,
            "invalid_request",
            f"labels[{missing[0]}]: no image (an s3:// URI, a data:image/ URL, or an object with an 'image' field) and no `images`: one image per query is required",
        )
    return images  # type: ignore[return-value]


def sampling_of(body: ScoreRequest | CompareRequest) -> Sampling | None:
    """Self-consistency settings of a request (None: one greedy critique or none)."""
    if body.samples <= 1:
        return None
    return Sampling(n=body.samples, temperature=body.temperature, seed=body.seed, max_tokens=body.max_critique_tokens)


def input_error(exc: Exception) -> tuple[int, str]:
    """(HTTP status, error code) of a model input error."""
    if isinstance(exc, ImageTooLargeError):
        return 413, "too_large"
    if isinstance(exc, ContextTooLongError):
        return 413, "too_long"
    if isinstance(exc, InvalidImageError):
        return 400, "invalid_image"
    return 422, "invalid_input"
