"""verl: the scorer as a ``compute_score`` of verl's reward loop (sync or async).

verl calls ``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=...)``
once per rollout (the reward manager decodes the response into ``solution_str``) and merges the
config's ``reward_kwargs`` into the call. This module is loaded by path; it answers
``{"score": P("Yes"), "verdict": "Yes" | "No", "critique": str}`` (plus ``agreement`` with
``samples`` > 1), which verl logs per key. Trainer side (verl's Hydra config)::

    reward:
      custom_reward_function:
        path: <the output of: python -c 'import vlgenrm.client.verl as m; print(m.__file__)'>
        name: compute_score_async      # or compute_score (verl runs it in a thread pool)
        reward_kwargs:
          scorer_url: http://scorer:8000
          image_key: image             # extra_info field with the image (s3:// URI, URL, path, bytes)
          question_key: question       # extra_info field with the question
          with_critique: false

(older verl: the same block at the top level, ``custom_reward_function.path``). The API key
comes from ``$VLGENRM_API_KEY`` (or ``api_key`` in reward_kwargs). The dataset's preprocessing
puts the image and the question into ``extra_info``, e.g.
``"extra_info": {"image": "s3://vlgenrm/images/ab12.png", "question": "What is written on the sign?"}``.

A scorer error (after bounded retries) raises out of ``compute_score``; verl's reward loop does
not catch it, so the step fails instead of training on a made-up reward.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from vlgenrm.client.errors import InvalidRequestError
from vlgenrm.client.http import AsyncScorerClient, ScorerClient
from vlgenrm.scoring.protocol import ResponseScore

_sync: dict[tuple[str | None, str | None], ScorerClient] = {}
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str | None, str | None], AsyncScorerClient]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
IMAGE_FALLBACKS = ("image", "images", "image_path", "image_url", "image_uri")
QUESTION_FALLBACKS = ("question", "prompt", "problem", "query")


def _field(extra_info: dict[str, Any] | None, key: str, fallbacks: tuple[str, ...], what: str) -> Any:
    info = extra_info or {}
    for name in (key, *fallbacks):
        value = info.get(name)
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise InvalidRequestError(f"extra_info[{name!r}] holds {len(value)} {what}s; the scorer takes one", code="invalid_request")
            value = value[0]
        if value is not None and value != "":
            return value
    raise InvalidRequestError(f"no {what} in extra_info (looked for {[key, *fallbacks]}; it has {sorted(info)})", code="invalid_request")


def _result(score: ResponseScore, samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {"score": score.reward, "verdict": score.verdict, "critique": score.critique or ""}
    if samples > 1:
        out["agreement"] = score.agreement
    return out


def _sync_client(url: str | None, api_key: str | None, options: dict[str, Any]) -> ScorerClient:
    with _lock:
        client = _sync.get((url, api_key))
        if client is None:
            client = _sync[(url, api_key)] = ScorerClient(url, api_key, **options)
        return client


def _async_client(url: str | None, api_key: str | None, options: dict[str, Any]) -> AsyncScorerClient:
    loop = asyncio.get_running_loop()  # an httpx.AsyncClient belongs to one event loop
    with _lock:
        clients = _async.setdefault(loop, {})
        client = clients.get((url, api_key))
        if client is None:
            client = clients[(url, api_key)] = AsyncScorerClient(url, api_key, **options)
        return client


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    *,
    scorer_url: str | None = None,
    api_key: str | None = None,
    image_key: str = "image",
    question_key: str = "question",
    with_critique: bool = False,
    samples: int = 1,
    seed: int | None = None,
    max_critique_tokens: int | None = None,
    timeout: float = 120.0,
    **_verl: Any,
) -> dict[str, Any]:
    """The GenRM's reward of ``solution_str`` for the image and question in ``extra_info``.
    ``data_source`` and ``ground_truth`` are accepted as verl passes them (a generative RM
    needs no reference answer); other keyword arguments verl adds are ignored."""
    image = _field(extra_info, image_key, IMAGE_FALLBACKS, "image")
    question = str(_field(extra_info, question_key, QUESTION_FALLBACKS, "question"))
    client = _sync_client(scorer_url, api_key, {"timeout": timeout})
    answer = client.score(image, question, [solution_str], with_critique=with_critique, samples=samples, seed=seed, max_critique_tokens=max_critique_tokens)
    return _result(answer.scores[0], samples)


async def compute_score_async(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    *,
    scorer_url: str | None = None,
    api_key: str | None = None,
    image_key: str = "image",
    question_key: str = "question",
    with_critique: bool = False,
    samples: int = 1,
    seed: int | None = None,
    max_critique_tokens: int | None = None,
    timeout: float = 120.0,
    **_verl: Any,
) -> dict[str, Any]:
    """:func:`compute_score`, awaited on verl's reward-loop event loop."""
    image = _field(extra_info, image_key, IMAGE_FALLBACKS, "image")
    question = str(_field(extra_info, question_key, QUESTION_FALLBACKS, "question"))
    client = _async_client(scorer_url, api_key, {"timeout": timeout})
    answer = await client.score(
        image, question, [solution_str], with_critique=with_critique, samples=samples, seed=seed, max_critique_tokens=max_critique_tokens
    )
    return _result(answer.scores[0], samples)
