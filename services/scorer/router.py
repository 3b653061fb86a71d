"""The scorer's HTTP layer: the FastAPI app (OpenAPI metadata, the body limit, errors in one
shape) and its routes, each of which hands the request to the replica's
:class:`~vlgenrm.scoring.serving.ScorerServing`.

Routes are module functions, so Ray Serve ships them to its replicas by reference: the Serve
wiring (:mod:`vlgenrm.services.scorer.app`) installs each replica's ScorerServing with
:func:`install`; a test overrides :func:`current` (``api.dependency_overrides``) with its own.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlgenrm.bus.codec import DecodeFailure, parse_json
from vlgenrm.scoring.errors import ApiError
from vlgenrm.scoring.protocol import (
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    ModelList,
    RewardRequest,
    RewardResponse,
    ScoreRequest,
    ScoreResponse,
)
from vlgenrm.scoring.serving import ScorerServing

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 413, 422, 429, 502, 503, 504)}

_serving: ScorerServing | None = None


def install(serving: ScorerServing) -> None:
    """Make ``serving`` the one this process's routes use (one ingress replica per process)."""
    global _serving
    _serving = serving


def current() -> ScorerServing:
    """The installed ScorerServing (a FastAPI dependency)."""
    if _serving is None:
        raise ApiError(503, "not_ready", "the ingress is still starting")
    return _serving


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


#: A route's ScorerServing, injected (``Annotated`` keeps the dependency out of the defaults).
Serving = Annotated[ScorerServing, Depends(current)]


def make_api(max_request_bytes: int) -> FastAPI:
    """The FastAPI app: OpenAPI metadata, the body limit, errors in one shape, the routes."""
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

    api.include_router(router)
    return api


router = APIRouter()


@router.post("/v1/score", response_model=ScoreResponse, responses=ERRORS, summary="Pointwise rewards P(Yes) for one or more responses")
async def score(body: ScoreRequest, request: Request, serving: Serving) -> ScoreResponse:
    return await serving.score(body, request.headers)


@router.post("/v1/compare", response_model=CompareResponse, responses=ERRORS, summary="Rank responses by pairwise preference")
async def compare(body: CompareRequest, request: Request, serving: Serving) -> CompareResponse:
    return await serving.compare(body, request.headers)


@router.post("/get_reward", response_model=RewardResponse, responses=ERRORS, summary="OpenRLHF remote reward model protocol (+ images)")
async def get_reward(body: RewardRequest, request: Request, serving: Serving) -> RewardResponse:
    return await serving.reward(body, request.headers)


@router.get("/v1/models", response_model=ModelList, responses=ERRORS, summary="The served model")
async def models(request: Request, serving: Serving) -> ModelList:
    return await serving.models(request.headers)


@router.get("/healthz", summary="Liveness: the ingress answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}}, summary="Readiness: a model is loaded")
async def readyz(serving: Serving) -> dict[str, str]:
    return await serving.ready()


@router.get("/metrics", summary="Prometheus metrics of this ingress replica")
async def metrics(serving: Serving) -> Response:
    return Response(await serving.metrics(), media_type=CONTENT_TYPE_LATEST)
