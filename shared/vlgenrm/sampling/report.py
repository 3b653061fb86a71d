"""The sampling stage report: a margin histogram (PNG) and a Markdown summary."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from vlgenrm.sampling.sampler import MarginHistogram, SamplingStats, margin_histogram


def margin_histogram_png(
    data: SamplingStats | MarginHistogram | tuple[Sequence[float], Sequence[bool]],
    out: str | Path | BinaryIO | None = None,
    *,
    tau: float | None = None,
    bins: int = 30,
) -> bytes:
    """Stacked histogram of accepted vs rejected margins with the tau line; returns the PNG
    bytes and also writes them to ``out`` (a path or a binary file) when given.

    ``data``: the run's stats, a histogram, or raw ``(margins, accepted flags)`` (binned with
    ``bins``). ``tau`` defaults to the stats' threshold.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: plotting is optional
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    title = "Candidate margins"
    if isinstance(data, SamplingStats):
        hist = data.histogram
        tau = data.tau if tau is None else tau
        title = f"Candidate margins (iteration {data.iteration}, {data.model_version})"
    elif isinstance(data, MarginHistogram):
        hist = data
    else:
        hist = margin_histogram(list(data[0]), list(data[1]), bins)

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)  # Agg canvas without pyplot's global state
    ax = fig.add_subplot()
    if hist.edges:
        lefts, widths = hist.edges[:-1], [b - a for a, b in zip(hist.edges[:-1], hist.edges[1:], strict=True)]
        ax.bar(lefts, hist.rejected, width=widths, align="edge", color="tab:red", alpha=0.7, label="rejected")
        ax.bar(lefts, hist.accepted, width=widths, align="edge", bottom=hist.rejected, color="tab:green", alpha=0.7, label="accepted")
    else:
        ax.text(0.5, 0.5, "no scored candidates", ha="center", va="center", transform=ax.transAxes)
    if tau is not None:
        ax.axvline(tau, color="black", linestyle="--", label=f"τ = {tau:g}")
    ax.set_title(title)
    ax.set_xlabel("margin m = log p(y) − log p(¬y)")
    ax.set_ylabel("candidates")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if hist.edges or tau is not None:
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    png = buf.getvalue()
    if isinstance(out, (str, Path)):
        Path(out).write_bytes(png)
    elif out is not None:
        out.write(png)
    return png


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def stage_report_markdown(stats: SamplingStats) -> str:
    """Counts, acceptance per category and the kept ratio per threshold, as Markdown tables."""
    lines = [
        f"# Sampling report — iteration {stats.iteration}",
        "",
        f"Model `{stats.model_version}`, τ = {stats.tau:g}.",
        "",
        "## Counts",
        "",
        "| quantity | value |",
        "|---|---:|",
    ]
    counts = {
        "pairs": stats.pairs,
        "skipped (unlabelled)": stats.skipped,
        "candidates": stats.candidates,
        "unparseable": stats.unparseable,
        "scored": stats.scored,
        "accepted": stats.accepted,
        "kept (training records)": stats.kept,
        "hard pool": stats.hard,
        "DPO pairs": stats.dpo_pairs,
    }
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    lines += [
        f"| acceptance rate (candidates) | {_pct(stats.acceptance_rate)} |",
        f"| acceptance rate (pairs) | {_pct(stats.pair_acceptance_rate)} |",
        "",
        "## Acceptance per category",
        "",
        "| category | pairs | scored | accepted | hard | candidate rate | pair rate |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in stats.by_category.items():
        safe = name.replace("|", "\\|")
        lines.append(f"| {safe} | {c.pairs} | {c.scored} | {c.accepted} | {c.hard} | {_pct(c.acceptance_rate)} | {_pct(c.pair_acceptance_rate)} |")
    lines += ["", "## Kept ratio per margin threshold", "", "| τ | pairs keeping ≥ 1 |", "|---:|---:|"]
    for point in stats.kept_ratio_by_threshold:
        mark = " ←" if abs(point.tau - stats.tau) < 1e-9 else ""
        lines.append(f"| {point.tau:g}{mark} | {_pct(point.kept_ratio)} |")
    if (probe := stats.critique_probe) is not None:
        lines += [
            "",
            "## Does the GenRM read the critiques?",
            "",
            f"{probe.candidates} candidates of the first pairs, scored with their critique and without: the critique moved the "
            f"margin by {probe.mean_lift:+.2f} on average and raised it for {_pct(probe.helped)}; it lifted {probe.rescued} over τ "
            f"and sank {probe.sunk} below it. Where it barely moves the margin, the filter keeps the pairs the GenRM already prefers.",
        ]
    return "\n".join(lines) + "\n"
