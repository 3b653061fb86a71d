"""``python -m vlgenrm.services.experts``: run the experts service with the process's settings."""

from vlgenrm.services.experts.service import build_worker
from vlgenrm.services.main import serve

if __name__ == "__main__":
    raise SystemExit(serve("experts", build_worker))
