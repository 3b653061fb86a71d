"""The embedded default's base VLM (§7): a tiny model of a supported family, pretrained on
captions and VQA from scene truth so that it can *see* before it learns to judge — the
stand-in for a pretrained checkpoint such as Qwen2-VL-2B.

It is built once by one command (``vlgenrm base build``), deterministically from its
:class:`PretrainConfig`, and cached like the test servers under ``~/.cache/vlgenrm/base``.
The build writes ``base-report.json`` beside the weights: the ladder's held-out accuracy
(with Wilson 95 % intervals) before and after pretraining, and the loss curve.

Training uses the GenRM's own path (processor, chat template, :class:`SFTCollator`-style
labels on the answer only, :func:`train_step`), and the result is saved with
:meth:`GenRM.save`, so it loads exactly as a real checkpoint does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM, join_and_pad, write_manifest
from vlgenrm.genrm.training import StepSettings, TrainBatch, sequence_logprobs, train_step
from vlgenrm.synth.vqa import LADDER, VQAItem, VQAKind, scene_items, vqa_items

log = logging.getLogger(__name__)

#: Bumped when the build's code changes what it produces, so stale cached bases are rebuilt.
BASE_FORMAT = 1
REPORT = "base-report.json"
DEFAULT_CACHE = Path("~/.cache/vlgenrm/base")
#: Called as (step, total steps, last loss).
Progress = Callable[[int, int, float], None]


class PretrainConfig(BaseModel):
    """Everything that determines a base model; the same config gives the same weights."""

    model_config = ConfigDict(extra="forbid")
    family: str = Field("qwen2_vl", description="Model family of the tiny base (qwen2_vl, qwen2_5_vl, llava).")
    image_size: int = Field(112, ge=28, description="Side the processor resizes images to (112 px = 16 image tokens on Qwen2-VL).")
    seed: int = Field(0, description="Seed of the weights, the data order and the pretraining scenes.")
    steps: int = Field(1500, ge=0, description="Optimizer steps.")
    batch_size: int = Field(32, ge=1, description="Sequences per step.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (linear warm-up, cosine decay).")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up steps.")
    scenes: int = Field(2000, ge=1, description="Training scenes of several shapes, each asked one question of every kind and captioned.")
    simple_items: int = Field(300, ge=0, description="Training items of each single-object rung (whole-image colour, one shape's colour).")
    eval_items: int = Field(200, ge=1, description="Held-out items per ladder rung.")
    threads: int = Field(2, ge=1, description="torch CPU threads while building (results are reproducible for a fixed count).")

    def digest(self) -> str:
        """Names the cached build: the config and the build format."""
        blob = json.dumps({"format": BASE_FORMAT, "config": self.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class Rung(BaseModel):
    """Held-out accuracy on one rung of the ladder."""

    kind: VQAKind
    n: int
    accuracy: float
    low: float = Field(description="Wilson 95 % interval, lower end.")
    high: float = Field(description="Wilson 95 % interval, upper end.")
    chance: float = Field(description="Accuracy of guessing uniformly among the options.")


class BaseReport(BaseModel):
    """What a base build did: its config, the ladder before and after, the loss curve."""

    config: PretrainConfig
    digest: str
    version: str = Field(description="Weights digest of the saved base (checkpoint_version).")
    before: list[Rung]
    after: list[Rung]
    losses: list[tuple[int, float]] = Field(default_factory=list, description="(step, mean loss over the last 50 steps).")
    seconds: float = 0.0

    def table(self) -> str:
        """A Markdown table of the ladder, before and after."""
        lines = ["| rung | chance | before | after (95 % interval) | n |", "|---|---:|---:|---:|---:|"]
        for b, a in zip(self.before, self.after, strict=True):
            lines.append(f"| {a.kind.value} | {a.chance:.2f} | {b.accuracy:.3f} | {a.accuracy:.3f} ({a.low:.3f}–{a.high:.3f}) | {a.n} |")
        return "\n".join(lines)


def _prompt(genrm: GenRM, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return genrm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _answer_ids(genrm: GenRM, answer: str) -> list[int]:
    return genrm.token_ids(answer) + [genrm.tokenizer.eos_token_id]


def _encode(genrm: GenRM, items: Sequence[VQAItem]) -> list[tuple[dict[str, torch.Tensor], list[int]]]:
    """Prompt features and answer ids; questions about one image share its pixel tensor."""
    pixels: dict[bytes, torch.Tensor] = {}
    out = []
    for it in items:
        features = genrm.encode_prompt(it.image, _prompt(genrm, it.question))
        features["pixel_values"] = pixels.setdefault(hashlib.sha256(it.image).digest(), features["pixel_values"])
        out.append((features, _answer_ids(genrm, it.answer)))
    return out


def ladder_accuracy(genrm: GenRM, items: Sequence[VQAItem], batch_size: int = 32) -> list[Rung]:
    """Closed-set accuracy per rung: the answer whose tokens the model finds likeliest wins."""
    from vlgenrm.genrm.evaluation import wilson_interval

    by_kind: dict[VQAKind, list[VQAItem]] = {}
    for item in items:
        by_kind.setdefault(item.kind, []).append(item)
    rungs = []
    genrm.model.eval()
    for kind in [k for k in LADDER if k in by_kind]:
        options = kind.options
        option_ids = [_answer_ids(genrm, o) for o in options]
        right = 0
        rows = [(features, ids) for features, _ in _encode(genrm, by_kind[kind]) for ids in option_ids]
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                batch = join_and_pad([f for f, _ in chunk], [c for _, c in chunk], genrm.pad_id, left=False, labels=True)
                scores += sequence_logprobs(genrm.model, batch).tolist()
        for i, item in enumerate(by_kind[kind]):
            mine = scores[i * len(options) : (i + 1) * len(options)]
            right += options[max(range(len(options)), key=mine.__getitem__)] == item.answer
        n = len(by_kind[kind])
        low, high = wilson_interval(right, n)
        rungs.append(Rung(kind=kind, n=n, accuracy=right / n, low=low, high=high, chance=1 / len(options)))
    return rungs


def training_items(config: PretrainConfig) -> list[VQAItem]:
    """The pretraining set: questions and captions of the train split's scenes."""
    items = scene_items(config.scenes, seed=config.seed, split="train")
    for kind in (VQAKind.WHOLE_COLOUR, VQAKind.SHAPE_COLOUR):
        items += vqa_items(kind, config.simple_items, seed=config.seed, split="train")
    return items


def eval_items(config: PretrainConfig) -> list[VQAItem]:
    """Held-out items per ladder rung (a split of their own)."""
    return [it for kind in LADDER for it in vqa_items(kind, config.eval_items, seed=config.seed, split="eval")]


def _lr(step: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(genrm: GenRM, items: Sequence[VQAItem], config: PretrainConfig, progress: Progress | None = None) -> list[tuple[int, float]]:
    """Teach ``genrm`` the items' answers (loss on answer tokens only); returns the loss curve."""
    encoded = _encode(genrm, items)
    rng = random.Random(f"pretrain-order/{config.seed}")
    optimizer = torch.optim.AdamW([p for p in genrm.model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=0.0)
    window: list[float] = []
    curve: list[tuple[int, float]] = []
    order: list[int] = []
    for step in range(config.steps):
        if len(order) < config.batch_size:
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order += fresh
        picked, order = order[: config.batch_size], order[config.batch_size :]
        batch = join_and_pad([encoded[i][0] for i in picked], [encoded[i][1] for i in picked], genrm.pad_id, left=False, labels=True)
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, config)
        loss = train_step(genrm.model, optimizer, [TrainBatch(batch)], StepSettings())["loss"]
        window = (window + [loss])[-50:]
        if (step + 1) % 50 == 0 or step + 1 == config.steps:
            curve.append((step + 1, sum(window) / len(window)))
        if progress is not None:
            progress(step + 1, config.steps, loss)
    genrm.model.eval()
    return curve


def build_base(directory: str | os.PathLike[str], config: PretrainConfig | None = None, progress: Progress | None = None) -> BaseReport:
    """Build the tiny model of ``config.family``, pretrain it and save it (with its report) in ``directory``."""
    from vlgenrm.genrm.model import checkpoint_version
    from vlgenrm.genrm.tiny import build_tiny_genrm

    config = config or PretrainConfig()
    started = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        directory = Path(directory)
        with tempfile.TemporaryDirectory() as tmp:
            genrm = GenRM.load(build_tiny_genrm(Path(tmp) / "init", config.family, seed=config.seed, image_size=config.image_size), GenRMSettings())
        torch.manual_seed(config.seed)
        held_out = eval_items(config)
        before = ladder_accuracy(genrm, held_out)
        curve = pretrain(genrm, training_items(config), config, progress)
        after = ladder_accuracy(genrm, held_out)
        genrm.save(directory)
    finally:
        torch.set_num_threads(threads)
    report = BaseReport(config=config, digest=config.digest(), version=checkpoint_version(directory), before=before, after=after,
                        losses=curve, seconds=time.monotonic() - started)
    # The report travels with the weights (in the manifest), so a copy in the store says how it was made.
    (directory / REPORT).write_text(report.model_dump_json(indent=2) + "\n")
    write_manifest(directory)
    return report


def cache_path(config: PretrainConfig, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the base of ``config`` lives in the cache (``$VLGENRM_BASE_CACHE`` overrides the default)."""
    root = Path(cache_dir or os.environ.get("VLGENRM_BASE_CACHE", DEFAULT_CACHE)).expanduser()
    return root / f"{config.family}-{config.digest()}"


def cached_base(config: PretrainConfig | None = None, cache_dir: str | os.PathLike[str] | None = None,
                progress: Progress | None = None) -> tuple[Path, BaseReport]:
    """The base for ``config`` from the cache, built (atomically) when missing."""
    config = config or PretrainConfig()
    target = cache_path(config, cache_dir)
    root = target.parent
    if (target / REPORT).exists():
        return target, BaseReport.model_validate_json((target / REPORT).read_text())
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        log.info("building the base model %s (cached in %s)", target.name, root)
        report = build_base(tmp / "model", config, progress)
        try:
            os.replace(tmp / "model", target)
        except OSError:  # another process finished the same build first: theirs is as good
            if not (target / REPORT).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, report


def load_report(directory: str | os.PathLike[str]) -> BaseReport | None:
    """The build report of a base folder, if it has one."""
    path = Path(directory) / REPORT
    return BaseReport.model_validate_json(path.read_text()) if path.exists() else None


__all__ = ["BaseReport", "PretrainConfig", "Rung", "build_base", "cached_base", "ladder_accuracy", "load_report", "pretrain"]
