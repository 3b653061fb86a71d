"""``python -m vlgenrm.services.trainer``: run the trainer service with the process's settings."""

from vlgenrm.services.main import serve
from vlgenrm.services.trainer.service import build_worker

if __name__ == "__main__":
    raise SystemExit(serve("trainer", build_worker))
