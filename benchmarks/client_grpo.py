"""Rewards/s for a GRPO-shaped workload through vlgenrm.client: batched vs one request per completion.

    .venv/bin/python benchmarks/client_grpo.py [--prompts 8] [--generations 8] [--steps 5] [--concurrency 16] [--device cpu]

Starts the scorer (local Ray, tiny Qwen2-VL, one model replica, dynamic batching: max_batch_size
16, wait 10 ms) and plays a trainer's reward calls: each step is one generation batch of
``prompts`` x ``generations`` completions, every prompt with its own image, scored by one
``ScorerClient.rewards(images, questions, completions)`` call. "batched": the client sends the G
completions of a prompt as one /v1/score request (``prompts`` requests per step); "per
completion": ``batch=False``, one request per completion (``prompts x generations`` requests).
Both keep up to ``concurrency`` requests in flight, on the same live scorer, in one run, and
must give the same rewards. Reports rewards/s over all steps and the median step time.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _tiny_scorer import start_tiny_scorer
from PIL import Image

from vlgenrm.client import ScorerClient

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), (37 * i % 256, 91 * i % 256, 53 * i % 256)).save(buf, "PNG")
    return buf.getvalue()


def workload(step: int, prompts: int, generations: int) -> tuple[list[bytes], list[str], list[str]]:
    """One generation batch, flat as a trainer holds it: G completions per (image, question)."""
    images, questions, completions = [], [], []
    for p in range(prompts):
        image = png(step * prompts + p)
        for g in range(generations):
            images.append(image)
            questions.append("What colour is the square?")
            completions.append(f"It is a {COLOURS[(p + g) % len(COLOURS)]} square, answer {g}.")
    return images, questions, completions


def run(client: ScorerClient, steps: int, prompts: int, generations: int, batch: bool) -> tuple[float, float, list[list[float]]]:
    """(rewards/s, median step s, rewards per step)."""
    times, out = [], []
    for step in range(steps):
        images, questions, completions = workload(step, prompts, generations)
        started = time.perf_counter()
        out.append(client.rewards(images, questions, completions, batch=batch))
        times.append(time.perf_counter() - started)
    return steps * prompts * generations / sum(times), statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from ray import serve

    with tempfile.TemporaryDirectory() as tmp:
        _, url = start_tiny_scorer(Path(tmp), args.device)
        with ScorerClient(url, concurrency=args.concurrency, timeout=300) as client:
            run(client, 1, args.prompts, args.generations, True)  # warm-up
            run(client, 1, args.prompts, args.generations, False)
            results = {mode: run(client, args.steps, args.prompts, args.generations, batch) for mode, batch in (("batched", True), ("per completion", False))}
        serve.shutdown()

    batched, single = results["batched"], results["per completion"]
    worst = max(abs(a - b) for sa, sb in zip(batched[2], single[2], strict=True) for a, b in zip(sa, sb, strict=True))
    n = args.prompts * args.generations
    print(
        f"# Client GRPO-shaped benchmark ({datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, device {args.device}, torch {torch.__version__})"
    )
    print(
        f"tiny Qwen2-VL, 1 model replica (max_batch_size 16, wait 10 ms); {args.steps} steps of {args.prompts} prompts x "
        f"{args.generations} completions ({n} rewards/step), one image per prompt, client concurrency {args.concurrency}"
    )
    print("| mode | requests/step | rewards/s | median step s |")
    print("|---|---:|---:|---:|")
    print(f"| batched (one request per prompt) | {args.prompts} | {batched[0]:.1f} | {batched[1]:.2f} |")
    print(f"| one request per completion | {n} | {single[0]:.1f} | {single[1]:.2f} |")
    print(f"batched / per-completion throughput: {batched[0] / single[0]:.2f}x; largest reward difference between the modes: {worst:.2e}")


if __name__ == "__main__":
    main()
