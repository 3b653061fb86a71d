"""The evaluation stage (§3.6): score a candidate checkpoint on a held-out benchmark, compare it
with the promoted model, and decide (not perform) its promotion.

Task inputs: ``[benchmark URI]`` (a VL-RewardBench-format ``.jsonl``/``.json``/``.parquet``
object of the store); ``task.config``: :class:`EvaluationTaskSettings`. Outputs under
``iterations/<ns>/<it>/evaluation/``: ``<nnnnn>.jsonl`` (EvaluationPredictions),
``report/<nnnnn>.{json,md}`` (EvaluationReport), ``decision/<nnnnn>.json``
(PromotionDecision) and, when the incumbent had to be scored, ``incumbent/<nnnnn>.{json,jsonl}``.
Every timestamp written is the task's ``created_at``, so a recomputation writes the same bytes.
"""

from __future__ import annotations

import logging
import tempfile
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from vlgenrm import layout
from vlgenrm.contracts import FailureReason, StageTask
from vlgenrm.evaluation.benchmark import BenchmarkExample, BenchmarkFormatError, load_preference_benchmark
from vlgenrm.evaluation.config import EvaluationTaskSettings
from vlgenrm.evaluation.promotion import PromotionDecision, PromotionRecord, decide, read_promoted
from vlgenrm.evaluation.run import EvaluationResult, evaluate_genrm
from vlgenrm.genrm.config import GenRMSettings
from vlgenrm.genrm.errors import GenRMInputError, UnsupportedModelError
from vlgenrm.stages import InvalidShardError, ShardResult, jsonl, output_key, parse_config, part_key
from vlgenrm.store import BlobStore, InvalidKeyError, ObjectNotFoundError

if TYPE_CHECKING:
    from vlgenrm.genrm.model import GenRM

log = logging.getLogger(__name__)


class GenRMCache:
    """Loaded GenRMs by (source, settings), least recently used dropped beyond ``capacity``.

    Bounded because each entry is a whole model in memory; 2 holds a candidate and its incumbent.
    """

    def __init__(self, store: BlobStore, capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.store, self.capacity = store, capacity
        self._models: OrderedDict[str, GenRM] = OrderedDict()

    def get(self, source: str, settings: GenRMSettings) -> GenRM:
        from vlgenrm.genrm.model import GenRM

        key = source + settings.model_dump_json()
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        while len(self._models) >= self.capacity:
            self._models.popitem(last=False)  # dropped before loading, so its memory can go first
        self._models[key] = GenRM.load(source, settings, store=self.store)
        return self._models[key]


class EvaluationStage:
    """``process(task) -> ShardResult`` for evaluation tasks (run by a StageRunner)."""

    def __init__(self, store: BlobStore, models: GenRMCache | None = None) -> None:
        self.store = store
        self.models = models or GenRMCache(store)

    def process(self, task: StageTask) -> ShardResult:
        settings = parse_config(task, EvaluationTaskSettings, "evaluation")
        if len(task.inputs) != 1:
            raise InvalidShardError(f"task {task.task_id} needs exactly one input, the benchmark URI; got {len(task.inputs)}")
        benchmark = task.inputs[0]
        examples = self.load_benchmark(benchmark, settings)
        candidate = self.load_model(settings.model, settings.genrm, "candidate")
        result = self._evaluate(candidate, examples, settings, settings.model, task, "candidate")
        decision, incumbent = self._decide(task, settings, examples, result)

        shard = task.shard
        objects = {
            output_key(shard): jsonl(result.predictions),
            part_key(shard, "report", "json"): result.report.to_json_bytes(),
            part_key(shard, "report", "md"): result.report.to_markdown().encode(),
            part_key(shard, "decision", "json"): decision.to_json_bytes(),
        }
        if incumbent is not None:  # kept so the comparison can be audited example by example
            objects[part_key(shard, "incumbent", "json")] = incumbent.report.to_json_bytes()
            objects[output_key(task.shard, "incumbent")] = jsonl(incumbent.predictions)
        accuracy = result.report.accuracy
        metrics = {"accuracy": accuracy.overall, "accuracy_low": accuracy.overall_ci[0], "accuracy_high": accuracy.overall_ci[1], "macro": accuracy.macro}
        metrics |= {f"accuracy.{c}": a for c, a in accuracy.per_category.items()}
        if (conf := result.report.confidence) is not None:
            metrics |= {"mean_confidence": conf.mean_confidence, "p_std": conf.p_std, "collapsed": float(conf.collapsed)}
        if (h := result.report.hallucination) is not None:
            metrics |= {"hallucination_precision": h.precision, "hallucination_recall": h.recall, "hallucination_f1": h.f1}
        if (b := result.report.best_of_n) is not None:
            metrics["best_of_n"] = b.accuracy
        if decision.incumbent_accuracy is not None:
            metrics["incumbent_accuracy"] = decision.incumbent_accuracy
        counts = {"examples": accuracy.n, "incumbent_examples": incumbent.report.accuracy.n if incumbent else 0}
        log.info(
            "shard %s: accuracy %.4f [%.4f, %.4f] (macro %.4f) on %d examples; promote=%s: %s",
            task.shard.key,
            accuracy.overall,
            *accuracy.overall_ci,
            accuracy.macro,
            accuracy.n,
            decision.promote,
            decision.reason,
        )
        if conf is not None and conf.collapsed:
            log.warning(
                "shard %s: the candidate is collapsed (%s, mean |p - 0.5| = %.4f): its accuracy is not signal",
                task.shard.key,
                conf.collapse_reason,
                conf.mean_confidence,
            )
        return ShardResult(objects, counts, metrics=metrics, promote=decision.promote)

    # -- inputs ------------------------------------------------------------------------------
    def load_benchmark(self, uri: str, settings: EvaluationTaskSettings) -> list[BenchmarkExample]:
        """Download the benchmark object (keeping its suffix, which picks the format) and parse it."""
        try:
            key = self.store.key_for(uri)
        except InvalidKeyError as exc:
            raise InvalidShardError(f"benchmark {uri} is not an object of this store: {exc}") from exc
        with tempfile.TemporaryDirectory(prefix="vlgenrm-benchmark-") as tmp:
            path = Path(tmp) / f"benchmark{PurePosixPath(key).suffix}"
            try:
                self.store.get_file(key, path)
            except ObjectNotFoundError as exc:
                raise InvalidShardError(f"benchmark {uri} does not exist", FailureReason.MISSING_INPUT) from exc
            try:
                return load_preference_benchmark(path, category_map=settings.evaluation.category_map, max_image_bytes=settings.genrm.max_image_bytes)
            except BenchmarkFormatError as exc:
                # The temp path means nothing to a reader; name the object instead.
                where = f" row {exc.row}" if exc.row is not None else ""
                raise InvalidShardError(f"benchmark {uri}{where}: {exc.problem}") from exc

    def load_model(self, source: str, settings: GenRMSettings, role: str) -> GenRM:
        """A cached GenRM; a missing or unsupported checkpoint fails the shard, naming it."""
        if "://" in source:
            try:
                manifest = layout.checkpoint_manifest_key(self.store.key_for(source).rstrip("/"))
            except InvalidKeyError as exc:
                raise InvalidShardError(f"{role} model {source} is not in this store: {exc}") from exc
            if not self.store.exists(manifest):
                raise InvalidShardError(f"{role} model {source} has no {layout.MANIFEST_FILE} (missing or not fully uploaded)", FailureReason.MISSING_INPUT)
        elif not Path(source).is_dir():
            raise InvalidShardError(f"{role} model folder {source} does not exist", FailureReason.MISSING_INPUT)
        try:
            return self.models.get(source, settings)
        except UnsupportedModelError as exc:
            raise InvalidShardError(f"{role} model {source}: {exc}") from exc

    # -- scoring and deciding ----------------------------------------------------------------
    def _evaluate(
        self, genrm: GenRM, examples: list[BenchmarkExample], settings: EvaluationTaskSettings, name: str, task: StageTask, role: str
    ) -> EvaluationResult:
        def progress(done: int, total: int) -> None:
            log.info("shard %s: %s %d/%d examples scored", task.shard.key, role, done, total)

        try:
            return evaluate_genrm(genrm, examples, settings.evaluation, model=name, dataset=task.inputs[0], created_at=task.created_at, progress=progress)
        except GenRMInputError as exc:
            # Skipping the example would silently change the benchmark; accuracies must stay comparable.
            raise InvalidShardError(f"{role} model {name} cannot score benchmark {task.inputs[0]}: {exc}") from exc

    def _decide(
        self, task: StageTask, settings: EvaluationTaskSettings, examples: list[BenchmarkExample], result: EvaluationResult
    ) -> tuple[PromotionDecision, EvaluationResult | None]:
        """The decision, and the incumbent's evaluation when it had to be scored here.

        The incumbent is ``settings.incumbent``, else the promoted pointer's model. Its accuracy
        is the pointer's when that was measured on this benchmark (same URI and example count),
        otherwise it is scored on the same examples now.
        """
        benchmark = task.inputs[0]
        cand_acc, n = result.report.accuracy.overall, result.report.accuracy.n
        min_gain = settings.evaluation.min_gain
        pointer = read_promoted(self.store, task.shard.namespace)
        incumbent_uri = settings.incumbent or (pointer.model if pointer is not None else None)
        fields = dict(
            candidate_uri=settings.model,
            candidate_version=result.model_version,
            candidate_accuracy=cand_acc,
            min_gain=min_gain,
            dataset=benchmark,
            decided_at=task.created_at,
            incumbent_uri=incumbent_uri,
        )
        if incumbent_uri is None:
            promote, reason = decide(cand_acc, None, min_gain)
            return PromotionDecision(promote=promote, reason=reason, **fields), None

        recorded: PromotionRecord | None = pointer if pointer is not None and pointer.model == incumbent_uri else None
        if recorded is not None and recorded.model_version == result.model_version:
            return self._same_model(fields, result), None
        incumbent_eval = None
        if recorded is not None and recorded.dataset == benchmark and recorded.examples in (None, n):
            version, inc_acc, source = recorded.model_version, recorded.accuracy, "as recorded at its promotion"
        else:
            incumbent = self.load_model(incumbent_uri, settings.genrm, "incumbent")
            if incumbent.version == result.model_version:
                return self._same_model(fields, result), None
            incumbent_eval = self._evaluate(incumbent, examples, settings, incumbent_uri, task, "incumbent")
            version, inc_acc, source = incumbent.version, incumbent_eval.report.accuracy.overall, "measured on the same examples"
        promote, reason = decide(cand_acc, inc_acc, min_gain)
        decision = PromotionDecision(promote=promote, reason=f"{reason} ({source})", incumbent_version=version, incumbent_accuracy=inc_acc, **fields)
        return decision, incumbent_eval

    @staticmethod
    def _same_model(fields: dict[str, Any], result: EvaluationResult) -> PromotionDecision:
        # The served weights are the candidate's: min_gain > 0 must not "demote" them against themselves.
        reason = f"the candidate is the incumbent (version {result.model_version}); promoting it again changes nothing"
        return PromotionDecision(
            promote=True, reason=reason, incumbent_version=result.model_version, incumbent_accuracy=result.report.accuracy.overall, **fields
        )
