"""The scorer's serving logic without a server: guards, jobs, response shaping, error mapping
and metrics, with a fake model handle. tests/services/test_scorer_service.py runs the same
class behind real Ray Serve with real tiny models."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from tests.support.scoring import FakeModel
from vlgenrm.genrm.errors import ContextTooLongError, ImageTooLargeError, InvalidImageError
from vlgenrm.scoring.config import ApiKey, Scope, SecuritySettings, ServingConfig
from vlgenrm.scoring.core import JobResult
from vlgenrm.scoring.errors import ApiError
from vlgenrm.scoring.protocol import CompareRequest, RewardRequest, ScoreRequest
from vlgenrm.scoring.security import hash_key
from vlgenrm.scoring.serving import ScorerServing

KEY, REWARD_KEY, SLOW_KEY = "key-all", "key-reward", "key-slow"
IMAGE = b"\x89PNG not really"  # the serving layer passes bytes on; decoding is the model's job
B64 = base64.b64encode(IMAGE).decode()


def serving(model: FakeModel | None = None, critique: bool = True) -> ScorerServing:
    keys = [
        ApiKey(name="all", sha256=hash_key(KEY)),
        ApiKey(name="rl", sha256=hash_key(REWARD_KEY), scopes=[Scope.REWARD]),
        ApiKey(name="slow", sha256=hash_key(SLOW_KEY), rate_per_s=0.01, burst=1),
    ]
    config = ServingConfig(critique=critique, security=SecuritySettings(api_keys=keys))
    return ScorerServing(model or FakeModel(), config, store=None)


def auth(key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def refusal(coro: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        run(coro)
    return caught.value


def test_score_shapes_one_verdict_per_response_from_the_models_values():
    model = FakeModel()
    body = ScoreRequest(image=B64, question="Colour?", responses=["red", "a long red answer here"])
    out = run(serving(model).score(body, auth()))
    assert [s.reward for s in out.scores] == [0.15, 1.0] and [s.verdict for s in out.scores] == ["No", "Yes"]
    assert (out.model, out.model_version) == ("s3://b/m", "v7")
    (job,) = model.jobs
    assert job.image == IMAGE and job.question == "Colour?" and job.responses == ("red", "a long red answer here") and job.critique_tokens is None


def test_guards_refuse_missing_and_unknown_keys_wrong_scopes_and_over_rate_keys():
    s = serving()
    body = ScoreRequest(image=B64, question="q", responses=["a"])
    assert refusal(s.score(body, {})).status == 401
    assert refusal(s.score(body, auth("not-a-key"))).code == "invalid_api_key"
    forbidden = refusal(s.score(body, auth(REWARD_KEY)))
    assert forbidden.status == 403 and "may not call score" in forbidden.message
    assert run(s.score(body, {"x-api-key": SLOW_KEY})).scores  # the burst's one request
    limited = refusal(s.score(body, {"x-api-key": SLOW_KEY}))
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1


def test_critiques_are_refused_when_the_endpoint_does_not_generate_them():
    body = ScoreRequest(image=B64, question="q", responses=["a"], with_critique=True)
    assert refusal(serving(critique=False).score(body, auth())).code == "critique_disabled"
    model = FakeModel()
    run(serving(model).score(body, auth()))
    assert model.jobs[0].critique_tokens == body.max_critique_tokens
    sampled = CompareRequest(image=B64, question="q", responses=["a", "b"], samples=3)
    assert refusal(serving(critique=False).compare(sampled, auth())).code == "critique_disabled"


@pytest.mark.parametrize(
    "result, status, code",
    [
        (JobResult(error=ImageTooLargeError("too many pixels")), 413, "too_large"),
        (JobResult(error=ContextTooLongError("too many tokens")), 413, "too_long"),
        (JobResult(error=InvalidImageError("not an image")), 400, "invalid_image"),
        (JobResult(unavailable="no model is loaded yet"), 503, "no_model"),
    ],
)
def test_model_failures_map_to_http_errors(result, status, code):
    error = refusal(serving(FakeModel(result)).score(ScoreRequest(image=B64, question="q", responses=["a"]), auth()))
    assert (error.status, error.code) == (status, code)


def test_compare_ranks_by_win_rate_over_every_pair():
    model = FakeModel()
    out = run(serving(model).compare(CompareRequest(image=B64, question="q", responses=["aa", "aaaa", "a"]), auth()))
    assert out.ranking == [1, 0, 2] and out.win_rate == [0.5, 1.0, 0.0]
    assert [(p.first, p.second, p.p_first) for p in out.pairs] == [(0, 1, 0.0), (0, 2, 1.0), (1, 2, 1.0)]
    assert all(p.agreement == 1.0 for p in out.pairs)


def test_reward_takes_images_from_labels_fetches_each_once_and_checks_lengths():
    model = FakeModel()
    s = serving(model)
    fetched, fetch = [], s.images.fetch

    async def counting(source: str) -> bytes:
        fetched.append(source)
        return await fetch(source)

    s.images.fetch = counting
    body = RewardRequest(
        query=["Q: a", "Q: bb", "Q: ccc"], prompts=["Q: ", "Q: ", "Q: "], labels=[{"image": B64}, {"image": B64}, f"data:image/png;base64,{B64}"]
    )
    out = run(s.reward(body, auth(REWARD_KEY)))
    assert out.rewards == out.scores == out.extra_logs["genrm_p_yes"] == [0.05, 0.1, 0.15]
    assert [job.responses for job in model.jobs] == [("a",), ("bb",), ("ccc",)] and all(job.question == "Q: " for job in model.jobs)
    assert out.model_versions == ["v7"] * 3 and fetched == [B64, f"data:image/png;base64,{B64}"]
    assert refusal(s.reward(RewardRequest(query=["a", "b"], prompts=["a"], images=[B64, B64]), auth())).message.startswith("prompts:")
    assert "labels[1]" in refusal(s.reward(RewardRequest(query=["a", "b"], labels=[{"image": B64}, "no image"]), auth())).message
    assert "query 0" in refusal(s.reward(RewardRequest(query=["other"], prompts=["Q: "], images=[B64]), auth())).message


def test_models_lets_any_valid_key_look_but_no_stranger():
    s = serving()
    assert [m.id for m in run(s.models(auth(REWARD_KEY))).data] == ["s3://b/m"]
    assert refusal(s.models({})).status == 401
    assert run(serving(FakeModel(info={})).models(auth())).data == []


def test_readiness_needs_a_reachable_model_deployment_with_a_model():
    assert run(serving().ready())["model_version"] == "v7"
    assert refusal(serving(FakeModel(info={})).ready()).code == "no_model"
    assert refusal(serving(FakeModel(info=RuntimeError("actor died"))).ready()).code == "not_ready"


def test_metrics_count_requests_by_route_and_status_and_name_the_version():
    s = serving()
    body = ScoreRequest(image=B64, question="q", responses=["a"])
    run(s.score(body, auth()))
    refusal(s.score(body, {}))
    text = run(s.metrics()).decode()
    assert 'vlgenrm_scorer_requests_total{route="score",status="200"} 1.0' in text
    assert 'vlgenrm_scorer_requests_total{route="score",status="401"} 1.0' in text
    assert 'vlgenrm_scorer_batch_size_sum{route="score"} 3.0' in text
    assert 'vlgenrm_scorer_model_info{version="v7"} 1.0' in text
