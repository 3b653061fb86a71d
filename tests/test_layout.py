"""The store's key layout: one module builds and parses every key, and nothing else formats one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.source import docstring_ids
from vlgenrm import layout
from vlgenrm.contracts import ShardRef, Stage
from vlgenrm.stages import marker_key, output_key, part_key, stage_prefix

ROOT = Path(__file__).resolve().parents[1]
#: Where the platform's code lives (the layout module itself excepted).
CODE = [ROOT / "shared" / "vlgenrm", ROOT / "services", ROOT / "operators"]
TOP_LEVELS = ("images/", "datasets/", "iterations/", "checkpoints/", "models/")


def test_keys_follow_the_documented_layout():
    assert layout.image_key("ab" * 32, "png") == f"images/{'ab' * 32}.png"
    assert layout.dataset_manifest_key("synth") == "datasets/synth/manifest.json"
    assert layout.dataset_shard_key("synth", "train", 3) == "datasets/synth/train/shards/00003.jsonl"
    assert layout.dataset_truth_key("synth", "eval", 0) == "datasets/synth/truth/eval/00000.jsonl"
    assert layout.dataset_eval_key("synth") == "datasets/synth/eval/vlrewardbench.jsonl"
    assert layout.output_key("ns", "it", Stage.SAMPLING, 7) == "iterations/ns/it/sampling/00007.jsonl"
    assert layout.output_key("ns", "it", Stage.SAMPLING, 7, "hard") == "iterations/ns/it/sampling/hard/00007.jsonl"
    assert layout.kind_prefix("ns", "it", Stage.SAMPLING, "hard") == "iterations/ns/it/sampling/hard/"
    assert layout.part_key("ns", "it", Stage.EVALUATION, "decision", 0, "json") == "iterations/ns/it/evaluation/decision/00000.json"
    assert layout.marker_key("ns", "it", Stage.EXPERTS, 12) == "iterations/ns/it/experts/00012.done"
    assert layout.cancelled_key("ns", "it") == "iterations/ns/it/CANCELLED"
    assert layout.checkpoint_prefix("ns", "it") == "checkpoints/ns/it/model"
    assert layout.train_storage_prefix("ns", "it") == "checkpoints/ns/it/ray"
    assert layout.base_checkpoint_prefix("ns", "abc") == "checkpoints/ns/base-abc/model"
    assert layout.checkpoint_manifest_key("checkpoints/ns/it/model") == "checkpoints/ns/it/model/vlgenrm-manifest.json"
    assert layout.promoted_key("ns") == "models/ns/promoted.json"
    assert layout.history_key("ns", "it") == "models/ns/history/it.json"
    assert layout.history_key("ns", "it").startswith(layout.history_prefix("ns"))


def test_shard_helpers_are_the_layout_of_a_shard_ref():
    ref = ShardRef(namespace="ns", iteration="it", stage=Stage.TRAINING, shard=0)
    assert stage_prefix(ref) == layout.stage_prefix("ns", "it", Stage.TRAINING)
    assert output_key(ref, "x") == layout.output_key("ns", "it", Stage.TRAINING, 0, "x")
    assert part_key(ref, "report", "png") == "iterations/ns/it/training/report/00000.png"
    assert marker_key(ref) == layout.marker_key("ns", "it", Stage.TRAINING, 0)


@pytest.mark.parametrize("stage", list(Stage))
def test_markers_parse_back_and_nothing_else_does(stage: Stage):
    prefix = layout.stage_prefix("ns", "it", stage)
    for shard in (0, 9, 12345):
        assert layout.parse_marker(prefix, layout.marker_key("ns", "it", stage, shard)) == shard
    others = [
        layout.output_key("ns", "it", stage, 1),
        layout.output_key("ns", "it", stage, 1, "hard").replace(".jsonl", ".done"),
        layout.part_key("ns", "it", stage, "report", 1, "json"),
        layout.marker_key("ns", "other", stage, 1),
        f"{prefix}/1.done",
        f"{prefix}/000001.done",
        f"{prefix}x/00001.done",
    ]
    assert [layout.parse_marker(prefix, key) for key in others] == [None] * len(others)
    assert layout.is_output_shard(prefix, layout.output_key("ns", "it", stage, 3))
    assert not any(layout.is_output_shard(prefix, key) for key in others[1:])


def _formatted_keys(path: Path) -> list[tuple[int, str]]:
    """String literals and f-strings that start a store key (docstrings and comments aside)."""
    tree = ast.parse(path.read_text())
    docstrings = docstring_ids(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        else:
            continue
        if text.startswith(TOP_LEVELS):
            found.append((node.lineno, text))
    return sorted(set(found))  # an f-string's first part is a constant node of its own too


def test_no_store_key_is_formatted_outside_the_layout_module():
    offenders = []
    for folder in CODE:
        for path in sorted(folder.rglob("*.py")):
            if path == ROOT / "shared" / "vlgenrm" / "layout.py":
                continue
            offenders += [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _formatted_keys(path)]
    assert offenders == [], "build keys with vlgenrm.layout:\n" + "\n".join(offenders)


def test_the_check_finds_a_formatted_key(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Keys live under iterations/<ns>/."""\n\ndef f(ns):\n    return f"iterations/{ns}/x"\n')
    assert _formatted_keys(bad) == [(4, "iterations/")]
