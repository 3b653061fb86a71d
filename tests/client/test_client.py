"""vlgenrm.client against the live scorer: every route, sync and async alike, images from
every kind of source, retries (429 + Retry-After, 503 until ready, timeouts), typed errors,
batching helpers, and self-consistency (samples) through the API."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from PIL import Image

from tests.client.conftest import B64, IMAGE, KEY, LIMITED_KEY, QUESTION, RESPONSES, REWARD_ONLY_KEY, LiveScorer, png
from tests.conftest import free_ports, serve_image
from vlgenrm.client import (
    AsyncScorerClient,
    AuthenticationError,
    ForbiddenImageSourceError,
    InvalidImageError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitedError,
    RetryPolicy,
    ScoreItem,
    ScorerConnectionError,
    ScorerTimeoutError,
    TooLargeError,
    image_source,
)

pytestmark = pytest.mark.slow


def statuses_hook() -> tuple[list[int], dict]:
    seen: list[int] = []
    return seen, {"response": [lambda response: seen.append(response.status_code)]}


def test_a_request_before_the_model_is_loaded_is_retried_on_503_until_ready(live: LiveScorer):
    s = live.startup
    assert s.error is None, repr(s.error)
    assert s.readyz_before == 503
    assert s.statuses[0] == 503 and s.statuses[-1] == 200 and set(s.statuses) == {503, 200}, s.statuses
    assert s.rewards == pytest.approx(live.direct_rewards(B64, QUESTION, RESPONSES), abs=1e-6)
    assert s.seconds >= 5 * (len(s.statuses) - 1) * 0.99  # each retry waited the scorer's Retry-After: 5


def test_every_route_sync_and_async_give_the_same_answers_as_plain_http(live: LiveScorer):
    prompts = [f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"] * 2
    queries = [prompts[0] + RESPONSES[0], prompts[1] + RESPONSES[1]]
    with live.client() as client:
        score = client.score(IMAGE, QUESTION, RESPONSES)
        compare = client.compare(IMAGE, QUESTION, RESPONSES)
        reward = client.get_reward(queries, prompts, images=[IMAGE, IMAGE])
        models = client.models()

    async def run_async():
        async with AsyncScorerClient(live.url, KEY) as client:
            return await asyncio.gather(
                client.score(IMAGE, QUESTION, RESPONSES),
                client.compare(IMAGE, QUESTION, RESPONSES),
                client.get_reward(queries, prompts, images=[IMAGE, IMAGE]),
                client.models(),
            )

    a_score, a_compare, a_reward, a_models = asyncio.run(run_async())
    plain_score = live.post("/v1/score", {"image": B64, "question": QUESTION, "responses": RESPONSES}).json()
    plain_compare = live.post("/v1/compare", {"image": B64, "question": QUESTION, "responses": RESPONSES}).json()

    assert [s.reward for s in score.scores] == pytest.approx([s["reward"] for s in plain_score["scores"]], abs=1e-6)
    assert [s.reward for s in a_score.scores] == pytest.approx([s.reward for s in score.scores], abs=1e-6)
    assert [s.verdict for s in score.scores] == [s.verdict for s in a_score.scores] == [s["verdict"] for s in plain_score["scores"]]
    assert score.model_version == a_score.model_version == live.genrm.version and score.model == live.model_uri
    assert [p.p_first for p in compare.pairs] == pytest.approx([p["p_first"] for p in plain_compare["pairs"]], abs=1e-6)
    assert [p.p_first for p in a_compare.pairs] == pytest.approx([p.p_first for p in compare.pairs], abs=1e-6)
    assert compare.ranking == a_compare.ranking == plain_compare["ranking"]
    # /get_reward reads the question out of the chat template: the same rewards as /v1/score.
    assert reward.rewards == pytest.approx([s.reward for s in score.scores[:2]], abs=1e-6)
    assert a_reward.rewards == pytest.approx(reward.rewards, abs=1e-6) and reward.scores == reward.rewards
    assert reward.model_versions == [live.genrm.version] * 2
    assert [(m.id, m.version, m.family) for m in models.data] == [(live.model_uri, live.genrm.version, "qwen2_vl")]
    assert models == a_models


def test_images_from_bytes_paths_pil_data_urls_s3_and_allowed_urls_get_one_reward(live: LiveScorer, image_file):
    s3_uri = live.store.uri(live.store.put_image(IMAGE, "png").key)
    [expected] = live.direct_rewards(B64, QUESTION, RESPONSES[:1])
    with serve_image(IMAGE) as base, live.client() as client:
        sources = {
            "bytes": IMAGE,
            "bytearray": bytearray(IMAGE),
            "Path": image_file,
            "path string": str(image_file),
            "file URL": image_file.as_uri(),
            "PIL": Image.open(image_file),
            "base64": B64,
            "data URL": "data:image/png;base64," + B64,
            "s3 URI": s3_uri,
            "http URL": f"{base}/square.png",
            "datasets Image feature": {"bytes": IMAGE, "path": None},
        }
        for name, source in sources.items():
            [score] = client.score(source, QUESTION, RESPONSES[:1]).scores
            assert score.reward == pytest.approx(expected, abs=1e-6), name
    with pytest.raises(FileNotFoundError):
        image_source("/no/such/image.png")
    with pytest.raises(TypeError):
        image_source(12345)


def test_429_with_retry_after_is_waited_out_and_retried(live: LiveScorer):
    seen, hooks = statuses_hook()
    body = (IMAGE, QUESTION, RESPONSES[:1])
    with live.client(LIMITED_KEY, event_hooks=hooks) as client:  # 1 request/s, burst 1
        client.score(*body)
        started = time.monotonic()
        client.score(*body)  # over the rate at once: 429, Retry-After, then 200
        waited = time.monotonic() - started
    assert seen[-2:] == [429, 200] and seen.count(429) >= 1, seen
    assert waited >= 1.0, waited  # Retry-After is at least 1 s: the client did not come back sooner

    with live.client(LIMITED_KEY, retry=RetryPolicy(max_attempts=1)) as client:
        errors = []
        for _ in range(3):
            try:
                client.score(*body)
            except RateLimitedError as exc:
                errors.append(exc)
        assert errors, "three requests at once never went over 1/s"
        assert errors[0].status == 429 and errors[0].code == "rate_limited" and errors[0].retry_after >= 1 and errors[0].attempts == 1
    # A Retry-After longer than the client will wait fails at once, with the server's hint.
    with live.client(LIMITED_KEY, retry=RetryPolicy(max_attempts=5, max_retry_after_s=0.1)) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitedError) as caught:
            for _ in range(3):
                client.score(*body)
        assert time.monotonic() - started < 5 and caught.value.retry_after >= 1


def test_timeouts_and_unreachable_scorers_are_typed_after_bounded_retries(live: LiveScorer):
    seen, hooks = statuses_hook()
    quick = RetryPolicy(max_attempts=2, initial_s=0.05)
    with live.client(timeout=0.001, retry=quick, event_hooks=hooks) as client:
        with pytest.raises(ScorerTimeoutError) as caught:
            client.score(IMAGE, QUESTION, RESPONSES)
    assert caught.value.attempts == 2 and caught.value.code == "timeout"
    with live.client(timeout=0.001, retry=RetryPolicy(max_attempts=3, retry_timeouts=False)) as client:
        with pytest.raises(ScorerTimeoutError) as caught:
            client.score(IMAGE, QUESTION, RESPONSES)
    assert caught.value.attempts == 1
    closed = f"http://127.0.0.1:{free_ports()[0]}"
    with pytest.raises(ScorerConnectionError) as refused:
        from vlgenrm.client import ScorerClient

        ScorerClient(closed, KEY, retry=quick).models()
    assert refused.value.attempts == 2

    async def async_timeout():
        async with AsyncScorerClient(live.url, KEY, timeout=0.001, retry=quick) as client:
            await client.score(IMAGE, QUESTION, RESPONSES)

    with pytest.raises(ScorerTimeoutError):
        asyncio.run(async_timeout())


def test_errors_are_typed_from_the_scorers_error_body_sync_and_async(live: LiveScorer):
    cases = [
        (None, lambda c: c.score(IMAGE, QUESTION, RESPONSES), AuthenticationError, 401, "unauthorized"),
        ("not-a-key", lambda c: c.score(IMAGE, QUESTION, RESPONSES), AuthenticationError, 401, "invalid_api_key"),
        (REWARD_ONLY_KEY, lambda c: c.score(IMAGE, QUESTION, RESPONSES), PermissionDeniedError, 403, "forbidden"),
        (KEY, lambda c: c.score("http://169.254.169.254/latest/meta-data", QUESTION, RESPONSES), ForbiddenImageSourceError, 403, "forbidden_image_source"),
        (KEY, lambda c: c.score(b"definitely not an image", QUESTION, RESPONSES), InvalidImageError, 400, "invalid_image"),
        (KEY, lambda c: c.score(IMAGE, QUESTION, ["y" * (600 << 10)]), TooLargeError, 413, "too_large"),
        (KEY, lambda c: c.get_reward(["Q: a A: b"], ["Q: x"], images=[IMAGE]), InvalidRequestError, 422, "invalid_request"),
    ]
    for key, call, kind, status, code in cases:
        with live.client(key) as client, pytest.raises(kind) as caught:
            call(client)
        assert (caught.value.status, caught.value.code) == (status, code), (code, caught.value)
        assert caught.value.message and caught.value.attempts == 1 and code in str(caught.value)

        async def run_async(key=key, call=call):
            async with AsyncScorerClient(live.url, key) as client:
                await call(client)

        with pytest.raises(kind) as async_caught:
            asyncio.run(run_async())
        assert (async_caught.value.status, async_caught.value.code) == (status, code) and async_caught.value.message
    # Checked before anything is sent: the same type, no status.
    with live.client() as client, pytest.raises(InvalidRequestError) as local:
        client.score(IMAGE, QUESTION, [])
    assert local.value.status is None


def test_batching_helpers_group_completions_by_image_and_question(live: LiveScorer):
    blue = png((20, 20, 220))
    images = [IMAGE] * 4 + [blue] * 4
    questions = [QUESTION] * 8
    completions = [f"It is {c}." for c in ("red", "blue", "green", "a red square")] * 2
    seen, hooks = statuses_hook()
    with live.client(event_hooks=hooks) as client:
        batched = client.score_completions(images, questions, completions)
        requests_batched = len(seen)
        single = client.rewards(images, questions, completions, batch=False)
        requests_single = len(seen) - requests_batched
        many = client.score_many([ScoreItem(IMAGE, QUESTION, completions[:4]), ScoreItem(blue, QUESTION, completions[4:])])
        big = client.score(IMAGE, QUESTION, [f"Answer {i}: red." for i in range(70)])  # over one request's 64
    assert requests_batched == 2 and requests_single == 8
    assert [s.reward for s in batched] == pytest.approx(single, abs=1e-6)
    assert [s.reward for m in many for s in m.scores] == pytest.approx(single, abs=1e-6)
    assert [s.index for s in big.scores] == list(range(70))
    assert [s.reward for s in big.scores[64:]] == pytest.approx(live.direct_rewards(B64, QUESTION, [f"Answer {i}: red." for i in range(64, 70)]), abs=1e-6)

    async def run_async():
        async with AsyncScorerClient(live.url, KEY) as client:
            return await client.rewards(images, questions, completions)

    assert asyncio.run(run_async()) == pytest.approx(single, abs=1e-6)


def test_self_consistency_samples_through_the_api(live: LiveScorer):
    with live.client() as client:
        greedy = client.score(IMAGE, QUESTION, RESPONSES[:2], with_critique=True, max_critique_tokens=8)
        one = client.score(IMAGE, QUESTION, RESPONSES[:2], with_critique=True, max_critique_tokens=8, samples=1)
        first = client.score(IMAGE, QUESTION, RESPONSES[:2], with_critique=True, max_critique_tokens=8, samples=4, seed=7)
        again = client.score(IMAGE, QUESTION, RESPONSES[:2], with_critique=True, max_critique_tokens=8, samples=4, seed=7)
        compared = client.compare(IMAGE, QUESTION, RESPONSES[:2], samples=3, max_critique_tokens=8, seed=1)
        compared_again = client.compare(IMAGE, QUESTION, RESPONSES[:2], samples=3, max_critique_tokens=8, seed=1)
    assert one == greedy  # samples=1 is the greedy-critique path
    assert first == again  # seeded: the same request, the same critiques and numbers
    for score in first.scores:
        assert len(score.sample_rewards) == 4 and len(score.critiques) == 4 and score.critique == score.critiques[0]
        assert score.reward == pytest.approx(sum(score.sample_rewards) / 4, abs=1e-9)
        assert 0.5 <= score.agreement <= 1.0
        assert score.verdict == ("Yes" if score.reward >= 0.5 else "No")
    assert compared == compared_again and 0.5 <= compared.pairs[0].agreement <= 1.0
    # The verdict after each sampled critique is what the library gives for that critique.
    from vlgenrm.genrm.model import PointwiseQuery

    score = first.scores[0]
    expected = live.genrm.pointwise_probs([PointwiseQuery(IMAGE, QUESTION, RESPONSES[0], critique=c) for c in score.critiques])
    assert score.sample_rewards == pytest.approx(expected, abs=1e-5)


def test_a_base_url_with_a_route_and_keys_from_the_environment(live: LiveScorer, monkeypatch):
    from vlgenrm.client import ScorerClient

    monkeypatch.setenv("VLGENRM_SCORER_URL", live.url + "/get_reward")
    monkeypatch.setenv("VLGENRM_API_KEY", KEY)
    with ScorerClient() as client:
        assert client.base_url == live.url and client.models().data[0].version == live.genrm.version
    monkeypatch.delenv("VLGENRM_SCORER_URL")
    with pytest.raises(ValueError):
        ScorerClient()
    # The key in a URL's user-info (Authorization: Basic): how OpenRLHF's caller can carry one.
    r = httpx.get(live.url.replace("http://", f"http://rl:{KEY}@") + "/v1/models")
    assert r.status_code == 200, r.text
