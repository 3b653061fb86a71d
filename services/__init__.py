"""Stage services (experts, rationale, sampler, trainer, scorer): thin shells over the core.

Installed as ``vlgenrm.services``; each service is a subpackage that wires a Bus consumer to
library code. See docs/layout.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlgenrm.bus import Bus, Worker
    from vlgenrm.settings import Settings
    from vlgenrm.store import BlobStore

    WorkerBuilder = Callable[[Settings, Bus, BlobStore], Worker[Any]]


def stage_workers() -> dict[str, WorkerBuilder]:
    """Each stage service's worker builder (the scorer aside: it serves, it consumes no tasks),
    for shells that run every stage in one process — ``vlgenrm run``, the tests. The core gets
    them from its caller (``iteration.local.LocalServices``) and never imports a service."""
    from vlgenrm.services.experts.service import build_worker as experts
    from vlgenrm.services.rationale.service import build_worker as rationale
    from vlgenrm.services.sampler.service import build_worker as sampler
    from vlgenrm.services.trainer.service import build_worker as trainer

    return {"experts": experts, "rationale": rationale, "sampler": sampler, "trainer": trainer}
