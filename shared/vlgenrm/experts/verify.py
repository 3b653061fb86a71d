"""§3.1 verification: expert verdicts -> per-claim findings -> h(r), s(r) and y_e.

Several experts may judge one claim. Their votes are merged per claim: the side
(supported / contradicted) with the larger summed confidence wins, and the claim's
confidence p is the winners' best confidence scaled by their share of the total, so a
split vote counts for less than a unanimous one. Unverifiable votes do not count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from vlgenrm.contracts import Choice, Claim, ExpertReport, ExpertVerdict, VerdictLabel
from vlgenrm.experts.config import VerificationSettings


def merge_votes(verdicts: Sequence[ExpertVerdict]) -> tuple[VerdictLabel, float]:
    """One finding per claim from all experts' votes (see the module docstring)."""
    sums: dict[VerdictLabel, float] = defaultdict(float)
    best: dict[VerdictLabel, float] = defaultdict(float)
    for v in verdicts:
        if v.verdict is VerdictLabel.UNVERIFIABLE:
            continue
        sums[v.verdict] += v.confidence
        best[v.verdict] = max(best[v.verdict], v.confidence)
    total = sums[VerdictLabel.SUPPORTED] + sums[VerdictLabel.CONTRADICTED]
    if total == 0:
        return VerdictLabel.UNVERIFIABLE, 0.0
    winner = VerdictLabel.SUPPORTED if sums[VerdictLabel.SUPPORTED] >= sums[VerdictLabel.CONTRADICTED] else VerdictLabel.CONTRADICTED
    return winner, best[winner] * sums[winner] / total


def claim_findings(claims: Sequence[Claim], verdicts: Sequence[ExpertVerdict]) -> dict[str, tuple[VerdictLabel, float]]:
    """claim id -> merged (verdict, p)."""
    by_claim: dict[str, list[ExpertVerdict]] = defaultdict(list)
    for v in verdicts:
        by_claim[v.claim_id].append(v)
    return {c.id: merge_votes(by_claim.get(c.id, [])) for c in claims}


def build_report(
    report_id: str,
    example_id: str,
    claims: Sequence[Claim],
    verdicts: Sequence[ExpertVerdict],
    settings: VerificationSettings | None = None,
    **fields: object,
) -> ExpertReport:
    """The ExpertReport of one pair: h(r) = sum p over contradicted claims, s(r) over supported."""
    settings = settings or VerificationSettings()
    findings = claim_findings(claims, verdicts)
    h = {Choice.A: 0.0, Choice.B: 0.0}
    s = {Choice.A: 0.0, Choice.B: 0.0}
    for claim in claims:
        verdict, p = findings[claim.id]
        if verdict is VerdictLabel.CONTRADICTED:
            h[claim.response] += p
        elif verdict is VerdictLabel.SUPPORTED:
            s[claim.response] += p
    return ExpertReport(
        id=report_id,
        example_id=example_id,
        claims=list(claims),
        verdicts=list(verdicts),
        hallucination=h,
        support=s,
        expert_preference=expert_preference(h, settings.delta),
        experts=sorted({v.expert for v in verdicts}),
        **fields,
    )


def expert_preference(h: dict[Choice, float], delta: float) -> Choice | None:
    """y_e: the response that hallucinates clearly less, or None within the margin."""
    if h[Choice.A] + delta < h[Choice.B]:
        return Choice.A
    if h[Choice.B] + delta < h[Choice.A]:
        return Choice.B
    return None
