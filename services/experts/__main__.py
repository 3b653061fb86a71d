"""``python -m vlgenrm.services.experts``: run the experts service with the process's settings."""

from __future__ import annotations

import argparse
import logging

from prometheus_client import start_http_server

from vlgenrm.bus import make_bus
from vlgenrm.services.experts.service import build_worker
from vlgenrm.settings import load_settings
from vlgenrm.store import make_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlgenrm-experts", description="Consume experts stage tasks (settings: VLGENRM_* env, --config).")
    parser.add_argument("--config", help="YAML settings file")
    parser.add_argument("--set", action="append", default=[], help="override a setting, e.g. bus.kind=kafka")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (0 = off)")
    args = parser.parse_args(argv)
    settings = load_settings(args.config, args.set)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="0.0.0.0")
    bus, store = make_bus(settings.bus), make_store(settings.store)
    build_worker(settings, bus, store).run()
    bus.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
