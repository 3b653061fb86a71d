"""``python -m vlgenrm.services.rationale``: run the rationale service with the process's settings."""

from vlgenrm.services.main import serve
from vlgenrm.services.rationale.service import build_worker

if __name__ == "__main__":
    raise SystemExit(serve("rationale", build_worker))
