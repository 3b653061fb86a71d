"""``vlgenrm run``: the whole loop on one machine — synthetic data, a tiny offline GenRM,
N chained Iterations driven by the shared state machine, optionally the same chain without
expert refinement — and a report of what the method bought."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vlgenrm.contracts import IterationStatus, Phase, RefinedPair, Stage
from vlgenrm.iteration.spec import IterationSpec
from vlgenrm.synth.dataset import SynthConfig

log = logging.getLogger(__name__)

DEFAULT_SPEC: dict[str, Any] = {
    "rationale": {"k": 2, "both_orders": True},
    "training": {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "checkpoint_every": 50},
    "evaluation": {"pointwise": False},
}


class RunConfig(BaseModel):
    """What ``vlgenrm run`` does (``--config FILE`` holds a YAML mapping of these fields)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("demo", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Prefix of the Iteration names.")
    namespace: str = Field("local", description="Namespace of the Iterations and of the promotion pointer.")
    iterations: int = Field(2, ge=1, le=20, description="Chained Iterations per variant.")
    ablate_experts: bool = Field(False, description="Also run the chain without expert refinement (human labels, no evidence).")
    data: SynthConfig = Field(default_factory=lambda: SynthConfig(name="demo", n_train=192, n_eval=96, shard_size=48),
                              description="The synthetic dataset (created when missing).")
    base_model: str | None = Field(None, description="Checkpoint to start from; None = a tiny offline Qwen2-VL built into the store.")
    spec: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_SPEC), description="IterationSpec fields shared by every Iteration.")
    report_dir: Path = Field(Path("vlgenrm-report"), description="Where report.md and the plots go.")
    timeout_s: float = Field(1800, gt=0, description="Longest time one Iteration may take.")


@dataclass
class IterationResult:
    variant: str
    index: int
    name: str
    status: IterationStatus
    seconds: float
    label_accuracy: float | None = None  # refined labels vs the synthetic truth
    kept_by_threshold: list[tuple[float, float]] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.status.metrics.get("accuracy")


def variants(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Spec overrides per variant: with experts (the method) and, optionally, without."""
    out = {"experts": {}}
    if config.ablate_experts:
        out["no-experts"] = {"experts": {"refinement": {"policy": "keep"}}, "rationale": {"with_evidence": False}}
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_demo(config: RunConfig, settings: Any, *, on_status: Callable[[str, IterationStatus], None] | None = None) -> list[IterationResult]:
    """Set up data and model, run every variant's chain, return what each Iteration did."""
    from vlgenrm.bus import make_bus
    from vlgenrm.genrm.model import upload_checkpoint
    from vlgenrm.genrm.tiny import build_tiny_genrm
    from vlgenrm.iteration.local import LocalDriver, LocalServices
    from vlgenrm.store import make_store
    from vlgenrm.store.base import ObjectNotFoundError
    from vlgenrm.synth.dataset import generate_dataset, load_manifest

    store, bus = make_store(settings.store), make_bus(settings.bus)
    try:
        if load_manifest(store, config.data.name).config != config.data:
            raise ObjectNotFoundError("a different dataset of that name")
    except ObjectNotFoundError:
        log.info("writing the synthetic dataset %s", config.data.name)
        generate_dataset(config.data, store)
    base = config.base_model
    if base is None:
        key = f"checkpoints/{config.namespace}/{config.name}-base/model"
        if not store.exists(f"{key}/vlgenrm-manifest.json"):
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                upload_checkpoint(build_tiny_genrm(Path(tmp) / "base", "qwen2_vl", seed=0), store, key)
        base = store.uri(key)
    driver, results = LocalDriver(settings, bus, store, config.namespace), []
    with LocalServices(settings, bus, store):
        for variant, overrides in variants(config).items():
            previous = None
            for t in range(config.iterations):
                name = f"{config.name}-{variant}-{t}"
                spec = IterationSpec.model_validate(merge(merge(config.spec, overrides), {
                    "dataset": config.data.name, "evalSet": config.data.name, "baseModel": base,
                    "previousIteration": previous, "index": t,
                }))
                started = time.monotonic()
                status = driver.run(name, spec, on_status=(lambda s, n=name: on_status(n, s)) if on_status else None, timeout_s=config.timeout_s)
                result = IterationResult(variant, t, name, status, time.monotonic() - started)
                result.label_accuracy = label_accuracy(store, config.namespace, name, config.data.name)
                result.kept_by_threshold = kept_by_threshold(store, config.namespace, name)
                results.append(result)
                if status.phase is not Phase.SUCCEEDED:
                    log.error("%s ended %s: %s", name, status.phase.value, status.message)
                    break
                previous = name
    bus.close()
    return results


def label_accuracy(store: Any, namespace: str, name: str, dataset: str) -> float | None:
    """Share of kept refined labels that match the synthetic truth (what refinement buys)."""
    from vlgenrm.synth.dataset import load_truth

    truth = load_truth(store, dataset, "train")
    prefix = f"iterations/{namespace}/{name}/{Stage.EXPERTS.value}/"
    right = total = 0
    for obj in store.list(prefix):
        rest = obj.key[len(prefix):]
        if "/" in rest or not rest.endswith(".jsonl"):
            continue  # reports/ and markers
        for line in store.get_bytes(obj.key).splitlines():
            pair = RefinedPair.model_validate_json(line)
            if pair.label is not None and pair.example.id in truth:
                total += 1
                right += pair.label == truth[pair.example.id].better
    return right / total if total else None


def kept_by_threshold(store: Any, namespace: str, name: str) -> list[tuple[float, float]]:
    """Pair acceptance per margin threshold, averaged over the sampling shards."""
    from vlgenrm.sampling.sampler import SamplingStats

    sums: dict[float, list[float]] = {}
    for obj in store.list(f"iterations/{namespace}/{name}/sampling/report/"):
        if obj.key.endswith(".json"):
            stats = store.get_model(obj.key, SamplingStats)
            for point in stats.kept_ratio_by_threshold:
                sums.setdefault(point.tau, []).append(point.kept_ratio)
    return sorted((tau, sum(v) / len(v)) for tau, v in sums.items())


# --------------------------------------------------------------------------- the report


def write_report(results: list[IterationResult], config: RunConfig, directory: Path, elapsed_s: float) -> Path:
    """report.md with the summary table and the plots (accuracy per iteration, refined-label
    quality, acceptance per margin threshold)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "accuracy.png").write_bytes(_accuracy_png(results))
    (directory / "acceptance.png").write_bytes(_acceptance_png(results))
    lines = [
        f"# vlgenrm run: {config.name}", "",
        f"{len(results)} Iteration(s) in {elapsed_s / 60:.1f} min on the synthetic domain "
        f"({config.data.n_train} training pairs, {config.data.n_eval} held-out, {config.data.label_noise:.0%} label noise).", "",
        "| variant | t | phase | held-out accuracy | refined labels right | training records | final loss | promoted | time |",
        "|---|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        m = r.status.metrics
        acc = f"{r.accuracy:.3f}" if r.accuracy is not None else "-"
        labels = f"{r.label_accuracy:.3f}" if r.label_accuracy is not None else "-"
        lines.append(f"| {r.variant} | {r.index} | {r.status.phase.value} | {acc} | {labels} | {m.get('sampling.kept', 0):.0f} | "
                     f"{m.get('training.final_loss', float('nan')):.3f} | {'yes' if r.status.reason.value == 'Promoted' else 'no'} | {r.seconds:.0f} s |")
    lines += ["", "![held-out accuracy per iteration](accuracy.png)", "", "![pairs kept per margin threshold](acceptance.png)", ""]
    by_variant: dict[str, list[IterationResult]] = {}
    for r in results:
        by_variant.setdefault(r.variant, []).append(r)
    lines.append("## What the numbers say")
    lines.append("")
    for variant, rs in by_variant.items():
        accs = [r.accuracy for r in rs if r.accuracy is not None]
        if len(accs) >= 2:
            lines.append(f"- {variant}: held-out accuracy {accs[0]:.3f} at t=0, {accs[-1]:.3f} at t={len(accs) - 1} ({accs[-1] - accs[0]:+.3f}).")
    if "experts" in by_variant and "no-experts" in by_variant:
        a, b = by_variant["experts"][-1], by_variant["no-experts"][-1]
        if a.accuracy is not None and b.accuracy is not None:
            lines.append(f"- with vs without expert refinement (last iteration): {a.accuracy:.3f} vs {b.accuracy:.3f} ({a.accuracy - b.accuracy:+.3f}).")
        if a.label_accuracy is not None and b.label_accuracy is not None:
            lines.append(f"- refined labels right: {a.label_accuracy:.3f} with experts vs {b.label_accuracy:.3f} with human labels only.")
    path = directory / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: plotting is optional
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _accuracy_png(results: list[IterationResult]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for variant in dict.fromkeys(r.variant for r in results):
        rs = [r for r in results if r.variant == variant and r.accuracy is not None]
        ax.plot([r.index for r in rs], [r.accuracy for r in rs], marker="o", label=variant)
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("held-out pairwise accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Held-out accuracy of M_{t+1}")
    return _png(fig)


def _acceptance_png(results: list[IterationResult]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for r in results:
        if r.kept_by_threshold:
            ax.plot([p[0] for p in r.kept_by_threshold], [p[1] for p in r.kept_by_threshold], label=f"{r.variant} t={r.index}")
    ax.set_xlabel("margin threshold tau")
    ax.set_ylabel("pairs with an accepted critique")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    ax.set_title("Acceptance per margin threshold")
    return _png(fig)
