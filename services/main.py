"""The entry point every stage service shares: settings, logging, metrics, bus, store, run."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
from collections.abc import Callable

from prometheus_client import start_http_server

from vlgenrm.bus import Bus, Worker, make_bus
from vlgenrm.settings import Settings, load_settings
from vlgenrm.store import BlobStore, make_store


def serve(name: str, build_worker: Callable[[Settings, Bus, BlobStore], Worker], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"vlgenrm-{name}", description=f"Consume {name} stage tasks (settings: VLGENRM_* env, --config, --set).")
    parser.add_argument("--config", help="YAML settings file")
    parser.add_argument("--set", action="append", default=[], help="override a setting, e.g. bus.kind=kafka")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (0 = off)")
    args = parser.parse_args(argv)
    # `kill -USR1` prints every thread's stack to stderr: what a hung service is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    settings = load_settings(args.config, args.set)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="0.0.0.0")
    bus, store = make_bus(settings.bus), make_store(settings.store)
    try:
        build_worker(settings, bus, store).run()
    finally:
        bus.close()
    return 0
