"""The Serve wiring of the scorer: an HTTP ingress deployment (the router's FastAPI app, one
:class:`~vlgenrm.scoring.serving.ScorerServing` per replica) bound to the GenRM deployment
(batched scoring, hot swaps). Serving logic lives in :mod:`vlgenrm.scoring.serving`, the HTTP
layer in :mod:`vlgenrm.services.scorer.router`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ray import serve

from vlgenrm.scoring.config import ServingConfig
from vlgenrm.scoring.core import JobResult, PairJob, PointJob
from vlgenrm.scoring.serving import ScorerServing
from vlgenrm.services.scorer import router
from vlgenrm.settings import StoreSettings
from vlgenrm.store import make_store

log = logging.getLogger(__name__)

#: What the ingress reads from the ServingConfig (the model fields stay with the model deployment).
INGRESS_FIELDS = {"critique", "security", "namespace"}


class ServeModel:
    """The model deployment's Serve handle as a :class:`~vlgenrm.scoring.serving.ModelHandle`."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def score(self, job: PointJob) -> JobResult:
        return await self.handle.score.remote(job)

    async def compare(self, job: PairJob) -> JobResult:
        return await self.handle.compare.remote(job)

    async def info(self) -> dict[str, Any] | None:
        return await self.handle.info.remote()


class Ingress:
    """One HTTP ingress replica: builds its ScorerServing and installs it for the routes."""

    def __init__(self, model: Any, config_json: dict[str, Any], store_json: dict[str, Any]) -> None:
        store = make_store(StoreSettings.model_validate(store_json))
        router.install(ScorerServing(ServeModel(model), ServingConfig.model_validate(config_json), store))


def build_app(config: ServingConfig, store_settings: StoreSettings) -> serve.Application:
    """The Serve application: ingress (HTTP) -> GenRM deployment (batched scoring)."""
    from vlgenrm.services.scorer.model import GenRMDeployment

    api = router.make_api(config.security.max_request_bytes)
    ingress_class = serve.deployment(name="ingress", max_ongoing_requests=max(100, config.max_ongoing_requests))(serve.ingress(api)(Ingress))

    scaling: dict[str, Any] = (
        {
            "autoscaling_config": {
                "min_replicas": config.min_replicas,
                "max_replicas": config.max_replicas,
                "target_ongoing_requests": config.target_ongoing_requests,
            }
        }
        if config.max_replicas > config.min_replicas
        else {"num_replicas": config.max_replicas}
    )
    model = GenRMDeployment.options(
        **scaling,
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        user_config=json.loads(config.model_dump_json()),  # the model lives here: changing it is a hot swap
    ).bind(store_settings.portable())
    ingress = ingress_class.options(num_replicas=config.ingress_replicas, ray_actor_options={"num_cpus": config.ingress_num_cpus})
    # The ingress gets no model fields: a new checkpoint must not restart the HTTP side.
    return ingress.bind(model, json.loads(config.model_dump_json(include=INGRESS_FIELDS)), store_settings.portable())


def app_builder(args: dict[str, str]) -> serve.Application:
    """The Serve app from the process's settings: KubeRay's RayService names this import path
    (``vlgenrm.services.scorer.app:app_builder``). Settings come from $VLGENRM_CONFIG and the
    VLGENRM_* env of the Ray pods; the app's ``args`` are ``--set`` overrides, e.g.
    ``{"serving.max_batch_size": "32"}``."""
    from vlgenrm.settings import load_settings

    settings = load_settings(None, [f"{key}={value}" for key, value in (args or {}).items()])
    return build_app(settings.serving, settings.store)
