"""The arms of an ablation: the method and its controls, each as IterationSpec overrides.

Every arm states exactly what reaches the labels, the teacher (rationale generator) and the
sampler, so a control arm cannot quietly profit from the experts it is meant to do without:

| arm | labels | teacher is given | sampler accepts |
|---|---|---|---|
| ``experts`` | expert-refined (§3.2) | the ExpertReport + the evidence block | verdict = label and m >= tau_t |
| ``no-experts`` | the raw human labels; no expert runs, no report exists | only the human label | verdict = label and m >= tau_t |
| ``no-evidence`` | expert-refined | only the refined label (no report, no evidence block) | verdict = label and m >= tau_t |
| ``no-margin`` | expert-refined | the ExpertReport + the evidence block | verdict = label (no margin threshold) |

The sampler never reads a report in any arm: it scores without the evidence block and
compares with the pair's label, so what it sees is fixed by the labels column.
"""

from __future__ import annotations

import copy
from enum import StrEnum
from typing import Any


class Arm(StrEnum):
    #: The method: experts verify and refine labels, the teacher writes expert-grounded
    #: critiques from the report, the margin filter keeps confident ones.
    EXPERTS = "experts"
    #: No vision expert at all: the experts stage passes the human labels through (source
    #: human, no ExpertReport written), the teacher rationalises the human label, no evidence.
    NO_EXPERTS = "no-experts"
    #: Experts refine the labels, but the teacher sees neither report nor evidence block: it
    #: rationalises the refined label (what expert-grounded rationales add on top of labels).
    NO_EVIDENCE = "no-evidence"
    #: The method with the margin filter off: every candidate whose verdict is the label is
    #: accepted (top_n by margin still kept per pair).
    NO_MARGIN = "no-margin"
    #: The method trained on SFT alone: the verdict loss (training.verdict_weight) off.
    NO_VERDICT_LOSS = "no-verdict-loss"


_TEACHER_SEES_LABEL = {"teacher_sees": "label", "with_evidence": False}

_OVERRIDES: dict[Arm, dict[str, Any]] = {
    Arm.EXPERTS: {},
    Arm.NO_EXPERTS: {"experts": {"enabled": False}, "rationale": _TEACHER_SEES_LABEL},
    Arm.NO_EVIDENCE: {"rationale": _TEACHER_SEES_LABEL},
    Arm.NO_MARGIN: {"sampling": {"margin_filter": False}},
    Arm.NO_VERDICT_LOSS: {"training": {"verdict_weight": 0.0}},
}


def arm_overrides(arm: Arm | str) -> dict[str, Any]:
    """IterationSpec fields (snake-case stage blocks, deep-merged over a base spec) of ``arm``;
    a fresh copy, safe to change."""
    return copy.deepcopy(_OVERRIDES[Arm(arm)])
