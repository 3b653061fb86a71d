"""``python -m vlgenrm.services.trainer``: run the trainer service with the process's settings."""

import os

from vlgenrm.services.main import serve
from vlgenrm.services.trainer.service import build_worker

#: One task may train for hours; Kafka must not take the partition away meanwhile. The
#: default equals the Iteration's default training deadline; settings may still override it.
os.environ.setdefault("VLGENRM_BUS__MAX_POLL_INTERVAL_S", str(24 * 3600))

if __name__ == "__main__":
    raise SystemExit(serve("trainer", build_worker))
