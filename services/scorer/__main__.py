"""``python -m vlgenrm.services.scorer``: the scorer with the process's settings (as ``vlgenrm serve``)."""

import argparse
import logging

from vlgenrm.services.scorer.server import serve_forever
from vlgenrm.settings import load_settings

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="vlgenrm-scorer", description="Serve the GenRM over HTTP on Ray Serve (settings: VLGENRM_* env, --config, --set).")
    parser.add_argument("--config", help="YAML settings file")
    parser.add_argument("--set", action="append", default=[], help="override a setting, e.g. serving.port=8080")
    args = parser.parse_args()
    settings = load_settings(args.config, args.set)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_forever(settings)
