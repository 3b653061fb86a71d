"""The stage registry: what each stage of an Iteration is, in one place.

A :class:`StageDef` holds every fact about a stage that the state machine, the stage services,
the local driver and the operator need: its phase and whether it is sharded (carried by
``Stage`` itself), the consumer group of its service, the model of its task's config, the
inputs and config of one shard's task, its deadline, and how its completion markers become
status metrics. Adding a stage is one ``StageDef`` here, a ``Stage`` member (with its phase)
and its service (docs/layout.md).

Config-only imports: the CRD, the chart and the CLI can load this without any stage's code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from vlgenrm import layout
from vlgenrm.contracts import ShardDone, Stage
from vlgenrm.evaluation.config import EvaluationTaskSettings
from vlgenrm.experts.config import AnnotationSettings
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.rationale.config import RationaleSettings
from vlgenrm.sampling.config import SamplingTaskSettings
from vlgenrm.training.config import TrainingTaskSettings

if TYPE_CHECKING:
    from vlgenrm.iteration.machine import Observation

#: ``(spec, observation, shard) -> (inputs, config)`` of one shard's task.
TaskBuilder = Callable[[IterationSpec, "Observation", int], tuple[list[str], dict[str, Any]]]


@dataclass(frozen=True)
class StageDef:
    """Everything the platform knows about one stage."""

    stage: Stage
    group: str  # the consumer group of the stage's service (under the topic prefix)
    config: type[BaseModel]  # what a task's ``config`` holds; make_task validates against it
    build: TaskBuilder
    metrics_prefix: str | None = None  # the shard-0 marker's metrics go to status metrics with this prefix; None = counts only
    derived: Callable[[Mapping[str, float]], dict[str, float]] | None = None  # extra status metrics from the summed counts

    def shard_count(self, obs: Observation) -> int:
        return len(obs.dataset_shards) if self.stage.sharded else 1

    def deadline_s(self, spec: IterationSpec) -> int:
        """The stage's wall-clock limit (``spec.deadlines`` has one field per stage, named by it)."""
        return getattr(spec.deadlines, self.stage.value)

    def task(self, spec: IterationSpec, obs: Observation, shard: int) -> tuple[list[str], dict[str, Any]]:
        """Inputs and config of one shard's task; the config is checked against ``self.config``
        here, so the machine can never publish a task its service would reject."""
        inputs, config = self.build(spec, obs, shard)
        self.config.model_validate(config)
        return inputs, config

    def metrics(self, markers: Mapping[int, ShardDone]) -> dict[str, float]:
        """Status metrics from this stage's completion markers: counts summed as
        ``<stage>.<count>``, the derived ones, and the whole-stage metrics of shard 0."""
        totals: dict[str, float] = {}
        for marker in markers.values():
            for k, v in marker.counts.items():
                totals[k] = totals.get(k, 0.0) + v
        out = {f"{self.stage.value}.{k}": v for k, v in totals.items()}
        if self.derived is not None:
            out |= self.derived(totals)
        if self.metrics_prefix is not None and 0 in markers:
            out |= {f"{self.metrics_prefix}{k}": v for k, v in markers[0].metrics.items()}
        return out


def _out(obs: Observation, stage: Stage, shard: int, kind: str | None = None) -> str:
    return obs.uri(layout.output_key(obs.namespace, obs.name, stage, shard, kind))


def _genrm(spec: IterationSpec) -> dict[str, Any]:
    # Unset: each service's own default (device, dtype) applies.
    return {"genrm": spec.genrm.model_dump(mode="json")} if spec.genrm else {}


def _experts(spec: IterationSpec, obs: Observation, shard: int) -> tuple[list[str], dict[str, Any]]:
    return [obs.dataset_shards[shard]], spec.experts.model_dump(mode="json")


def _rationale(spec: IterationSpec, obs: Observation, shard: int) -> tuple[list[str], dict[str, Any]]:
    # No reports shard exists when the experts are disabled (the no-experts arm).
    reports = [_out(obs, Stage.EXPERTS, shard, "reports")] if spec.experts.enabled else []
    config = spec.rationale.model_dump(mode="json") | ({"hard_pool": obs.hard_pool} if obs.hard_pool else {})
    return [_out(obs, Stage.EXPERTS, shard), *reports], config


def _sampling(spec: IterationSpec, obs: Observation, shard: int) -> tuple[list[str], dict[str, Any]]:
    config = {"model": obs.current_model, "sampler": spec.sampling.model_dump(mode="json")} | _genrm(spec)
    return [_out(obs, Stage.RATIONALE, shard), _out(obs, Stage.EXPERTS, shard)], config


def _training(spec: IterationSpec, obs: Observation, shard: int) -> tuple[list[str], dict[str, Any]]:
    previous = obs.current_model if spec.previous_iteration else None
    config = {"base_model": obs.base_model, "previous_model": previous, "training": spec.training.model_dump(mode="json")} | _genrm(spec)
    return [_out(obs, Stage.SAMPLING, i) for i in range(len(obs.dataset_shards))], config


def _evaluation(spec: IterationSpec, obs: Observation, shard: int) -> tuple[list[str], dict[str, Any]]:
    training = obs.done.get(Stage.TRAINING, {}).get(0)
    model = training.artifacts.get("checkpoint") if training else None
    return [obs.eval_uri or ""], {"model": model, "evaluation": spec.evaluation.model_dump(mode="json")} | _genrm(spec)


def _coverage(totals: Mapping[str, float]) -> dict[str, float]:
    """The share of pairs with at least one claim some expert can check."""
    pairs = totals.get("kept", 0.0) + totals.get("dropped", 0.0)
    return {"experts.coverage": round(totals["checkable_pairs"] / pairs, 6)} if "checkable_pairs" in totals and pairs else {}


STAGES: dict[Stage, StageDef] = {
    d.stage: d
    for d in (
        StageDef(Stage.EXPERTS, group="experts", config=AnnotationSettings, build=_experts, derived=_coverage),
        StageDef(Stage.RATIONALE, group="rationale", config=RationaleSettings, build=_rationale),
        StageDef(Stage.SAMPLING, group="sampler", config=SamplingTaskSettings, build=_sampling),
        StageDef(Stage.TRAINING, group="trainer", config=TrainingTaskSettings, build=_training, metrics_prefix="training."),
        # The sampler service runs evaluation too (both stages share its model cache).
        StageDef(Stage.EVALUATION, group="sampler", config=EvaluationTaskSettings, build=_evaluation, metrics_prefix=""),
    )
}
