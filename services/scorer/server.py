"""Start the scorer on Ray Serve (local Ray, or the cluster named by ``ray.address``)."""

from __future__ import annotations

import logging
import signal
import threading

from vlgenrm.ray_cluster import ensure_ray
from vlgenrm.settings import Settings

log = logging.getLogger(__name__)
APP_NAME = "vlgenrm-scorer"


def start(settings: Settings) -> str:
    """Deploy (or update in place) the scorer application; returns its base URL."""
    from ray import serve

    from vlgenrm.services.scorer.app import build_app

    ensure_ray(settings.ray)
    cfg = settings.serving
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(cfg, settings.store), name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{'127.0.0.1' if cfg.host in ('0.0.0.0', '::') else cfg.host}:{cfg.port}"
    log.info("scorer ready at %s (model: %s)", url, cfg.model or f"promoted in {cfg.namespace}")
    return url


def serve_forever(settings: Settings) -> None:
    """Start, then block until SIGTERM/SIGINT and shut Serve down."""
    from ray import serve

    url = start(settings)
    print(f"vlgenrm scorer listening on {url} (OpenAPI: {url}/docs); Ctrl-C stops it", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
