"""Ray Train on a real local Ray: the trained model beats its start on held-out data; two
workers with the same global batch (DDP or FSDP) follow the one-worker loss curve."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.training.conftest import COLOUR_QUESTION, COLOUR_RESPONSES, colour_records, synth
from vlgenrm.contracts import Choice, TrainingRecord
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM, PairwiseQuery
from vlgenrm.settings import RaySettings, StoreKind, StoreSettings
from vlgenrm.store import LocalStore
from vlgenrm.training.config import TrainingConfig, TrainingTaskSettings
from vlgenrm.training.data import load_training_set, write_training_set
from vlgenrm.training.loop import threads_for
from vlgenrm.training.run import TrainingOutcome, run_training

pytestmark = pytest.mark.slow


def train(root: Path, start: Path, data_key: str, config: TrainingConfig, name: str) -> TrainingOutcome:
    return run_training(
        TrainingTaskSettings(base_model=str(start), training=config),
        store=LocalStore(root),
        store_settings=StoreSettings(kind=StoreKind.LOCAL, root=root),
        ray_settings=RaySettings(num_cpus=2),
        data_key=data_key,
        storage_prefix=f"checkpoints/test/{name}/ray",
        export_prefix=f"checkpoints/test/{name}/model",
        label=name,
    )


def held_out_accuracy(store: LocalStore, model: str, held_out: list[TrainingRecord]) -> float:
    """Verdicts right on unseen records, scored directly (no critique) in the trained order."""
    genrm = GenRM.load(model, GenRMSettings(), store=store)
    queries = [PairwiseQuery(store.get_image(r.image), COLOUR_QUESTION, *COLOUR_RESPONSES) for r in held_out]
    margins_for_a = genrm.margins(queries, [Choice.A] * len(held_out))
    return sum((m > 0) == (r.verdict is Choice.A) for m, r in zip(margins_for_a, held_out, strict=True)) / len(held_out)


def test_one_worker_raises_held_out_accuracy_and_exports_a_model_that_scores(local_ray, tmp_path, tiny_start):
    store = LocalStore(tmp_path / "store")
    # A random start already answers by colour, with a sign set by chance: teach it the mapping it gets wrong.
    red_is = Choice.B if held_out_accuracy(store, str(tiny_start), colour_records(store, 16, seed=2)) > 0.5 else Choice.A
    train_set, held_out = colour_records(store, 32, seed=0, red_is=red_is), colour_records(store, 40, seed=1, red_is=red_is)  # unseen shades
    key = write_training_set(store, "sets/colour.jsonl", train_set)
    config = TrainingConfig(batch_size=8, max_steps=60, learning_rate=1e-3, log_every=10, checkpoint_every=30)
    outcome = train(tmp_path / "store", tiny_start, key, config, "colour")
    before, after = held_out_accuracy(store, str(tiny_start), held_out), held_out_accuracy(store, outcome.checkpoint_uri, held_out)
    print(
        f"\nheld-out accuracy {before:.3f} -> {after:.3f}; loss {outcome.metrics['first_loss']:.3f} -> {outcome.metrics['final_loss']:.3f}; "
        f"{outcome.metrics['samples_per_s']:.1f} samples/s"
    )
    assert before <= 0.75, "the start checkpoint should not already know"
    assert after >= 0.9 and after >= before + 0.2
    assert outcome.state.step == 60 and [p.step for p in outcome.state.history] == list(range(10, 61, 10))
    assert outcome.state.threads == threads_for(config.cpus_per_worker) == 1  # not one per core of the machine


def test_two_workers_with_the_same_global_batch_follow_the_one_worker_loss_curve(local_ray, tmp_path, tiny_start):
    """DDP and FSDP (FSDP2, gloo on CPU) over 2 workers against 1 worker, 8 logged steps."""
    store = LocalStore(tmp_path / "store")
    data = synth(store, n_train=16, n_eval=0)
    records, _ = load_training_set(store, data.uris)
    key = write_training_set(store, "sets/train.jsonl", records)
    curves = {}
    for workers, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp")):
        config = TrainingConfig(
            batch_size=4, workers=workers, strategy=strategy, max_steps=8, log_every=1, checkpoint_every=4, learning_rate=5e-4, cpus_per_worker=0.5
        )
        outcome = train(tmp_path / "store", tiny_start, key, config, f"{strategy}{workers}")
        curves[f"{strategy}{workers}"] = [p.loss for p in outcome.state.history]
        # Every strategy exports a whole model that loads through the adapter.
        assert GenRM.load(outcome.checkpoint_uri, GenRMSettings(), store=store).version == outcome.version
    print("\n" + "\n".join(f"{k}: {[round(x, 4) for x in v]}" for k, v in curves.items()))
    one = curves["ddp1"]
    assert len(one) == 8 and one[-1] < one[0]
    # Not bitwise: one worker averages over all target tokens of the batch, two average the
    # two halves' means. Same batches, same steps, so the curves agree closely.
    for name in ("ddp2", "fsdp2"):
        assert len(curves[name]) == 8
        for a, b in zip(one, curves[name], strict=True):
            assert math.isclose(a, b, rel_tol=0.05), (name, one, curves[name])


def test_lora_dpo_bf16_accumulation_and_checkpointing_train_and_export(local_ray, tmp_path, tiny_start):
    """The options together: LoRA adapters (merged in the export), sft+dpo against the start
    model, bf16 autocast, 2 micro-batches, activation checkpointing; a corrupt image in the
    store is skipped and counted by the worker, not fatal."""
    store = LocalStore(tmp_path / "store")
    records = colour_records(store, 16, seed=0)
    records = [
        r.model_copy(update={"rejected": f"Response B is right.\nVerdict: [[{'B' if r.verdict is Choice.A else 'A'}]]"}) if i % 2 else r
        for i, r in enumerate(records)
    ]
    key = write_training_set(store, "sets/opts.jsonl", records)
    store.put_bytes(records[3].image.key, b"not the image any more")  # fails its digest in the worker
    config = TrainingConfig(
        batch_size=4,
        accumulation=2,
        max_steps=4,
        learning_rate=1e-3,
        log_every=2,
        checkpoint_every=2,
        lora={"r": 4, "alpha": 8},
        objective="sft+dpo",
        precision="bf16",
        gradient_checkpointing=True,
    )
    outcome = train(tmp_path / "store", tiny_start, key, config, "opts")
    assert outcome.state.step == 4
    assert outcome.state.skipped.get("image_unavailable", 0) >= 1
    assert outcome.state.skipped.get("no_rejected_for_dpo", 0) >= 1  # critiques without a rejected one
    trained = GenRM.load(outcome.checkpoint_uri, GenRMSettings(), store=store)
    assert not any("lora" in name for name, _ in trained.model.named_parameters())
    assert trained.version != GenRM.load(tiny_start).version


def test_the_driver_joins_an_existing_cluster_named_by_ray_address(local_ray):
    import os
    import subprocess
    import sys

    import ray

    address = ray.get_runtime_context().gcs_address
    code = (
        "import logging, ray; logging.basicConfig(level=logging.INFO)\n"
        "from vlgenrm.settings import RaySettings; from vlgenrm.ray_cluster import ensure_ray\n"
        "ensure_ray(RaySettings()); print('joined', ray.get_runtime_context().gcs_address, ray.cluster_resources()['CPU'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=os.environ | {"RAY_ADDRESS": address}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"connecting to the Ray cluster at {address}" in out.stderr
    assert f"joined {address} 2.0" in out.stdout
