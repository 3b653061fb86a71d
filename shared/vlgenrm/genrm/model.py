"""The GenRM model adapter: load, save, score by teacher forcing, generate critiques.

Scoring is one batched primitive: the log-probability of a continuation given (image,
prompt). A verdict's log-probability compares the two full continuations ``critique +
answer(A)`` and ``critique + answer(B)`` — the verdict line, after the restated better
response when ``settings.restate`` (pairwise) — : their shared token prefix cancels, so only
the tokens after it are scored, which is exact for any tokenizer.

With ``settings.prefix_cache`` (the default) the shared prefix — image, prompt, critique and
the options' common start — runs once per prompt, keeping its KV cache, and the two options'
tails run as a 2-row step on that cache: the image is encoded once instead of twice, and most
tokens once instead of twice. Positions are passed explicitly (M-RoPE's 3-D ones for the Qwen
families), so the tails see exactly the positions they have in the full sequence and the
numbers equal the reference path's (``prefix_cache: false``: two full sequences, logits of the
answers' positions only) within float error.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlgenrm.contracts import Choice
from vlgenrm.errors import ConfigError
from vlgenrm.genrm.config import Backend, GenRMSettings, SamplingParams
from vlgenrm.genrm.errors import ContextTooLongError, ImageTooLargeError, InvalidImageError
from vlgenrm.genrm.families import Family, family_of
from vlgenrm.genrm.prompts import messages_for, target_text
from vlgenrm.genrm.verdicts import OPTIONS, Mode
from vlgenrm.layout import MANIFEST_FILE

log = logging.getLogger(__name__)
MANIFEST = MANIFEST_FILE
#: Keys of processor output that run along the token axis (padded), all others are per image.
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
IGNORE = -100  # label value transformers' loss skips
ImageInput = bytes | Image.Image
#: Put after the first character of a special token's text found in user or policy text, so it
#: is tokenized as the ordinary characters it spells (U+2060 WORD JOINER: invisible, never special).
DATA_BREAK = "\u2060"


@dataclass(frozen=True)
class PairwiseQuery:
    """An image, a question and two responses; ``critique`` is scored before the verdict."""

    image: ImageInput
    question: str
    response_a: str
    response_b: str
    critique: str = ""
    evidence: str | None = None

    def swapped(self) -> PairwiseQuery:
        from vlgenrm.genrm.verdicts import swap_ab

        return PairwiseQuery(self.image, self.question, self.response_b, self.response_a, swap_ab(self.critique), self.evidence)


@dataclass(frozen=True)
class PointwiseQuery:
    image: ImageInput
    question: str
    response: str
    critique: str = ""
    evidence: str | None = None


@dataclass
class _Sequence:
    """One teacher-forced sequence: prompt features plus continuation ids; score the tail."""

    features: dict[str, torch.Tensor]
    continuation: list[int]
    tail: int
    extra: dict[str, Any] = field(default_factory=dict)


def file_digests(directory: Path) -> dict[str, str]:
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[path.relative_to(directory).as_posix()] = h.hexdigest()
    return out


def write_manifest(directory: Path) -> Path:
    """(Re)write the checkpoint's manifest: the digest of every file in it."""
    (directory / MANIFEST).write_text(json.dumps({"files": file_digests(directory)}, indent=2, sort_keys=True) + "\n")
    return directory


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers warns about every image processor lacking torchvision while resolving one."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(previous)


class GenRM:
    """A vision-language generative reward model with its processor."""

    def __init__(self, model: Any, processor: Any, family: Family, settings: GenRMSettings, version: str, *, backend: Any = None) -> None:
        self.model, self.processor, self.family, self.settings, self.version = model, processor, family, settings, version
        #: The vLLM engine with ``settings.backend: vllm`` (then ``model`` is None), else None.
        self.backend = backend
        self.tokenizer = processor.tokenizer
        specials = {str(t) for t in self.tokenizer.all_special_tokens}
        specials |= {t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special}
        # Longest first, so "<|im_start|>" is matched whole, never a shorter token inside it.
        breakable = sorted((t for t in specials if len(t) > 1), key=len, reverse=True)
        self._specials = re.compile("|".join(map(re.escape, breakable))) if breakable else None

    # -- loading and saving ----------------------------------------------------------------
    @classmethod
    def load(
        cls, source: str | os.PathLike[str], settings: GenRMSettings | None = None, *, store: Any = None, adapter: str | os.PathLike[str] | None = None
    ) -> GenRM:
        """Load from a local folder or from a URI of ``store`` (``s3://bucket/prefix``; cached and
        verified), optionally with a LoRA adapter."""
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        settings = settings or GenRMSettings()
        source = str(source)
        if "://" in source:
            if store is None:
                raise ValueError(f"loading {source} needs the BlobStore that holds it")
            path = fetch_checkpoint(store, store.key_for(source), settings.cache_dir)
        else:
            path = Path(source)
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(path)
            family = family_of(config.model_type)
            tokenizer = AutoTokenizer.from_pretrained(path)
            image_processor = AutoImageProcessor.from_pretrained(path)
            processor_config = json.loads((path / "processor_config.json").read_text()) if (path / "processor_config.json").exists() else {}
            extra = {k: processor_config[k] for k in family.processor_kwargs if k in processor_config}
            processor = family.processor_cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template, **extra)
            if settings.backend is Backend.VLLM:
                if adapter is not None:
                    raise ConfigError("genrm.backend=vllm serves merged checkpoints: merge the LoRA adapter first (GenRM.save merges it)")
                from vlgenrm.genrm.vllm_backend import VLLMBackend

                return cls(None, processor, family, settings, checkpoint_version(path), backend=VLLMBackend(path, settings))
            device = resolve_device(settings.device)
            model = AutoModelForImageTextToText.from_pretrained(
                path, dtype=getattr(torch, settings.dtype.value), attn_implementation=settings.attn_implementation
            ).to(device)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).to(device)
        model.eval()
        return cls(model, processor, family, settings, checkpoint_version(path))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write a Hugging Face checkpoint (LoRA merged) that transformers and vLLM load directly."""
        if self.model is None:
            raise ConfigError("a GenRM on the vllm backend has no transformers weights to save: load it with backend transformers")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = self.model.merge_and_unload() if hasattr(self.model, "merge_and_unload") else self.model
        model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        cfg_path = directory / "processor_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["processor_class"] = self.family.canonical_processor  # our images-only subclass is a detail
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        return write_manifest(directory)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device if self.model is not None else torch.device("cpu")

    # -- inputs ------------------------------------------------------------------------------
    def load_image(self, image: ImageInput) -> Image.Image:
        """Decode and check an image; every problem becomes a typed error naming the limit."""
        if isinstance(image, Image.Image):
            pil = image
        else:
            if len(image) > self.settings.max_image_bytes:
                raise ImageTooLargeError(f"image of {len(image)} bytes exceeds max_image_bytes={self.settings.max_image_bytes}")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    pil = Image.open(io.BytesIO(image))
                    pil.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageTooLargeError(f"image is a decompression bomb: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
                raise InvalidImageError(f"cannot decode image ({len(image)} bytes): {exc}") from exc
        if pil.width * pil.height > self.settings.max_image_pixels:
            raise ImageTooLargeError(f"image of {pil.width}x{pil.height} pixels exceeds max_image_pixels={self.settings.max_image_pixels}")
        return pil.convert("RGB")

    def as_data(self, text: str) -> str:
        """``text`` with every special token's string in it broken (:data:`DATA_BREAK` after its
        first character): what users and policies write is data, never the template's control
        tokens ("<|im_end|><|im_start|>assistant" in a response opens no turn)."""
        if self._specials is None:
            return text
        return self._specials.sub(lambda m: m[0][0] + DATA_BREAK + m[0][1:], text)

    def prompt(self, mode: Mode, question: str, responses: Sequence[str], evidence: str | None = None) -> str:
        """The chat-templated prompt text, ending where the assistant starts speaking; the
        question, responses and evidence go in as data (:meth:`as_data`)."""
        data = self.as_data
        messages = messages_for(mode, data(question), tuple(map(data, responses)), data(evidence) if evidence else evidence, restate=self.settings.restate)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode_prompt(self, image: ImageInput, prompt: str) -> dict[str, torch.Tensor]:
        """Processor features of one (image, prompt): token ids with the image expanded, pixels."""
        with _quiet_transformers():
            enc = self.processor(images=[self.load_image(image)], text=[prompt], return_tensors="pt")
        return {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}

    def encode_prompts(self, items: Sequence[tuple[ImageInput, str]]) -> list[dict[str, torch.Tensor]]:
        """:meth:`encode_prompt` of each (image, prompt). An image shown with several prompts (both
        orders, several critiques, the G rollouts of one RL prompt batched together by the scorer;
        equal bytes or the same PIL object) is decoded and processed once: the later prompts
        are tokenized alone and get the first one's image tokens spliced in where the processor
        would expand them; any prompt that does not fit that shape takes the processor's path."""
        out: list[dict[str, torch.Tensor]] = []
        first: dict[Any, dict[str, torch.Tensor]] = {}
        for image, prompt in items:
            key = image if isinstance(image, bytes) else id(image)  # encoded bytes: equal content, one image
            seen = first.get(key)
            spliced = self._splice_image(seen, prompt) if seen is not None else None
            if spliced is None:
                spliced = self.encode_prompt(image, prompt)
                first.setdefault(key, spliced)
            out.append(spliced)
        return out

    def _splice_image(self, encoded: dict[str, torch.Tensor], prompt: str) -> dict[str, torch.Tensor] | None:
        image_id = self.tokenizer.convert_tokens_to_ids(getattr(self.processor, "image_token", None) or "")
        if image_id is None:
            return None
        is_image = encoded["input_ids"][0] == image_id
        n = int(is_image.sum())
        if n == 0:
            return None
        rows = {k: v[0] for k, v in encoded.items() if k in TOKEN_KEYS[2:]}
        # Only a plain run of one repeated token, with type ids set on it alone, can be spliced.
        if any(bool((v[~is_image] != 0).any()) or v[is_image].unique().numel() != 1 for v in rows.values()):
            return None
        text_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if text_ids.count(image_id) != 1:
            return None
        at = text_ids.index(image_id)
        new_ids = torch.tensor(text_ids[:at] + [image_id] * n + text_ids[at + 1 :]).unsqueeze(0)
        spliced = {k: v for k, v in encoded.items() if k not in TOKEN_KEYS}
        spliced["input_ids"], spliced["attention_mask"] = new_ids, torch.ones_like(new_ids)
        for key, row in rows.items():
            spliced[key] = torch.where(new_ids == image_id, row[is_image][0], torch.zeros_like(new_ids))
        return spliced

    def token_ids(self, text: str) -> list[int]:
        """Ids of a continuation, tokenized on its own (training and scoring agree on this); it
        may restate a response, so it too is data (:meth:`as_data`)."""
        return self.tokenizer(self.as_data(text), add_special_tokens=False)["input_ids"]

    # -- teacher forcing -------------------------------------------------------------------
    def continuation(self, mode: Mode, critique: str, option: str, responses: Sequence[str]) -> str:
        """What the model says after the prompt when it picks ``option``: the critique, then (pairwise,
        with ``settings.restate``) the picked response restated, then the verdict line. Training
        targets and scoring both come from here, so a model is scored as it was trained."""
        restated = responses[OPTIONS[mode].index(option)] if mode is Mode.PAIRWISE and self.settings.restate else None
        return target_text(critique, option, restated)

    def _option_sequences(self, mode: Mode, features: dict[str, torch.Tensor], critique: str, responses: Sequence[str]) -> list[_Sequence]:
        """The two continuations of one encoded prompt, each scored after their shared prefix."""
        conts = [self.token_ids(self.continuation(mode, critique, option, responses)) for option in OPTIONS[mode]]
        lcp = 0
        while lcp < min(map(len, conts)) and conts[0][lcp] == conts[1][lcp]:
            lcp += 1
        prompt_len = features["input_ids"].shape[1]
        for cont in conts:
            if prompt_len + len(cont) > self.settings.max_length:
                raise ContextTooLongError(
                    f"prompt ({prompt_len} tokens) + critique and verdict ({len(cont)} tokens) exceed max_length={self.settings.max_length}"
                )
        return [_Sequence(features, cont, len(cont) - lcp) for cont in conts]

    @torch.inference_mode()
    def _tail_logprobs(self, sequences: list[_Sequence]) -> list[float]:
        """Sum of log-probabilities of each sequence's last ``tail`` tokens, batched; sequences
        come in option pairs of one prompt (:meth:`_option_sequences`)."""
        out: list[float] = []
        if self.settings.prefix_cache:
            pairs = [(sequences[i], sequences[i + 1]) for i in range(0, len(sequences), 2)]
            # batch_size prompts a prefix forward (as many rows as the reference path's forward);
            # their tails are short, so twice as many tail rows cost far less.
            for start in range(0, len(pairs), self.settings.batch_size):
                out += self._shared_prefix_batch(pairs[start : start + self.settings.batch_size])
            return out
        for start in range(0, len(sequences), self.settings.batch_size):
            out += self._tail_batch(sequences[start : start + self.settings.batch_size])
        return out

    def _prefix_positions(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Position ids of a left-padded prompt batch: (3, B, L) M-RoPE ones for families that
        compute them from the image grid, else (B, L) counted over the attention mask."""
        mask = inputs["attention_mask"]
        if self.family.positions_from_mask:
            inner = self.model  # the module that owns get_rope_index, under any wrapper (LoRA)
            while not hasattr(inner, "get_rope_index"):
                inner = inner.model
            grids = {k: inputs[k] for k in ("image_grid_thw",) if k in inputs}
            positions, _ = inner.get_rope_index(input_ids=inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], attention_mask=mask, **grids)
            return positions
        return (mask.cumsum(-1) - 1).clamp(min=0)

    def _shared_prefix_batch(self, pairs: list[tuple[_Sequence, _Sequence]]) -> list[float]:
        prefixes = [first.continuation[: len(first.continuation) - first.tail] for first, _ in pairs]
        inputs = join_and_pad([first.features for first, _ in pairs], prefixes, self.pad_id, left=True)
        positions = self._prefix_positions(inputs)
        model_inputs = to_model(inputs, self.model)
        device = model_inputs["input_ids"].device
        prefix = self.model(**model_inputs, position_ids=positions.to(device), use_cache=True, logits_to_keep=1)
        first_logprobs = torch.log_softmax(prefix.logits[:, -1].float(), dim=-1).repeat_interleave(2, dim=0)
        tails = [s.continuation[len(s.continuation) - s.tail :] for pair in pairs for s in pair]
        width = max(map(len, tails))
        if width == 0:
            return [0.0] * len(tails)
        tail_ids = torch.tensor([t + [self.pad_id] * (width - len(t)) for t in tails], device=device)
        tail_mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in tails], device=device)
        # A tail's positions go on from the last prefix token's (a text token: its three M-RoPE
        # components are equal), exactly as in the full sequence.
        after = positions[..., -1:].to(device).repeat_interleave(2, dim=-2 if positions.dim() == 2 else 1)
        tail_positions = after + 1 + torch.arange(width, device=device)
        cache = prefix.past_key_values
        cache.batch_repeat_interleave(2)
        mask = torch.cat([model_inputs["attention_mask"].repeat_interleave(2, dim=0), tail_mask], dim=1)
        logprobs = torch.log_softmax(
            self.model(input_ids=tail_ids, attention_mask=mask, position_ids=tail_positions, past_key_values=cache, use_cache=True).logits.float(), dim=-1
        )
        results = []
        for row, tail in enumerate(tails):
            if not tail:
                results.append(0.0)
                continue
            total = first_logprobs[row, tail[0]]
            if len(tail) > 1:
                later = torch.tensor(tail[1:], device=device)
                total = total + logprobs[row, torch.arange(len(tail) - 1, device=device), later].sum()
            results.append(float(total))
        return results

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _tail_batch(self, batch: list[_Sequence]) -> list[float]:
        # Left padding puts every continuation at the end, so one logits_to_keep serves all.
        inputs = join_and_pad([s.features for s in batch], [s.continuation for s in batch], self.pad_id, left=True)
        if not self.family.positions_from_mask:
            inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        keep = max(seq.tail for seq in batch) + 1
        logits = self.model(**to_model(inputs, self.model), logits_to_keep=keep).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        results = []
        for i, seq in enumerate(batch):
            tail_ids = torch.tensor(seq.continuation[len(seq.continuation) - seq.tail :], device=logprobs.device)
            positions = torch.arange(keep - seq.tail - 1, keep - 1, device=logprobs.device)
            results.append(float(logprobs[i, positions, tail_ids].sum()))
        return results

    def option_logprobs(self, mode: Mode, items: Sequence[tuple[ImageInput, str, str, Sequence[str]]]) -> list[tuple[float, float]]:
        """For each (image, prompt, critique, responses shown): log p of the first and of the second option's continuation."""
        if self.backend is not None:
            flat = self._backend_tail_logprobs(mode, items)
        else:
            prompts = [(image, prompt) for image, prompt, _, _ in items]
            encoded = self.encode_prompts(prompts) if self.settings.prefix_cache else [self.encode_prompt(*p) for p in prompts]
            sequences = [
                s
                for features, (_, _, critique, responses) in zip(encoded, items, strict=True)
                for s in self._option_sequences(mode, features, critique, responses)
            ]
            flat = self._tail_logprobs(sequences)
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(items))]

    def _backend_tail_logprobs(self, mode: Mode, items: Sequence[tuple[ImageInput, str, str, Sequence[str]]]) -> list[float]:
        from vlgenrm.genrm.vllm_backend import TailRequest

        requests = []
        for image, prompt, critique, responses in items:
            pil = self.load_image(image)
            # Tokenized as the processor tokenizes it, with the image placeholder unexpanded (vLLM expands it).
            prompt_ids = self.tokenizer(prompt)["input_ids"]
            for seq in self._option_sequences(mode, {"input_ids": torch.tensor([prompt_ids])}, critique, responses):
                requests.append(TailRequest(pil, prompt_ids + seq.continuation, seq.tail))
        return self.backend.tail_logprobs(requests)

    def margins(self, queries: Sequence[PairwiseQuery], targets: Sequence[Choice]) -> list[float]:
        """§3.4: m = log p(answer = y) - log p(answer = not y), in the order the query shows (:meth:`continuation`)."""
        items = [(q.image, self.prompt(Mode.PAIRWISE, q.question, (q.response_a, q.response_b)), q.critique, (q.response_a, q.response_b)) for q in queries]
        pairs = self.option_logprobs(Mode.PAIRWISE, items)
        return [(a - b) if y is Choice.A else (b - a) for (a, b), y in zip(pairs, targets, strict=True)]

    def pairwise_probs(self, queries: Sequence[PairwiseQuery]) -> list[float]:
        """P(response A is better), averaged over both presentation orders."""
        items = []
        for q in queries:
            for shown in (q, q.swapped()):
                shown_responses = (shown.response_a, shown.response_b)
                items.append((shown.image, self.prompt(Mode.PAIRWISE, shown.question, shown_responses, shown.evidence), shown.critique, shown_responses))
        pairs = self.option_logprobs(Mode.PAIRWISE, items)
        probs = [first_option_probability(*p) for p in pairs]
        return [(probs[2 * i] + (1.0 - probs[2 * i + 1])) / 2 for i in range(len(queries))]

    def pointwise_probs(self, queries: Sequence[PointwiseQuery]) -> list[float]:
        """P("Yes") that the response is accurate and helpful for the image."""
        items = [(q.image, self.prompt(Mode.POINTWISE, q.question, (q.response,), q.evidence), q.critique, (q.response,)) for q in queries]
        return [first_option_probability(*p) for p in self.option_logprobs(Mode.POINTWISE, items)]

    # -- generation ----------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, items: Sequence[tuple[ImageInput, str]], params: SamplingParams | None = None) -> list[list[str]]:
        """``params.n`` sampled continuations for each (image, prompt), batched with left padding."""
        params = params or SamplingParams()
        if self.backend is not None:
            return self.backend.generate([(self.load_image(img), p) for img, p in items], params)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        outputs: list[list[str]] = []
        for start in range(0, len(items), self.settings.batch_size):
            chunk = items[start : start + self.settings.batch_size]
            with _quiet_transformers():
                enc = self.processor(
                    images=[self.load_image(img) for img, _ in chunk],
                    text=[p for _, p in chunk],
                    return_tensors="pt",
                    padding=True,
                    padding_side="left",
                )
            if enc["input_ids"].shape[1] + params.max_new_tokens > self.settings.max_length:
                raise ContextTooLongError(
                    f"prompt of {enc['input_ids'].shape[1]} tokens + {params.max_new_tokens} new tokens exceed max_length={self.settings.max_length}"
                )
            enc = {k: v.to(self.device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
            sample = params.temperature > 0
            generated = self.model.generate(
                **enc,
                max_new_tokens=params.max_new_tokens,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                num_return_sequences=params.n,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
            texts = self.tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            outputs += [texts[i * params.n : (i + 1) * params.n] for i in range(len(chunk))]
        return outputs


def first_option_probability(first: float, second: float) -> float:
    """P(first option) normalised over the two verdict options, from their log-probabilities."""
    return 1.0 / (1.0 + math.exp(second - first))


def join_and_pad(
    prompts: Sequence[dict[str, torch.Tensor]], continuations: Sequence[list[int]], pad_id: int, *, left: bool, labels: bool = False
) -> dict[str, torch.Tensor]:
    """One batch from per-item prompt features and continuation ids.

    Token-axis keys get the continuation appended (zeros for type ids) and are padded on the
    left (scoring, generation) or right (training); per-image keys are concatenated. With
    ``labels``, the prompt and padding are IGNORE so the loss covers continuations only.
    """
    rows = []
    for features, cont in zip(prompts, continuations, strict=True):
        prompt_ids = features["input_ids"][0].tolist()
        row = {"input_ids": prompt_ids + cont, "attention_mask": [1] * (len(prompt_ids) + len(cont))}
        for key in TOKEN_KEYS[2:]:
            if key in features:
                row[key] = features[key][0].tolist() + [0] * len(cont)
        if labels:
            row["labels"] = [IGNORE] * len(prompt_ids) + cont
        rows.append(row)
    width = max(len(r["input_ids"]) for r in rows)
    fills = {"input_ids": pad_id, "labels": IGNORE}

    def pad(values: list[int], fill: int) -> list[int]:
        padding = [fill] * (width - len(values))
        return padding + values if left else values + padding

    batch = {key: torch.tensor([pad(r[key], fills.get(key, 0)) for r in rows]) for key in rows[0]}
    for key in prompts[0]:
        if key not in TOKEN_KEYS:
            batch[key] = torch.cat([f[key] for f in prompts])
    return batch


def to_model(inputs: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """Move a batch to the model's device, pixels in the model's dtype."""
    param = next(model.parameters())
    out = {k: v.to(param.device) for k, v in inputs.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(param.dtype)
    return out


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def checkpoint_version(path: Path) -> str:
    """A short digest of the weights only: the same weights give the same version anywhere,
    whatever metadata transformers adds to the configs when it re-saves them."""
    manifest = path / MANIFEST
    if not manifest.exists():
        return path.name
    files = json.loads(manifest.read_text())["files"]
    weights = sorted((name, digest) for name, digest in files.items() if name.endswith(WEIGHT_SUFFIXES))
    return hashlib.sha256(json.dumps(weights).encode()).hexdigest()[:12]


def fetch_checkpoint(store: Any, prefix: str, cache_dir: Path) -> Path:
    """Download the checkpoint under ``prefix`` into the cache (atomically) and verify it against its manifest."""
    prefix = prefix.rstrip("/") + "/"
    uri = store.uri(prefix.rstrip("/"))
    target = Path(cache_dir).expanduser() / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (target / MANIFEST).exists():
        # A checkpoint prefix can be overwritten (a retrained model): the cache is only good
        # while its manifest is the store's.
        if store.exists(prefix + MANIFEST) and store.get_bytes(prefix + MANIFEST) == (target / MANIFEST).read_bytes():
            return target
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        for obj in store.list(prefix):
            store.get_file(obj.key, tmp / obj.key[len(prefix) :])
        manifest_path = tmp / MANIFEST
        if not manifest_path.exists():
            raise ValueError(f"{uri} has no {MANIFEST}; save checkpoints with GenRM.save")
        expected = json.loads(manifest_path.read_text())["files"]
        actual = file_digests(tmp)
        if actual != expected:
            bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
            raise ValueError(f"{uri} failed verification: {bad[:5]} differ from its manifest")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def upload_checkpoint(directory: Path, store: Any, prefix: str) -> str:
    """Upload a saved checkpoint; the manifest goes last so a reader never sees a partial one."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    for path in files + [directory / MANIFEST]:
        store.put_file(f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}", path)
    return store.uri(prefix.rstrip("/"))
