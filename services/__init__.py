"""Stage services (experts, rationale, sampler, trainer, scorer): thin shells over the core.

Installed as ``vlgenrm.services``; each service is a subpackage that wires a Bus consumer to
library code. See docs/layout.md.
"""

from __future__ import annotations

import importlib
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
    them from its caller (``iteration.local.LocalServices``) and never imports a service.

    A stage's service is the package named by its consumer group in the stage registry
    (``vlgenrm.services.<group>.service``, with a ``build_worker``); stages that share a group
    share the service."""
    from vlgenrm.iteration.registry import STAGES

    groups = dict.fromkeys(d.group for d in STAGES.values())  # registry order, each once
    return {group: importlib.import_module(f"vlgenrm.services.{group}.service").build_worker for group in groups}
