"""``python -m vlgenrm.services.sampler``: run the sampler service with the process's settings."""

from vlgenrm.services.main import serve
from vlgenrm.services.sampler.service import build_worker

if __name__ == "__main__":
    raise SystemExit(serve("sampler", build_worker))
