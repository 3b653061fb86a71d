"""Trainer stage service: SFT (+DPO) of the GenRM on Ray Train (§3.5).

Task inputs: the sampler's TrainingRecord shards; ``task.config``: TrainingTaskSettings (the
base and previous checkpoints, the Iteration's training block). One task trains one model, as
shard 0 of 1. Writes under ``iterations/<ns>/<it>/training/``: ``data/00000.jsonl`` (the
checked set the workers stream), ``report/00000.{json,md,png}``; Ray Train's resumable
checkpoints under ``checkpoints/<ns>/<it>/ray/``; the exported model under
``checkpoints/<ns>/<it>/model`` (its URI is the event's ``checkpoint`` artifact).

A training task runs for hours, longer than Kafka lets a consumer go without polling by
default: ``__main__`` raises ``bus.max_poll_interval_s`` to the training deadline.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge

from vlgenrm import layout
from vlgenrm.bus import Bus, Topics, Worker
from vlgenrm.contracts import Stage, StageTask
from vlgenrm.iteration.registry import STAGES
from vlgenrm.settings import Settings
from vlgenrm.stages import InvalidShardError, ShardResult, StageRunner, parse_config, part_key
from vlgenrm.store import BlobStore
from vlgenrm.training.config import TrainingTaskSettings
from vlgenrm.training.data import load_training_set, write_training_set

log = logging.getLogger(__name__)
GROUP = STAGES[Stage.TRAINING].group  # the consumer group, under the topic prefix (Topics.group)
RUNS = Counter("vlgenrm_trainer_runs_total", "Training runs finished")
SAMPLES_PER_S = Gauge("vlgenrm_trainer_samples_per_second", "Throughput of the last finished run")


def checkpoint_prefixes(task: StageTask) -> tuple[str, str]:
    """(Ray Train storage, exported model) prefixes of an Iteration (§4: checkpoints/<ns>/<name>/...)."""
    ns, name = task.shard.namespace, task.shard.iteration
    return layout.train_storage_prefix(ns, name), layout.checkpoint_prefix(ns, name)


class TrainerStage:
    def __init__(self, settings: Settings, store: BlobStore) -> None:
        self.settings, self.store = settings, store
        self.should_stop = lambda: False  # the worker's stop flag, once the worker exists

    def process(self, task: StageTask) -> ShardResult:
        from vlgenrm.training.report import TrainingReport, loss_curve_png
        from vlgenrm.training.run import run_training

        settings = parse_config(task, TrainingTaskSettings, "training")
        if not task.inputs:
            raise InvalidShardError(f"task {task.task_id} names no training record shards")
        records, data_report = load_training_set(self.store, task.inputs)
        data_key = write_training_set(self.store, part_key(task.shard, "data", "jsonl"), records)
        storage_prefix, export_prefix = checkpoint_prefixes(task)
        outcome = run_training(
            settings,
            store=self.store,
            store_settings=self.settings.store,
            ray_settings=self.settings.ray,
            data_key=data_key,
            storage_prefix=storage_prefix,
            export_prefix=export_prefix,
            label=task.shard.key,
            should_stop=self.should_stop,
        )
        RUNS.inc()
        SAMPLES_PER_S.set(outcome.metrics["samples_per_s"])
        report = TrainingReport(
            init_model=settings.init_model,
            checkpoint_uri=outcome.checkpoint_uri,
            model_version=outcome.version,
            config=settings.training,
            data=data_report,
            state=outcome.state,
            metrics=outcome.metrics,
        )
        objects = {
            part_key(task.shard, "report", "json"): report.to_json_bytes(),
            part_key(task.shard, "report", "md"): report.to_markdown().encode(),
            part_key(task.shard, "report", "png"): loss_curve_png(outcome.state),
        }
        counts = {
            "records": data_report.lines,
            "usable": data_report.usable,
            "malformed": data_report.malformed,
            "duplicates": data_report.duplicates,
            "missing_images": data_report.missing_images,
            "steps": outcome.state.step,
            "skipped_examples": sum(outcome.state.skipped.values()),
        }
        return ShardResult(objects, counts, metrics=outcome.metrics, artifacts={"checkpoint": outcome.checkpoint_uri})


def build_worker(settings: Settings, bus: Bus, store: BlobStore) -> Worker[StageTask]:
    topics = Topics(settings.bus.topic_prefix)
    stage = TrainerStage(settings, store)
    worker = Worker(
        bus,
        [topics.tasks(Stage.TRAINING)],
        topics.group(GROUP),
        StageTask,
        StageRunner(bus, store, topics, stage.process),
        dlq_topic=topics.dlq,
        settings=settings.worker,
    )
    stage.should_stop = lambda: worker.stopping
    return worker
