"""Prompts of the GenRM: pairwise and pointwise, with the optional evidence block (§3.3).

Prompts are chat messages rendered through the processor's chat template, so a real
checkpoint gets its own template and the tiny test model gets the same structure.
"""

from __future__ import annotations

from typing import Any

from vlgenrm.contracts import ExpertReport, VerdictLabel
from vlgenrm.genrm.errors import EmptyResponseError
from vlgenrm.genrm.verdicts import RESTATE_PREFIX, Mode, answer, verdict_line

POINTWISE_QUESTION = "Is this response accurate and helpful for the image?"


def _require(text: str, what: str) -> str:
    if not text or not text.strip():
        raise EmptyResponseError(f"the {what} is empty")
    return text.strip()


def evidence_block(report: ExpertReport) -> str:
    """What the vision experts verified and contradicted, with confidences."""
    claims = {c.id: c for c in report.claims}
    lines = []
    for v in report.verdicts:
        if v.verdict is VerdictLabel.UNVERIFIABLE or v.claim_id not in claims:
            continue
        claim = claims[v.claim_id]
        mark = "verified" if v.verdict is VerdictLabel.SUPPORTED else "contradicted"
        said = claim.span or claim.subject
        lines.append(f'- Response {claim.response.value}: "{said}" {mark} by {v.expert} (p={v.confidence:.2f})')
    if not lines:
        return ""
    return "Evidence from vision experts:\n" + "\n".join(lines)


def pairwise_messages(question: str, response_a: str, response_b: str, evidence: str | None = None, *, restate: bool = False) -> list[dict[str, Any]]:
    """Chat messages asking which response is better; the image comes first. With ``restate``
    the model is asked to restate the better response before its verdict line."""
    text = (
        f"Question: {_require(question, 'question')}\n\n"
        f"Response A: {_require(response_a, 'response A')}\n\n"
        f"Response B: {_require(response_b, 'response B')}\n\n"
    )
    if evidence:
        text += evidence + "\n\n"
    then = f"restate the better response ('{RESTATE_PREFIX}...') and " if restate else ""
    text += f"Compare the two responses against the image. Write a short critique, then {then}end with '{verdict_line('A')}' or '{verdict_line('B')}'."
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def pointwise_messages(question: str, response: str, evidence: str | None = None) -> list[dict[str, Any]]:
    """Chat messages asking whether one response is accurate and helpful."""
    text = f"Question: {_require(question, 'question')}\n\nResponse: {_require(response, 'response')}\n\n"
    if evidence:
        text += evidence + "\n\n"
    text += f"{POINTWISE_QUESTION} Write a short critique, then end with '{verdict_line('Yes')}' or '{verdict_line('No')}'."
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def messages_for(mode: Mode, question: str, responses: tuple[str, ...], evidence: str | None = None, *, restate: bool = False) -> list[dict[str, Any]]:
    if mode is Mode.PAIRWISE:
        return pairwise_messages(question, responses[0], responses[1], evidence, restate=restate)
    return pointwise_messages(question, responses[0], evidence)


def target_text(critique: str, option: str, restated: str | None = None) -> str:
    """What the assistant says: the critique (may be empty for direct scoring), then the
    restated better response when given, then the verdict line."""
    critique = critique.strip()
    return f"{critique}\n{answer(option, restated)}" if critique else answer(option, restated)
