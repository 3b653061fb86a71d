"""§3.1 scores and §3.2 decisions on hand-made verdicts."""

from __future__ import annotations

import pytest

from vlgenrm.contracts import Choice, Claim, ClaimType, Example, ExpertVerdict, ImageRef, LabelSource, VerdictLabel
from vlgenrm.experts.config import ConflictPolicy, RefinementSettings
from vlgenrm.experts.refine import refine
from vlgenrm.experts.verify import build_report, expert_preference, merge_votes

IMAGE = ImageRef(key="images/" + "a" * 64 + ".png", sha256="a" * 64)


def claim(cid: str, response: Choice) -> Claim:
    return Claim(id=cid, response=response, type=ClaimType.EXISTENCE, subject="circle")


def vote(cid: str, verdict: VerdictLabel, p: float, expert: str = "shapes") -> ExpertVerdict:
    return ExpertVerdict(claim_id=cid, expert=expert, verdict=verdict, confidence=p)


def test_votes_merge_by_summed_confidence():
    assert merge_votes([]) == (VerdictLabel.UNVERIFIABLE, 0.0)
    assert merge_votes([vote("c", VerdictLabel.SUPPORTED, 0.9)]) == (VerdictLabel.SUPPORTED, 0.9)
    verdict, p = merge_votes([vote("c", VerdictLabel.CONTRADICTED, 0.9), vote("c", VerdictLabel.SUPPORTED, 0.3, "ocr")])
    assert verdict is VerdictLabel.CONTRADICTED and p == pytest.approx(0.9 * 0.9 / 1.2)
    assert merge_votes([vote("c", VerdictLabel.UNVERIFIABLE, 1.0)]) == (VerdictLabel.UNVERIFIABLE, 0.0)


def test_h_s_and_expert_preference():
    claims = [claim("a1", Choice.A), claim("a2", Choice.A), claim("b1", Choice.B)]
    verdicts = [vote("a1", VerdictLabel.SUPPORTED, 0.9), vote("a2", VerdictLabel.SUPPORTED, 0.8), vote("b1", VerdictLabel.CONTRADICTED, 0.95)]
    report = build_report("r", "ex", claims, verdicts)
    assert report.hallucination == {Choice.A: 0.0, Choice.B: pytest.approx(0.95)}
    assert report.support == {Choice.A: pytest.approx(1.7), Choice.B: 0.0}
    assert report.expert_preference is Choice.A
    assert expert_preference({Choice.A: 0.4, Choice.B: 0.8}, delta=0.5) is None  # within delta
    assert expert_preference({Choice.A: 1.4, Choice.B: 0.8}, delta=0.5) is Choice.B


def example(human: str) -> Example:
    return Example(id="ex", image=IMAGE, question="q", response_a="a", response_b="b", human_label=human)


def report_with(h_a: float, h_b: float):
    claims = [claim("a", Choice.A), claim("b", Choice.B)]
    verdicts = [v for cid, h in (("a", h_a), ("b", h_b)) if h for v in [vote(cid, VerdictLabel.CONTRADICTED, h)]]
    return build_report("r", "ex", claims, verdicts)


@pytest.mark.parametrize(
    ("human", "h_a", "h_b", "policy", "label", "source"),
    [
        ("A", 0.0, 0.9, ConflictPolicy.FLIP, Choice.A, LabelSource.AGREE),
        ("unknown", 0.0, 0.9, ConflictPolicy.FLIP, Choice.A, LabelSource.EXPERT),
        ("B", 0.0, 0.0, ConflictPolicy.FLIP, Choice.B, LabelSource.HUMAN),
        ("B", 0.0, 0.95, ConflictPolicy.FLIP, None, LabelSource.CONFLICT),  # gap 0.95 < 1.0: dropped
        ("B", 0.0, 1.0, ConflictPolicy.FLIP, Choice.A, LabelSource.EXPERT_OVERRIDE),
        ("B", 0.0, 1.0, ConflictPolicy.DROP, None, LabelSource.CONFLICT),
        ("B", 0.0, 1.0, ConflictPolicy.KEEP, Choice.B, LabelSource.CONFLICT),
        ("unknown", 0.0, 0.0, ConflictPolicy.FLIP, None, LabelSource.CONFLICT),
    ],
)
def test_refinement_table(human, h_a, h_b, policy, label, source):
    refined = refine(example(human), report_with(h_a, h_b), RefinementSettings(policy=policy))
    assert (refined.label, refined.source) == (label, source)
    assert "h(A)=" in refined.reason
