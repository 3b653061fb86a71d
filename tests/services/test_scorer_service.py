"""The scorer on a real local Ray Serve with tiny models: every endpoint against direct library
calls, batching under concurrent load, hot swaps under sustained load with zero failures, and
the safety rules (keys, scopes, rate limits, size limits, forbidden image sources)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import free_ports, png, serve_image, wait_http_ok
from vlgenrm.evaluation.promotion import PromotionRecord, promote
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM, PairwiseQuery, PointwiseQuery, upload_checkpoint
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.scoring.config import ApiKey, SecuritySettings, ServingConfig
from vlgenrm.scoring.protocol import EXAMPLE_IMAGE
from vlgenrm.scoring.security import hash_key
from vlgenrm.settings import Settings, StoreKind, StoreSettings
from vlgenrm.store import LocalStore

pytestmark = pytest.mark.slow

KEY, SLOW_KEY, REWARD_ONLY_KEY = "test-key-1", "slow-key", "reward-only"
QUESTION = "What colour is the square?"
RESPONSES = ["It is red.", "It is blue.", "It is a green circle."]


IMAGE = png((200, 30, 30))
B64 = base64.b64encode(IMAGE).decode()


@dataclass
class Scorer:
    url: str
    settings: Settings
    store: LocalStore
    models: dict[str, str]  # name -> store URI
    direct: dict[str, GenRM]  # the same checkpoints, loaded in this process

    def headers(self, key: str = KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def post(self, path: str, body: dict, key: str = KEY, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=self.headers(key), timeout=60, **kwargs)

    def redeploy(self, **serving) -> None:
        from vlgenrm.services.scorer.server import start

        self.settings = self.settings.model_copy(update={"serving": self.settings.serving.model_copy(update=serving)})
        start(self.settings)


def serving_config(model: str, port: int) -> ServingConfig:
    keys = [
        ApiKey(name="tests", sha256=hash_key(KEY), rate_per_s=1000, burst=1000),
        ApiKey(name="slow", sha256=hash_key(SLOW_KEY), rate_per_s=0.05, burst=2),
        ApiKey(name="rl", sha256=hash_key(REWARD_ONLY_KEY), scopes=["reward"], rate_per_s=1000, burst=1000),
    ]
    security = SecuritySettings(api_keys=keys, max_request_bytes=512 << 10, max_image_bytes=100 << 10, allowed_hosts=["127.0.0.1"], image_fetch_timeout_s=2)
    return ServingConfig(
        model=model,
        port=port,
        host="127.0.0.1",
        max_batch_size=16,
        batch_wait_timeout_s=0.05,
        num_cpus=1,
        watch_promoted_s=0.5,
        genrm=GenRMSettings(batch_size=16),
        security=security,
    )


@pytest.fixture(scope="module")
def scorer(local_ray, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scorer]:
    from ray import serve

    from vlgenrm.services.scorer.server import start

    root = tmp_path_factory.mktemp("scorer")
    store = LocalStore(root / "store")
    models, direct = {}, {}
    for name, seed in (("a", 0), ("b", 1)):
        path = build_tiny_genrm(root / name, "qwen2_vl", seed=seed)
        models[name] = upload_checkpoint(path, store, f"checkpoints/test/{name}/model")
        direct[name] = GenRM.load(path, GenRMSettings())
    settings = Settings(store=StoreSettings(kind=StoreKind.LOCAL, root=root / "store"), serving=serving_config(models["a"], free_ports()[0]))
    url = start(settings)
    wait_http_ok(url + "/readyz")
    yield Scorer(url, settings, store, models, direct)
    serve.shutdown()


def wait_for_version(scorer: Scorer, version: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(scorer.url + "/readyz", timeout=5).json().get("model_version") == version:
            return
        time.sleep(0.2)
    raise AssertionError(f"the scorer never switched to {version}")


# --------------------------------------------------------------------------- endpoints


def test_score_equals_the_library(scorer: Scorer):
    r = scorer.post("/v1/score", {"image": B64, "question": QUESTION, "responses": RESPONSES})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = scorer.direct["a"].pointwise_probs([PointwiseQuery(IMAGE, QUESTION, resp) for resp in RESPONSES])
    assert [s["reward"] for s in body["scores"]] == pytest.approx(expected, abs=1e-5)
    assert [s["verdict"] for s in body["scores"]] == ["Yes" if p >= 0.5 else "No" for p in expected]
    assert body["model_version"] == scorer.direct["a"].version and body["model"] == scorer.models["a"]


def test_score_with_critique_scores_the_verdict_after_the_generated_critique(scorer: Scorer):
    r = scorer.post("/v1/score", {"image": B64, "question": QUESTION, "responses": RESPONSES[:1], "with_critique": True, "max_critique_tokens": 12})
    assert r.status_code == 200, r.text
    [score] = r.json()["scores"]
    assert isinstance(score["critique"], str)
    [expected] = scorer.direct["a"].pointwise_probs([PointwiseQuery(IMAGE, QUESTION, RESPONSES[0], critique=score["critique"])])
    assert score["reward"] == pytest.approx(expected, abs=1e-5)


def test_compare_equals_the_library_in_both_orders(scorer: Scorer):
    r = scorer.post("/v1/compare", {"image": "data:image/png;base64," + B64, "question": QUESTION, "responses": RESPONSES})
    assert r.status_code == 200, r.text
    body = r.json()
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = scorer.direct["a"].pairwise_probs([PairwiseQuery(IMAGE, QUESTION, RESPONSES[a], RESPONSES[b]) for a, b in pairs])
    assert [(p["first"], p["second"]) for p in body["pairs"]] == pairs
    assert [p["p_first"] for p in body["pairs"]] == pytest.approx(expected, abs=1e-5)
    assert body["win_rate"] == sorted(body["win_rate"], reverse=True) or body["ranking"] == sorted(range(3), key=lambda i: -body["win_rate"][i])
    assert sorted(body["ranking"]) == [0, 1, 2] and body["win_rate"][body["ranking"][0]] == max(body["win_rate"])


def test_an_openrlhf_remote_reward_client_gets_rewards(scorer: Scorer):
    """Posted the way OpenRLHF's remote RM client posts (query, prompts, labels), plus images."""
    prompts = [f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"] * 2
    queries = [prompts[0] + RESPONSES[0], prompts[1] + RESPONSES[1]]
    r = scorer.post("/get_reward", {"query": queries, "prompts": prompts, "labels": ["", ""], "images": [B64, B64]}, key=REWARD_ONLY_KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    # The question is the user's text inside the chat template (docs/integrations.md), as /v1/score takes it.
    expected = scorer.direct["a"].pointwise_probs([PointwiseQuery(IMAGE, QUESTION, RESPONSES[i]) for i in range(2)])
    assert body["rewards"] == pytest.approx(expected, abs=1e-5) and body["scores"] == body["rewards"]
    assert body["model_versions"] == [scorer.direct["a"].version] * 2 and body["model_version"] == scorer.direct["a"].version
    assert all(isinstance(v, float) for values in body["extra_logs"].values() for v in values)  # OpenRLHF tensorizes them
    missing = scorer.post("/get_reward", {"query": queries, "prompts": prompts}, key=REWARD_ONLY_KEY)
    assert missing.status_code == 422 and "one image per query" in missing.json()["error"]["message"]


def test_models_health_readiness_and_metrics(scorer: Scorer):
    models = httpx.get(scorer.url + "/v1/models", headers=scorer.headers(REWARD_ONLY_KEY)).json()
    assert [(m["id"], m["version"], m["family"]) for m in models["data"]] == [(scorer.models["a"], scorer.direct["a"].version, "qwen2_vl")]
    assert httpx.get(scorer.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(scorer.url + "/readyz").json()["model_version"] == scorer.direct["a"].version
    metrics = httpx.get(scorer.url + "/metrics").text
    assert 'vlgenrm_scorer_requests_total{route="score",status="200"}' in metrics
    assert f'vlgenrm_scorer_model_info{{version="{scorer.direct["a"].version}"}} 1.0' in metrics
    assert "/v1/score" in httpx.get(scorer.url + "/openapi.json").json()["paths"]


def batch_sizes(scorer: Scorer) -> tuple[float, float]:
    """(requests observed, requests that were alone in their batch) from /metrics."""
    text = httpx.get(scorer.url + "/metrics").text
    count = alone = 0.0
    for line in text.splitlines():
        if line.startswith('vlgenrm_scorer_batch_size_count{route="score"}'):
            count = float(line.split()[-1])
        if line.startswith('vlgenrm_scorer_batch_size_bucket{le="1.0",route="score"}'):
            alone = float(line.split()[-1])
    return count, alone


def test_concurrent_requests_are_batched_and_equal_unbatched_results(scorer: Scorer):
    colours = [(40 * i % 256, 255 - 30 * i % 256, 90) for i in range(32)]
    images = [png(c) for c in colours]
    expected = scorer.direct["a"].pointwise_probs([PointwiseQuery(img, QUESTION, RESPONSES[0]) for img in images])
    count0, alone0 = batch_sizes(scorer)

    def one(i: int) -> float:
        r = scorer.post("/v1/score", {"image": base64.b64encode(images[i]).decode(), "question": QUESTION, "responses": [RESPONSES[0]]})
        assert r.status_code == 200, r.text
        return r.json()["scores"][0]["reward"]

    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(one, range(32)))
    assert got == pytest.approx(expected, abs=1e-5)
    count, alone = batch_sizes(scorer)
    assert count - count0 == 32
    assert alone - alone0 < 32, "no request shared a batch"
    print(f"\n32 concurrent requests: {int(32 - (alone - alone0))} served in batches of more than one")


# --------------------------------------------------------------------------- hot swap


class Load:
    """Sustained score requests from 4 threads; records every status and version."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer, self.stop, self.results = scorer, threading.Event(), []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                try:
                    r = client.post(
                        self.scorer.url + "/v1/score", json={"image": B64, "question": QUESTION, "responses": RESPONSES[:2]}, headers=self.scorer.headers()
                    )
                    self.results.append((r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text))
                except httpx.HTTPError as exc:
                    self.results.append((0, str(exc)))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_hot_swap_under_sustained_load_fails_no_request(scorer: Scorer):
    a, b = scorer.direct["a"].version, scorer.direct["b"].version
    with Load(scorer) as load:
        time.sleep(2)
        scorer.redeploy(model=scorer.models["b"])  # a lightweight update: reconfigure on the live replica
        wait_for_version(scorer, b)
        time.sleep(2)
    failures = [r for r in load.results if r[0] != 200]
    versions = [v for status, v in load.results if status == 200]
    print(f"\nhot swap: {len(load.results)} requests, {len(failures)} failed, {versions.count(a)} by {a}, {versions.count(b)} by {b}")
    assert not failures, failures[:5]
    assert versions.count(a) > 0 and versions.count(b) > 0
    assert versions[-1] == b
    # every answer came wholly from one model: nothing but the two versions appears
    assert set(versions) == {a, b}


def test_a_new_promotion_is_picked_up_under_load(scorer: Scorer):
    """With no fixed model the scorer follows the namespace's promotion pointer."""
    a = scorer.direct["a"].version
    promote(scorer.store, PromotionRecord(namespace="default", iteration="it-1", model=scorer.models["a"], model_version=a, accuracy=0.9, dataset="eval"))
    with Load(scorer) as load:
        scorer.redeploy(model=None)
        wait_for_version(scorer, a)
        time.sleep(1)
    assert all(status == 200 for status, _ in load.results), [r for r in load.results if r[0] != 200][:5]


# --------------------------------------------------------------------------- safety


def test_api_keys_scopes_and_rate_limits(scorer: Scorer):
    body = {"image": B64, "question": QUESTION, "responses": RESPONSES[:1]}
    none = httpx.post(scorer.url + "/v1/score", json=body)
    assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized"
    wrong = scorer.post("/v1/score", body, key="not-a-key")
    assert wrong.status_code == 401
    assert httpx.post(scorer.url + "/v1/score", json=body, headers={"X-API-Key": KEY}).status_code == 200
    scoped = scorer.post("/v1/score", body, key=REWARD_ONLY_KEY)
    assert scoped.status_code == 403 and scoped.json()["error"]["code"] == "forbidden"
    statuses = [scorer.post("/v1/score", body, key=SLOW_KEY) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert int(statuses[2].headers["Retry-After"]) >= 1 and statuses[2].json()["error"]["code"] == "rate_limited"


def test_size_limits(scorer: Scorer):
    big_body = scorer.post("/v1/score", {"image": B64, "question": "x" * 10, "responses": ["y" * (600 << 10)]})
    assert big_body.status_code == 413 and big_body.json()["error"]["code"] == "too_large"
    big_image = base64.b64encode(b"\x89PNG" + bytes(150 << 10)).decode()
    r = scorer.post("/v1/score", {"image": big_image, "question": QUESTION, "responses": ["a"]})
    assert r.status_code == 413
    chunked = httpx.post(
        scorer.url + "/v1/score",
        content=iter([b'{"image": "' + b"A" * (300 << 10), b"A" * (300 << 10) + b'"}']),
        headers=scorer.headers() | {"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413, chunked.text


def test_bad_images_and_forbidden_sources(scorer: Scorer):
    def score(image: str) -> httpx.Response:
        return scorer.post("/v1/score", {"image": image, "question": QUESTION, "responses": ["a"]})

    assert score("http://169.254.169.254/latest/meta-data").status_code == 403
    assert score("file:///etc/passwd").status_code == 403
    assert score("s3://someone-elses-bucket/x.png").status_code == 403
    assert score("not base64 at all!").status_code == 400
    undecodable = score(base64.b64encode(b"definitely not an image").decode())
    assert undecodable.status_code == 400 and undecodable.json()["error"]["code"] == "invalid_image"
    key = scorer.store.put_image(IMAGE, "png").key
    assert score(scorer.store.uri(key)).status_code == 200  # the platform's own store


def test_images_from_an_allowed_host(scorer: Scorer, tmp_path: Path):
    with serve_image(IMAGE) as base:
        r = scorer.post("/v1/score", {"image": f"{base}/cat.png", "question": QUESTION, "responses": [RESPONSES[0]]})
        assert r.status_code == 200, r.text
        assert r.json()["scores"][0]["reward"] == pytest.approx(
            scorer.direct[_serving(scorer)].pointwise_probs([PointwiseQuery(IMAGE, QUESTION, RESPONSES[0])])[0], abs=1e-5
        )


def _serving(scorer: Scorer) -> str:
    version = httpx.get(scorer.url + "/readyz").json()["model_version"]
    return next(name for name, g in scorer.direct.items() if g.version == version)


def test_invalid_bodies_get_4xx_with_a_message(scorer: Scorer):
    cases = [
        {"image": B64, "question": QUESTION, "responses": []},
        {"image": B64, "question": QUESTION},
        {"image": B64, "question": QUESTION, "responses": ["a"], "unknown": 1},
    ]
    for body in cases:
        r = scorer.post("/v1/score", body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request" and r.json()["error"]["message"], (body, r.text)
    r = httpx.post(scorer.url + "/v1/compare", content=b"{not json", headers=scorer.headers() | {"Content-Type": "application/json"})
    assert r.status_code == 422
    # Bodies json.loads rejects in unusual ways (ValueError, RecursionError) or would take (NaN, duplicates).
    unusual = [
        b'{"image":"x","question":"q","responses":["a"],"n":' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"image":"x","question":NaN,"responses":["a"]}',
        b'{"image":"x","question":"q","question":"r","responses":["a"]}',
    ]
    for path in ("/v1/score", "/v1/compare", "/get_reward"):
        for body in unusual:
            r = httpx.post(scorer.url + path, content=body, headers=scorer.headers() | {"Content-Type": "application/json"}, timeout=60)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (path, body[:60], r.text)
    assert json.loads(httpx.get(scorer.url + "/nope").text)["error"]["code"] == "not_found"


# --------------------------------------------------------------------------- schemathesis


def test_generated_requests_never_get_a_5xx(scorer: Scorer):
    """schemathesis draws requests for every operation of the OpenAPI document (driven through
    hypothesis directly: its pytest plugin does not support this pytest)."""
    api = schemathesis.openapi.from_url(scorer.url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/score", "POST /v1/compare", "POST /get_reward", "GET /v1/models"}
    tokenizer = scorer.direct["a"].tokenizer
    # Text is data (issue 16): generated text also carries the served tokenizer's special
    # tokens (chat-template markers, image placeholders), spliced in anywhere.
    specials = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special} | set(tokenizer.all_special_tokens))
    assert "<|image_pad|>" in specials and "<|im_start|>" in specials
    special_text = st.lists(st.sampled_from(specials), min_size=1, max_size=4).map("".join)
    seen: dict[str, set[int]] = {}
    injected = {"count": 0}
    for operation in operations:
        strategy = operation.as_strategy()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy, real_image=st.booleans(), inject=st.one_of(st.none(), special_text), at=st.integers(0, 64))
        def check(case, real_image: bool, inject: str | None, at: int) -> None:
            # Random strings are never images; half the time put a real one in, so generated
            # questions and responses reach the model too.
            if real_image and isinstance(case.body, dict):
                if isinstance(case.body.get("image"), str):
                    case.body["image"] = EXAMPLE_IMAGE
                if isinstance(case.body.get("images"), list):
                    case.body["images"] = [EXAMPLE_IMAGE] * len(case.body["images"])
            if inject is not None and isinstance(case.body, dict):
                for key in ("question", "responses", "query", "prompts"):
                    value = case.body.get(key)
                    if isinstance(value, str):
                        case.body[key] = value[:at] + inject + value[at:]
                    elif isinstance(value, list):
                        case.body[key] = [v[:at] + inject + v[at:] if isinstance(v, str) else v for v in value]
                    else:
                        continue
                    injected["count"] += 1
            # A generated critique may run to max_critique_tokens: on a busy machine that takes
            # more than the client's default 10 s.
            response = case.call(base_url=scorer.url, headers=scorer.headers(), timeout=180)
            seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}"

        check()
    assert injected["count"] > 0
    print("\n" + "\n".join(f"{op}: {sorted(codes)}" for op, codes in sorted(seen.items())) + f"\nspecial tokens injected into {injected['count']} fields")
