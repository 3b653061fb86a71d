"""Every store key the platform writes, built and parsed here and nowhere else (§4).

::

    images/<sha256>.<ext>                                   content-addressed images
    datasets/<name>/manifest.json                           a dataset's index
    datasets/<name>/<split>/shards/<nnnnn>.jsonl            its examples
    datasets/<name>/truth/<split>/<nnnnn>.jsonl             held-back truth (synthetic data)
    datasets/<name>/eval/vlrewardbench.jsonl                the eval export
    iterations/<ns>/<name>/<stage>/<nnnnn>.jsonl            a stage's output shard
    iterations/<ns>/<name>/<stage>/<kind>/<nnnnn>.jsonl     another kind of output (sampling/hard, …)
    iterations/<ns>/<name>/<stage>/<nnnnn>.done             its completion marker (the truth)
    iterations/<ns>/<name>/<stage>/<part>/<nnnnn>.<ext>     reports, decisions, training data
    iterations/<ns>/<name>/CANCELLED                        the tombstone of a deleted Iteration
    checkpoints/<ns>/<name>/model/                          an Iteration's trained model (HF format)
    checkpoints/<ns>/<name>/ray/                            Ray Train's storage of that run
    checkpoints/<ns>/base-<digest>/model/                   the embedded base VLM, uploaded
    models/<ns>/promoted.json                               the promotion pointer
    models/<ns>/history/<iteration>.json                    every promotion

Functions take plain strings and ints, so any layer (contracts excepted) can use them without
importing another's types; :func:`parse_marker` is the one parser the shells need.
"""

from __future__ import annotations

import re

from vlgenrm.contracts import Stage

MANIFEST_FILE = "vlgenrm-manifest.json"


# -- images and datasets ---------------------------------------------------------------------
def image_key(sha256: str, ext: str) -> str:
    return f"images/{sha256}.{ext}"


def dataset_prefix(name: str) -> str:
    return f"datasets/{name}"


def dataset_manifest_key(name: str) -> str:
    return f"{dataset_prefix(name)}/manifest.json"


def dataset_shard_key(name: str, split: str, shard: int) -> str:
    return f"{dataset_prefix(name)}/{split}/shards/{shard:05d}.jsonl"


def dataset_truth_key(name: str, split: str, shard: int) -> str:
    return f"{dataset_prefix(name)}/truth/{split}/{shard:05d}.jsonl"


def dataset_eval_key(name: str) -> str:
    return f"{dataset_prefix(name)}/eval/vlrewardbench.jsonl"


# -- iterations ------------------------------------------------------------------------------
def iteration_prefix(namespace: str, iteration: str) -> str:
    """``iterations/<ns>/<name>/``: everything one Iteration's stages wrote (trailing slash)."""
    return f"iterations/{namespace}/{iteration}/"


def stage_prefix(namespace: str, iteration: str, stage: Stage) -> str:
    """``iterations/<ns>/<name>/<stage>`` (no trailing slash)."""
    return f"{iteration_prefix(namespace, iteration)}{stage.value}"


def output_key(namespace: str, iteration: str, stage: Stage, shard: int, kind: str | None = None) -> str:
    """A stage's output shard; ``kind`` names another output of the same shard (``hard``, ``incumbent``)."""
    middle = f"/{kind}" if kind else ""
    return f"{stage_prefix(namespace, iteration, stage)}{middle}/{shard:05d}.jsonl"


def kind_prefix(namespace: str, iteration: str, stage: Stage, kind: str) -> str:
    """Where the ``kind`` outputs of every shard of a stage are (trailing slash)."""
    return f"{stage_prefix(namespace, iteration, stage)}/{kind}/"


def part_key(namespace: str, iteration: str, stage: Stage, part: str, shard: int, ext: str) -> str:
    """A shard's ``part`` (``report``, ``decision``, ``incumbent``, ``data``) with extension ``ext``."""
    return f"{stage_prefix(namespace, iteration, stage)}/{part}/{shard:05d}.{ext}"


def marker_key(namespace: str, iteration: str, stage: Stage, shard: int) -> str:
    return f"{stage_prefix(namespace, iteration, stage)}/{shard:05d}.done"


_MARKER = re.compile(r"(\d{5})\.done")


def parse_marker(stage_prefix_: str, key: str) -> int | None:
    """The shard number of a completion marker directly under ``stage_prefix_``; None for any
    other key (outputs, reports, deeper kinds)."""
    if not key.startswith(stage_prefix_ + "/"):
        return None
    match = _MARKER.fullmatch(key[len(stage_prefix_) + 1 :])
    return int(match[1]) if match else None


def is_output_shard(stage_prefix_: str, key: str) -> bool:
    """Whether ``key`` is one of the stage's own output shards (not a kind, report or marker)."""
    rest = key[len(stage_prefix_) + 1 :] if key.startswith(stage_prefix_ + "/") else ""
    return bool(rest) and "/" not in rest and rest.endswith(".jsonl")


def cancelled_key(namespace: str, iteration: str) -> str:
    """The tombstone of a deleted Iteration: its queued tasks are skipped, not processed."""
    return f"{iteration_prefix(namespace, iteration)}CANCELLED"


# -- checkpoints and promotion ---------------------------------------------------------------
def checkpoint_prefix(namespace: str, iteration: str) -> str:
    """Where an Iteration's trained model lives, in Hugging Face format."""
    return f"checkpoints/{namespace}/{iteration}/model"


def train_storage_prefix(namespace: str, iteration: str) -> str:
    """Ray Train's storage (checkpoints to resume from) of an Iteration's training run."""
    return f"checkpoints/{namespace}/{iteration}/ray"


def base_checkpoint_prefix(namespace: str, digest: str) -> str:
    """The embedded base VLM of a given build digest, uploaded for a local run."""
    return f"checkpoints/{namespace}/base-{digest}/model"


def checkpoint_manifest_key(prefix: str) -> str:
    """A checkpoint's manifest, uploaded last: it exists only once the whole checkpoint does."""
    return f"{prefix}/{MANIFEST_FILE}"


def promoted_key(namespace: str) -> str:
    return f"models/{namespace}/promoted.json"


def history_prefix(namespace: str) -> str:
    return f"models/{namespace}/history/"


def history_key(namespace: str, iteration: str) -> str:
    return f"{history_prefix(namespace)}{iteration}.json"
