"""The vLLM backend (``genrm.backend: vllm``) against vLLM's API contract.

vLLM needs a GPU, so ``vllm`` is a fake module here (the one kind of fake the project allows:
a library that cannot run on this machine). It keeps vLLM's contract — token prompts with
one image placeholder that the engine expands itself, ``prompt_logprobs`` aligned with the
expanded ``prompt_token_ids`` (None first, then ``{token id: Logprob}``), text prompts for
generation, ``ValueError`` for a prompt over ``max_model_len`` — and computes the numbers with
the same tiny checkpoint through transformers, so the backend's margins must equal the
transformers backend's: every family, both modes, direct and after a critique, batched and one
by one.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from tests.genrm.conftest import DEVICE, FAMILIES, QUERIES, TARGETS, load
from vlgenrm.errors import ConfigError
from vlgenrm.genrm.config import Backend, GenRMSettings, SamplingParams
from vlgenrm.genrm.errors import ContextTooLongError
from vlgenrm.genrm.model import GenRM, PairwiseQuery, PointwiseQuery
from vlgenrm.genrm.verdicts import Mode
from vlgenrm.genrm.vllm_backend import VLLMBackend

TOL = 1e-5 if DEVICE == "cpu" else 1e-3


class FakeVLLM:
    """A ``vllm`` module whose LLM runs the checkpoint through transformers."""

    def __init__(self) -> None:
        self.inits: list[tuple[str, dict]] = []
        self.calls: list[tuple[list[dict], dict]] = []
        fake = self

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class LLM:
            def __init__(self, model: str, **kwargs):
                fake.inits.append((model, kwargs))
                self.max_model_len = kwargs["max_model_len"]
                self.ref = load(Path(model))

            def generate(self, inputs, params, use_tqdm=True):
                fake.calls.append((inputs, params.kwargs))
                if "prompt_logprobs" in params.kwargs:
                    return [self._prompt_logprobs(x["prompt_token_ids"], x["multi_modal_data"]["image"]) for x in inputs]
                sp = params.kwargs
                out = []
                for x in inputs:
                    texts = self.ref.generate([(x["multi_modal_data"]["image"], x["prompt"])], _ours(sp))[0]
                    out.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=t) for t in texts]))
                return out

            @torch.inference_mode()
            def _prompt_logprobs(self, ids, image):
                ref = self.ref
                image_id = ref.tokenizer.convert_tokens_to_ids(ref.processor.image_token)
                assert ids.count(image_id) == 1, "one placeholder per image, as vLLM's processors expect"
                enc = ref.encode_prompt(image, ref.processor.image_token)  # the engine's own image processing
                is_image = enc["input_ids"][0] == image_id
                at = ids.index(image_id)
                full = ids[:at] + [image_id] * int(is_image.sum()) + ids[at + 1 :]
                if len(full) > self.max_model_len:
                    raise ValueError(f"The decoder prompt (length {len(full)}) is longer than the maximum model length of {self.max_model_len}.")
                features = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")}
                input_ids = torch.tensor([full])
                features |= {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
                for key in ("mm_token_type_ids", "token_type_ids"):
                    if key in enc:
                        features[key] = torch.where(input_ids == image_id, enc[key][0][is_image][0], torch.zeros_like(input_ids))
                device = ref.device
                logits = ref.model(**{k: v.to(device) for k, v in features.items()}).logits[0].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                entries = [None] + [{tok: types.SimpleNamespace(logprob=float(logprobs[i - 1, tok]), rank=1)} for i, tok in enumerate(full) if i > 0]
                return types.SimpleNamespace(prompt_token_ids=full, prompt_logprobs=entries, outputs=[types.SimpleNamespace(text="")])

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams


def _ours(kwargs: dict) -> SamplingParams:
    """vLLM's sampling keyword arguments back to ours."""
    return SamplingParams(n=kwargs["n"], temperature=kwargs["temperature"], top_p=kwargs["top_p"], max_new_tokens=kwargs["max_tokens"], seed=kwargs["seed"])


@pytest.fixture
def fake_vllm(monkeypatch) -> FakeVLLM:
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    return fake


def _settings(**kwargs) -> GenRMSettings:
    return GenRMSettings(device=DEVICE, backend=Backend.VLLM, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("restate", [True, False])
def test_vllm_backend_scores_equal_the_transformers_backend(fake_vllm, tiny_dirs, family: str, restate: bool):
    path = tiny_dirs[family]
    reference = load(path, settings={"restate": restate})
    served = GenRM.load(path, _settings(restate=restate))
    assert served.model is None and isinstance(served.backend, VLLMBackend) and served.version == reference.version
    points = [PointwiseQuery(q.image, q.question, q.response_a, q.critique) for q in QUERIES]
    queries = [*QUERIES, PairwiseQuery(QUERIES[0].image, "What is shown?", "A red circle and a blue star.", "A red circle and a green star.")]
    targets = [*TARGETS, TARGETS[0]]
    for genrm in (reference, served):
        genrm.numbers = (
            genrm.pairwise_probs(queries),
            genrm.margins(queries, targets),
            genrm.pointwise_probs(points),
            [genrm.margins([q], [t])[0] for q, t in zip(queries, targets, strict=True)],
        )
    for ref, got in zip(reference.numbers, served.numbers, strict=True):
        assert got == pytest.approx(ref, abs=TOL, rel=1e-5)
    probs = served.numbers[0]
    assert len({round(p, 6) for p in probs}) == len(probs)  # not one constant answer
    # Every scored request was one token prompt with one unexpanded placeholder and its image.
    scored = [x for inputs, kw in fake_vllm.calls if "prompt_logprobs" in kw for x in inputs]
    assert len(scored) == 2 * (2 * len(queries) + len(targets) + len(points) + len(targets))
    assert all(set(x) == {"prompt_token_ids", "multi_modal_data"} for x in scored)
    assert {tuple(kw.items()) for _, kw in fake_vllm.calls} == {(("max_tokens", 1), ("temperature", 0.0), ("prompt_logprobs", 0), ("detokenize", False))}


def test_engine_arguments_and_overrides(fake_vllm, tiny_dirs):
    GenRM.load(tiny_dirs["qwen2_vl"], _settings(max_length=2048, vllm_args={"gpu_memory_utilization": 0.5, "seed": 7}))
    model, kwargs = fake_vllm.inits[0]
    assert model == str(tiny_dirs["qwen2_vl"])
    assert kwargs == {
        "enable_prefix_caching": True,
        "limit_mm_per_prompt": {"image": 1},
        "max_model_len": 2048,
        "dtype": "float32",
        "seed": 7,
        "gpu_memory_utilization": 0.5,
    }


def test_generation_goes_through_vllm_with_our_sampling(fake_vllm, tiny_dirs):
    served = GenRM.load(tiny_dirs["qwen2_vl"], _settings())
    q = QUERIES[0]
    prompt = served.prompt(Mode.POINTWISE, q.question, (q.response_a,))
    texts = served.generate([(q.image, prompt)], SamplingParams(max_new_tokens=5, temperature=0.8, top_p=0.9, n=2, seed=3))
    inputs, kwargs = fake_vllm.calls[-1]
    assert kwargs == {"n": 2, "temperature": 0.8, "top_p": 0.9, "max_tokens": 5, "seed": 3}
    assert inputs[0]["prompt"] == prompt and inputs[0]["multi_modal_data"]["image"].mode == "RGB"
    assert len(texts) == 1 and len(texts[0]) == 2 and all(isinstance(t, str) for t in texts[0])


def test_a_prompt_over_max_model_len_is_a_context_error(fake_vllm, tiny_dirs):
    q = QUERIES[1]
    probe = GenRM.load(tiny_dirs["qwen2_vl"], _settings())
    prompt = probe.prompt(Mode.PAIRWISE, q.question, (q.response_a, q.response_b))
    text_tokens = len(probe.tokenizer(prompt)["input_ids"]) + max(
        len(probe.token_ids(probe.continuation(Mode.PAIRWISE, "", o, (q.response_a, q.response_b)))) for o in "AB"
    )
    # Fits as text, not once vLLM expands the image: the engine's own error, typed.
    served = GenRM.load(tiny_dirs["qwen2_vl"], _settings(max_length=text_tokens + 1))
    with pytest.raises(ContextTooLongError, match="maximum model length"):
        served.pairwise_probs([q])
    with pytest.raises(ContextTooLongError, match="exceed max_length"):  # too long as text already: caught before vLLM
        GenRM.load(tiny_dirs["qwen2_vl"], _settings(max_length=text_tokens - 1)).pairwise_probs([q])


def test_vllm_missing_adapter_and_saving_are_config_errors(monkeypatch, tiny_dirs, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(ConfigError, match="needs the 'vllm' package"):
        GenRM.load(tiny_dirs["qwen2_vl"], _settings())
    with pytest.raises(ConfigError, match="merge the LoRA adapter"):
        GenRM.load(tiny_dirs["qwen2_vl"], _settings(), adapter=tmp_path)
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    with pytest.raises(ConfigError, match="no transformers weights"):
        GenRM.load(tiny_dirs["qwen2_vl"], _settings()).save(tmp_path / "out")
