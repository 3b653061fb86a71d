"""Synthetic datasets in the store: layout, label noise, determinism, no truth leaks, export."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from vlgenrm.contracts import Choice, HumanLabel
from vlgenrm.evaluation.benchmark import load_preference_benchmark
from vlgenrm.experts.claims import LexiconClaimExtractor
from vlgenrm.store import LocalStore
from vlgenrm.synth.dataset import (
    DatasetManifest,
    SynthConfig,
    generate_dataset,
    load_examples,
    load_manifest,
    load_shard,
    load_truth,
    make_example,
)
from vlgenrm.synth.vocab import HallucinationType

from .truth import is_true

N_TRAIN, N_EVAL = 1000, 40


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[LocalStore, DatasetManifest]:
    store = LocalStore(tmp_path_factory.mktemp("store"))
    return store, generate_dataset(SynthConfig(name="big", n_train=N_TRAIN, n_eval=N_EVAL, seed=5), store)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and ".tmp" not in p.parts}


def test_layout(big):
    store, manifest = big
    assert load_manifest(store, "big") == manifest
    train, eval_ = manifest.splits["train"], manifest.splits["eval"]
    assert (train.count, eval_.count) == (N_TRAIN, N_EVAL)
    assert train.shards[0] == "datasets/big/train/shards/00000.jsonl" and len(train.shards) == 16  # ceil(1000/64)
    assert train.truth_shards[-1] == "datasets/big/truth/train/00015.jsonl"
    assert manifest.eval_export == "datasets/big/eval/vlrewardbench.jsonl"
    keys = {i.key for i in store.list("datasets/big/")}
    assert keys == {*train.shards, *train.truth_shards, *eval_.shards, *eval_.truth_shards, manifest.eval_export, "datasets/big/manifest.json"}
    examples = load_shard(store, train.shards[0])
    assert len(examples) == 64 and examples[0].id == "big-train-000000"
    # Images are content-addressed, present and decodable.
    for example in examples[:10]:
        data = store.get_image(example.image)
        assert example.image.key == f"images/{hashlib.sha256(data).hexdigest()}.png"
        assert Image.open(io.BytesIO(data)).size == (224, 224) == (example.image.width, example.image.height)


def test_truth_is_aligned_and_true(big):
    store, _ = big
    examples = load_examples(store, "big", "train")
    truth = load_truth(store, "big", "train")
    assert [e.id for e in examples] == list(truth)
    extractor = LexiconClaimExtractor()
    for example in examples[:100]:
        t = truth[example.id]
        assert example.human_label.value == t.human_label.value
        assert (t.human_label != t.better) == t.label_flipped
        a_good = t.better is Choice.A
        good, bad = (example.response_a, example.response_b) if a_good else (example.response_b, example.response_a)
        assert all(is_true(c, t.scene) for c in extractor.extract(good, Choice.A, "x"))
        assert not all(is_true(c, t.scene) for c in extractor.extract(bad, Choice.A, "x"))


def test_label_noise_rate_and_balance(big):
    store, _ = big
    truth = load_truth(store, "big", "train").values()
    flipped = sum(t.label_flipped for t in truth) / N_TRAIN
    assert abs(flipped - 0.30) <= 0.05
    assert 0.4 < sum(t.better is Choice.A for t in truth) / N_TRAIN < 0.6, "faithful response is A about half the time"
    kinds = {t.hallucination for t in truth}
    assert kinds == set(HallucinationType)


def test_examples_do_not_leak_truth(big):
    store, manifest = big
    for split in manifest.splits.values():
        for key in split.shards:
            raw = store.get_bytes(key).decode()
            for secret in [*HallucinationType, "hallucinat", "flipped", "better", "truth", "faithful", "->"]:
                assert secret not in raw, (key, secret)
            for line in raw.splitlines():
                assert json.loads(line)["metadata"] in ({"split": "train"}, {"split": "eval"})


def test_vlrewardbench_export_loads_with_true_labels(big):
    store, manifest = big
    rows = load_preference_benchmark(store.root / manifest.eval_export)
    truth = load_truth(store, "big", "eval")
    examples = {e.id: e for e in load_examples(store, "big", "eval")}
    assert len(rows) == N_EVAL
    for row in rows:
        t, e = truth[row.id], examples[row.id]
        assert row.responses == [e.response_a, e.response_b]
        assert row.better == (0 if t.better is Choice.A else 1)
        assert row.category == t.hallucination.value
        assert row.hallucinated == [t.better is Choice.B, t.better is Choice.A]
        assert hashlib.sha256(row.image).hexdigest() == e.image.sha256


def test_same_config_same_bytes(tmp_path):
    config = SynthConfig(name="d", n_train=20, n_eval=6, shard_size=8, seed=3)
    runs = []
    for run in ("one", "two"):
        manifest = generate_dataset(config, LocalStore(tmp_path / run))
        runs.append((manifest.model_dump(exclude={"created_at"}), files(tmp_path / run)))
    (m1, f1), (m2, f2) = runs
    assert m1 == m2
    del f1["datasets/d/manifest.json"], f2["datasets/d/manifest.json"]
    assert f1 == f2 and len(f1) > 26
    other = generate_dataset(config.model_copy(update={"seed": 4}), LocalStore(tmp_path / "three"))
    assert files(tmp_path / "three")["datasets/d/train/shards/00000.jsonl"] != f1["datasets/d/train/shards/00000.jsonl"]
    assert other.splits["train"].count == 20


def test_label_noise_changes_labels_only():
    base = SynthConfig(n_train=1, n_eval=0)
    png0, ex0, _ = make_example(base, "train", 0)
    png1, ex1, t1 = make_example(base.model_copy(update={"label_noise": 1.0}), "train", 0)
    assert png0 == png1 and ex0.response_a == ex1.response_a and ex0.human_label != ex1.human_label
    assert t1.label_flipped and ex1.human_label == HumanLabel(t1.human_label.value)


def test_regenerating_smaller_removes_stale_shards(tmp_path):
    store = LocalStore(tmp_path)
    generate_dataset(SynthConfig(name="d", n_train=10, n_eval=3, shard_size=4), store)
    manifest = generate_dataset(SynthConfig(name="d", n_train=3, n_eval=0, shard_size=4), store)
    keys = sorted(i.key for i in store.list("datasets/d/"))
    assert keys == ["datasets/d/manifest.json", "datasets/d/train/shards/00000.jsonl", "datasets/d/truth/train/00000.jsonl"]
    assert manifest.eval_export is None and manifest.splits["eval"].shards == []


def test_config_validation():
    with pytest.raises(ValueError):
        SynthConfig(name="a/b")
    with pytest.raises(ValueError):
        SynthConfig(hallucination_rates={HallucinationType.WRONG_TEXT: 0.0})
    with pytest.raises(ValueError):
        SynthConfig(image_size=64)
    only_text = SynthConfig(n_train=30, hallucination_rates={HallucinationType.WRONG_TEXT: 1.0})
    assert all(make_example(only_text, "train", i)[2].hallucination is HallucinationType.WRONG_TEXT for i in range(30))


def test_the_text_alone_does_not_tell_the_better_response() -> None:
    """A GenRM must look at the image: no surface count of the two responses' words points at
    the faithful one. Measured before the fix: a text-only classifier of such counts was right
    0.642 of the time (an invented shape was added to the hallucinated answer, a sign-less
    scene got "there is no sign" against "the sign says W")."""
    from collections import defaultdict

    from vlgenrm.synth.shortcuts import FEATURES, word_counts

    larger: dict[tuple[str, str], list[bool]] = defaultdict(list)  # did the faithful response have more?
    config = SynthConfig(name="shortcut", n_train=1200, n_eval=0, label_noise=0.0)
    for i in range(config.n_train):
        _, ex, truth = make_example(config, "train", i)
        good, bad = (ex.response_a, ex.response_b) if truth.better is Choice.A else (ex.response_b, ex.response_a)
        for name, g, b in zip(FEATURES, word_counts(good), word_counts(bad), strict=True):
            if g != b:
                larger[(truth.hallucination.value, name)].append(g > b)
    for key, said in larger.items():
        if len(said) >= 50:
            assert 0.3 <= sum(said) / len(said) <= 0.7, (key, sum(said) / len(said), len(said))
