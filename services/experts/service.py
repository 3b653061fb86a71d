"""Experts stage service: a Worker on ``<prefix>.tasks.experts`` around the Annotator.

Per shard task: read the shard of Examples, verify each example's claims against its image
in batches, write ``iterations/<ns>/<it>/experts/<nnnnn>.jsonl`` (refined pairs) and
``.../experts/reports/<nnnnn>.jsonl`` (expert reports), then the completion marker, then
the event (vlgenrm.stages); the marker's counts say how much the experts could check
(``checkable_pairs``, ``covered_claims``, ``uncheckable_words``, ...) and its metrics hold the
shard's ``coverage``. A corrupt image is an error of that example only; an unreadable
shard fails the task (dead-letter topic, with a failed event). With ``enabled: false`` in the
task's config no image is read and no expert runs: the human labels pass through and no
reports object is written at all.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from vlgenrm.bus import Bus, Topics, Worker
from vlgenrm.contracts import Example, Stage, StageTask
from vlgenrm.experts.config import AnnotationSettings
from vlgenrm.experts.pipeline import Annotator, coverage, decode_image
from vlgenrm.iteration.registry import STAGES
from vlgenrm.settings import Settings
from vlgenrm.stages import InvalidShardError, ShardResult, StageRunner, jsonl, output_key, read_jsonl
from vlgenrm.store import BlobStore, StoreError

log = logging.getLogger(__name__)
GROUP = STAGES[Stage.EXPERTS].group  # the consumer group, under the topic prefix (Topics.group)

IMAGES = Counter("vlgenrm_experts_images_total", "Images verified by the experts stage")
IMAGE_ERRORS = Counter("vlgenrm_experts_image_errors_total", "Examples skipped because their image was unusable")
CLAIMS = Counter("vlgenrm_experts_claims_total", "Claims judged, by merged verdict", ["verdict"])
LABELS = Counter("vlgenrm_experts_labels_total", "Refined label decisions, by source", ["source"])
BATCH_SECONDS = Histogram("vlgenrm_experts_batch_seconds", "Wall time of one verification batch")
UNCHECKABLE = Counter("vlgenrm_experts_uncheckable_words_total", "Object words of responses that no registered expert covers")
EXTRACTION_ERRORS = Counter("vlgenrm_experts_extraction_errors_total", "Responses whose claim extractor output stayed malformed (no claims)")
COVERAGE = Gauge("vlgenrm_experts_coverage", "Share of the last shard's pairs with at least one checkable claim")


class ExpertsStage:
    """``process(task)`` for the StageRunner: the experts stage of one shard.

    A task carries its Iteration's ``experts`` block in ``task.config``; annotators are built
    once per distinct configuration (building detectors can be expensive).
    """

    def __init__(self, store: BlobStore, default: AnnotationSettings | None = None) -> None:
        self.store, self.default = store, default or AnnotationSettings()
        self._annotators: dict[str, Annotator] = {}

    def annotator_for(self, task: StageTask) -> Annotator:
        try:
            settings = AnnotationSettings.model_validate(task.config) if task.config else self.default
        except ValidationError as exc:
            raise InvalidShardError(f"task {task.task_id} has an invalid experts config: {exc.errors()[0]['msg']}") from exc
        key = settings.model_dump_json()
        if key not in self._annotators:
            self._annotators[key] = Annotator(settings, store=self.store)
        return self._annotators[key]

    def process(self, task: StageTask) -> ShardResult:
        annotator = self.annotator_for(task)
        settings = annotator.settings
        examples = [ex for uri in task.inputs for ex in read_jsonl(self.store, uri, Example)]
        log.info("shard %s: %d examples", task.shard.key, len(examples))
        if not settings.enabled:
            out = annotator.passthrough(examples)
            for name, n in out.counts.items():
                if name.startswith("label_"):
                    LABELS.labels(name.removeprefix("label_")).inc(n)
            return ShardResult({output_key(task.shard): jsonl(out.pairs)}, {"examples": len(examples), "errors": 0, **out.counts})
        reports, pairs, errors, counts = [], [], {}, {"examples": len(examples)}
        for start in range(0, len(examples), settings.batch_size):
            batch, images = [], []
            for ex in examples[start : start + settings.batch_size]:
                try:
                    images.append(decode_image(self.store.get_image(ex.image)))
                    batch.append(ex)
                except (StoreError, ValueError, OSError) as exc:  # one bad image never sinks the shard
                    errors[ex.id] = f"{type(exc).__name__}: {exc}"
                    IMAGE_ERRORS.inc()
            began = time.perf_counter()
            out = annotator.annotate(batch, images, created_at=task.created_at)
            BATCH_SECONDS.observe(time.perf_counter() - began)
            IMAGES.inc(len(batch))
            reports += out.reports
            pairs += out.pairs
            for name, n in out.counts.items():
                counts[name] = counts.get(name, 0) + n
                if name.startswith("claims_"):
                    CLAIMS.labels(name.removeprefix("claims_")).inc(n)
                elif name.startswith("label_"):
                    LABELS.labels(name.removeprefix("label_")).inc(n)
                elif name == "uncheckable_words":
                    UNCHECKABLE.inc(n)
                elif name == "extraction_errors":
                    EXTRACTION_ERRORS.inc(n)
            log.info("shard %s: %d/%d examples verified", task.shard.key, min(start + settings.batch_size, len(examples)), len(examples))
        counts["errors"] = len(errors)
        objects = {output_key(task.shard): jsonl(pairs), output_key(task.shard, "reports"): jsonl(reports)}
        share = coverage(counts)
        metrics = {} if share is None else {"coverage": round(share, 6)}
        if share is not None:
            COVERAGE.set(share)
        return ShardResult(objects, counts, errors, metrics)


def build_worker(settings: Settings, bus: Bus, store: BlobStore, annotation: AnnotationSettings | None = None) -> Worker[StageTask]:
    """The experts service's consume loop, ready to ``run()``."""
    topics = Topics(settings.bus.topic_prefix)
    stage = ExpertsStage(store, annotation)
    runner = StageRunner(bus, store, topics, stage.process)
    return Worker(bus, [topics.tasks(Stage.EXPERTS)], topics.group(GROUP), StageTask, runner, dlq_topic=topics.dlq, settings=settings.worker)
