"""``vlgenrm run``: the whole loop on one machine — synthetic data, the embedded base VLM, N
chained Iterations per arm and seed driven by the shared state machine — and a report of what
the method bought (report.py writes it)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vlgenrm import layout
from vlgenrm.contracts import Choice, IterationStatus, Order, Phase, RefinedPair, Stage, TrainingRecord
from vlgenrm.genrm.pretrain import PretrainConfig
from vlgenrm.iteration.arms import Arm, arm_overrides
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.stages import stage_lines
from vlgenrm.synth.dataset import GENERATOR_FORMAT, LabelerConfig, SynthConfig

if TYPE_CHECKING:
    from vlgenrm.sampling.sampler import CritiqueProbe

log = logging.getLogger(__name__)

DEFAULT_SPEC: dict[str, Any] = {
    "rationale": {"k": 2, "both_orders": True},
    # The demo's experts report a contradicted claim at p = 0.95, so the design's flip threshold
    # (1.0) dropped every conflict it had one contradiction for (39 % of the pairs) instead of
    # correcting the label; 0.9 lets one confident contradiction correct it.
    "experts": {"refinement": {"flip_threshold": 0.9}},
    # The GenRM restates the response it prefers (GenRMSettings.restate), so what the base sees
    # counts from the first step: on 2,048 true-label pairs held-out accuracy peaks near 360 x 16
    # sequences and then slowly overfits (docs/genrm.md has the curves).
    # Records keep one order per pair (the best candidate of either); §3.5 trains both. A record
    # is 4 sequences then (critique and bare verdict, two orders): 8 records = 32 per step.
    # Iteration t+1 goes on from M_t (§3.5 allows either): one seed, 512 pairs, it took the
    # experts arm 0.795 -> 0.830 where starting again from the base gave 0.815 -> 0.800.
    # Two threads when the machine has them: the trainer is all that runs while it trains, and
    # a step takes 1.5x less (docs/training.md).
    # The verdict loss trains the probability direct scoring reports, beside SFT (half the rows
    # are bare verdicts, so 2.0 weighs each like its SFT row): on a validation split, M_0 from
    # the same records 0.850 -> 0.870 and 0.825 -> 0.870 (two seeds; docs/training.md).
    "training": {
        "max_steps": 250,
        "batch_size": 8,
        "learning_rate": 5e-4,
        "checkpoint_every": 125,
        "both_orders": True,
        "init": "previous",
        "verdict_weight": 2.0,
        "cpus_per_worker": min(2, os.cpu_count() or 1),
    },
    "evaluation": {"pointwise": False},
}
#: What ``--ablations`` runs: every arm, three seeds.
ABLATION_ARMS: tuple[Arm, ...] = (Arm.EXPERTS, Arm.NO_EXPERTS, Arm.NO_EVIDENCE, Arm.NO_MARGIN, Arm.NO_VERDICT_LOSS)
ABLATION_SEEDS: tuple[int, ...] = (0, 1, 2)


def _demo_data() -> SynthConfig:
    # The biased labeler is the case the method exists for: its errors do not average out.
    return SynthConfig(name="demo", n_train=512, n_eval=200, shard_size=128, labeler=LabelerConfig.colour_blind())


class RunConfig(BaseModel):
    """What ``vlgenrm run`` does (``--config FILE`` holds a YAML mapping of these fields)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("demo", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Prefix of the Iteration names.")
    namespace: str = Field(
        "local", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Namespace prefix; each arm and seed gets its own promotion pointer."
    )
    iterations: int = Field(2, ge=1, le=20, description="Chained Iterations per arm and seed.")
    arms: list[Arm] = Field(default_factory=lambda: [Arm.EXPERTS], min_length=1, description="Arms to run (arms.py says what each one sees).")
    ablate_experts: bool = Field(False, description="Shorthand: also run the no-experts arm.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Training seeds; every arm runs its chain once per seed on the same data.")
    data: SynthConfig = Field(default_factory=_demo_data, description="The synthetic dataset (created when missing); same for every arm and seed.")
    base: PretrainConfig = Field(default_factory=PretrainConfig, description="The embedded base VLM, built once and cached (ignored with base_model).")
    base_model: str | None = Field(None, description="Checkpoint to start from instead of the embedded base (a store URI or a path).")
    spec: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPEC), description="IterationSpec fields shared by every Iteration.")
    report_dir: Path = Field(Path("vlgenrm-report"), description="Where report.md, summary.json and the plots go.")
    timeout_s: float = Field(1800, gt=0, description="Longest time one Iteration may take.")

    @model_validator(mode="after")
    def _shorthand(self) -> RunConfig:
        if self.ablate_experts and Arm.NO_EXPERTS not in self.arms:
            self.arms = [*self.arms, Arm.NO_EXPERTS]
        return self

    def dataset(self) -> SynthConfig:
        """The dataset as stored: its name carries a digest of its config, so changing the data
        (e.g. the labeler) writes a new dataset instead of rewriting one that others used."""
        blob = f"{GENERATOR_FORMAT}:{self.data.model_dump_json(exclude={'name'})}"
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        return self.data.model_copy(update={"name": f"{self.data.name}-{digest}"})

    def digest(self) -> str:
        """Names this run's Iterations: the same data, start and spec give the same names (a rerun
        finds them done), anything else new ones — never another run's stale results. The spec
        counts with every default filled in, so a changed default is a changed run too."""
        from vlgenrm.genrm.config import GenRMSettings

        name, base = self.dataset().name, self.base_model or self.base.digest()
        spec = IterationSpec.model_validate(merge(self.spec, {"dataset": name, "evalSet": name, "baseModel": base})).model_dump(mode="json")
        spec["genrm"] = spec["genrm"] or GenRMSettings().model_dump(mode="json")  # what the services use when unset
        blob = json.dumps({"data": name, "base": base, "spec": spec}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:6]

    @classmethod
    def ablations(cls, **fields: Any) -> RunConfig:
        """The ablation study: every arm, three seeds, two iterations (named apart from the demo's
        Iterations, which share the store)."""
        return cls(**{"name": "fidelity", "arms": list(ABLATION_ARMS), "seeds": list(ABLATION_SEEDS), **fields})


@dataclass
class IterationResult:
    """What one Iteration of one arm and seed did, with the truth-based checks."""

    variant: str
    index: int
    name: str
    status: IterationStatus
    seconds: float
    seed: int = 0
    label_accuracy: float | None = None  # refined labels vs the synthetic truth
    training_records: int = 0
    training_label_accuracy: float | None = None  # training records' verdicts vs the truth
    tau: float | None = None
    kept_by_threshold: list[tuple[float, float]] = field(default_factory=list)
    critique_probe: CritiqueProbe | None = None  # how the critiques moved the margins

    @property
    def accuracy(self) -> float | None:
        return self.status.metrics.get("accuracy")


def variants(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Spec overrides per arm (see arms.py for what each one sees)."""
    return {arm.value: arm_overrides(arm) for arm in config.arms}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def chain_namespace(config: RunConfig, arm: str, seed: int) -> str:
    """Each chain promotes into its own namespace, so arms never compare against each other's models."""
    return f"{config.namespace}-{arm}-s{seed}"


def _base_key(config: RunConfig) -> str:
    return layout.base_checkpoint_prefix(config.namespace, config.base.digest())


def ensure_base(config: RunConfig, store: Any, progress: Callable[[int, int, float], None] | None = None) -> str:
    """The start checkpoint's URI: ``base_model``, or the embedded base (cached build) in the store."""
    if config.base_model is not None:
        return config.base_model
    from vlgenrm.genrm.model import MANIFEST, upload_checkpoint
    from vlgenrm.genrm.pretrain import cached_base

    key = _base_key(config)
    if not store.exists(f"{key}/{MANIFEST}"):
        directory, _ = cached_base(config.base, progress=progress)
        upload_checkpoint(directory, store, key)
    return store.uri(key)


def base_report(config: RunConfig, store: Any) -> Any:
    """The embedded base's build report, read from its copy in the store (None with base_model)."""
    from vlgenrm.genrm.pretrain import REPORT, BaseReport

    if config.base_model is not None:
        return None
    return BaseReport.model_validate_json(store.get_bytes(f"{_base_key(config)}/{REPORT}"))


def run_demo(
    config: RunConfig,
    settings: Any,
    workers: Mapping[str, Any],
    *,
    on_status: Callable[[str, IterationStatus], None] | None = None,
    on_base: Callable[[int, int, float], None] | None = None,
) -> list[IterationResult]:
    """Set up data and model, run every arm's chain for every seed on the stage services'
    ``workers`` (``vlgenrm.services.stage_workers()``), return what each Iteration did."""
    from vlgenrm.bus import make_bus
    from vlgenrm.iteration.local import LocalDriver, LocalServices
    from vlgenrm.store import make_store
    from vlgenrm.store.base import ObjectNotFoundError
    from vlgenrm.synth.dataset import generate_dataset, load_manifest, load_truth

    store, bus = make_store(settings.store), make_bus(settings.bus)
    data = config.dataset()
    try:
        if load_manifest(store, data.name).config != data:
            raise ObjectNotFoundError("a different dataset of that name")
    except ObjectNotFoundError:
        log.info("writing the synthetic dataset %s", data.name)
        generate_dataset(data, store)
    base = ensure_base(config, store, on_base)
    truth = load_truth(store, data.name, "train")
    run = config.digest()
    results = []
    with LocalServices(settings, bus, store, workers):
        for seed in config.seeds:
            for variant, overrides in variants(config).items():
                namespace = chain_namespace(config, variant, seed)
                driver, previous = LocalDriver(settings, bus, store, namespace), None
                for t in range(config.iterations):
                    name = f"{config.name}-{run}-{variant}-s{seed}-{t}"
                    spec = IterationSpec.model_validate(
                        merge(
                            merge(config.spec, overrides),
                            {
                                "dataset": data.name,
                                "evalSet": data.name,
                                "baseModel": base,
                                "previousIteration": previous,
                                "index": t,
                                "training": {"seed": seed},
                            },
                        )
                    )
                    started = time.monotonic()
                    status = driver.run(name, spec, on_status=(lambda s, n=name: on_status(n, s)) if on_status else None, timeout_s=config.timeout_s)
                    result = IterationResult(variant, t, name, status, time.monotonic() - started, seed=seed)
                    result.label_accuracy = label_accuracy(store, namespace, name, truth)
                    result.training_records, result.training_label_accuracy = training_label_accuracy(store, namespace, name, truth)
                    result.kept_by_threshold, result.tau, result.critique_probe = sampling_summary(store, namespace, name)
                    results.append(result)
                    if status.phase is not Phase.SUCCEEDED:
                        log.error("%s ended %s: %s", name, status.phase.value, status.message)
                        break
                    previous = name
    bus.close()
    return results


def label_accuracy(store: Any, namespace: str, name: str, truth: dict[str, Any]) -> float | None:
    """Share of kept refined labels that match the synthetic truth (what refinement buys)."""
    right = total = 0
    for line in stage_lines(store, namespace, name, Stage.EXPERTS):
        pair = RefinedPair.model_validate_json(line)
        if pair.label is not None and pair.example.id in truth:
            total += 1
            right += pair.label == truth[pair.example.id].better
    return right / total if total else None


def training_label_accuracy(store: Any, namespace: str, name: str, truth: dict[str, Any]) -> tuple[int, float | None]:
    """(training records, share whose verdict is right against the truth): what the GenRM is taught."""
    right = total = 0
    for line in stage_lines(store, namespace, name, Stage.SAMPLING):
        record = TrainingRecord.model_validate_json(line)
        if record.example_id not in truth:
            continue
        better = truth[record.example_id].better
        shown = better if record.order is Order.AB else (Choice.B if better is Choice.A else Choice.A)
        total += 1
        right += record.verdict == shown
    return total, (right / total if total else None)


def sampling_summary(store: Any, namespace: str, name: str) -> tuple[list[tuple[float, float]], float | None, CritiqueProbe | None]:
    """From the sampling shards' reports: pair acceptance per margin threshold (averaged over
    the shards), tau_t, and the critique probes pooled (weighted by probed candidates)."""
    from vlgenrm.sampling.sampler import CritiqueProbe, SamplingStats

    sums: dict[float, list[float]] = {}
    tau = None
    probes: list[CritiqueProbe] = []
    for obj in store.list(layout.kind_prefix(namespace, name, Stage.SAMPLING, "report")):
        if obj.key.endswith(".json"):
            stats = store.get_model(obj.key, SamplingStats)
            tau = stats.tau
            for point in stats.kept_ratio_by_threshold:
                sums.setdefault(point.tau, []).append(point.kept_ratio)
            if stats.critique_probe is not None and stats.critique_probe.candidates:
                probes.append(stats.critique_probe)
    n = sum(p.candidates for p in probes)
    probe = (
        CritiqueProbe(
            candidates=n,
            mean_lift=sum(p.mean_lift * p.candidates for p in probes) / n,
            helped=sum(p.helped * p.candidates for p in probes) / n,
            rescued=sum(p.rescued for p in probes),
            sunk=sum(p.sunk for p in probes),
        )
        if n
        else None
    )
    return sorted((t, sum(v) / len(v)) for t, v in sums.items()), tau, probe
