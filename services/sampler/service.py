"""Sampler stage service: margin-based rejection sampling with the current GenRM (§3.4).

Task inputs: ``[candidates shard, refined pairs shard]``; ``task.config``: SamplingTaskSettings
(the checkpoint M_t, the sampler constants); ``task.iteration_index`` is t. Outputs under
``iterations/<ns>/<it>/sampling/``: ``<nnnnn>.jsonl`` (TrainingRecords), ``scored/``,
``hard/`` (the hard pool), ``report/<nnnnn>.{md,png,json}``; then marker, then event.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from prometheus_client import Counter
from pydantic import BaseModel, Field, ValidationError

from vlgenrm.bus import Bus, Topics, Worker
from vlgenrm.contracts import RationaleCandidate, RefinedPair, Stage, StageTask
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.verdicts import strip_verdict
from vlgenrm.sampling.report import margin_histogram_png, stage_report_markdown
from vlgenrm.sampling.sampler import SamplerSettings, sample, shown_responses, shown_target
from vlgenrm.settings import Settings
from vlgenrm.stages import InvalidShardError, ShardResult, StageRunner, jsonl, output_key, read_jsonl, stage_prefix
from vlgenrm.store import BlobStore

log = logging.getLogger(__name__)
GROUP = "vlgenrm-sampler"
MARGINS = Counter("vlgenrm_sampler_margins_total", "Candidates scored by the current GenRM")
ACCEPTED = Counter("vlgenrm_sampler_accepted_total", "Candidates accepted into the training set")


class SamplingTaskSettings(BaseModel):
    """An Iteration's ``spec.sampling`` block plus the checkpoint that computes the margins."""

    model: str = Field(description="The current GenRM M_t: a checkpoint folder or s3:// URI.")
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    genrm: GenRMSettings = Field(default_factory=GenRMSettings)


class SamplerStage:
    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._models: dict[str, object] = {}

    def genrm_for(self, settings: SamplingTaskSettings):
        from vlgenrm.genrm.model import GenRM

        key = settings.model + settings.genrm.model_dump_json()
        if key not in self._models:
            self._models[key] = GenRM.load(settings.model, settings.genrm, store=self.store)
        return self._models[key]

    def process(self, task: StageTask) -> ShardResult:
        try:
            settings = SamplingTaskSettings.model_validate(task.config)
        except ValidationError as exc:
            raise InvalidShardError(f"task {task.task_id} has an invalid sampling config: {exc.errors()[0]['msg']}") from exc
        if len(task.inputs) != 2:
            raise InvalidShardError(f"task {task.task_id} needs [candidates shard, refined pairs shard] as inputs")
        candidates = read_jsonl(self.store, task.inputs[0], RationaleCandidate)
        pairs = [p for p in read_jsonl(self.store, task.inputs[1], RefinedPair) if p.label is not None]
        by_pair: dict[str, list[RationaleCandidate]] = defaultdict(list)
        for c in candidates:
            by_pair[c.pair_id].append(c)
        genrm = self.genrm_for(settings)
        images = {p.example.image.key: self.store.get_image(p.example.image) for p in pairs}

        def margin_fn(items: list[tuple[RefinedPair, RationaleCandidate]]) -> list[float]:
            from vlgenrm.genrm.model import PairwiseQuery

            # Scored without the evidence block: the GenRM must learn to see, not to read notes.
            queries = [
                PairwiseQuery(images[p.example.image.key], p.example.question, *shown_responses(p, c.order), critique=strip_verdict(c.text))
                for p, c in items
            ]
            targets = [shown_target(p, c) for p, c in items]
            margins: list[float] = []
            step = 8 * genrm.settings.batch_size  # chunks only for progress logs; batching is the GenRM's
            for start in range(0, len(queries), step):
                margins += genrm.margins(queries[start : start + step], targets[start : start + step])
                MARGINS.inc(len(queries[start : start + step]))
                log.info("shard %s: %d/%d margins done", task.shard.key, len(margins), len(queries))
            return margins

        result = sample(pairs, dict(by_pair), margin_fn, task.iteration_index, settings.sampler, genrm.version)
        ACCEPTED.inc(sum(1 for s in result.scored if s.accepted))
        report_base = f"{stage_prefix(task.shard)}/report/{task.shard.shard:05d}"
        objects = {
            output_key(task.shard): jsonl(result.records),
            output_key(task.shard, "scored"): jsonl(result.scored),
            output_key(task.shard, "hard"): jsonl(result.hard_pool),
            f"{report_base}.json": result.stats.to_json_bytes(),
            f"{report_base}.md": stage_report_markdown(result.stats).encode(),
            f"{report_base}.png": margin_histogram_png(result.stats),
        }
        st = result.stats
        counts = {
            "pairs": st.pairs, "skipped": st.skipped, "candidates": st.candidates, "unparseable": st.unparseable,
            "scored": st.scored, "accepted": st.accepted, "kept": st.kept, "hard": st.hard, "dpo_pairs": st.dpo_pairs,
        }
        log.info("shard %s: %s", task.shard.key, counts)
        return ShardResult(objects, counts)


def build_worker(settings: Settings, bus: Bus, store: BlobStore) -> Worker[StageTask]:
    topics = Topics(settings.bus.topic_prefix)
    runner = StageRunner(bus, store, topics, SamplerStage(store).process)
    return Worker(bus, [topics.tasks(Stage.SAMPLING)], GROUP, StageTask, runner, dlq_topic=topics.dlq, settings=settings.worker)
