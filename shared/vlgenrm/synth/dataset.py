"""Synthetic preference datasets (§7) written to a BlobStore (§4 layout).

Layout under ``datasets/<name>/``:

- ``<split>/shards/<nnnnn>.jsonl``  :class:`~vlgenrm.contracts.Example` lines (what the pipeline sees)
- ``truth/<split>/<nnnnn>.jsonl``   :class:`ExampleTruth` lines, same sharding (evaluation only)
- ``eval/vlrewardbench.jsonl``      the eval split in VL-RewardBench form, TRUE labels
- ``manifest.json``                 :class:`DatasetManifest`, written last: its presence means complete

Images are content-addressed under ``images/<sha256>.png``. Every example draws from its own
random streams, seeded by ``(seed, split, index, purpose)``, so the same config gives the same
bytes, and changing e.g. ``label_noise`` or ``labeler`` changes labels but not images or
responses.

Labelers (``SynthConfig.labeler``): ``uniform`` flips every label with probability
``label_noise`` (errors that average out); ``biased`` is an annotator systematically fooled by
some hallucination types (and optionally by length), whose errors do not average out with more
data: ``LabelerConfig.colour_blind()`` prefers the hallucinated answer of 80 % of wrong-colour and
60 % of wrong-count pairs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import tempfile
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vlgenrm import layout
from vlgenrm.contracts import Choice, Contract, Example, HumanLabel, ImageRef, utcnow
from vlgenrm.layout import image_key
from vlgenrm.store import BlobStore, StoreError
from vlgenrm.synth.responses import random_question, write_faithful, write_hallucinated
from vlgenrm.synth.scene import MIN_IMAGE_SIZE, Scene, random_scene, render
from vlgenrm.synth.vocab import SHAPES, HallucinationType

SPLITS = ("train", "eval")
#: Called after each example with (split, examples done in that split, split total).
Progress = Callable[[str, int, int], None]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Dataset name (one key segment).")]


Probability01 = Annotated[float, Field(ge=0.0, le=1.0)]


class LabelerConfig(BaseModel):
    """How the simulated annotator chooses, i.e. how its labels err (the truth records the flips)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["uniform", "biased"] = Field(
        "uniform", description="uniform: each label flips with probability SynthConfig.label_noise; biased: flips depend on the pair (fields below)."
    )
    fooled: dict[HallucinationType, Probability01] = Field(
        default_factory=dict, description="biased: probability of preferring the hallucinated response, per hallucination type (missing: base_rate)."
    )
    base_rate: Probability01 = Field(0.05, description="biased: probability of preferring the hallucinated response for types not in fooled.")
    prefers_longer: Probability01 = Field(
        0.0,
        description="biased: pull toward the longer response (words): p -> p + (1 - p) x this when the hallucinated one is longer, p x (1 - this) when shorter.",
    )

    @model_validator(mode="after")
    def _biased_fields_need_biased(self) -> LabelerConfig:
        if self.kind == "uniform" and (self.fooled or self.prefers_longer or self.base_rate != 0.05):
            raise ValueError("fooled, base_rate and prefers_longer describe kind=biased; the uniform labeler uses SynthConfig.label_noise")
        return self

    @classmethod
    def colour_blind(cls) -> LabelerConfig:
        """An annotator fooled by wrong colours (0.8) and wrong counts (0.6), rarely otherwise (0.05)."""
        return cls(kind="biased", fooled={HallucinationType.WRONG_COLOUR: 0.8, HallucinationType.WRONG_COUNT: 0.6}, base_rate=0.05)

    def flip_probability(self, label_noise: float, kind: HallucinationType, faithful: str, hallucinated: str) -> float:
        """Probability that the label names the hallucinated response."""
        if self.kind == "uniform":
            return label_noise
        p = self.fooled.get(kind, self.base_rate)
        longer, shorter = len(hallucinated.split()), len(faithful.split())
        if longer > shorter:
            p += (1 - p) * self.prefers_longer
        elif longer < shorter:
            p *= 1 - self.prefers_longer
        return p


class SynthConfig(Contract):
    """Everything that determines a synthetic dataset; same config, same bytes."""

    name: Name = "synth"
    n_train: int = Field(1000, ge=0)
    n_eval: int = Field(200, ge=0)
    image_size: int = Field(224, ge=MIN_IMAGE_SIZE, le=2048)
    max_kinds: int = Field(3, ge=1, le=len(SHAPES) - 1, description="Most kinds of shape per image.")
    text_probability: float = Field(0.5, ge=0.0, le=1.0, description="Share of images with a sign.")
    hallucination_rates: dict[HallucinationType, float] = Field(
        default_factory=lambda: {t: 0.25 for t in HallucinationType},
        description="Relative weight of each hallucination type (normalised; missing = 0).",
    )
    label_noise: float = Field(0.30, ge=0.0, le=1.0, description="Probability a human label is flipped (the uniform labeler; ignored by kind=biased).")
    labeler: LabelerConfig = Field(
        default_factory=LabelerConfig, description="The annotator model: uniform flips (label_noise) or biased by hallucination type."
    )
    seed: int = 0
    shard_size: int = Field(64, ge=1)

    @field_validator("hallucination_rates")
    @classmethod
    def _some_weight(cls, rates: dict[HallucinationType, float]) -> dict[HallucinationType, float]:
        if any(r < 0 for r in rates.values()) or sum(rates.values()) <= 0:
            raise ValueError("hallucination rates must be >= 0 with a positive sum")
        return rates

    def count(self, split: str) -> int:
        return {"train": self.n_train, "eval": self.n_eval}[split]


class ExampleTruth(Contract):
    """What really holds for an example: never shown to the pipeline, only to evaluation."""

    example_id: str
    split: str
    scene: Scene
    better: Choice = Field(description="The faithful response.")
    hallucination: HallucinationType = Field(description="How the other response departs from the image.")
    hallucination_detail: str = ""
    question_kind: str
    human_label: Choice = Field(description="The label the example carries (maybe flipped).")
    label_flipped: bool


class SplitManifest(Contract):
    count: int = Field(ge=0)
    shards: list[str] = Field(description="Keys of the Example shards, in order.")
    truth_shards: list[str] = Field(description="Keys of the ExampleTruth shards, aligned with shards.")


class DatasetManifest(Contract):
    """The index of a dataset: where its shards are and how it was made."""

    name: Name
    splits: dict[str, SplitManifest]
    config: SynthConfig
    eval_export: str | None = Field(None, description="Key of the VL-RewardBench-format eval file.")
    created_at: datetime = Field(default_factory=utcnow)


# The dataset's keys, by their names here (vlgenrm.layout builds every key).
prefix, manifest_key, shard_key = layout.dataset_prefix, layout.dataset_manifest_key, layout.dataset_shard_key
truth_key, eval_export_key = layout.dataset_truth_key, layout.dataset_eval_key


def _rng(config: SynthConfig, split: str, index: int, purpose: str) -> random.Random:
    # A str seed hashes with SHA-512 in random.Random: stable across processes and platforms.
    return random.Random(f"{config.seed}/{split}/{index}/{purpose}")


#: Bumped when the generator's code changes what a config produces (2: no text shortcuts), so a
#: dataset named by its config's digest is never a stale one.
GENERATOR_FORMAT = 2


def make_example(config: SynthConfig, split: str, index: int) -> tuple[bytes, Example, ExampleTruth]:
    """One pair: (PNG bytes, the example, its truth). The image ref is the content address
    ``BlobStore.put_image`` gives the bytes; storing them is the caller's job."""
    types = sorted(config.hallucination_rates)
    kind = _rng(config, split, index, "kind").choices(types, weights=[config.hallucination_rates[t] for t in types])[0]
    # A misread sign needs a sign: on a scene without one, "there is no sign" against "the sign
    # says W" would tell the better answer by its wording alone.
    signs = 1.0 if kind is HallucinationType.WRONG_TEXT else config.text_probability
    scene = random_scene(_rng(config, split, index, "scene"), config.image_size, config.max_kinds, signs)
    png = render(scene)
    digest = hashlib.sha256(png).hexdigest()
    image = ImageRef(key=image_key(digest, "png"), sha256=digest, width=scene.size, height=scene.size)
    rng = _rng(config, split, index, "text")
    question = random_question(rng, scene, kind)
    good = write_faithful(scene, question, rng)
    bad = write_hallucinated(scene, question, kind, rng)
    better = Choice.A if rng.random() < 0.5 else Choice.B
    p_flip = config.labeler.flip_probability(config.label_noise, kind, good, bad.text)
    flipped = _rng(config, split, index, "label").random() < p_flip
    label = better if not flipped else (Choice.B if better is Choice.A else Choice.A)
    example_id = f"{config.name}-{split}-{index:06d}"
    a, b = (good, bad.text) if better is Choice.A else (bad.text, good)
    example = Example(
        id=example_id,
        image=image,
        question=question.text,
        response_a=a,
        response_b=b,
        human_label=HumanLabel(label.value),
        category=question.kind.value,  # the question's kind: visible anyway, says nothing about the answer
        dataset=config.name,
        metadata={"split": split},
    )
    truth = ExampleTruth(
        example_id=example_id,
        split=split,
        scene=scene,
        better=better,
        hallucination=kind,
        hallucination_detail=bad.detail,
        question_kind=question.kind.value,
        human_label=label,
        label_flipped=flipped,
    )
    return png, example, truth


def _vlrewardbench_row(example: Example, truth: ExampleTruth, png: bytes) -> dict[str, object]:
    return {
        "id": example.id,
        "query": example.question,
        "response": [example.response_a, example.response_b],
        "human_ranking": [0, 1] if truth.better is Choice.A else [1, 0],  # lowest rank wins; TRUE label
        "hallucinated": [truth.better is Choice.B, truth.better is Choice.A],
        "image_b64": base64.b64encode(png).decode(),
        "category": truth.hallucination.value,
    }


def generate_dataset(config: SynthConfig, store: BlobStore, progress: Progress | None = None) -> DatasetManifest:
    """Generate and write the dataset; rewriting the same name replaces it (stale keys removed)."""
    written: set[str] = set()
    splits: dict[str, SplitManifest] = {}
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as export:
        for split in SPLITS:
            total = config.count(split)
            shards, truths = [], []
            for shard, start in enumerate(range(0, total, config.shard_size)):
                lines, truth_lines = [], []
                for index in range(start, min(start + config.shard_size, total)):
                    png, example, truth = make_example(config, split, index)
                    if store.put_image(png, "png").key != example.image.key:
                        raise StoreError("store does not address images by sha256")  # refs would dangle
                    lines.append(example.model_dump_json())
                    truth_lines.append(truth.model_dump_json())
                    if split == "eval":
                        export.write(json.dumps(_vlrewardbench_row(example, truth, png)).encode() + b"\n")
                    if progress is not None:
                        progress(split, index + 1, total)
                shards.append(_put_lines(store, shard_key(config.name, split, shard), lines))
                truths.append(_put_lines(store, truth_key(config.name, split, shard), truth_lines))
            written.update(shards + truths)
            splits[split] = SplitManifest(count=total, shards=shards, truth_shards=truths)
        export_key = None
        if config.n_eval:
            export_key = eval_export_key(config.name)
            size = export.tell()
            export.seek(0)
            store.put_stream(export_key, export, size, "application/x-ndjson")  # type: ignore[arg-type]
            written.add(export_key)
    manifest = DatasetManifest(name=config.name, splits=splits, config=config, eval_export=export_key)
    mkey = manifest_key(config.name)
    for info in list(store.list(f"{prefix(config.name)}/")):
        if info.key not in written and info.key != mkey:
            store.delete(info.key)  # a shard of an earlier, larger run would otherwise linger
    store.put_model(mkey, manifest)
    return manifest


def _put_lines(store: BlobStore, key: str, lines: list[str]) -> str:
    store.put_bytes(key, ("\n".join(lines) + "\n").encode(), "application/x-ndjson")
    return key


def load_manifest(store: BlobStore, name: str) -> DatasetManifest:
    return store.get_model(manifest_key(name), DatasetManifest)


def load_shard(store: BlobStore, key: str) -> list[Example]:
    """The examples of one shard."""
    return [Example.model_validate_json(line) for line in store.get_bytes(key).splitlines() if line.strip()]


def load_truth_shard(store: BlobStore, key: str) -> list[ExampleTruth]:
    return [ExampleTruth.model_validate_json(line) for line in store.get_bytes(key).splitlines() if line.strip()]


def load_examples(store: BlobStore, name: str, split: str) -> list[Example]:
    """Every example of a split, in order."""
    return [e for key in load_manifest(store, name).splits[split].shards for e in load_shard(store, key)]


def load_truth(store: BlobStore, name: str, split: str) -> dict[str, ExampleTruth]:
    """The truth of every example of a split, by example id."""
    manifest = load_manifest(store, name)
    return {t.example_id: t for key in manifest.splits[split].truth_shards for t in load_truth_shard(store, key)}
