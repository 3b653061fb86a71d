"""GenRM core throughput on the tiny model: batched vs one-by-one scoring, and train-step time.

    .venv/bin/python benchmarks/genrm_cpu.py [--pairs 64] [--batch-size 16] [--steps 20] [--device cpu]

Scoring throughput is pairwise P([[A]]) averaged over both orders (4 teacher-forced sequences
per pair), measured batched and one pair at a time in the same run; the ratio is the number
that matters. Train-step time is one SFT optimiser step on 8 examples.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import GenRM, PairwiseQuery
from vlgenrm.genrm.prompts import target_text
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.genrm.training import SFTCollator, SFTExample, make_batch, train_step


def png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (56, 56), colour).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64, help="pairs scored in each mode")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass when batched")
    parser.add_argument("--steps", type=int, default=20, help="train steps timed")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    args = parser.parse_args()

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_genrm(Path(tmp) / "tiny")
        settings = GenRMSettings(device=args.device, dtype=args.dtype, batch_size=args.batch_size)
        genrm = GenRM.load(path, settings)
        queries = [
            PairwiseQuery(png((rng.randrange(256), rng.randrange(256), rng.randrange(256))), "What colour is the square?",
                          "It is red.", "It is blue.", critique="Response A names the colour of the square.")
            for _ in range(args.pairs)
        ]
        genrm.pairwise_probs(queries[:2])  # warm-up (allocator, kernels)

        start = time.perf_counter()
        batched = genrm.pairwise_probs(queries)
        t_batched = time.perf_counter() - start

        genrm.settings = settings.model_copy(update={"batch_size": 1})
        start = time.perf_counter()
        single = [genrm.pairwise_probs([q])[0] for q in queries]
        t_single = time.perf_counter() - start
        max_diff = max(abs(a - b) for a, b in zip(batched, single))

        genrm.settings = settings
        collator = SFTCollator(genrm)
        examples = [SFTExample(q.image, q.question, (q.response_a, q.response_b), target_text(q.critique, "A")) for q in queries]
        optimizer = torch.optim.AdamW(genrm.model.parameters(), lr=1e-4)
        times = []
        for _ in range(args.steps + 2):
            batch = make_batch(collator, rng.sample(examples, 8))
            start = time.perf_counter()
            train_step(genrm.model, optimizer, [batch])
            times.append(time.perf_counter() - start)
        times = times[2:]  # the first steps allocate optimiser state

    params = sum(p.numel() for p in genrm.model.parameters())
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), device {args.device}, {args.dtype}")
    print(f"model: tiny {genrm.family.name}, {params / 1e6:.2f} M parameters")
    print(f"scoring {args.pairs} pairs (both orders, 4 sequences per pair):")
    print(f"  batched (batch_size={args.batch_size}): {args.pairs / t_batched:8.1f} pairs/s")
    print(f"  one-by-one                 : {args.pairs / t_single:8.1f} pairs/s")
    print(f"  speed-up                   : {t_single / t_batched:8.2f}x  (max |p_batched - p_single| = {max_diff:.2e})")
    print(f"train step (SFT, 8 examples, {args.steps} steps): median {statistics.median(times) * 1000:.1f} ms, "
          f"p90 {sorted(times)[int(0.9 * len(times)) - 1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
