"""Rationale engines: the template teacher, the GenRM, a faked vLLM and a local OpenAI server."""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.genrm.conftest import load, png
from tests.support.engines import FAST, Script, Server, ok, report
from vlgenrm.contracts import Choice
from vlgenrm.errors import ConfigError, PermanentError, TransientError
from vlgenrm.genrm.config import SamplingParams
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.genrm.verdicts import parse_verdict
from vlgenrm.rationale.config import EngineSettings
from vlgenrm.rationale.engines import OpenAIEngine, RationaleRequest, TemplateEngine, TransformersEngine, VLLMEngine, make_engine
from vlgenrm.retry import Backoff

IMG = png((200, 30, 30))


def request(rep=None, swapped: bool = False, question: str = "What is shown?") -> RationaleRequest:
    return RationaleRequest(image=IMG, question=question, response_a="A red square.", response_b="A dog.", evidence=None, report=rep, swapped=swapped)


# -- template ------------------------------------------------------------------------------------
def test_template_picks_the_response_with_fewer_contradictions_and_names_it():
    rep = report({Choice.B: 0.95}, {Choice.A: 0.9})
    [texts] = TemplateEngine().generate([request(rep)], SamplingParams(n=4, seed=1))
    assert len(texts) == 4
    assert {parse_verdict(t).option for t in texts} == {"A"}
    assert all("Response B" in t and "a contradicted dog in B" in t and "p=0.95" in t for t in texts)
    assert all(t.rstrip().endswith("Verdict: [[A]]") for t in texts)


def test_template_maps_the_original_order_when_swapped():
    rep = report({Choice.B: 0.95})
    [texts] = TemplateEngine().generate([request(rep, swapped=True)], SamplingParams(n=3, seed=1))
    # original A (shown as B) wins; original B's contradicted claim is attributed to shown A
    assert {parse_verdict(t).option for t in texts} == {"B"}
    assert all('Response A claims "a contradicted dog in B"' in t or "Response A's statement" in t or "Response A says" in t for t in texts)


def test_template_ties_go_to_support_and_wording_varies_with_seed():
    rep = report({Choice.A: 0.5, Choice.B: 0.5}, {Choice.B: 0.8})
    eng = TemplateEngine()
    [texts] = eng.generate([request(rep)], SamplingParams(n=8, seed=3))
    assert {parse_verdict(t).option for t in texts} == {"B"}
    assert len(set(texts)) > 1  # wording varies across samples
    assert eng.generate([request(rep)], SamplingParams(n=8, seed=3)) == [texts]  # deterministic


@pytest.mark.parametrize("rep", [None, report({})])
def test_template_without_findings_is_still_parseable_and_seeded(rep):
    eng = TemplateEngine()
    reqs = [request(rep, question=f"q{i}") for i in range(10)]
    out = eng.generate(reqs, SamplingParams(n=2, seed=7))
    assert all(parse_verdict(t).ok for texts in out for t in texts)
    assert all(len({parse_verdict(t).option for t in texts}) == 1 for texts in out)
    assert out == eng.generate(reqs, SamplingParams(n=2, seed=7))


def test_make_engine_kinds_and_config_errors():
    assert isinstance(make_engine(EngineSettings()), TemplateEngine)
    with pytest.raises(ConfigError):
        make_engine(EngineSettings(kind="openai", model="m"))
    with pytest.raises(ConfigError):
        make_engine(EngineSettings(kind="vllm"))
    with pytest.raises(ConfigError):
        make_engine(EngineSettings(kind="transformers"))
    eng = make_engine(EngineSettings(kind="openai", model="m", base_url="http://127.0.0.1:9/v1", api_key="sk"))
    assert eng.name == "openai:m" and eng.url == "http://127.0.0.1:9/v1/chat/completions"
    eng.close()


# -- transformers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory):
    return load(build_tiny_genrm(Path(tmp_path_factory.mktemp("tiny")) / "qwen2_vl", "qwen2_vl", seed=0))


def test_transformers_engine_shapes_and_seeded_determinism(tiny_qwen):
    eng = make_engine(EngineSettings(kind="transformers"), genrm=tiny_qwen)
    assert isinstance(eng, TransformersEngine) and eng.name.startswith("transformers:")
    reqs = [request(), RationaleRequest(IMG, "How many?", "Two.", "Three.", "Evidence from vision experts:\n- x")]
    params = SamplingParams(n=2, max_new_tokens=6, temperature=1.0, seed=0)
    out = eng.generate(reqs, params)
    assert [len(t) for t in out] == [2, 2] and all(isinstance(s, str) for t in out for s in t)
    assert eng.generate(reqs, params) == out
    assert eng.generate([], params) == []


# -- vllm (the one place a fake of a library's API is allowed) ----------------------------------
class _FakeVLLM:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        fake = self

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class Tokenizer:
            def apply_chat_template(self, messages, add_generation_prompt, tokenize):
                assert add_generation_prompt and not tokenize
                return "<chat>" + messages[0]["content"][1]["text"]

        class LLM:
            def __init__(self, model, **kwargs):
                fake.calls.append({"init": (model, kwargs)})

            def get_tokenizer(self):
                return Tokenizer()

            def generate(self, inputs, sampling_params, use_tqdm=True):
                fake.calls.append({"inputs": inputs, "sp": sampling_params.kwargs})
                n = sampling_params.kwargs["n"]
                out = types.SimpleNamespace
                return [out(outputs=[out(text=f"{i}:{j}:{x['prompt'].split(chr(10))[0]}") for j in range(n)]) for i, x in enumerate(inputs)]

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams


def test_vllm_engine_passes_params_images_prompts_and_keeps_order(monkeypatch):
    fake = _FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    eng = make_engine(EngineSettings(kind="vllm", model="/ckpt", vllm_args={"tensor_parallel_size": 2}))
    assert isinstance(eng, VLLMEngine) and eng.name == "vllm:/ckpt"
    assert fake.calls[0] == {"init": ("/ckpt", {"tensor_parallel_size": 2})}
    reqs = [request(question="first?"), request(question="second?")]
    out = eng.generate(reqs, SamplingParams(n=3, temperature=0.6, top_p=0.9, max_new_tokens=77, seed=5))
    call = fake.calls[1]
    assert call["sp"] == {"n": 3, "temperature": 0.6, "top_p": 0.9, "max_tokens": 77, "seed": 5}
    assert [x["prompt"].startswith("<chat>Question: first?") for x in call["inputs"]] == [True, False]
    assert "Question: second?" in call["inputs"][1]["prompt"]
    img = call["inputs"][0]["multi_modal_data"]["image"]
    assert img.size == (56, 56) and img.getpixel((0, 0)) == (200, 30, 30)
    assert out == [[f"{i}:{j}:<chat>Question: {q}" for j in range(3)] for i, q in enumerate(["first?", "second?"])]


def test_vllm_missing_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ConfigError, match="vllm"):
        VLLMEngine("/ckpt")


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Server, OpenAIEngine]]]:
    made: list = []

    def start(script: Script, **kwargs) -> tuple[Server, OpenAIEngine]:
        server = Server(script)
        engine = OpenAIEngine(server.url, "test-model", api_key="sk-test", **{"retry": FAST, "timeout_s": 2.0, **kwargs})
        made.append((server, engine))
        return server, engine

    yield start
    for server, engine in made:
        engine.close()
        server.close()


def test_openai_normal_request_schema_and_order(serve):
    server, eng = serve(lambda i, b: (200, {}, ok(b), 0.0))
    reqs = [request(question=f"q{i}?") for i in range(5)]
    out = eng.generate(reqs, SamplingParams(n=2, temperature=0.5, top_p=0.8, max_new_tokens=64, seed=9))
    assert out == [[f"Question: q{i}? #{j}\nVerdict: [[A]]" for j in range(2)] for i in range(5)]
    body = server.bodies[0]
    assert {k: body[k] for k in ("model", "n", "temperature", "top_p", "max_tokens", "seed")} == {
        "model": "test-model",
        "n": 2,
        "temperature": 0.5,
        "top_p": 0.8,
        "max_tokens": 64,
        "seed": 9,
    }
    image_part, text_part = body["messages"][0]["content"]
    assert image_part["type"] == "image_url" and image_part["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert text_part["type"] == "text" and "Response B: A dog." in text_part["text"]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    assert eng.generate([], SamplingParams()) == []


def test_openai_slow_server_times_out_retries_then_fails_in_bounded_time(serve):
    server, eng = serve(lambda i, b: (200, {}, ok(b), 5.0), timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(TransientError, match=r"chat/completions.*3 attempts.*timeout"):
        eng.generate([request()], SamplingParams())
    assert time.monotonic() - start < 2.0
    assert len(server.bodies) == 3


def test_openai_429_honours_retry_after_then_succeeds(serve):
    def script(i, b):
        return (429, {"Retry-After": "0.3"}, b'{"error": {"message": "slow down"}}', 0.0) if i == 0 else (200, {}, ok(b), 0.0)

    server, eng = serve(script, retry=Backoff(max_attempts=3, initial_s=0.01, max_s=1.0, jitter=0))
    start = time.monotonic()
    assert parse_verdict(eng.generate([request()], SamplingParams())[0][0]).option == "A"
    assert 0.3 <= time.monotonic() - start < 1.5 and len(server.bodies) == 2


def test_openai_retry_after_is_capped(serve):
    def script(i, b):
        return (429, {"Retry-After": "3600"}, b"{}", 0.0) if i == 0 else (200, {}, ok(b), 0.0)

    server, eng = serve(script)  # max_s = 0.05
    start = time.monotonic()
    eng.generate([request()], SamplingParams())
    assert time.monotonic() - start < 1.0


def test_openai_500_then_success(serve):
    server, eng = serve(lambda i, b: (500, {}, b"oops", 0.0) if i == 0 else (200, {}, ok(b), 0.0))
    assert len(eng.generate([request()], SamplingParams(n=3))[0]) == 3
    assert len(server.bodies) == 2


def test_openai_always_500_gives_up_after_max_attempts(serve):
    server, eng = serve(lambda i, b: (503, {}, b"down", 0.0), retry=Backoff(max_attempts=4, initial_s=0.01, max_s=0.02))
    with pytest.raises(TransientError, match=r"127\.0\.0\.1.*4 attempts.*HTTP 503"):
        eng.generate([request()], SamplingParams())
    assert len(server.bodies) == 4


def test_openai_connection_refused_is_transient():
    eng = OpenAIEngine("http://127.0.0.1:9/v1", "m", retry=FAST, timeout_s=1.0)
    with pytest.raises(TransientError, match="connection error"):
        eng.generate([request()], SamplingParams())
    eng.close()


@pytest.mark.parametrize("payload", [b"not json", b'{"id": "x"}', b'{"choices": [{"text": "legacy"}]}'])
def test_openai_malformed_reply_is_permanent_and_not_retried(serve, payload):
    server, eng = serve(lambda i, b: (200, {}, payload, 0.0))
    with pytest.raises(PermanentError, match="chat/completions: malformed"):
        eng.generate([request()], SamplingParams())
    assert len(server.bodies) == 1


def test_openai_4xx_is_permanent_with_the_servers_message(serve):
    server, eng = serve(lambda i, b: (400, {}, b'{"error": {"message": "image too large"}}', 0.0))
    with pytest.raises(PermanentError, match="HTTP 400: image too large"):
        eng.generate([request()], SamplingParams())
    assert len(server.bodies) == 1


def test_openai_wrong_number_of_choices_is_permanent(serve):
    server, eng = serve(lambda i, b: (200, {}, ok({**b, "n": 1}), 0.0))
    with pytest.raises(PermanentError, match="n=2"):
        eng.generate([request()], SamplingParams(n=2))


def test_openai_concurrency_limit_is_respected(serve):
    server, eng = serve(lambda i, b: (200, {}, ok(b), 0.1), concurrency=3)
    start = time.monotonic()
    out = eng.generate([request(question=f"q{i}?") for i in range(12)], SamplingParams())
    assert [t[0].split(" #")[0] for t in out] == [f"Question: q{i}?" for i in range(12)]
    assert server.max_inflight == 3
    assert time.monotonic() - start < 3.0
