"""Ray Train (1 worker) vs a plain single-process torch loop: same model, data and steps.

    .venv/bin/python benchmarks/trainer_ray.py [--records 64] [--steps 60] [--batch-size 8] [--device cpu]

Both loops run the same per-step code (``StepData`` micro-batches, ``train_step``) on the tiny
Qwen2-VL over synthetic records; the Ray run goes through ``run_training`` (local Ray, Ray
Train storage in a local store, metrics reported every ``log_every`` steps). The worker reserves
all CPUs (Ray sets its torch threads to its CPU count; the plain loop uses them all). samples/s counts
the training loop only, from the first step to the last (model loading, Ray start-up and the
final export are reported separately as wall-clock). Target: ratio Ray / plain >= 0.85.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.training.conftest builds the data

from tests.training.conftest import synth  # noqa: E402
from vlgenrm.genrm.config import GenRMSettings  # noqa: E402
from vlgenrm.genrm.model import GenRM  # noqa: E402
from vlgenrm.genrm.tiny import build_tiny_genrm  # noqa: E402
from vlgenrm.genrm.training import SFTCollator, StepSettings, train_step  # noqa: E402
from vlgenrm.settings import RaySettings, StoreKind, StoreSettings  # noqa: E402
from vlgenrm.store import LocalStore  # noqa: E402
from vlgenrm.training.config import TrainingConfig, TrainingTaskSettings  # noqa: E402
from vlgenrm.training.data import RecordSource, load_training_set, write_training_set  # noqa: E402
from vlgenrm.training.loop import StepData  # noqa: E402
from vlgenrm.training.run import run_training  # noqa: E402


def plain_loop(start: Path, store: LocalStore, key: str, config: TrainingConfig, device: str) -> tuple[float, float]:
    """(samples/s of the loop, loss at the end) without Ray: what one process does by hand."""
    torch.manual_seed(config.seed)
    genrm = GenRM.load(start, GenRMSettings(device=device, max_length=config.max_length))
    optimizer = torch.optim.AdamW(genrm.model.parameters(), lr=config.learning_rate)
    data = StepData(RecordSource(store, key, image_size=config.image_size), SFTCollator(genrm), config)
    settings = StepSettings(max_grad_norm=config.max_grad_norm)
    began = time.monotonic()
    for step in range(config.max_steps or 0):
        metrics = train_step(genrm.model, optimizer, data.micro_batches(step), settings)
    return (config.max_steps or 0) * config.batch_size / (time.monotonic() - began), metrics["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=64, help="synthetic examples (x2 orders = records)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the Ray worker then asks for one GPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    gpus = 1 if args.device.startswith("cuda") else 0
    config = TrainingConfig(
        batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=1e-3,
        log_every=10,
        checkpoint_every=10 * args.steps,
        gpus_per_worker=gpus,
        precision="fp32",
        # Ray sets a worker's torch threads to its CPUs: give it the machine, as the plain loop has.
        cpus_per_worker=os.cpu_count() or 1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        store = LocalStore(root)
        start = build_tiny_genrm(Path(tmp) / "start", "qwen2_vl", seed=0)
        data = synth(store, "bench", n_train=args.records, n_eval=0)
        records, _ = load_training_set(store, data.uris)
        key = write_training_set(store, "bench/train.jsonl", records)

        plain_rate, plain_loss = plain_loop(start, store, key, config, args.device)
        began = time.monotonic()
        outcome = run_training(
            TrainingTaskSettings(base_model=str(start), training=config, genrm=GenRMSettings(device=args.device)),
            store=store,
            store_settings=StoreSettings(kind=StoreKind.LOCAL, root=root),
            ray_settings=RaySettings(num_cpus=os.cpu_count()),
            data_key=key,
            storage_prefix="bench/ray",
            export_prefix="bench/model",
            label="bench",
        )
        ray_wall = time.monotonic() - began
        ray_rate = outcome.metrics["samples_per_s"]

    print(f"# Trainer benchmark ({datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, device {args.device}, torch {torch.__version__})")
    print(f"tiny Qwen2-VL, {len(records)} records, {args.steps} steps x batch {args.batch_size} (+ bare-verdict examples), fp32")
    print("| loop | samples/s | final loss |")
    print("|---|---:|---:|")
    print(f"| plain torch, one process | {plain_rate:.1f} | {plain_loss:.4f} |")
    print(f"| Ray Train, 1 worker | {ray_rate:.1f} | {outcome.metrics['final_loss']:.4f} |")
    print(f"ratio Ray / plain: {ray_rate / plain_rate:.3f} (target >= 0.85)")
    print(f"Ray run wall-clock incl. start-up, checkpoint and export: {ray_wall:.1f} s for {outcome.metrics['train_seconds']:.1f} s of training")


if __name__ == "__main__":
    main()
