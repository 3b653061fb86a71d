"""The evaluation report of one checkpoint on one benchmark (what promotion reads), and its
Markdown."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from vlgenrm.contracts.base import Contract, utcnow
from vlgenrm.evaluation.metrics import AccuracyReport, BestOfNReport, ConfidenceReport, DetectionReport, Interval


class EvaluationReport(Contract):
    """The result of evaluating one checkpoint on one benchmark; what promotion reads."""

    model: str = Field(min_length=1, description="Model or checkpoint name.")
    dataset: str = Field(min_length=1)
    created_at: datetime = Field(default_factory=utcnow)
    accuracy: AccuracyReport
    confidence: ConfidenceReport | None = Field(None, description="Collapse check of the pairwise verdicts (absent in old reports).")
    hallucination: DetectionReport | None = None
    best_of_n: BestOfNReport | None = None

    def to_markdown(self) -> str:
        """A human-readable summary: collapse warning, accuracy table with intervals, confidence, detection, best-of-N."""
        acc, conf = self.accuracy, self.confidence
        lines = [f"# Evaluation: {_md(self.model)} on {_md(self.dataset)}", "", f"_Created {self.created_at.isoformat()}_", ""]
        if conf is not None and conf.collapsed:
            # First and loud: every number below is meaningless for a collapsed model.
            lines += [
                (
                    f"> **COLLAPSED ({conf.collapse_reason}): the model gives the same answer to everything: "
                    f"accuracy is not signal.** Mean |p − 0.5| = {conf.mean_confidence:.4f}, std of p = "
                    f"{conf.p_std:.4f} (threshold {conf.threshold:g})."
                ),
                "",
            ]
        lo, hi = acc.overall_ci
        lines += [
            "## Pairwise accuracy",
            "",
            "Per category (hallucination type on the synthetic set), with Wilson 95 % intervals:",
            "",
            "| Category | N | Accuracy | 95 % CI |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {_md(c)} | {acc.counts[c]} | {acc.per_category[c]:.4f} | {_ci(acc.per_category_ci.get(c))} |" for c in acc.per_category]
        lines += [
            f"| **Overall** | {acc.n} | **{acc.overall:.4f}** | {_ci(acc.overall_ci)} |",
            f"| **Macro mean** | {len(acc.per_category)} categories | {acc.macro:.4f} | – |",
        ]
        if lo <= 0.5 <= hi:
            lines += ["", (f"Chance (0.5) is inside the overall 95 % interval {_ci(acc.overall_ci)}: this accuracy is not distinguishable from a coin flip.")]
        if conf is not None:
            width = 1 / len(conf.histogram)
            lines += [
                "",
                "## Confidence",
                "",
                (
                    f"Mean |p − 0.5| = {conf.mean_confidence:.4f}, std of p = {conf.p_std:.4f} over {conf.n} pairs "
                    f"(collapsed below {conf.threshold:g}: {'**yes**' if conf.collapsed else 'no'})."
                ),
                "",
                "| P(response 0 better) | Count |",
                "|---|---:|",
            ]
            for i, count in enumerate(conf.histogram):
                close = "]" if i == len(conf.histogram) - 1 else ")"
                lines.append(f"| [{i * width:.2f}, {(i + 1) * width:.2f}{close} | {count} |")
        if (h := self.hallucination) is not None:
            lines += [
                "",
                "## Hallucination detection",
                "",
                "| Precision | Recall | F1 | TP | FP | FN | TN |",
                "|---:|---:|---:|---:|---:|---:|---:|",
                f"| {h.precision:.4f} | {h.recall:.4f} | {h.f1:.4f} | {h.tp} | {h.fp} | {h.fn} | {h.tn} |",
            ]
        if (b := self.best_of_n) is not None:
            lines += [
                "",
                "## Best-of-N selection",
                "",
                "| Groups | Mean N | Accuracy |",
                "|---:|---:|---:|",
                f"| {b.groups} | {b.mean_n:.2f} | {b.accuracy:.4f} |",
            ]
        return "\n".join(lines) + "\n"


def _ci(interval: Interval | None) -> str:
    return "–" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def _md(text: str) -> str:
    """Escape table-breaking characters in names that come from data."""
    return text.replace("|", "\\|").replace("\n", " ")
