"""What the scorer benchmarks share: a tiny Qwen2-VL GenRM served on a local Ray Serve."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx

from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.model import upload_checkpoint
from vlgenrm.genrm.tiny import build_tiny_genrm
from vlgenrm.scoring.config import SecuritySettings, ServingConfig
from vlgenrm.settings import RaySettings, Settings, StoreKind, StoreSettings
from vlgenrm.store import LocalStore


def start_tiny_scorer(root: Path, device: str) -> tuple[Settings, str]:
    """Build a tiny checkpoint under ``root``, serve it (one replica, batches of up to 16
    within 10 ms, no API key, no rate limit) and wait until it is ready: (settings, URL)."""
    from vlgenrm.services.scorer.server import start

    store = LocalStore(root / "store")
    model = upload_checkpoint(build_tiny_genrm(root / "m", "qwen2_vl"), store, "checkpoints/bench/model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serving = ServingConfig(
        model=model,
        host="127.0.0.1",
        port=port,
        max_batch_size=16,
        batch_wait_timeout_s=0.01,
        num_cpus=1,
        num_gpus=1 if device.startswith("cuda") else 0,
        genrm=GenRMSettings(device=device, batch_size=16),
        security=SecuritySettings(require_api_key=False, rate_per_s=1e6, burst=1_000_000),
    )
    settings = Settings(store=StoreSettings(kind=StoreKind.LOCAL, root=root / "store"), serving=serving, ray=RaySettings(num_cpus=os.cpu_count()))
    url = start(settings)
    while httpx.get(url + "/readyz", timeout=10).status_code != 200:
        time.sleep(0.5)
    return settings, url
