"""Sampler service: margin-based rejection sampling (§3.4) and evaluation (§3.6).

One worker consumes ``tasks.sampling`` and ``tasks.evaluation`` and dispatches on the task's
stage; both stages score with a GenRM, so they share one bounded cache of loaded models.

Sampling. Task inputs: ``[candidates shard, refined pairs shard]``; ``task.config``: SamplingTaskSettings
(the checkpoint M_t, the sampler constants); ``task.iteration_index`` is t. Outputs under
``iterations/<ns>/<it>/sampling/``: ``<nnnnn>.jsonl`` (TrainingRecords), ``scored/``,
``hard/`` (the hard pool), ``report/<nnnnn>.{md,png,json}``; then marker, then event.

Evaluation. Task inputs: ``[benchmark URI]``; ``task.config``: EvaluationTaskSettings (the
candidate checkpoint, optional explicit incumbent, metrics settings). Outputs under
``iterations/<ns>/<it>/evaluation/``: ``<nnnnn>.jsonl`` (per-example predictions),
``report/<nnnnn>.{json,md}``, ``decision/<nnnnn>.json`` (the PromotionDecision; the pointer
itself is written by the Promoting phase); see :mod:`vlgenrm.evaluation.stage`.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from prometheus_client import Counter

from vlgenrm.bus import Bus, Topics, Worker
from vlgenrm.contracts import RationaleCandidate, RefinedPair, Stage, StageTask
from vlgenrm.evaluation.stage import EvaluationStage, GenRMCache
from vlgenrm.genrm.verdicts import strip_verdict
from vlgenrm.iteration.registry import STAGES
from vlgenrm.sampling.config import SamplingTaskSettings
from vlgenrm.sampling.report import margin_histogram_png, stage_report_markdown
from vlgenrm.sampling.sampler import sample, shown_responses, shown_target
from vlgenrm.settings import Settings
from vlgenrm.stages import InvalidShardError, ShardResult, StageRunner, jsonl, output_key, parse_config, part_key, read_jsonl
from vlgenrm.store import BlobStore

log = logging.getLogger(__name__)
GROUP = STAGES[Stage.SAMPLING].group  # the consumer group, under the topic prefix (Topics.group)
MARGINS = Counter("vlgenrm_sampler_margins_total", "Candidates scored by the current GenRM")
ACCEPTED = Counter("vlgenrm_sampler_accepted_total", "Candidates accepted into the training set")
EVALUATED = Counter("vlgenrm_evaluation_examples_total", "Benchmark examples scored by the evaluation stage", ["role"])
DECISIONS = Counter("vlgenrm_evaluation_decisions_total", "Promotion decisions of the evaluation stage", ["promote"])


class SamplerStage:
    def __init__(self, store: BlobStore, models: GenRMCache | None = None) -> None:
        self.store = store
        self.models = models or GenRMCache(store)

    def genrm_for(self, settings: SamplingTaskSettings):
        return self.models.get(settings.model, settings.genrm)

    def process(self, task: StageTask) -> ShardResult:
        settings = parse_config(task, SamplingTaskSettings, "sampling")
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
                PairwiseQuery(images[p.example.image.key], p.example.question, *shown_responses(p, c.order), critique=strip_verdict(c.text)) for p, c in items
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
        objects = {
            output_key(task.shard): jsonl(result.records),
            output_key(task.shard, "scored"): jsonl(result.scored),
            output_key(task.shard, "hard"): jsonl(result.hard_pool),
            part_key(task.shard, "report", "json"): result.stats.to_json_bytes(),
            part_key(task.shard, "report", "md"): stage_report_markdown(result.stats).encode(),
            part_key(task.shard, "report", "png"): margin_histogram_png(result.stats),
        }
        st = result.stats
        counts = {
            "pairs": st.pairs,
            "skipped": st.skipped,
            "candidates": st.candidates,
            "unparseable": st.unparseable,
            "scored": st.scored,
            "accepted": st.accepted,
            "kept": st.kept,
            "hard": st.hard,
            "dpo_pairs": st.dpo_pairs,
        }
        log.info("shard %s: %s", task.shard.key, counts)
        return ShardResult(objects, counts)


class SamplerService:
    """Routes a task to the stage named by its shard; both stages share the model cache."""

    def __init__(self, store: BlobStore) -> None:
        models = GenRMCache(store)
        self.sampler, self.evaluation = SamplerStage(store, models), EvaluationStage(store, models)

    def process(self, task: StageTask) -> ShardResult:
        if task.shard.stage is Stage.SAMPLING:
            return self.sampler.process(task)
        if task.shard.stage is Stage.EVALUATION:
            result = self.evaluation.process(task)
            EVALUATED.labels("candidate").inc(result.counts["examples"])
            EVALUATED.labels("incumbent").inc(result.counts["incumbent_examples"])
            DECISIONS.labels(str(bool(result.promote)).lower()).inc()
            return result
        # Only a misrouted task can get here: the worker subscribes to these two topics.
        raise InvalidShardError(f"task {task.task_id} is for stage {task.shard.stage.value}; this service runs sampling and evaluation")


def build_worker(settings: Settings, bus: Bus, store: BlobStore) -> Worker[StageTask]:
    topics = Topics(settings.bus.topic_prefix)
    runner = StageRunner(bus, store, topics, SamplerService(store).process)
    stages = [topics.tasks(stage) for stage, definition in STAGES.items() if definition.group == GROUP]  # sampling and evaluation
    return Worker(bus, stages, topics.group(GROUP), StageTask, runner, dlq_topic=topics.dlq, settings=settings.worker)
