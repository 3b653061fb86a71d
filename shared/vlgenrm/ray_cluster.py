"""Connecting to Ray: an existing cluster (KubeRay, ``RAY_ADDRESS``) or a local one started
once per process. The trainer and the scorer both start here."""

from __future__ import annotations

import logging
import os
import time

from vlgenrm.retry import retry_call
from vlgenrm.settings import RaySettings

log = logging.getLogger(__name__)

#: Ray's defaults that cost time on every run and buy nothing here (see DESIGN §8).
LOCAL_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def ensure_ray(settings: RaySettings) -> None:
    """Connect to ``settings.address`` / ``RAY_ADDRESS``, or start a local Ray once per process."""
    import ray

    if ray.is_initialized():
        return
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)

        def connect() -> None:
            from ray.util.client import ray as client

            if client.is_connected():  # left by a failed Ray Client handshake: start over
                client.disconnect()
            ray.init(address=address, log_to_driver=settings.log_to_driver, logging_level=_level(settings))

        retry_call(connect, is_transient=_is_connect_error, backoff=settings.connect_retry, what=f"connecting to Ray at {address}")
        return
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    started = time.monotonic()
    ray.init(
        num_cpus=settings.num_cpus,
        num_gpus=settings.num_gpus,
        include_dashboard=settings.include_dashboard,
        object_store_memory=settings.object_store_memory_mb << 20,
        log_to_driver=settings.log_to_driver,
        logging_level=_level(settings),
    )
    log.info("started a local Ray in %.1f s: %s", time.monotonic() - started, ray.cluster_resources())


def _level(settings: RaySettings) -> int:
    """Ray's own driver-side logging: quiet along with the workers' output."""
    return logging.INFO if settings.log_to_driver else logging.ERROR


def _is_connect_error(exc: BaseException) -> bool:
    """Failures worth another try: the cluster, or Ray Client's per-driver server, not up yet."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or (isinstance(exc, RuntimeError) and "Starting Ray client server failed" in str(exc))
