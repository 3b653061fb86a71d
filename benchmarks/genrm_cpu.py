"""GenRM core throughput: the prefix-cache scoring path against the reference path, and train-step time.

    .venv/bin/python benchmarks/genrm_cpu.py [--pairs 64] [--batch-size 8] [--repeats 3] [--steps 20] [--model PATH]

Scoring throughput is pairwise P([[A]]) averaged over both orders (two options x two orders
per pair), measured in one run on the same pairs: the reference path (``prefix_cache: false``:
four full teacher-forced sequences per pair, each prompt processed on its own) and the default
path (each prompt's shared prefix once, its KV cache reused for the two options' tails, an
image shown in both orders processed once), direct and after a critique, batched and one pair
at a time, each path's best of --repeats runs (taking turns); max |dp| between the paths is
printed beside each. The model is a tiny random
Qwen2-VL built from its config, or ``--model`` (e.g. the embedded base in
~/.cache/vlgenrm/base). Train-step time is one SFT optimiser step on 8 examples. The last line
is ``ratio: X``, the default path's batched direct pairs/s over the reference's.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from dataclasses import replace
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


def _rates(genrm: GenRM, queries: list[PairwiseQuery], batch_size: int, repeats: int) -> tuple[float, float, float]:
    """(reference pairs/s, prefix-cache pairs/s, max |dp|): each path's best of ``repeats``
    runs, the two paths taking turns so a busy machine slows both alike."""
    best = {False: float("inf"), True: float("inf")}
    probs: dict[bool, list[float]] = {}
    for _ in range(repeats):
        for prefix_cache in (False, True):
            genrm.settings = genrm.settings.model_copy(update={"batch_size": batch_size, "prefix_cache": prefix_cache})
            genrm.pairwise_probs(queries[:2])  # warm-up (allocator, kernels)
            start = time.perf_counter()
            probs[prefix_cache] = genrm.pairwise_probs(queries) if batch_size > 1 else [genrm.pairwise_probs([q])[0] for q in queries]
            best[prefix_cache] = min(best[prefix_cache], time.perf_counter() - start)
    diff = max(abs(a - b) for a, b in zip(probs[False], probs[True], strict=True))
    return len(queries) / best[False], len(queries) / best[True], diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64, help="pairs scored in each mode")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per forward pass when batched (GenRMSettings.batch_size)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path (the best counts)")
    parser.add_argument("--steps", type=int, default=20, help="train steps timed")
    parser.add_argument("--model", default=None, help="a checkpoint folder instead of the tiny random model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    args = parser.parse_args()

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or build_tiny_genrm(Path(tmp) / "tiny")
        genrm = GenRM.load(path, GenRMSettings(device=args.device, dtype=args.dtype, batch_size=args.batch_size))
        queries = [
            PairwiseQuery(
                png((rng.randrange(256), rng.randrange(256), rng.randrange(256))),
                "What colour is the square?",
                "A red square sits on the left.",
                "A blue square sits on the left.",
            )
            for _ in range(args.pairs)
        ]
        critiqued = [replace(q, critique="Response A names the colour of the square; Response B does not match the image.") for q in queries]
        rows = []
        for label, qs in (("direct", queries), ("after a critique", critiqued)):
            for batch_size in (args.batch_size, 1):
                rows.append((label, batch_size, *_rates(genrm, qs, batch_size, args.repeats)))

        genrm.settings = genrm.settings.model_copy(update={"batch_size": args.batch_size, "prefix_cache": True})
        collator = SFTCollator(genrm)
        examples = [SFTExample(q.image, q.question, (q.response_a, q.response_b), target_text(q.critique, "A", q.response_a)) for q in critiqued]
        optimizer = torch.optim.AdamW(genrm.model.parameters(), lr=1e-4)
        times = []
        for _ in range(args.steps + 2):
            batch = make_batch(collator, rng.sample(examples, 8))
            start = time.perf_counter()
            train_step(genrm.model, optimizer, [batch])
            times.append(time.perf_counter() - start)
        times = times[2:]  # the first steps allocate optimiser state

    params = sum(p.numel() for p in genrm.model.parameters())
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), device {args.device}, {args.dtype}"
    )
    print(
        f"model: {'tiny random ' if args.model is None else args.model + ', '}{genrm.family.name}, {params / 1e6:.2f} M parameters; restate={genrm.settings.restate}"
    )
    print(f"scoring {args.pairs} pairs (both orders, two options each), pairs/s:")
    print(f"  {'mode':<17} {'batch':>5} {'reference':>10} {'prefix cache':>13} {'speed-up':>9}  max |dp|")
    for label, batch_size, reference, cached, diff in rows:
        print(f"  {label:<17} {batch_size:>5} {reference:>10.1f} {cached:>13.1f} {cached / reference:>8.2f}x  {diff:.1e}")
    print(
        f"train step (SFT, 8 examples, {args.steps} steps): median {statistics.median(times) * 1000:.1f} ms, "
        f"p90 {sorted(times)[int(0.9 * len(times)) - 1] * 1000:.1f} ms"
    )
    print(f"ratio: {rows[0][3] / rows[0][2]:.2f}")


if __name__ == "__main__":
    main()
