"""A bounded soak of the scorer: many closed-loop clients for minutes, nothing may fail.

    .venv/bin/python benchmarks/scorer_soak.py [--clients 32] [--duration-s 300] [--device cpu]

Starts the scorer (local Ray, tiny Qwen2-VL, one model replica, batching on) and drives
``POST /v1/score`` (one response per request, a new image every request) from ``--clients``
threads for ``--duration-s`` seconds. Prints, for the first and the last minute: requests/s,
p50/p99 latency as the clients measured it; the resident memory of each Serve replica process
(ingress, genrm) at the start and at the end; and every answer that was not 200, by status.
The soak passes when no request got a 5xx or a transport error; it exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import torch
from _tiny_scorer import start_tiny_scorer
from scorer_serve import image


def replica_rss() -> dict[str, float]:
    """MiB resident per Serve replica of the scorer, by deployment (``ServeReplica:<app>:<name>``)."""
    out: dict[str, float] = {}
    for proc in psutil.process_iter(["cmdline", "memory_info"]):
        title = " ".join(proc.info["cmdline"] or [])
        if "ServeReplica:vlgenrm-scorer:" in title:
            name = title.split("ServeReplica:vlgenrm-scorer:", 1)[1].split()[0]
            out[name] = out.get(name, 0.0) + proc.info["memory_info"].rss / 2**20
    return out


def window(samples: list[tuple[float, float, int]], start: float, end: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of the requests that finished in [start, end)."""
    lat = sorted(s[1] for s in samples if start <= s[0] < end)
    if not lat:
        return 0.0, float("nan"), float("nan")
    return len(lat) / (end - start), statistics.median(lat) * 1000, lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32, help="concurrent closed-loop clients")
    parser.add_argument("--duration-s", type=float, default=300, help="how long the clients keep sending")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from ray import serve

    samples: list[tuple[float, float, int]] = []  # (finished at, latency s, status; 0 = transport error)
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        _, url = start_tiny_scorer(Path(tmp), args.device)
        rss_start = replica_rss()
        began = time.perf_counter()
        stop_at = began + args.duration_s

        def client(c: int) -> None:
            k = 0
            with httpx.Client(timeout=120) as http:
                while time.perf_counter() < stop_at:
                    body = {"image": image(c * 100_003 + k), "question": "What colour is the square?", "responses": ["It is red."]}
                    started = time.perf_counter()
                    try:
                        status = http.post(url + "/v1/score", json=body).status_code
                    except httpx.HTTPError:
                        status = 0
                    with lock:
                        samples.append((time.perf_counter() - began, time.perf_counter() - started, status))
                    k += 1

        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, range(args.clients)))
        elapsed = time.perf_counter() - began
        rss_end = replica_rss()
        serve.shutdown()

    statuses = Counter(s[2] for s in samples)
    first, last = window(samples, 0, min(60, elapsed)), window(samples, max(0, elapsed - 60), elapsed + 1e-9)
    print(f"# Scorer soak ({datetime.date.today()}, {platform.node()}, {os.cpu_count()} CPUs, device {args.device}, torch {torch.__version__})")
    print(f"tiny Qwen2-VL, 1 model replica, POST /v1/score with 1 response, {args.clients} closed-loop clients for {elapsed:.0f} s")
    print(f"requests: {len(samples)}; by status: {dict(sorted(statuses.items()))}")
    print("| window | req/s | p50 ms | p99 ms |\n|---|---:|---:|---:|")
    for name, (rate, p50, p99) in (("first minute", first), ("last minute", last)):
        print(f"| {name} | {rate:.1f} | {p50:.0f} | {p99:.0f} |")
    print("| replica | RSS at start MiB | RSS at end MiB |\n|---|---:|---:|")
    for name in sorted(set(rss_start) | set(rss_end)):
        print(f"| {name} | {rss_start.get(name, float('nan')):.0f} | {rss_end.get(name, float('nan')):.0f} |")
    failed = sum(n for status, n in statuses.items() if status == 0 or status >= 500)
    print("PASS: no 5xx, no transport error" if failed == 0 else f"FAIL: {failed} requests got a 5xx or a transport error")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
