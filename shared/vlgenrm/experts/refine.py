"""§3.2 label refinement: combine the human label with the experts' preference.

| human | experts | result |
|---|---|---|
| y | y | keep y (agree) |
| unknown | y_e | y_e (expert) |
| y_h | none | y_h (human) |
| y_h | y_e != y_h | policy: flip to y_e when |h(A) - h(B)| >= flip_threshold, else drop (flip);
  always drop (drop); keep y_h but mark the conflict (keep) |
| unknown | none | dropped: nobody knows |

With the experts disabled (``AnnotationSettings.enabled = false``, the no-experts arm) there is
no report at all: ``human_only`` passes the human label through (source ``human``) and drops
pairs without one.
"""

from __future__ import annotations

from vlgenrm.contracts import Choice, Example, ExpertReport, HumanLabel, LabelSource, RefinedPair
from vlgenrm.experts.config import ConflictPolicy, RefinementSettings


def refine(example: Example, report: ExpertReport, settings: RefinementSettings | None = None) -> RefinedPair:
    """The refined pair, with the decision and its evidence in ``reason``."""
    settings = settings or RefinementSettings()
    human = None if example.human_label is HumanLabel.UNKNOWN else Choice(example.human_label.value)
    expert = report.expert_preference
    gap = abs(report.hallucination[Choice.A] - report.hallucination[Choice.B])
    evidence = f"h(A)={report.hallucination[Choice.A]:.2f} h(B)={report.hallucination[Choice.B]:.2f}"

    def pair(label: Choice | None, source: LabelSource, reason: str) -> RefinedPair:
        return RefinedPair(
            id=f"{example.id}/refined",
            example=example,
            report_id=report.id,
            human_label=example.human_label,
            expert_label=expert,
            label=label,
            source=source,
            reason=f"{reason} ({evidence})",
        )

    if human is not None and expert is not None and human == expert:
        return pair(human, LabelSource.AGREE, "humans and experts agree")
    if human is None and expert is not None:
        return pair(expert, LabelSource.EXPERT, "no human label; experts decide")
    if human is not None and expert is None:
        return pair(human, LabelSource.HUMAN, "experts have no preference; human label kept")
    if human is None:
        return pair(None, LabelSource.CONFLICT, "neither humans nor experts give a label")
    if settings.policy is ConflictPolicy.KEEP:
        return pair(human, LabelSource.CONFLICT, f"experts prefer {expert.value}; policy keeps the human label")
    if settings.policy is ConflictPolicy.FLIP and gap >= settings.flip_threshold:
        return pair(expert, LabelSource.EXPERT_OVERRIDE, f"experts prefer {expert.value} by {gap:.2f} >= {settings.flip_threshold}")
    return pair(None, LabelSource.CONFLICT, f"experts prefer {expert.value} by {gap:.2f}; dropped under policy {settings.policy.value}")


def human_only(example: Example) -> RefinedPair:
    """The pair as the humans labelled it, no expert consulted (no report exists)."""
    human = None if example.human_label is HumanLabel.UNKNOWN else Choice(example.human_label.value)
    if human is None:
        source, reason = LabelSource.CONFLICT, "experts disabled and no human label: dropped"
    else:
        source, reason = LabelSource.HUMAN, "experts disabled; human label kept"
    return RefinedPair(
        id=f"{example.id}/refined",
        example=example,
        report_id=None,
        human_label=example.human_label,
        expert_label=None,
        label=human,
        source=source,
        reason=reason,
    )
