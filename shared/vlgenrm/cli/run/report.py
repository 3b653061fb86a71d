"""The report of ``vlgenrm run``: ``report.md`` for people, ``summary.json`` for machines, and
the plots. Every accuracy comes with its Wilson 95 % interval and a collapse check (mean
|p − 0.5|), and every arm's training records are checked against the synthetic truth, so a
control arm that secretly learns from the experts — or a model that answers 0.5 to
everything — shows up here."""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from vlgenrm.contracts import IterationReason, Stage
from vlgenrm.evaluation.metrics import ConfidenceReport, PairPrediction, confidence_report, wilson_interval
from vlgenrm.stages import stage_lines
from vlgenrm.synth.shortcuts import TextBaseline, text_only_baseline

if TYPE_CHECKING:
    from vlgenrm.cli.run.app import IterationResult, RunConfig

SUMMARY = "summary.json"


class IterationSummary(BaseModel):
    """One Iteration of one arm and seed (``variant``: ``experts`` is the full method, ``no-experts`` the control)."""

    variant: str
    seed: int
    index: int = Field(description="t, the Iteration's place in its chain.")
    name: str
    phase: str
    accuracy: float | None = Field(None, description="Held-out pairwise accuracy (both orders averaged).")
    accuracy_low: float | None = Field(None, description="Wilson 95 % interval, lower end.")
    accuracy_high: float | None = Field(None, description="Wilson 95 % interval, upper end.")
    n_eval: int = 0
    mean_confidence: float | None = Field(None, description="Mean |P([[A]]) - 0.5| on the held-out set.")
    collapsed: bool | None = Field(None, description="The model's verdicts are (nearly) constant: its accuracy is no signal.")
    confidence_histogram: list[int] = Field(default_factory=list, description="Counts of P(first is better) in 10 bins over [0, 1].")
    per_type: dict[str, float] = Field(default_factory=dict, description="Held-out accuracy per hallucination type.")
    training_records: int = Field(0, description="Records the GenRM was trained on.")
    training_label_accuracy: float | None = Field(None, description="Share of training records whose verdict is right against the truth.")
    refined_label_accuracy: float | None = Field(None, description="Share of the stage's kept labels that are right against the truth.")
    tau: float | None = Field(None, description="Margin threshold tau_t of this Iteration.")
    hard_pool: int = Field(0, description="Pairs sent to the hard pool.")
    hard_pairs_retried: int = Field(0, description="Hard-pool pairs of the previous Iteration given extra candidates.")
    pair_acceptance: float | None = Field(None, description="Share of labelled pairs with an accepted critique.")
    critique_lift: float | None = Field(
        None,
        description="Mean change of a right-verdict critique's margin over the bare prompt's (sampling's critique probe): near 0 or below, the GenRM does not read critiques and the margin filter keeps what it already prefers.",
    )
    critique_helped: float | None = Field(None, description="Share of probed critiques that raised the margin.")
    promoted: bool = False
    seconds: float = 0.0


class AblationRow(BaseModel):
    """One arm at one iteration, over its seeds."""

    variant: str
    index: int
    seeds: int
    accuracy_mean: float
    accuracy_std: float = Field(description="Sample standard deviation over seeds (0 with one seed).")
    accuracy_low: float = Field(description="Wilson 95 % interval of all seeds' held-out verdicts pooled, lower end.")
    accuracy_high: float
    mean_confidence: float
    training_label_accuracy: float | None


class RunSummary(BaseModel):
    """What summary.json holds."""

    name: str
    minutes: float
    data: dict[str, Any]
    base: dict[str, Any] | None = Field(None, description="The embedded base's ladder (held-out VQA accuracy), when it was used.")
    text_only: TextBaseline | None = Field(None, description="What the responses' wording alone scores on the same held-out pairs (synth.shortcuts).")
    iterations: list[IterationSummary]
    ablations: list[AblationRow]


def _predictions(store: Any, namespace: str, name: str) -> list[Any]:
    from vlgenrm.evaluation.run import EvaluationPrediction

    return [EvaluationPrediction.model_validate_json(line) for line in stage_lines(store, namespace, name, Stage.EVALUATION)]


def summarise(result: IterationResult, store: Any, namespace: str) -> IterationSummary:
    """The summary of one Iteration, read from its status and its objects in the store."""
    m = result.status.metrics
    preds = _predictions(store, namespace, result.name) if result.accuracy is not None else []
    confidence: ConfidenceReport | None = None
    low = high = None
    if preds:
        confidence = confidence_report([PairPrediction(example_id=p.example_id, category=p.category, p_first=p.p_first, better=p.better) for p in preds])
        low, high = wilson_interval(sum(p.correct for p in preds), len(preds))
    return IterationSummary(
        variant=result.variant,
        seed=result.seed,
        index=result.index,
        name=result.name,
        phase=result.status.phase.value,
        accuracy=result.accuracy,
        accuracy_low=low,
        accuracy_high=high,
        n_eval=len(preds),
        mean_confidence=confidence.mean_confidence if confidence else None,
        collapsed=confidence.collapsed if confidence else None,
        confidence_histogram=confidence.histogram if confidence else [],
        per_type={k.removeprefix("accuracy."): v for k, v in m.items() if k.startswith("accuracy.")},
        training_records=result.training_records,
        training_label_accuracy=result.training_label_accuracy,
        refined_label_accuracy=result.label_accuracy,
        tau=result.tau,
        hard_pool=int(m.get("sampling.hard", 0)),
        hard_pairs_retried=int(m.get("rationale.pairs_hard", 0)),
        pair_acceptance=(1 - m.get("sampling.hard", 0) / m["sampling.pairs"]) if m.get("sampling.pairs") else None,
        critique_lift=result.critique_probe.mean_lift if result.critique_probe else None,
        critique_helped=result.critique_probe.helped if result.critique_probe else None,
        promoted=result.status.reason is IterationReason.PROMOTED,
        seconds=result.seconds,
    )


def ablation_rows(rows: Sequence[IterationSummary]) -> list[AblationRow]:
    """Mean ± std over seeds per arm and iteration, with the pooled Wilson interval."""
    groups: dict[tuple[str, int], list[IterationSummary]] = {}
    for r in rows:
        if r.accuracy is not None:
            groups.setdefault((r.variant, r.index), []).append(r)
    out = []
    for (variant, index), rs in groups.items():
        accs = [r.accuracy for r in rs if r.accuracy is not None]
        n = sum(r.n_eval for r in rs)
        low, high = wilson_interval(sum(r.accuracy * r.n_eval for r in rs if r.accuracy is not None), n) if n else (0.0, 1.0)
        labels = [r.training_label_accuracy for r in rs if r.training_label_accuracy is not None]
        out.append(
            AblationRow(
                variant=variant,
                index=index,
                seeds=len(rs),
                accuracy_mean=statistics.fmean(accs),
                accuracy_std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                accuracy_low=low,
                accuracy_high=high,
                mean_confidence=statistics.fmean(r.mean_confidence or 0.0 for r in rs),
                training_label_accuracy=statistics.fmean(labels) if labels else None,
            )
        )
    return out


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_report(results: list[IterationResult], config: RunConfig, directory: Path, elapsed_s: float, store: Any, base_report: Any = None) -> Path:
    """report.md, summary.json and the plots, in ``directory``."""
    from vlgenrm.cli.run.app import chain_namespace

    directory.mkdir(parents=True, exist_ok=True)
    rows = [summarise(r, store, chain_namespace(config, r.variant, r.seed)) for r in results]
    ablations = ablation_rows(rows)
    text_only = text_only_baseline(config.data) if config.data.n_train >= 2 and config.data.n_eval >= 1 else None
    summary = RunSummary(
        name=config.name,
        minutes=elapsed_s / 60,
        data=config.data.model_dump(mode="json"),
        base=base_report.model_dump(mode="json") if base_report is not None else None,
        text_only=text_only,
        iterations=rows,
        ablations=ablations,
    )
    (directory / SUMMARY).write_text(summary.model_dump_json(indent=2) + "\n")
    (directory / "accuracy.png").write_bytes(_accuracy_png(ablations))
    (directory / "acceptance.png").write_bytes(_acceptance_png(results))
    (directory / "confidence.png").write_bytes(_confidence_png(rows))
    labeler = config.data.labeler
    noise = (
        f"{config.data.label_noise:.0%} uniformly flipped labels"
        if labeler.kind == "uniform"
        else ("a biased labeler (fooled by " + ", ".join(f"{k.value} {v:.0%}" for k, v in labeler.fooled.items()) + f", otherwise {labeler.base_rate:.0%})")
    )
    lines = [
        f"# vlgenrm run: {config.name}",
        "",
        f"{len(results)} Iteration(s) in {elapsed_s / 60:.1f} min on the synthetic domain "
        f"({config.data.n_train} training pairs, {config.data.n_eval} held-out, {noise}); "
        f"seeds {', '.join(map(str, config.seeds))}. Accuracy is held-out pairwise accuracy (both orders averaged) with its "
        "Wilson 95 % interval; |p−0.5| is the mean confidence (below 0.02 the model is collapsed: its accuracy is no signal); "
        "'records right' is the share of training records whose verdict agrees with the truth.",
        "",
    ]
    if text_only is not None:
        lines += [f"Baseline: {text_only.line()}. An accuracy shows the GenRM looking at the image only where it beats this.", ""]
    if base_report is not None:
        lines += [
            "## The base model",
            "",
            f"Embedded base `{base_report.digest}` (a vision stage, then captions, VQA and claims from scene truth; held-out accuracy per rung of the ladder):",
            "",
            base_report.table(),
            "",
        ]
        if base_report.vision is not None:
            lines += [base_report.vision.line().capitalize() + ".", ""]
    types = sorted({t for r in rows for t in r.per_type})
    lines += [
        "## Every Iteration",
        "",
        "| arm | seed | t | accuracy (95 % CI) | |p−0.5| | " + " | ".join(types) + " | records | records right | labels right | τ | hard | promoted | time |",
        "|---|---:|---:|---|---:|" + "---:|" * len(types) + "---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        flag = " ⚠ collapsed" if r.collapsed else ""
        lines.append(
            f"| {r.variant} | {r.seed} | {r.index} | {_f(r.accuracy)} ({_f(r.accuracy_low)}–{_f(r.accuracy_high)}){flag} | {_f(r.mean_confidence)} | "
            + " | ".join(_f(r.per_type.get(t), 2) for t in types)
            + f" | {r.training_records} | {_f(r.training_label_accuracy)} | {_f(r.refined_label_accuracy)} | {_f(r.tau, 1)} | {r.hard_pool} | "
            f"{'yes' if r.promoted else 'no'} | {r.seconds:.0f} s |"
        )
    lines += [
        "",
        "## Arms over seeds",
        "",
        "| arm | t | seeds | accuracy mean ± std | pooled 95 % CI | |p−0.5| | records right |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for a in sorted(ablations, key=lambda a: (a.variant, a.index)):
        lines.append(
            f"| {a.variant} | {a.index} | {a.seeds} | {a.accuracy_mean:.3f} ± {a.accuracy_std:.3f} | "
            f"{a.accuracy_low:.3f}–{a.accuracy_high:.3f} | {a.mean_confidence:.3f} | {_f(a.training_label_accuracy)} |"
        )
    lines += [
        "",
        "![held-out accuracy per iteration](accuracy.png)",
        "",
        "![confidence of the verdicts](confidence.png)",
        "",
        "![pairs kept per margin threshold](acceptance.png)",
        "",
        "## What the numbers say",
        "",
    ]
    lines += _findings(rows, ablations)
    path = directory / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _findings(rows: Sequence[IterationSummary], ablations: Sequence[AblationRow]) -> list[str]:
    """Plain sentences: collapse, what iteration 2 changed, the method against its controls."""
    out = []
    collapsed = [r for r in rows if r.collapsed]
    if collapsed:
        out.append(
            f"- ⚠ {len(collapsed)} of {len(rows)} Iterations ended collapsed (mean |p−0.5| < 0.02): their accuracy is the "
            "benchmark's balance, not a signal — " + ", ".join(r.name for r in collapsed) + "."
        )
    for r in rows:
        if r.index >= 1:
            prev = next((p for p in rows if p.variant == r.variant and p.seed == r.seed and p.index == r.index - 1), None)
            if prev is not None:
                out.append(
                    f"- {r.variant} seed {r.seed}, t={r.index}: τ {_f(prev.tau, 1)} → {_f(r.tau, 1)}; {r.hard_pairs_retried} hard pairs "
                    f"of t={prev.index} retried with extra candidates; {prev.training_records} → {r.training_records} training records; "
                    f"accuracy {_f(prev.accuracy)} → {_f(r.accuracy)}."
                )
    probed: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in rows:
        if r.critique_lift is not None and r.critique_helped is not None:
            probed.setdefault((r.variant, r.index), []).append((r.critique_lift, r.critique_helped))
    if probed:
        means = {key: tuple(map(statistics.fmean, zip(*values, strict=True))) for key, values in sorted(probed.items())}
        parts = [f"{v} t={t} {lift:+.2f} (raised {helped:.0%})" for (v, t), (lift, helped) in means.items()]
        reads = any(lift > 0.5 for lift, _ in means.values())
        out.append(
            "- What a critique does to the margin of its (right) verdict, against the bare prompt: "
            + "; ".join(parts)
            + ". "
            + (
                ""
                if reads
                else "The GenRM does not read the critiques, so the margin filter keeps the pairs it already prefers "
                "and the hard pool holds the ones it gets wrong."
            )
        )
    last = max((a.index for a in ablations), default=0)
    final = {a.variant: a for a in ablations if a.index == last}
    if "experts" in final:
        e = final["experts"]
        for variant, a in sorted(final.items()):
            if variant == "experts":
                continue
            overlap = not (e.accuracy_low > a.accuracy_high or a.accuracy_low > e.accuracy_high)
            out.append(
                f"- experts vs {variant} at t={last}: {e.accuracy_mean:.3f} vs {a.accuracy_mean:.3f} "
                f"({e.accuracy_mean - a.accuracy_mean:+.3f}; pooled intervals {'overlap' if overlap else 'do not overlap'}); "
                f"training records right {_f(e.training_label_accuracy)} vs {_f(a.training_label_accuracy)}."
            )
    return out or ["- Nothing to compare (one Iteration)."]


# --------------------------------------------------------------------------- plots


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: plotting is optional
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any, ax: Any, *, xlabel: str, ylabel: str, title: str, xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None) -> bytes:
    """Label the axes, add the legend if anything was drawn, and render."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlim is not None:
        ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _accuracy_png(ablations: Sequence[AblationRow]) -> bytes:
    from matplotlib.ticker import MaxNLocator

    fig = _figure()
    ax = fig.add_subplot()
    for variant in dict.fromkeys(a.variant for a in ablations):
        rs = sorted((a for a in ablations if a.variant == variant), key=lambda a: a.index)
        xs = [a.index for a in rs]
        ys = [a.accuracy_mean for a in rs]
        ax.errorbar(
            xs,
            ys,
            yerr=[[y - a.accuracy_low for y, a in zip(ys, rs, strict=True)], [a.accuracy_high - y for y, a in zip(ys, rs, strict=True)]],
            marker="o",
            capsize=4,
            label=variant,
        )
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(
        fig, ax, xlabel="iteration t", ylabel="held-out pairwise accuracy", ylim=(0, 1), title="Held-out accuracy of M_{t+1} (mean over seeds, pooled 95 % CI)"
    )


def _confidence_png(rows: Sequence[IterationSummary]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    last = {}
    for r in rows:
        if r.confidence_histogram and (r.variant not in last or r.index >= last[r.variant].index):
            last[r.variant] = r
    for variant, r in last.items():
        bins = len(r.confidence_histogram)
        ax.plot([(i + 0.5) / bins for i in range(bins)], r.confidence_histogram, marker="o", label=f"{variant} t={r.index} seed {r.seed}")
    return _png(
        fig, ax, xlabel="P(first response is better), held-out pairs", ylabel="pairs", xlim=(0, 1), title="Confidence histogram (a spike at 0.5 = collapse)"
    )


def _acceptance_png(results: Sequence[IterationResult]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for r in results:
        if r.kept_by_threshold and r.seed == results[0].seed:
            ax.plot([p[0] for p in r.kept_by_threshold], [p[1] for p in r.kept_by_threshold], label=f"{r.variant} t={r.index}")
    return _png(fig, ax, xlabel="margin threshold tau", ylabel="pairs with an accepted critique", ylim=(0, 1), title="Acceptance per margin threshold")


def load_summary(directory: Path) -> RunSummary:
    """Read a run's summary.json back."""
    return RunSummary.model_validate(json.loads((Path(directory) / SUMMARY).read_text()))
