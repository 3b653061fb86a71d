"""The scorer's HTTP layer (the router's FastAPI app) in process, its routes serving through a
ScorerServing with a fake model: bodies the JSON parser rejects in unusual ways get 4xx with a
reason, never a 5xx. tests/services/test_scorer_service.py sends the same bodies to the full
Ray Serve deployment."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.scoring import FakeModel
from vlgenrm.scoring.config import SecuritySettings, ServingConfig
from vlgenrm.scoring.serving import ScorerServing
from vlgenrm.services.scorer import router

JSON = {"Content-Type": "application/json"}
SCORE = b'{"image":"eA==","question":"q","responses":["a"]}'

#: Bodies that are not strict JSON, each with the words its 422 must carry.
NOT_STRICT_JSON = {
    "5000-digit integer": (b'{"image":"x","question":"q","responses":["a"],"n":' + b"9" * 5000 + b"}", "number out of range"),
    "5000-digit integer where a string belongs": (b'{"image":"x","question":' + b"1" * 5000 + b',"responses":["a"]}', "number out of range"),
    "deep arrays": (b"[" * 100_000 + b"]" * 100_000, "recursion limit"),
    "deep objects": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "recursion limit"),
    "deep inside a field": (b'{"image":"x","question":"q","responses":' + b"[" * 5000 + b"]" * 5000 + b"}", "recursion limit"),
    "NaN": (b'{"image":"x","question":NaN,"responses":["a"]}', "not strict JSON"),
    "Infinity": (b'{"image":"x","question":"q","responses":["a"],"n":-Infinity}', "not strict JSON"),
    "1e999": (b'{"image":"x","question":"q","responses":["a"],"n":1e999}', "overflows a float"),
    "duplicate key": (b'{"image":"x","question":"q","question":"other","responses":["a"]}', "duplicate key 'question'"),
    "not UTF-8": (b'{"image":"x","question":"\xff","responses":["a"]}', "not UTF-8"),
    "lone surrogate": (b'{"image":"x","question":"\\ud800","responses":["a"]}', "not strict JSON"),
    "syntax": (b"{not json", "not strict JSON"),
    "two documents": (SCORE + SCORE, "trailing characters"),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    api = router.make_api(max_request_bytes=512 << 10)
    serving = ScorerServing(FakeModel(), ServingConfig(security=SecuritySettings(require_api_key=False)), store=None)
    api.dependency_overrides[router.current] = lambda: serving
    return TestClient(api, raise_server_exceptions=False)


def test_routes_hand_requests_to_the_serving_class_and_errors_keep_one_shape(client):
    scored = client.post("/v1/score", content=SCORE, headers=JSON)
    assert scored.status_code == 200 and scored.json()["scores"][0]["reward"] == 0.05, scored.text
    assert client.get("/readyz").json()["model_version"] == "v7"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert 'route="score",status="200"' in client.get("/metrics").text
    bad_image = client.post("/v1/score", json={"image": "x", "question": "q", "responses": ["a"]})
    assert bad_image.status_code == 400 and bad_image.json()["error"]["code"] == "invalid_image"
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"


def test_an_ingress_without_its_serving_installed_answers_503():
    starting = TestClient(router.make_api(max_request_bytes=1 << 20), raise_server_exceptions=False)
    r = starting.get("/readyz")
    assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"


@pytest.mark.parametrize("path", ["/v1/score", "/v1/compare", "/get_reward"])
@pytest.mark.parametrize("body, words", NOT_STRICT_JSON.values(), ids=NOT_STRICT_JSON.keys())
def test_bodies_that_are_not_strict_json_get_422_with_the_reason(client, path, body, words):
    r = client.post(path, content=body, headers=JSON)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and words in error["message"], error


def test_strict_json_still_reaches_the_route_and_its_validation(client):
    assert len(client.post("/v1/score", content=SCORE, headers=JSON).json()["scores"]) == 1
    assert client.post("/v1/score", content=SCORE, headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    wrong = client.post("/v1/score", content=b'{"image":"x","question":"q","responses":"a"}', headers=JSON)
    assert wrong.status_code == 422 and "responses" in wrong.json()["error"]["message"]


def test_a_body_that_is_not_declared_json_is_never_a_5xx(client):
    for body, _ in NOT_STRICT_JSON.values():
        r = client.post("/v1/score", content=body, headers={"Content-Type": "text/plain"})
        assert 400 <= r.status_code < 500, r.text
