"""Critique generators for §3.3 behind one interface: ``engine.generate(requests, params)``
returns ``params.n`` critiques per request, each meant to end with a verdict line.

- ``TemplateEngine``: a rule-based iteration-0 teacher for the synthetic domain on a CPU. It is
  *not* a language model: it writes critiques from the ExpertReport's findings or, given no
  report, a critique that rationalises the label it is told (the control arms).
- ``TransformersEngine``: the GenRM itself (``GenRM.generate``), e.g. ``M_t`` from iteration 1 on.
- ``VLLMEngine``: offline batched generation with vLLM (imported only when configured).
- ``OpenAIEngine``: any OpenAI-compatible ``/chat/completions`` endpoint over httpx, with
  bounded concurrency, per-request timeouts and bounded retries.

Requests carry the responses in the order SHOWN to the generator; ``swapped`` says the shown A
is the original B (the report's ``Choice`` values and ``label`` always refer to the original
order).

The model engines also complete text-only prompts (``engine.complete(prompts, params)``, a
:class:`TextPrompt` per prompt: our instruction plus untrusted data): the LLM claim extractor
of the experts stage (``vlgenrm.experts.llm_claims``) runs on them. The data part never becomes
control tokens: special-token strings in it are broken like ``GenRM.as_data`` breaks them.
"""

from __future__ import annotations

import base64
import io
import random
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from vlgenrm.contracts import Choice, ExpertReport, VerdictLabel
from vlgenrm.errors import ConfigError, PermanentError, TransientError
from vlgenrm.experts.verify import claim_findings
from vlgenrm.genrm.config import SamplingParams
from vlgenrm.genrm.prompts import pairwise_messages
from vlgenrm.genrm.verdicts import Mode, verdict_line
from vlgenrm.rationale.config import EngineSettings
from vlgenrm.retry import Backoff


@dataclass(frozen=True)
class RationaleRequest:
    """One prompt to critique, responses in the order shown to the generator."""

    image: bytes
    question: str
    response_a: str
    response_b: str
    evidence: str | None
    report: ExpertReport | None = None
    swapped: bool = False  # True: the shown A is the original B
    #: The training label the teacher is told, in the ORIGINAL order; None = not told. Only the
    #: template teacher reads it, and only without a report (see ``TemplateEngine``).
    label: Choice | None = None


@dataclass(frozen=True)
class TextPrompt:
    """A text-only user turn: our ``instruction``, then ``data`` (user or response text), which
    the engine passes as data: special-token strings in it are broken, never control tokens."""

    instruction: str
    data: str


#: Data breaker (U+2060 WORD JOINER, as ``GenRM.as_data``): invisible, and splits a special
#: token's string so no tokenizer reads it as that token.
DATA_BREAK = "\u2060"
#: Special-token spellings of the common chat templates (ChatML/Qwen, Llama 3, Llama 2/Mistral,
#: Gemma, Phi, LLaVA), for servers whose tokenizer this process cannot see (openai).
GENERIC_SPECIALS = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|<image>|<bos>|<eos>|<pad>")


def breaker(specials: Sequence[str] | None = None) -> Callable[[str], str]:
    """A function that breaks every occurrence of ``specials`` (longest first) or, given none,
    of :data:`GENERIC_SPECIALS` in a text with :data:`DATA_BREAK` after its first character."""
    if specials is None:
        pattern = GENERIC_SPECIALS
    else:
        breakable = sorted({t for t in specials if len(t) > 1}, key=len, reverse=True)
        if not breakable:
            return lambda text: text
        pattern = re.compile("|".join(map(re.escape, breakable)))
    return lambda text: pattern.sub(lambda m: m[0][0] + DATA_BREAK + m[0][1:], text)


def text_messages(prompt: TextPrompt, guard: Callable[[str], str], *, parts: bool = False) -> list[dict[str, Any]]:
    """One user turn: the instruction, a blank line, the guarded data (as content parts with ``parts``)."""
    text = f"{prompt.instruction}\n\n{guard(prompt.data)}"
    return [{"role": "user", "content": [{"type": "text", "text": text}] if parts else text}]


class RationaleEngine(ABC):
    name: str

    @abstractmethod
    def generate(self, requests: Sequence[RationaleRequest], params: SamplingParams) -> list[list[str]]:
        """``params.n`` critiques per request, in request order."""

    def complete(self, prompts: Sequence[TextPrompt], params: SamplingParams) -> list[list[str]]:
        """``params.n`` completions per text-only prompt, in order (model engines only)."""
        raise ConfigError(f"engine {self.name} does not complete free text prompts: use kind=transformers, vllm or openai")


def make_engine(settings: EngineSettings, *, genrm: Any = None) -> RationaleEngine:
    """The engine ``settings`` describe; ``genrm`` (a loaded GenRM) serves kind=transformers."""
    if settings.kind == "template":
        return TemplateEngine()
    if settings.kind == "transformers":
        if genrm is None:
            if not settings.model:
                raise ConfigError("engine kind=transformers needs a loaded genrm or settings.model")
            from vlgenrm.genrm.model import GenRM

            genrm = GenRM.load(settings.model, settings.genrm)
        return TransformersEngine(genrm)
    if not settings.model:
        raise ConfigError(f"engine kind={settings.kind} needs settings.model")
    if settings.kind == "vllm":
        return VLLMEngine(settings.model, **settings.vllm_args)
    if not settings.base_url:
        raise ConfigError("engine kind=openai needs settings.base_url")
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return OpenAIEngine(settings.base_url, settings.model, api_key=key, concurrency=settings.concurrency, timeout_s=settings.timeout_s, retry=settings.retry)


# -- template teacher ----------------------------------------------------------------------------
_CONTRA = (
    'Response {r} claims "{s}", which the vision experts contradict (p={p:.2f}).',
    'The experts contradict Response {r}\'s statement "{s}" (p={p:.2f}).',
    'Response {r} says "{s}", but the image evidence disagrees (p={p:.2f}).',
)
_SUPPORT = (
    'Response {r}\'s claim "{s}" is supported by the experts (p={p:.2f}).',
    'The experts confirm "{s}" from Response {r} (p={p:.2f}).',
)
_ALL_SUPPORTED = ("Response {r}'s claims are all supported.", "Nothing in Response {r} is contradicted by the image.")
_NO_FINDINGS = ("The experts could not check the claims of Response {r}.", "No claim of Response {r} could be verified either way.")
_CONCLUDE = ("Response {w} is more faithful to the image.", "Overall, Response {w} hallucinates less.")
_CONCLUDE_SUPPORT = ("Response {w} has more verified content.", "More of Response {w} is confirmed by the image.")
_CONCLUDE_TIE = ("With no decisive evidence, Response {w} is slightly preferable.", "On balance, Response {w} is the better answer.")
# Without a report, rationalising a given label: nothing here may cite experts or findings.
_LABEL_DOUBT = (
    'Response {r} says "{s}", which does not look right.',
    'I doubt Response {r}\'s answer: "{s}".',
    'Response {r}\'s account, "{s}", seems less reliable.',
)
_LABEL_CONCLUDE = (
    "Response {w} gives the more convincing answer.",
    "On reflection, Response {w} is the better answer.",
    "Response {w} answers the question more plausibly.",
)


class TemplateEngine(RationaleEngine):
    """Iteration-0 rule-based teacher for the synthetic domain (CPU, no language model).

    With a report (the method): the winner (in the original order) hallucinates less (lower
    summed p of contradicted claims, h); ties go to more support (s); a full tie to a seeded
    coin. The request's ``label`` is ignored.

    Without a report but with a ``label`` (the control arms, ``teacher_sees=label``): the critique
    justifies that label whatever it is, right or wrong: it casts doubt on the other response's
    answer (quoted) and concludes for the label. It cites no expert and no finding: a teacher
    that rationalises the label it is given, with no vision evidence.

    With neither: no findings, a seeded coin. The ``n`` samples vary wording (phrasings drawn
    from ``Random(f"{seed}:{index}:{sample}")``), never the verdict.
    """

    name = "template"

    def generate(self, requests: Sequence[RationaleRequest], params: SamplingParams) -> list[list[str]]:
        seed = params.seed if params.seed is not None else 0
        return [[self.critique(req, random.Random(f"{seed}:{i}:{j}"), random.Random(f"{seed}:{i}")) for j in range(params.n)] for i, req in enumerate(requests)]

    @staticmethod
    def critique(req: RationaleRequest, rng: random.Random, coin: random.Random) -> str:
        shown = {Choice.A: Choice.B, Choice.B: Choice.A} if req.swapped else {Choice.A: Choice.A, Choice.B: Choice.B}
        if req.report is None and req.label is not None:
            return TemplateEngine._rationalise(req, req.label, shown, rng)
        contra: dict[Choice, list[tuple[float, str]]] = {Choice.A: [], Choice.B: []}
        support: dict[Choice, list[tuple[float, str]]] = {Choice.A: [], Choice.B: []}
        if req.report is not None:
            findings = claim_findings(req.report.claims, req.report.verdicts)
            for claim in req.report.claims:
                label, p = findings[claim.id]
                span = (claim.span or claim.subject).replace("[[", "[").replace("]]", "]").replace('"', "'")
                if label is VerdictLabel.CONTRADICTED:
                    contra[claim.response].append((p, span))
                elif label is VerdictLabel.SUPPORTED:
                    support[claim.response].append((p, span))
        h = {c: sum(p for p, _ in contra[c]) for c in Choice}
        s = {c: sum(p for p, _ in support[c]) for c in Choice}
        if abs(h[Choice.A] - h[Choice.B]) > 1e-9:
            winner, conclude = (Choice.A if h[Choice.A] < h[Choice.B] else Choice.B), _CONCLUDE
        elif abs(s[Choice.A] - s[Choice.B]) > 1e-9:
            winner, conclude = (Choice.A if s[Choice.A] > s[Choice.B] else Choice.B), _CONCLUDE_SUPPORT
        else:
            winner, conclude = coin.choice([Choice.A, Choice.B]), _CONCLUDE_TIE
        lines = []
        for orig in sorted(Choice, key=lambda c: shown[c].value):  # talk about shown A first
            r = shown[orig].value
            for p, span in sorted(contra[orig], reverse=True)[:3]:
                lines.append(rng.choice(_CONTRA).format(r=r, s=span, p=p))
            if not contra[orig] and support[orig]:
                lines.append(rng.choice(_ALL_SUPPORTED).format(r=r))
            elif support[orig]:
                p, span = max(support[orig])
                lines.append(rng.choice(_SUPPORT).format(r=r, s=span, p=p))
            if not contra[orig] and not support[orig]:
                lines.append(rng.choice(_NO_FINDINGS).format(r=r))
        lines.append(rng.choice(conclude).format(w=shown[winner].value))
        return " ".join(lines) + "\n" + verdict_line(shown[winner].value)

    @staticmethod
    def _rationalise(req: RationaleRequest, label: Choice, shown: dict[Choice, Choice], rng: random.Random) -> str:
        """A critique for ``label`` (original order) that uses nothing but the two responses."""
        w = shown[label]
        loser = Choice.B if w is Choice.A else Choice.A  # in the shown order
        quoted = _quote(req.response_a if loser is Choice.A else req.response_b)
        lines = [rng.choice(_LABEL_DOUBT).format(r=loser.value, s=quoted), rng.choice(_LABEL_CONCLUDE).format(w=w.value)]
        return " ".join(lines) + "\n" + verdict_line(w.value)


def _quote(response: str, limit: int = 80) -> str:
    """The first sentence of a response, shortened, safe inside a critique's quotes."""
    text = " ".join(response.split()).replace("[[", "[").replace("]]", "]").replace('"', "'")
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."


# -- local models ---------------------------------------------------------------------------------
class TransformersEngine(RationaleEngine):
    """Critiques sampled from a loaded GenRM (already batched by ``GenRM.generate``)."""

    def __init__(self, genrm: Any) -> None:
        self.genrm = genrm
        self.name = f"transformers:{getattr(genrm, 'version', 'genrm')}"

    def generate(self, requests: Sequence[RationaleRequest], params: SamplingParams) -> list[list[str]]:
        items = [(r.image, self.genrm.prompt(Mode.PAIRWISE, r.question, (r.response_a, r.response_b), r.evidence)) for r in requests]
        return self.genrm.generate(items, params) if items else []

    def complete(self, prompts: Sequence[TextPrompt], params: SamplingParams) -> list[list[str]]:
        """Text-only generation (no image, so no vision tokens), batched with left padding by
        ``genrm.settings.batch_size``; the data goes in through ``genrm.as_data``."""
        import torch

        from vlgenrm.genrm.errors import ContextTooLongError

        if not prompts:
            return []
        g = self.genrm
        texts = [g.processor.apply_chat_template(text_messages(p, g.as_data, parts=True), add_generation_prompt=True, tokenize=False) for p in prompts]
        if params.seed is not None:
            torch.manual_seed(params.seed)
        sample = params.temperature > 0
        outputs: list[list[str]] = []
        for start in range(0, len(texts), g.settings.batch_size):
            chunk = texts[start : start + g.settings.batch_size]
            enc = g.tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            if enc["input_ids"].shape[1] + params.max_new_tokens > g.settings.max_length:
                raise ContextTooLongError(
                    f"prompt of {enc['input_ids'].shape[1]} tokens + {params.max_new_tokens} new tokens exceed max_length={g.settings.max_length}"
                )
            with torch.inference_mode():
                generated = g.model.generate(
                    input_ids=enc["input_ids"].to(g.device),
                    attention_mask=enc["attention_mask"].to(g.device),
                    max_new_tokens=params.max_new_tokens,
                    do_sample=sample,
                    temperature=params.temperature if sample else None,
                    top_p=params.top_p if sample else None,
                    num_return_sequences=params.n,
                    pad_token_id=g.tokenizer.pad_token_id,
                    eos_token_id=g.tokenizer.eos_token_id,
                )
            decoded = g.tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            outputs += [decoded[i * params.n : (i + 1) * params.n] for i in range(len(chunk))]
        return outputs


class VLLMEngine(RationaleEngine):
    """Offline batched generation with vLLM: ``LLM.generate`` on chat-templated prompts + PIL images.

    ``prompt_fn`` overrides the prompt (default: the model tokenizer's chat template applied to
    ``pairwise_messages``, the same messages the GenRM uses).
    """

    def __init__(self, model: str, prompt_fn: Callable[[RationaleRequest], str] | None = None, **kwargs: Any) -> None:
        try:
            from vllm import LLM
            from vllm import SamplingParams as VSP
        except ImportError as exc:
            raise ConfigError(
                "engine kind=vllm needs the 'vllm' package (pip install vllm, on a GPU machine); use kind=transformers or openai otherwise"
            ) from exc
        self._vsp = VSP
        self.llm = LLM(model=model, **kwargs)
        self.name = f"vllm:{model}"
        self._prompt_fn = prompt_fn or self._chat_prompt

    def _chat_prompt(self, r: RationaleRequest) -> str:
        messages = pairwise_messages(r.question, r.response_a, r.response_b, r.evidence)
        return self.llm.get_tokenizer().apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, requests: Sequence[RationaleRequest], params: SamplingParams) -> list[list[str]]:
        from PIL import Image

        if not requests:
            return []
        sp = self._vsp(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens, seed=params.seed)
        inputs = [{"prompt": self._prompt_fn(r), "multi_modal_data": {"image": Image.open(io.BytesIO(r.image)).convert("RGB")}} for r in requests]
        results = self.llm.generate(inputs, sp, use_tqdm=False)
        return [[o.text for o in res.outputs] for res in results]

    def complete(self, prompts: Sequence[TextPrompt], params: SamplingParams) -> list[list[str]]:
        """Text-only prompts through the tokenizer's chat template; the data's special tokens broken."""
        if not prompts:
            return []
        tokenizer = self.llm.get_tokenizer()
        specials = [
            *getattr(tokenizer, "all_special_tokens", []),
            *(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if getattr(t, "special", False)),
        ]
        guard = breaker(specials)
        sp = self._vsp(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens, seed=params.seed)
        inputs = [{"prompt": tokenizer.apply_chat_template(text_messages(p, guard), add_generation_prompt=True, tokenize=False)} for p in prompts]
        results = self.llm.generate(inputs, sp, use_tqdm=False)
        return [[o.text for o in res.outputs] for res in results]


# -- OpenAI-compatible HTTP -----------------------------------------------------------------------
class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _mime(data: bytes) -> str:
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:3] == b"GIF":
        return "image/gif"
    return "image/png"


def chat_messages(r: RationaleRequest) -> list[dict[str, Any]]:
    """OpenAI chat messages: the GenRM's pairwise prompt with the image as a data URL."""
    url = f"data:{_mime(r.image)};base64,{base64.b64encode(r.image).decode()}"
    messages = pairwise_messages(r.question, r.response_a, r.response_b, r.evidence)
    for m in messages:
        m["content"] = [{"type": "image_url", "image_url": {"url": url}} if part["type"] == "image" else part for part in m["content"]]
    return messages


class OpenAIEngine(RationaleEngine):
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM serve, SGLang, ...).

    One POST per request (``n`` samples), at most ``concurrency`` in flight, ``timeout_s`` per
    HTTP request; 429 (``Retry-After`` honoured, capped at ``retry.max_s``), 5xx, timeouts and
    connection errors are retried up to ``retry.max_attempts`` attempts, then ``TransientError``.
    Other 4xx and malformed replies raise ``PermanentError`` at once.
    """

    def __init__(
        self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 8, timeout_s: float = 60.0, retry: Backoff | None = None
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"openai:{model}"
        self.concurrency = concurrency
        self.retry = retry or Backoff()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s), limits=limits)
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()
        self._client.close()

    def generate(self, requests: Sequence[RationaleRequest], params: SamplingParams) -> list[list[str]]:
        if not requests:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)), thread_name_prefix="openai-engine")
        try:
            futures = [pool.submit(self._complete, chat_messages(r), params) for r in requests]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def complete(self, prompts: Sequence[TextPrompt], params: SamplingParams) -> list[list[str]]:
        """One POST per text-only prompt (string content); the server's template is unknown
        here, so the data's spellings of the common special tokens are broken (:data:`GENERIC_SPECIALS`)."""
        if not prompts:
            return []
        guard = breaker()
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)), thread_name_prefix="openai-engine")
        try:
            futures = [pool.submit(self._complete, text_messages(p, guard), params) for p in prompts]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, messages: list[dict[str, Any]], params: SamplingParams) -> list[str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        delays = self.retry.delays()
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return self._post(body, params.n)
            except _Retryable as exc:
                delay = next(delays, None)
                if delay is None:
                    raise TransientError(f"{self.url}: gave up after {attempt} attempts; last: {exc}") from exc
                if exc.retry_after is not None:
                    delay = min(exc.retry_after, self.retry.max_s)
                if self._stop.wait(delay):
                    raise TransientError(f"{self.url}: engine closed while retrying; last: {exc}") from exc
        raise AssertionError("unreachable")

    def _post(self, body: dict[str, Any], n: int) -> list[str]:
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"connection error: {exc!r}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]}", _retry_after(resp) if resp.status_code == 429 else None)
        if resp.status_code >= 400:
            raise PermanentError(f"{self.url}: HTTP {resp.status_code}: {_server_message(resp)}")
        try:
            choices = resp.json()["choices"]
            texts = [c["message"]["content"] or "" for c in choices]
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(f"{self.url}: malformed chat completion ({type(exc).__name__}: {exc}): {resp.text[:200]!r}") from exc
        if len(texts) != n:
            raise PermanentError(f"{self.url}: asked for n={n} choices, got {len(texts)} (does the server support 'n'?)")
        return texts


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return max(0.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: fall back to the backoff


def _server_message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error")
        return str(err.get("message", err) if isinstance(err, dict) else err or resp.text[:500])
    except (ValueError, AttributeError):
        return resp.text[:500]
