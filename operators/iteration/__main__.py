"""``python -m vlgenrm.operators.iteration``: run the Iteration operator.

Settings (bus, store) come from the VLGENRM_* environment like every service; Kubernetes
access from the in-cluster service account or KUBECONFIG.
"""

import argparse
import faulthandler
import json
import logging
import random
import signal

import kopf

from vlgenrm.operators.iteration import handlers  # noqa: F401 - registers the handlers


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any).
    kopf attaches objects to its records that generic JSON formatters choke on: leave them out."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "name": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="vlgenrm-operator", description="Advance Iteration resources (vlgenrm.io/v1alpha1).")
    parser.add_argument("--namespace", action="append", default=[], help="watch only these namespaces (default: the whole cluster)")
    parser.add_argument("--standalone", action="store_true", help="no peering: the only operator replica (tests, laptops)")
    parser.add_argument("--peering", default="vlgenrm", help="peering name shared by the replicas (one is active at a time)")
    parser.add_argument("--priority", type=int, default=None, help="peering priority; the highest runs (default: random, so replicas differ)")
    parser.add_argument("--liveness", default=None, help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--log-format", choices=["plain", "json"], default="plain", help="json: one structured object per line (for log shippers)")
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1`: every thread's stack to stderr
    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # Replicas of one Deployment start alike: a random priority makes exactly one of them active.
    priority = args.priority if args.priority is not None else random.randint(1, 1_000_000)
    kopf.run(
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=None if args.standalone else priority,
        namespaces=args.namespace,
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness,
    )
