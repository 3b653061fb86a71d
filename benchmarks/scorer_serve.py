"""Scoring endpoint throughput and latency on Ray Serve: batched vs ``max_batch_size=1``.

    .venv/bin/python benchmarks/scorer_serve.py [--requests-per-client 15] [--device cpu]

Starts the scorer (local Ray, tiny Qwen2-VL, one model replica) and drives ``POST /v1/score``
(one response per request, distinct images) from 1, 8 and 32 concurrent clients, first with
dynamic batching (max_batch_size 16, wait 10 ms), then with the batch size set to 1 on the same
live replica (a reconfigure, as in production). Reports requests/s and p50/p99 latency
measured by the clients, and the batched/unbatched ratios.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from _tiny_scorer import start_tiny_scorer
from PIL import Image


def image(i: int) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), (37 * i % 256, 91 * i % 256, 53 * i % 256)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def drive(url: str, clients: int, per_client: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) with ``clients`` concurrent closed-loop clients."""

    def client(c: int) -> list[float]:
        latencies = []
        with httpx.Client(timeout=120) as http:
            for k in range(per_client):
                body = {"image": image(c * per_client + k), "question": "What colour is the square?", "responses": ["It is red."]}
                started = time.perf_counter()
                r = http.post(url + "/v1/score", json=body)
                latencies.append(time.perf_counter() - started)
                r.raise_for_status()
        return latencies

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(x for part in pool.map(client, range(clients)) for x in part)
    elapsed = time.perf_counter() - began
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, p99 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-per-client", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from ray import serve

    from vlgenrm.services.scorer.server import start

    with tempfile.TemporaryDirectory() as tmp:
        settings, url = start_tiny_scorer(Path(tmp), args.device)
        drive(url, 8, 3)  # warm-up
        results = {}
        for mode, batch in (("batched", 16), ("unbatched", 1)):
            settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"max_batch_size": batch})})
            start(settings)
            time.sleep(2)
            for clients in (1, 8, 32):
                results[mode, clients] = drive(url, clients, args.requests_per_client)
        serve.shutdown()

    print(f"# Scorer benchmark ({datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, device {args.device}, torch {torch.__version__})")
    print(f"tiny Qwen2-VL, 1 model replica, POST /v1/score with 1 response, {args.requests_per_client} requests per client, closed loop")
    print("| clients | batched req/s | p50 ms | p99 ms | unbatched req/s | p50 ms | p99 ms | throughput ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for clients in (1, 8, 32):
        b, u = results["batched", clients], results["unbatched", clients]
        print(f"| {clients} | {b[0]:.1f} | {b[1]:.0f} | {b[2]:.0f} | {u[0]:.1f} | {u[1]:.0f} | {u[2]:.0f} | {b[0] / u[0]:.2f} |")


if __name__ == "__main__":
    main()
