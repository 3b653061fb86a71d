"""The driver of a training run: connect to Ray, point Ray Train's storage at the store, fit,
and publish the exported checkpoint in Hugging Face format.

Resumption needs no bookkeeping here: Ray Train V2 restores a run started again with the
same ``(storage_path, name)``, and the worker continues from its latest checkpoint. The run
name carries the config digest, so an edited spec starts a new run instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlgenrm.bus import Interrupted
from vlgenrm.genrm.model import checkpoint_version, upload_checkpoint
from vlgenrm.ray_cluster import ensure_ray
from vlgenrm.settings import RaySettings, StoreKind, StoreSettings
from vlgenrm.store import BlobStore
from vlgenrm.training.config import TrainingTaskSettings
from vlgenrm.training.loop import EXPORT, STATE, TrainerState, WorkerJob, train_loop_per_worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStorage:
    """Where Ray Train keeps a run's resumable checkpoints: under the store's own prefix."""

    path: str
    filesystem: Any = None  # a pyarrow FileSystem for S3; None = local path

    @classmethod
    def for_store(cls, settings: StoreSettings, prefix: str) -> RunStorage:
        prefix = prefix.strip("/")
        if settings.kind is StoreKind.LOCAL:
            return cls(str(Path(settings.root).expanduser().resolve() / prefix))
        from pyarrow import fs

        filesystem = fs.S3FileSystem(
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            endpoint_override=settings.endpoint,
            scheme="https" if settings.secure else "http",
            region=settings.region,
            connect_timeout=settings.connect_timeout_s,
            request_timeout=settings.read_timeout_s,
        )
        return cls(f"{settings.bucket}/{prefix}", filesystem)


@dataclass
class TrainingOutcome:
    """What a finished run produced."""

    checkpoint_uri: str
    version: str
    state: TrainerState
    metrics: dict[str, float]


def run_training(
    task: TrainingTaskSettings,
    *,
    store: BlobStore,
    store_settings: StoreSettings,
    ray_settings: RaySettings,
    data_key: str,
    storage_prefix: str,
    export_prefix: str,
    label: str = "",
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainingOutcome:
    """Fit on Ray Train (resuming a killed run), then upload the export to ``export_prefix``.

    Raises :class:`~vlgenrm.bus.Interrupted` when ``should_stop`` turns true mid-run: the run's
    checkpoints stay, and the next attempt resumes from them.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    ensure_ray(ray_settings)
    config = task.training
    storage = RunStorage.for_store(store_settings, storage_prefix)
    job = WorkerJob(task=task, store=store_settings.portable(), data_key=data_key, label=label)
    use_gpu = config.gpus_per_worker > 0
    resources = {"CPU": config.cpus_per_worker} | ({"GPU": config.gpus_per_worker} if use_gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.model_dump(mode="json"),
        scaling_config=ray.train.ScalingConfig(num_workers=config.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=f"run-{config.digest()}",
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=1),
        ),
    )
    log.info("%s: Ray Train with %d worker(s), storage %s", label, config.workers, storage.path)
    result = _fit_unless_stopped(trainer, should_stop)
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        d = Path(directory)
        state = TrainerState.model_validate_json((d / STATE).read_text())
        if not (d / EXPORT).is_dir():
            raise RuntimeError(f"the last checkpoint of {storage.path} holds no exported model")
        uri = upload_checkpoint(d / EXPORT, store, export_prefix)
        version = checkpoint_version(d / EXPORT)
    last = state.history[-1].loss if state.history else float("nan")
    first = state.history[0].loss if state.history else float("nan")
    metrics = {
        "steps": float(state.step),
        "samples": float(state.samples),
        "first_loss": first,
        "final_loss": last,
        "train_seconds": state.train_seconds,
        "samples_per_s": state.samples / state.train_seconds if state.train_seconds else 0.0,
        "skipped_examples": float(sum(state.skipped.values())),
        "torch_threads": float(state.threads),
    }
    log.info("%s: trained %d steps, loss %.4f -> %.4f; model %s at %s", label, state.step, first, last, version, uri)
    return TrainingOutcome(uri, version, state, metrics)


def _fit_unless_stopped(trainer: Any, should_stop: Callable[[], bool]) -> Any:
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        if should_stop():
            # Leaving the task uncommitted is enough: the checkpoints are in storage, and the
            # next attempt (here or on another replica) resumes from them.
            log.warning("stop requested mid-training; the run resumes from its last checkpoint on the next attempt")
            raise Interrupted("stopped mid-training")
    if "error" in outcome:
        raise RuntimeError(f"training failed: {outcome['error']}") from outcome["error"]
    return outcome["result"]
