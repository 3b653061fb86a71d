"""One live scorer on a real local Ray Serve (tiny Qwen2-VL GenRM) for every test of the
client and its trainer adapters, started once per package.

It starts with *no* model (nothing promoted in its namespace yet), so its start-up is the
client's "503 until ready" case: a request sent then is retried on 503 + Retry-After until the
model is promoted and loaded, and the fixture records what it saw for the test to check.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_ports, png, wait_http_ok
from vlgenrm.client import RetryPolicy, ScorerClient
from vlgenrm.evaluation.promotion import PromotionRecord, promote
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM, upload_checkpoint
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.scoring.config import ApiKey, SecuritySettings, ServingConfig
from vlgenrm.scoring.security import hash_key
from vlgenrm.settings import Settings, StoreKind, StoreSettings
from vlgenrm.store import LocalStore

KEY, LIMITED_KEY, REWARD_ONLY_KEY = "client-key", "limited-key", "reward-only-key"
NAMESPACE = "client-tests"
QUESTION = "What colour is the square?"
RESPONSES = ["It is red.", "It is blue.", "It is a green circle."]


IMAGE = png((200, 30, 30))
B64 = base64.b64encode(IMAGE).decode()


@dataclass
class Startup:
    """What a request sent before any model was loaded went through."""

    readyz_before: int = 0
    statuses: list[int] = field(default_factory=list)
    rewards: list[float] | None = None
    error: BaseException | None = None
    seconds: float = 0.0


@dataclass
class LiveScorer:
    url: str
    store: LocalStore
    model_uri: str
    genrm: GenRM  # the served checkpoint, loaded in this process
    startup: Startup

    def client(self, key: str | None = KEY, **options) -> ScorerClient:
        return ScorerClient(self.url, api_key=key, **options)

    def post(self, path: str, body: dict, key: str = KEY) -> httpx.Response:
        """A plain HTTP call, beside the client: what the client's answers must equal."""
        return httpx.post(self.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)

    def direct_rewards(self, image: str, question: str, responses: list[str]) -> list[float]:
        r = self.post("/v1/score", {"image": image, "question": question, "responses": responses})
        assert r.status_code == 200, r.text
        return [s["reward"] for s in r.json()["scores"]]


def _serving(port: int) -> ServingConfig:
    keys = [
        ApiKey(name="client-tests", sha256=hash_key(KEY), rate_per_s=1000, burst=1000),
        ApiKey(name="limited", sha256=hash_key(LIMITED_KEY), rate_per_s=1, burst=1),
        ApiKey(name="rl", sha256=hash_key(REWARD_ONLY_KEY), scopes=["reward"], rate_per_s=1000, burst=1000),
    ]
    security = SecuritySettings(api_keys=keys, max_request_bytes=512 << 10, max_image_bytes=100 << 10, allowed_hosts=["127.0.0.1"], image_fetch_timeout_s=5)
    return ServingConfig(
        model=None,
        namespace=NAMESPACE,
        watch_promoted_s=0.5,
        port=port,
        host="127.0.0.1",
        max_batch_size=16,
        batch_wait_timeout_s=0.02,
        num_cpus=1,
        genrm=GenRMSettings(batch_size=16),
        security=security,
    )


def _first_request(url: str, startup: Startup) -> None:
    """A score request sent while no model is loaded (runs in a thread)."""
    hooks = {"response": [lambda response: startup.statuses.append(response.status_code)]}
    started = time.monotonic()
    try:
        with ScorerClient(url, KEY, retry=RetryPolicy(max_attempts=60, max_retry_after_s=10, deadline_s=240), event_hooks=hooks) as client:
            startup.rewards = [s.reward for s in client.score(IMAGE, QUESTION, RESPONSES).scores]
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        startup.error = exc
    startup.seconds = time.monotonic() - started


@pytest.fixture(scope="package")
def live(local_ray, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveScorer]:
    from ray import serve

    from vlgenrm.services.scorer.server import start

    root = tmp_path_factory.mktemp("client-scorer")
    store = LocalStore(root / "store")
    path = build_tiny_genrm(root / "genrm", "qwen2_vl", seed=0)
    uri = upload_checkpoint(path, store, "checkpoints/client-tests/model")
    genrm = GenRM.load(path, GenRMSettings())
    url = start(Settings(store=StoreSettings(kind=StoreKind.LOCAL, root=root / "store"), serving=_serving(free_ports()[0])))
    try:
        wait_http_ok(url + "/healthz", timeout_s=240)
        startup = Startup(readyz_before=httpx.get(url + "/readyz", timeout=30).status_code)
        thread = threading.Thread(target=_first_request, args=(url, startup), daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not startup.statuses and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        promote(store, PromotionRecord(namespace=NAMESPACE, iteration="it-1", model=uri, model_version=genrm.version, accuracy=0.9, dataset="eval"))
        thread.join(300)
        wait_http_ok(url + "/readyz", timeout_s=240)
        yield LiveScorer(url, store, uri, genrm, startup)
    finally:
        serve.shutdown()


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "square.png"
    path.write_bytes(IMAGE)
    return path
