"""The HTTP ingress (FastAPI on Ray Serve) and the application that wires it to the model.

Routes stay thin: authenticate and rate-limit, fetch the image under the SSRF rules, hand a
job to the model deployment, shape the answer. Bodies are the models of
:mod:`vlgenrm.scoring.protocol`; every error is an :class:`ErrorResponse` with a code.
"""

# No ``from __future__ import annotations``: Serve ships the ingress class to its replicas with
# cloudpickle, which keeps only the globals a function body names, so FastAPI could not resolve
# string annotations such as "ScoreRequest" there. Real annotations travel with the function.
import asyncio
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlgenrm.bus.codec import DecodeFailure, parse_json
from vlgenrm.genrm.errors import ContextTooLongError, ImageTooLargeError, InvalidImageError
from vlgenrm.scoring.config import ServingConfig
from vlgenrm.scoring.core import JobResult, PairJob, PointJob, Sampling, rank
from vlgenrm.scoring.errors import ApiError
from vlgenrm.scoring.images import ImageFetcher
from vlgenrm.scoring.protocol import (
    CompareRequest,
    CompareResponse,
    ErrorResponse,
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
from vlgenrm.settings import StoreSettings
from vlgenrm.store import make_store

log = logging.getLogger(__name__)

#: What the ingress reads from the ServingConfig (the model fields stay with the model deployment).
INGRESS_FIELDS = {"critique", "security", "namespace"}
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 413, 422, 429, 502, 503, 504)}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse.model_validate({"error": {"code": code, "message": message}})
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _is_json(headers: dict[bytes, bytes]) -> bool:
    media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before any of it is parsed, and a
    JSON body that is not strict JSON gets 422 with the reason.

    A declared Content-Length is checked up front; a chunked body is read (at most
    ``max_bytes`` + one chunk) and replayed to the app. An exception raised from inside the
    app's own body reading would be turned into a 400 by FastAPI, hence the buffering.
    JSON bodies are held to the rules the bus applies to its records
    (:func:`vlgenrm.bus.codec.parse_json`): FastAPI's ``json.loads`` would take NaN, keep the
    last of duplicate keys, and meet a 5,000-digit number or deep nesting only as a bare
    "error parsing the body".
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "invalid_request", "Content-Length is not a number")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await error_response(413, "too_large", f"request body of {int(declared)} bytes exceeds {self.max_bytes}")(scope, receive, send)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)  # a disconnect: let the app see it
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await error_response(413, "too_large", f"request body exceeds {self.max_bytes} bytes")(scope, receive, send)
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in chunks if m["type"] == "http.request")
        if body and _is_json(headers):
            parsed = parse_json(body)
            if isinstance(parsed, DecodeFailure):
                await error_response(422, "invalid_request", f"the body is not strict JSON: {parsed.detail}")(scope, receive, send)
                return
        replay = iter(chunks)

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


def make_api(max_request_bytes: int) -> FastAPI:
    """The FastAPI app: OpenAPI metadata, the body limit, errors in one shape."""
    api = FastAPI(
        title="vlgenrm scorer",
        version="v1",
        description=(
            "Rewards from a vision-language generative reward model (VL-GenRM). Authenticate with "
            "`Authorization: Bearer <key>` or `X-API-Key`. Images: s3:// URIs of the platform store, "
            "http(s) URLs of allowed hosts, or base64."
        ),
    )
    api.add_middleware(BodyLimit, max_bytes=max_request_bytes)

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(422, "invalid_request", f"{where}: {first.get('msg')}" if where else str(first.get("msg")))

    @api.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    return api


def build_app(config: ServingConfig, store_settings: StoreSettings) -> serve.Application:
    """The Serve application: ingress (HTTP) -> GenRM deployment (batched scoring)."""
    from vlgenrm.services.scorer.model import GenRMDeployment

    api = make_api(config.security.max_request_bytes)

    @serve.deployment(name="ingress", max_ongoing_requests=max(100, config.max_ongoing_requests))
    @serve.ingress(api)
    class Ingress:
        def __init__(self, model: Any, config_json: dict[str, Any], store_json: dict[str, Any]) -> None:
            self.model = model
            self.config = ServingConfig.model_validate(config_json)
            store = make_store(StoreSettings.model_validate(store_json))
            self.auth, self.limiter = ApiKeyAuth(self.config.security), RateLimiter()
            self.images = ImageFetcher(self.config.security, store)
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

        # -- guards -----------------------------------------------------------------------
        def guard(self, request: Request, scope: str) -> None:
            principal = self.auth.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"), scope)
            wait = self.limiter.acquire(principal)
            if wait is not None:
                raise ApiError(
                    429, "rate_limited", f"key '{principal.name}' is over its rate; retry in {wait:.2f} s", {"Retry-After": str(max(1, round(wait + 0.5)))}
                )

        async def image(self, source: str) -> bytes:
            return await self.images.fetch(source)

        def checked(self, route: str, result: JobResult) -> JobResult:
            if result.unavailable:
                raise ApiError(503, "no_model", result.unavailable, {"Retry-After": "5"})
            if result.error is not None:
                status, code = _input_error(result.error)
                raise ApiError(status, code, str(result.error))
            self.batches.labels(route).observe(result.batch_size)
            return result

        async def timed(self, route: str, call: Any) -> Any:
            started, status = time.perf_counter(), 200
            try:
                return await call
            except ApiError as exc:
                status = exc.status
                raise
            except Exception:
                status = 500
                raise
            finally:
                self.requests.labels(route, str(status)).inc()
                self.latency.labels(route).observe(time.perf_counter() - started)

        # -- routes -----------------------------------------------------------------------
        @api.post("/v1/score", response_model=ScoreResponse, responses=ERRORS, summary="Pointwise rewards P(Yes) for one or more responses")
        async def score(self, body: ScoreRequest, request: Request) -> ScoreResponse:
            return await self.timed("score", self._score(body, request))

        async def _score(self, body: ScoreRequest, request: Request) -> ScoreResponse:
            self.guard(request, "score")
            if (body.with_critique or body.samples > 1) and not self.config.critique:
                raise ApiError(
                    400, "critique_disabled", "this endpoint does not generate critiques (serving.critique=false): with_critique and samples > 1 need them"
                )
            sampling = _sampling(body)
            critique_tokens = body.max_critique_tokens if body.with_critique and sampling is None else None
            job = PointJob(await self.image(body.image), body.question, tuple(body.responses), critique_tokens, sampling)
            result = self.checked("score", await self.model.score.remote(job))
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

        @api.post("/v1/compare", response_model=CompareResponse, responses=ERRORS, summary="Rank responses by pairwise preference")
        async def compare(self, body: CompareRequest, request: Request) -> CompareResponse:
            return await self.timed("compare", self._compare(body, request))

        async def _compare(self, body: CompareRequest, request: Request) -> CompareResponse:
            self.guard(request, "compare")
            if body.samples > 1 and not self.config.critique:
                raise ApiError(400, "critique_disabled", "this endpoint does not generate critiques (serving.critique=false): samples > 1 needs them")
            job = PairJob(await self.image(body.image), body.question, tuple(body.responses), _sampling(body))
            result = self.checked("compare", await self.model.compare.remote(job))
            ranking, win_rate = rank(len(body.responses), job.pairs, result.values)
            agreements = result.agreement or [1.0] * len(job.pairs)
            pairs = [PairPreference(first=a, second=b, p_first=p, agreement=g) for (a, b), p, g in zip(job.pairs, result.values, agreements, strict=True)]
            return CompareResponse(model=result.model, model_version=result.model_version, ranking=ranking, win_rate=win_rate, pairs=pairs)

        @api.post("/get_reward", response_model=RewardResponse, responses=ERRORS, summary="OpenRLHF remote reward model protocol (+ images)")
        async def get_reward(self, body: RewardRequest, request: Request) -> RewardResponse:
            return await self.timed("get_reward", self._reward(body, request))

        async def _reward(self, body: RewardRequest, request: Request) -> RewardResponse:
            self.guard(request, "reward")
            n = len(body.query)
            if body.prompts is not None and len(body.prompts) != n:
                raise ApiError(422, "invalid_request", f"prompts: {len(body.prompts)} prompts for {n} queries")
            images = self.reward_images(body, n)
            jobs = []
            for i in range(n):
                try:
                    question, response = parse_query(body.query[i], body.prompts[i] if body.prompts else None)
                except ValueError as exc:
                    raise ApiError(422, "invalid_request", f"query {i}: {exc}") from exc
                jobs.append((images[i], question, response))
            sources = list(dict.fromkeys(src for src, _, _ in jobs))  # fetch each image once
            by_source = dict(zip(sources, await asyncio.gather(*(self.image(src) for src in sources)), strict=True))
            results = await asyncio.gather(*(self.model.score.remote(PointJob(by_source[src], q, (r,))) for src, q, r in jobs))
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

        @staticmethod
        def reward_images(body: RewardRequest, n: int) -> list[str]:
            """One image per query: the ``images`` extension, else each ``labels[i]`` (OpenRLHF
            forwards dataset labels but no images): an s3:// URI, a data URL or an object with
            an ``image`` field."""
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
                    f"labels[{missing[0]}]: no image (an s3:// URI, a data:image/ URL, or an object with an "
                    "'image' field) and no `images`: one image per query is required",
                )
            return images  # type: ignore[return-value]

        @api.get("/v1/models", response_model=ModelList, responses=ERRORS, summary="The served model")
        async def models(self, request: Request) -> ModelList:
            try:
                self.guard(request, "score")
            except ApiError as exc:
                if exc.status != 403:  # any valid key may look, whatever its scopes
                    raise
            info = await self.model.info.remote()
            return ModelList(data=[ModelCard(**info)] if info else [])

        @api.get("/healthz", summary="Liveness: the ingress answers")
        async def healthz(self) -> dict[str, str]:
            return {"status": "ok"}

        @api.get("/readyz", responses={503: {"model": ErrorResponse}}, summary="Readiness: a model is loaded")
        async def readyz(self) -> Any:
            try:
                info = await asyncio.wait_for(self.model.info.remote(), timeout=5)
            except Exception as exc:  # noqa: BLE001 - unreachable model deployment = not ready
                return error_response(503, "not_ready", f"model deployment unreachable: {exc}")
            if info is None:
                return error_response(503, "no_model", "no model is loaded yet")
            return {"status": "ready", "model": info["id"], "model_version": info["version"]}

        @api.get("/metrics", summary="Prometheus metrics of this ingress replica")
        async def metrics(self) -> Response:
            info = await self.model.info.remote()
            self.version.clear()
            if info:
                self.version.labels(info["version"]).set(1)
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    scaling: dict[str, Any] = (
        {
            "autoscaling_config": {
                "min_replicas": config.min_replicas,
                "max_replicas": config.max_replicas,
                "target_ongoing_requests": config.target_ongoing_requests,
            }
        }
        if config.max_replicas > config.min_replicas
        else {"num_replicas": config.max_replicas}
    )
    model = GenRMDeployment.options(
        **scaling,
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        user_config=json.loads(config.model_dump_json()),  # the model lives here: changing it is a hot swap
    ).bind(store_settings.portable())
    ingress = Ingress.options(num_replicas=config.ingress_replicas, ray_actor_options={"num_cpus": config.ingress_num_cpus})
    # The ingress gets no model fields: a new checkpoint must not restart the HTTP side.
    return ingress.bind(model, json.loads(config.model_dump_json(include=INGRESS_FIELDS)), store_settings.portable())


def app_builder(args: dict[str, str]) -> serve.Application:
    """The Serve app from the process's settings: KubeRay's RayService names this import path
    (``vlgenrm.services.scorer.app:app_builder``). Settings come from $VLGENRM_CONFIG and the
    VLGENRM_* env of the Ray pods; the app's ``args`` are ``--set`` overrides, e.g.
    ``{"serving.max_batch_size": "32"}``."""
    from vlgenrm.settings import load_settings

    settings = load_settings(None, [f"{key}={value}" for key, value in (args or {}).items()])
    return build_app(settings.serving, settings.store)


def _sampling(body: ScoreRequest | CompareRequest) -> Sampling | None:
    """Self-consistency settings of a request (None: one greedy critique or none)."""
    if body.samples <= 1:
        return None
    return Sampling(n=body.samples, temperature=body.temperature, seed=body.seed, max_tokens=body.max_critique_tokens)


def _input_error(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, ImageTooLargeError):
        return 413, "too_large"
    if isinstance(exc, ContextTooLongError):
        return 413, "too_long"
    if isinstance(exc, InvalidImageError):
        return 400, "invalid_image"
    return 422, "invalid_input"
