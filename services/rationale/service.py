"""Rationale stage service: k candidate critiques per labelled pair (§3.3).

Task inputs: ``[refined pairs shard, expert reports shard]`` (the experts stage's outputs; the
reports shard is absent when the experts are disabled, and never read when the teacher sees only
the label); ``task.config`` is the Iteration's rationale block (RationaleSettings). Output:
``iterations/<ns>/<it>/rationale/<nnnnn>.jsonl`` (RationaleCandidates), then marker, then event.
"""

from __future__ import annotations

import logging
import zlib

from prometheus_client import Counter
from pydantic import ValidationError

from vlgenrm.bus import Bus, Topics, Worker
from vlgenrm.contracts import ExpertReport, RefinedPair, Stage, StageTask
from vlgenrm.iteration.registry import STAGES
from vlgenrm.rationale.config import EngineSettings, RationaleSettings, TeacherView
from vlgenrm.rationale.engines import RationaleEngine, make_engine
from vlgenrm.rationale.stage import generate_candidates
from vlgenrm.settings import Settings
from vlgenrm.stages import InvalidShardError, ShardResult, StageRunner, jsonl, output_key, read_jsonl
from vlgenrm.store import BlobStore, StoreError

log = logging.getLogger(__name__)
GROUP = STAGES[Stage.RATIONALE].group  # the consumer group, under the topic prefix (Topics.group)
CANDIDATES = Counter("vlgenrm_rationale_candidates_total", "Candidate critiques generated, by outcome", ["outcome"])


class RationaleStage:
    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._engines: dict[str, RationaleEngine] = {}

    def engine_for(self, settings: EngineSettings) -> RationaleEngine:
        key = settings.model_dump_json()
        if key not in self._engines:
            genrm = None
            if settings.kind == "transformers":
                from vlgenrm.genrm.model import GenRM

                if not settings.model:
                    raise InvalidShardError("the transformers engine needs engine.model (a checkpoint path or s3:// URI)")
                genrm = GenRM.load(settings.model, settings.genrm, store=self.store)
            self._engines[key] = make_engine(settings, genrm=genrm)
        return self._engines[key]

    def process(self, task: StageTask) -> ShardResult:
        try:
            settings = RationaleSettings.model_validate(task.config) if task.config else RationaleSettings()
        except ValidationError as exc:
            raise InvalidShardError(f"task {task.task_id} has an invalid rationale config: {exc.errors()[0]['msg']}") from exc
        if not task.inputs:
            raise InvalidShardError(f"task {task.task_id} names no input shard")
        pairs = read_jsonl(self.store, task.inputs[0], RefinedPair)
        reports = {}
        if settings.teacher_sees is TeacherView.EXPERTS:  # a label-only teacher never sees a report
            reports = {r.example_id: r for uri in task.inputs[1:] for r in read_jsonl(self.store, uri, ExpertReport)}
        images, errors = {}, {}
        for pair in pairs:
            if pair.label is None:
                continue
            try:
                images[pair.example.image.key] = self.store.get_image(pair.example.image)
            except StoreError as exc:  # one bad image never sinks the shard
                errors[pair.id] = f"{type(exc).__name__}: {exc}"
        from vlgenrm.sampling.sampler import HardPoolEntry

        # Every shard is handed the whole hard pool; it gives more samples to the hard pairs it
        # holds. (A pair of another shard gets its extra samples there: adding it here would
        # leave this shard's candidates without their pair in the sampler.)
        known = {p.id for p in pairs}
        hard = [entry for uri in settings.hard_pool for entry in read_jsonl(self.store, uri, HardPoolEntry) if entry.pair.id in known]
        usable = [p for p in pairs if p.id not in errors]
        seed = zlib.crc32(task.task_id.encode())  # the same task samples the same candidates

        def progress(done: int, total: int) -> None:
            log.info("shard %s: %d/%d prompts done", task.shard.key, done, total)

        extra = {entry.pair.id: entry.extra_samples for entry in hard}
        candidates, counts = generate_candidates(usable, reports, images, self.engine_for(settings.engine), settings, seed, progress, extra)
        CANDIDATES.labels("parseable").inc(counts["parseable"])
        CANDIDATES.labels("unparseable").inc(counts["unparseable"])
        counts["errors"] = len(errors)
        log.info("shard %s: %d candidates from %d pairs (%d unparseable)", task.shard.key, len(candidates), counts["pairs"], counts["unparseable"])
        return ShardResult({output_key(task.shard): jsonl(candidates)}, dict(counts), errors)


def build_worker(settings: Settings, bus: Bus, store: BlobStore) -> Worker[StageTask]:
    topics = Topics(settings.bus.topic_prefix)
    runner = StageRunner(bus, store, topics, RationaleStage(store).process)
    return Worker(bus, [topics.tasks(Stage.RATIONALE)], topics.group(GROUP), StageTask, runner, dlq_topic=topics.dlq, settings=settings.worker)
