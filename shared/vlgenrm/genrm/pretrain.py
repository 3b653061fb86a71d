"""The embedded default's base VLM (§7): a tiny model of a supported family, pretrained on
captions and VQA from scene truth so that it can *see* before it learns to judge — the
stand-in for a pretrained checkpoint such as Qwen2-VL-2B.

It is built once by one command (``vlgenrm base build``), deterministically from its
:class:`PretrainConfig`, and cached like the test servers under ``~/.cache/vlgenrm/base``.

The build has two stages, as real VLMs are built from a pretrained vision encoder and an
alignment step:

1. **Vision** (:func:`align_vision`): each image token learns to name what its cell of the
   scene grid holds — shape, colour, the sign's word — scored against the language model's
   *own word embeddings* (a cosine with the embedding of "star", "red", …), so what the
   image tokens say lives in the space the words live in. Without it the tower learnt
   shapes only through the language model's answers and never told them apart ("is there a
   star?" at chance); with it, 600 steps name a cell's shape at 0.99, and aligned features
   make "is there a star?" a comparison attention can do (exists 0.5 -> 1.0).
2. **Language** (:func:`pretrain`): VQA, captions and scaffolds from scene truth
   (:mod:`vlgenrm.synth.vqa`), with the vision tower frozen (``freeze_vision``).
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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM, join_and_pad, write_manifest
from vlgenrm.genrm.training import StepSettings, TrainBatch, sequence_logprobs, train_step
from vlgenrm.synth.scene import GRID, random_scene, render
from vlgenrm.synth.vqa import LADDER, CellLabels, VQAItem, VQAKind, answer_items, cell_labels, marked_items, scaffold_items, scene_items, vqa_items

log = logging.getLogger(__name__)

#: Bumped when the build's code changes what it produces, so stale cached bases are rebuilt.
BASE_FORMAT = 4
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
    text_layers: int = Field(2, ge=1, le=12, description="Decoder layers of the tiny language model (checking a claim against the image takes depth).")
    steps: int = Field(3000, ge=0, description="Optimizer steps of the language stage.")
    batch_size: int = Field(32, ge=1, description="Sequences per step.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (linear warm-up, cosine decay).")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up steps.")
    scenes: int = Field(2000, ge=1, description="Training scenes of several shapes, each asked one question of every kind and captioned.")
    simple_items: int = Field(300, ge=0, description="Training items of each single-object rung (whole-image colour, one shape's colour).")
    scaffold_scenes: int = Field(3000, ge=0, description="Training scenes asked one claim and every scaffold (vqa.SCAFFOLDS).")
    answer_scenes: int = Field(
        3000, ge=0, description="Training scenes asked one of the preference data's questions, answered faithfully in its grammar (vqa.answer_items)."
    )
    marked_steps: int = Field(
        0, ge=0, description="Steps of a marking stage after the language stage (responses judged in the GenRM's layout and marked inline); 0 skips it."
    )
    marked_scenes: int = Field(6000, ge=1, description="Scenes of the marking stage, each one response asked both ways (vqa.verify_pair).")
    marked_learning_rate: float = Field(5e-4, gt=0, description="Peak AdamW learning rate of the marking stage (20 warm-up steps, cosine decay).")
    replay_scenes: int = Field(500, ge=0, description="Language-stage scenes (and scaffold scenes) replayed in the marking stage so it keeps what it learnt.")
    vision_steps: int = Field(1500, ge=0, description="Steps of the vision stage (image tokens name their grid cell's content); 0 skips it.")
    vision_scenes: int = Field(2000, ge=1, description="Training scenes of the vision stage.")
    vision_learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate of the vision stage (constant).")
    freeze_vision: bool = Field(True, description="Keep the vision tower fixed while the language stage trains.")
    eval_items: int = Field(200, ge=1, description="Held-out items per ladder rung.")
    threads: int = Field(2, ge=1, description="torch CPU threads while building (results are reproducible for a fixed count).")

    @model_validator(mode="after")
    def _grid_fits(self) -> PretrainConfig:
        # The vision stage pools image tokens to the scene's grid, so they must tile it.
        from vlgenrm.genrm.tiny import token_px

        cell = GRID * token_px(self.family)
        if self.vision_steps and self.image_size % cell:
            raise ValueError(
                f"image_size {self.image_size} gives image tokens that do not tile the {GRID} x {GRID} scene grid "
                f"(use a multiple of {cell} px for {self.family}); set vision_steps: 0 or pick another size"
            )
        return self

    @property
    def total_steps(self) -> int:
        """Optimizer steps of both stages (what a progress bar counts)."""
        return self.vision_steps + self.steps + self.marked_steps

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


class CellAccuracy(BaseModel):
    """Held-out accuracy of the vision stage: naming what a grid cell holds."""

    shape: float = Field(description="Cells holding a shape or the sign: the right one of (*SHAPES, sign).")
    colour: float = Field(description="Cells holding a shape: its colour.")
    word: float = Field(description="Cells of the sign: its word.")
    empty: float = Field(description="All cells: empty or not, right.")

    def line(self) -> str:
        """One line for a terminal or a report."""
        return f"vision stage, held-out cells: shape {self.shape:.3f}, colour {self.colour:.3f}, sign word {self.word:.3f}, empty {self.empty:.3f}"


class BaseReport(BaseModel):
    """What a base build did: its config, the ladder before and after, the loss curve."""

    config: PretrainConfig
    digest: str
    version: str = Field(description="Weights digest of the saved base (checkpoint_version).")
    vision: CellAccuracy | None = Field(None, description="The vision stage's held-out cell accuracy (None when skipped).")
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
    from vlgenrm.evaluation.metrics import wilson_interval

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
    """The language stage's set: questions, captions and scaffolds of the train split's scenes."""
    items = scene_items(config.scenes, seed=config.seed, split="train") + scaffold_items(config.scaffold_scenes, seed=config.seed, split="train")
    items += answer_items(config.answer_scenes, seed=config.seed, split="train")
    for kind in (VQAKind.WHOLE_COLOUR, VQAKind.SHAPE_COLOUR):
        items += vqa_items(kind, config.simple_items, seed=config.seed, split="train")
    return items


def marking_stage(config: PretrainConfig) -> tuple[list[VQAItem], PretrainConfig]:
    """The marking stage's items (marked responses and a replay of the language stage's) and
    its schedule. Off by default: a GenRM trained on true labels from a base with it scored 0.615
    against 0.625 without (same run, docs/genrm.md)."""
    replay = config.model_copy(update={"scenes": config.replay_scenes, "scaffold_scenes": config.replay_scenes, "simple_items": config.replay_scenes // 10})
    items = marked_items(config.marked_scenes, seed=config.seed, split="train") + training_items(replay)
    return items, config.model_copy(update={"steps": config.marked_steps, "learning_rate": config.marked_learning_rate, "warmup_steps": 20})


def eval_items(config: PretrainConfig) -> list[VQAItem]:
    """Held-out items per ladder rung (a split of their own)."""
    return [it for kind in LADDER for it in vqa_items(kind, config.eval_items, seed=config.seed, split="eval")]


def _lr(step: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def vision_parameters(genrm: GenRM) -> list[torch.nn.Parameter]:
    """The parameters that turn pixels into the language model's image tokens (tower and projector)."""
    inner = genrm.model.model
    modules = [getattr(inner, name) for name in ("visual", "vision_tower", "multi_modal_projector") if getattr(inner, name, None) is not None]
    if not modules:
        raise ValueError(f"{type(genrm.model).__name__} has no vision tower this build knows")
    return [p for m in modules for p in m.parameters()]


def cell_features(genrm: GenRM, pixels: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """(images, GRID², hidden): each image's tokens as the language model receives them,
    averaged over the tokens of each cell of the scene grid."""
    kwargs: dict[str, object] = {"pixel_values": torch.cat([p["pixel_values"] for p in pixels])}
    if "image_grid_thw" in pixels[0]:  # the Qwen families
        kwargs["image_grid_thw"] = torch.cat([p["image_grid_thw"] for p in pixels])
    else:  # LLaVA: the layer and CLS handling its language model sees
        config = genrm.model.config
        kwargs |= {"vision_feature_layer": config.vision_feature_layer, "vision_feature_select_strategy": config.vision_feature_select_strategy}
    cells = []
    for tokens in genrm.model.get_image_features(**kwargs).pooler_output:
        side = math.isqrt(tokens.shape[0])
        if side * side != tokens.shape[0] or side % GRID:
            raise ValueError(f"{tokens.shape[0]} image tokens do not tile the {GRID} x {GRID} scene grid; pick another image_size")
        k = side // GRID
        cells.append(tokens.reshape(GRID, k, GRID, k, -1).mean(dim=(1, 3)).reshape(GRID * GRID, -1))
    return torch.stack(cells)


class _WordHead(torch.nn.Module):
    """Scores features against fixed word embeddings (cosine, learnt scale), plus a learnt row for "nothing"."""

    def __init__(self, words: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("words", torch.nn.functional.normalize(words, dim=-1))
        self.nothing = torch.nn.Parameter(torch.randn(1, words.shape[1]) * 0.02)
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([torch.nn.functional.normalize(self.nothing, dim=-1), self.words])
        return self.scale * torch.nn.functional.normalize(features, dim=-1) @ rows.T


def _word_embeddings(genrm: GenRM, words: Sequence[str]) -> torch.Tensor:
    table = genrm.model.get_input_embeddings().weight.detach()
    return torch.stack([table[genrm.token_ids(" " + w)].mean(0) for w in words])  # a word of several tokens: their mean


def _cell_data(genrm: GenRM, n: int, seed: int, split: str) -> list[tuple[dict[str, torch.Tensor], CellLabels]]:
    out = []
    for i in range(n):
        scene = random_scene(random.Random(f"pretrain/{seed}/{split}/vision/{i}"), max_kinds=3, text_probability=0.5)
        enc = genrm.processor.image_processor(images=[genrm.load_image(render(scene))], return_tensors="pt")
        out.append(({k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}, cell_labels(scene)))
    return out


def _cell_targets(labels: Sequence[CellLabels]) -> list[torch.Tensor]:
    return [torch.tensor([v for lab in labels for v in getattr(lab, name)]) for name in ("shape", "colour", "word")]


def align_vision(genrm: GenRM, config: PretrainConfig, progress: Progress | None = None) -> CellAccuracy | None:
    """The vision stage: train the tower so each cell's tokens name its content in the language
    model's word-embedding space; returns held-out cell accuracy (None when ``vision_steps`` is 0)."""
    if config.vision_steps == 0:
        return None
    heads = torch.nn.ModuleList(
        [_WordHead(_word_embeddings(genrm, words)) for words in (CellLabels.SHAPE_WORDS, CellLabels.COLOUR_WORDS, CellLabels.SIGN_WORDS)]
    )
    train = _cell_data(genrm, config.vision_scenes, config.seed, "train")
    params = vision_parameters(genrm) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.vision_learning_rate, weight_decay=0.0)
    rng = random.Random(f"vision-order/{config.seed}")
    genrm.model.train()
    for step in range(config.vision_steps):
        batch = rng.sample(train, min(config.batch_size, len(train)))
        logits = [head(cell_features(genrm, [f for f, _ in batch]).flatten(0, 1)) for head in heads]
        loss = sum(torch.nn.functional.cross_entropy(lg, y) for lg, y in zip(logits, _cell_targets([lab for _, lab in batch]), strict=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1, config.total_steps, loss.item())
    genrm.model.eval()
    held = _cell_data(genrm, config.eval_items, config.seed, "eval")
    with torch.inference_mode():
        feats = torch.cat([cell_features(genrm, [f for f, _ in held[i : i + 32]]).flatten(0, 1) for i in range(0, len(held), 32)])
        (shape, colour, word), preds = _cell_targets([lab for _, lab in held]), [h(feats).argmax(-1) for h in heads]

    def acc(y: torch.Tensor, p: torch.Tensor) -> float:
        m = y > 0
        return float((p[m] == y[m]).float().mean()) if m.any() else float("nan")

    return CellAccuracy(
        shape=acc(shape, preds[0]), colour=acc(colour, preds[1]), word=acc(word, preds[2]), empty=float(((preds[0] > 0) == (shape > 0)).float().mean())
    )


def pretrain(
    genrm: GenRM, items: Sequence[VQAItem], config: PretrainConfig, progress: Progress | None = None, offset: int = 0, total: int | None = None
) -> list[tuple[int, float]]:
    """Teach ``genrm`` the items' answers (loss on answer tokens only); returns the loss curve.
    ``offset`` is where the progress count starts (steps of an earlier stage), ``total`` where it
    ends (default: this stage's last step)."""
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
            progress(offset + step + 1, total or offset + config.steps, loss)
    genrm.model.eval()
    return curve


def build_base(directory: str | os.PathLike[str], config: PretrainConfig | None = None, progress: Progress | None = None) -> BaseReport:
    """Build the tiny model of ``config.family``, pretrain it and save it (with its report) in ``directory``."""
    from vlgenrm.genrm.model import checkpoint_version
    from vlgenrm.genrm.tiny import TinySize, build_tiny_genrm

    config = config or PretrainConfig()
    started = time.monotonic()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        directory = Path(directory)
        with tempfile.TemporaryDirectory() as tmp:
            genrm = GenRM.load(
                build_tiny_genrm(
                    Path(tmp) / "init", config.family, seed=config.seed, image_size=config.image_size, size=TinySize(text_layers=config.text_layers)
                ),
                GenRMSettings(),
            )
        torch.manual_seed(config.seed)
        held_out = eval_items(config)
        before = ladder_accuracy(genrm, held_out)
        vision = align_vision(genrm, config, progress)
        frozen = vision_parameters(genrm) if config.freeze_vision else []
        for p in frozen:
            p.requires_grad_(False)
        curve = pretrain(genrm, training_items(config), config, progress, offset=config.vision_steps, total=config.total_steps)
        if config.marked_steps:
            items, stage = marking_stage(config)
            curve += [
                (config.steps + step, loss)
                for step, loss in pretrain(genrm, items, stage, progress, offset=config.vision_steps + config.steps, total=config.total_steps)
            ]
        for p in frozen:
            p.requires_grad_(True)
        after = ladder_accuracy(genrm, held_out)
        genrm.save(directory)
    finally:
        torch.set_num_threads(threads)
    report = BaseReport(
        config=config,
        digest=config.digest(),
        version=checkpoint_version(directory),
        vision=vision,
        before=before,
        after=after,
        losses=curve,
        seconds=time.monotonic() - started,
    )
    # The report travels with the weights (in the manifest), so a copy in the store says how it was made.
    (directory / REPORT).write_text(report.model_dump_json(indent=2) + "\n")
    write_manifest(directory)
    return report


def cache_path(config: PretrainConfig, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the base of ``config`` lives in the cache (``$VLGENRM_BASE_CACHE`` overrides the default)."""
    root = Path(cache_dir or os.environ.get("VLGENRM_BASE_CACHE", DEFAULT_CACHE)).expanduser()
    return root / f"{config.family}-{config.digest()}"


def cached_base(
    config: PretrainConfig | None = None, cache_dir: str | os.PathLike[str] | None = None, progress: Progress | None = None
) -> tuple[Path, BaseReport]:
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


__all__ = [
    "BaseReport",
    "CellAccuracy",
    "PretrainConfig",
    "Rung",
    "align_vision",
    "build_base",
    "cached_base",
    "cell_features",
    "ladder_accuracy",
    "load_report",
    "pretrain",
    "vision_parameters",
]
