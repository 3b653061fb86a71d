"""The model deployment: one GenRM per replica, requests merged by ``@serve.batch``, swapped
for a new checkpoint without dropping a request.

The served model comes from ``user_config`` (a ServingConfig), so changing it is a
lightweight Serve update that calls :meth:`GenRMDeployment.reconfigure` on the running
replicas: the new checkpoint loads in the background while the old one keeps answering, then
one reference assignment switches. A batch holds the model it started with, so every response
names the version that produced all of its numbers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve

from vlgenrm.scoring.config import ServingConfig
from vlgenrm.scoring.core import JobResult, PairJob, PointJob, ScoringModel, resolve_model
from vlgenrm.settings import StoreSettings
from vlgenrm.store import make_store

log = logging.getLogger(__name__)


@serve.deployment(name="genrm")
class GenRMDeployment:
    def __init__(self, store_settings: dict[str, Any]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.store = make_store(StoreSettings.model_validate(store_settings))
        self.current: ScoringModel | None = None
        self.config: ServingConfig | None = None
        self._swap_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- model management ------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a new ServingConfig: batching at once, a new model in the background."""
        config = ServingConfig.model_validate(user_config)
        previous, self.config = self.config, config
        self._score.set_max_batch_size(config.max_batch_size)
        self._score.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self._compare.set_max_batch_size(config.max_batch_size)
        self._compare.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        if self.current is None:
            self._load_first(config)
        elif previous is None or previous.genrm != config.genrm or self._wanted(config) != self.current.source:
            threading.Thread(target=self.swap, args=(self._wanted(config), config), daemon=True, name="genrm-swap").start()
        if config.watch_promoted_s and config.model is None and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True, name="promotion-watch")
            self._watcher.start()

    def _wanted(self, config: ServingConfig) -> str | None:
        try:
            return resolve_model(config.model, config.namespace, self.store)
        except LookupError as exc:
            log.warning("%s", exc)
            return None

    def _load_first(self, config: ServingConfig) -> None:
        # At start-up the replica is not ready until this returns: load in the foreground.
        source = self._wanted(config)
        if source is not None:
            self.current = ScoringModel.load(source, config.genrm, self.store)

    def swap(self, source: str | None, config: ServingConfig) -> None:
        """Load ``source`` while the current model keeps serving, then switch to it."""
        if source is None:
            return
        with self._swap_lock:
            current = self.current
            if current is not None and current.source == source and current.genrm.settings == config.genrm:
                return  # already serving exactly this
            try:
                new = ScoringModel.load(source, config.genrm, self.store)
            except Exception:  # noqa: BLE001 - a bad checkpoint must not take the serving model down
                log.exception("could not load %s; still serving %s", source, current.source if current else "nothing")
                return
            self.current = new
            log.info("now serving %s (version %s)", source, new.version)

    def _watch(self) -> None:
        while not self._stop.wait(self.config.watch_promoted_s if self.config and self.config.watch_promoted_s else 30.0):
            config = self.config
            if config is None or config.model is not None:
                continue
            source = self._wanted(config)
            if source is not None and (self.current is None or source != self.current.source):
                log.info("promotion pointer of %s moved to %s", config.namespace, source)
                self.swap(source, config)

    def info(self) -> dict[str, Any] | None:
        m = self.current
        if m is None:
            return None
        return {"id": m.source, "version": m.version, "family": m.family, "loaded_at": m.loaded_at}

    # -- scoring -------------------------------------------------------------------------------
    async def score(self, job: PointJob) -> JobResult:
        return await self._score(job)

    async def compare(self, job: PairJob) -> JobResult:
        return await self._compare(job)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _score(self, jobs: list[PointJob]) -> list[JobResult]:
        model = self.current  # the whole batch uses the model it started with
        if model is None:
            return [JobResult(unavailable="no model is loaded yet") for _ in jobs]
        # The forward passes run in a thread so the replica keeps queueing (and batching) requests.
        return await asyncio.to_thread(model.score, list(jobs))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _compare(self, jobs: list[PairJob]) -> list[JobResult]:
        model = self.current
        if model is None:
            return [JobResult(unavailable="no model is loaded yet") for _ in jobs]
        return await asyncio.to_thread(model.compare, list(jobs))

    def __del__(self) -> None:
        self._stop.set()
