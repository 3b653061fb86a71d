"""``python -m vlgenrm.operators.iteration``: run the Iteration operator.

Settings (bus, store) come from the VLGENRM_* environment like every service; Kubernetes
access from the in-cluster service account or KUBECONFIG.
"""

import argparse
import logging

import kopf

from vlgenrm.operators.iteration import handlers  # noqa: F401 - registers the handlers

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="vlgenrm-operator", description="Advance Iteration resources (vlgenrm.io/v1alpha1).")
    parser.add_argument("--namespace", action="append", default=[], help="watch only these namespaces (default: the whole cluster)")
    parser.add_argument("--standalone", action="store_true", help="no peering: the only operator replica (tests, laptops)")
    parser.add_argument("--peering", default="vlgenrm", help="peering name shared by the replicas (one is active at a time)")
    parser.add_argument("--liveness", default=None, help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--log-format", choices=["plain", "json"], default="plain", help="json: one structured object per line (for log shippers)")
    args = parser.parse_args()
    handler = logging.StreamHandler()
    if args.log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("kafka").setLevel(logging.WARNING)
    kopf.run(standalone=args.standalone, peering_name=None if args.standalone else args.peering, namespaces=args.namespace,
             clusterwide=not args.namespace, liveness_endpoint=args.liveness)
