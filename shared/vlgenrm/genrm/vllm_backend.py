"""The vLLM backend of a GenRM (``genrm.backend: vllm``), for serving on GPU clusters.

Only the forward passes move to vLLM: prompts, chat templates, continuations, the shared
prefix of the two options and the verdict arithmetic stay :class:`~vlgenrm.genrm.model.GenRM`'s,
so a model scores the same on either backend (``tests/genrm/test_vllm_backend.py`` checks it
against the transformers path within 1e-5).

Scoring sends each option as one *token* prompt — the chat-templated prompt with its single
image placeholder, then the option's continuation — with ``prompt_logprobs=0`` and
``max_tokens=1``, and sums the log-probabilities vLLM reports for the continuation's last
``tail`` tokens (the tokens after the options' shared prefix). vLLM expands the placeholder
into the image's tokens itself; the tail is the end of the prompt either way, and it is
checked against what was sent.

What vLLM caches: the engine runs with prefix caching on and images are hashed, so the two
options and both presentation orders of an image share its vision encoding; prompt
log-probabilities themselves are not cached by vLLM, so each option's prefill is computed
again (vLLM documents this for prompt-logprob requests). Critique generation (``generate``)
uses the prefix cache fully.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlgenrm.errors import ConfigError
from vlgenrm.genrm.config import GenRMSettings, SamplingParams
from vlgenrm.genrm.errors import ContextTooLongError

#: vLLM's message for a prompt longer than max_model_len (ValueError), across versions.
_TOO_LONG = re.compile(r"longer than the maximum model length|exceeds the max(imum)? model length|max_model_len", re.IGNORECASE)


@dataclass(frozen=True)
class TailRequest:
    """One option to score: the image, the prompt's and continuation's token ids, and how many
    of the last tokens count (the continuation after the options' shared prefix)."""

    image: Image.Image
    token_ids: list[int]
    tail: int


def engine_args(settings: GenRMSettings) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments: what scoring needs, then the user's ``vllm_args``."""
    return {
        "enable_prefix_caching": True,
        "limit_mm_per_prompt": {"image": 1},
        "max_model_len": settings.max_length,
        "dtype": settings.dtype.value,
        "seed": 0,
        **settings.vllm_args,
    }


class VLLMBackend:
    """A ``vllm.LLM`` over a checkpoint folder, answering the GenRM's two primitives."""

    def __init__(self, path: Path, settings: GenRMSettings) -> None:
        try:
            from vllm import LLM
            from vllm import SamplingParams as VLLMSamplingParams
        except ImportError as exc:
            raise ConfigError("genrm.backend=vllm needs the 'vllm' package (pip install vllm, on a GPU machine); use backend transformers otherwise") from exc
        self._params = VLLMSamplingParams
        self.llm = LLM(model=str(path), **engine_args(settings))

    def _run(self, inputs: list[dict[str, Any]], params: Any) -> list[Any]:
        try:
            return self.llm.generate(inputs, params, use_tqdm=False)
        except ValueError as exc:
            if _TOO_LONG.search(str(exc)):
                raise ContextTooLongError(f"vLLM: {exc}") from exc
            raise

    def tail_logprobs(self, requests: Sequence[TailRequest]) -> list[float]:
        """Sum of log p over each request's last ``tail`` tokens, in request order."""
        if not requests:
            return []
        params = self._params(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self._run([{"prompt_token_ids": r.token_ids, "multi_modal_data": {"image": r.image}} for r in requests], params)
        totals = []
        for request, output in zip(requests, outputs, strict=True):
            if request.tail == 0:
                totals.append(0.0)
                continue
            ids, logprobs = list(output.prompt_token_ids), output.prompt_logprobs
            start = len(ids) - request.tail
            if ids[start:] != request.token_ids[-request.tail :]:
                raise RuntimeError(f"vLLM changed the scored tokens: sent {request.token_ids[-request.tail :]}, prompt ends {ids[start:]}")
            totals.append(float(sum(logprobs[pos][ids[pos]].logprob for pos in range(start, len(ids)))))
        return totals

    def generate(self, items: Sequence[tuple[Image.Image, str]], params: SamplingParams) -> list[list[str]]:
        """``params.n`` sampled continuations of each (image, chat-templated prompt)."""
        if not items:
            return []
        sampling = self._params(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens, seed=params.seed)
        outputs = self._run([{"prompt": prompt, "multi_modal_data": {"image": image}} for image, prompt in items], sampling)
        return [[o.text for o in output.outputs] for output in outputs]
