"""The verdict grammar shared by prompts, generation, parsing and teacher forcing.

A critique ends with one verdict line: ``Verdict: [[A]]`` or ``Verdict: [[B]]`` in pairwise
mode, ``Verdict: [[Yes]]`` or ``Verdict: [[No]]`` in pointwise mode. The parser tolerates
whitespace and case (``verdict:[[ a ]]``) but rejects a critique with no mark, with marks for
both options (ambiguous) or with more than one verdict (double).

A pairwise answer may **restate** the better response on the line before its verdict line
(``The better response says: <response>``, see :func:`answer`). The restated text is the
response's own, so it is data: marks inside it are never read as verdicts, and it is added
after any A/B renaming, never run through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from vlgenrm.contracts import Choice


class Mode(StrEnum):
    PAIRWISE = "pairwise"
    POINTWISE = "pointwise"


#: The two options of each mode, in a fixed order (first = "A" / "Yes").
OPTIONS: dict[Mode, tuple[str, str]] = {Mode.PAIRWISE: ("A", "B"), Mode.POINTWISE: ("Yes", "No")}
VERDICT_PREFIX = "Verdict: "
#: Starts the line that restates the better response (always the last block before the verdict line).
RESTATE_PREFIX = "The better response says: "

_MARK = re.compile(r"\[\[\s*(a|b|yes|no)\s*\]\]", re.IGNORECASE)
_CANONICAL = {"a": "A", "b": "B", "yes": "Yes", "no": "No"}


def verdict_line(option: str) -> str:
    """The canonical line a critique ends with, e.g. ``Verdict: [[A]]``."""
    return f"{VERDICT_PREFIX}[[{option}]]"


def answer(option: str, restated: str | None = None) -> str:
    """What follows the critique: the verdict line, after the restated response when given
    (on one line: its whitespace, newlines included, becomes single spaces)."""
    if not restated or not restated.strip():
        return verdict_line(option)
    return f"{RESTATE_PREFIX}{' '.join(restated.split())}\n{verdict_line(option)}"


def _split_restatement(text: str) -> tuple[str, str | None]:
    """(the text before its restatement line, the verdict line after it), or (text, None)
    when the second-to-last line does not restate a response."""
    lines = text.rstrip().splitlines()
    if len(lines) < 2 or not lines[-2].startswith(RESTATE_PREFIX):
        return text, None
    return "\n".join(lines[:-2]), lines[-1]


class ParseError(StrEnum):
    MISSING = "missing"  # no verdict mark at all
    AMBIGUOUS = "ambiguous"  # marks for both options
    DOUBLE = "double"  # the same verdict given more than once
    WRONG_MODE = "wrong_mode"  # e.g. [[Yes]] where A/B was asked


@dataclass(frozen=True)
class ParsedVerdict:
    """The verdict of a critique, or why there is none."""

    option: str | None
    error: ParseError | None = None

    @property
    def ok(self) -> bool:
        return self.option is not None

    def choice(self) -> Choice | None:
        return Choice(self.option) if self.option in ("A", "B") else None


def parse_verdict(text: str, mode: Mode = Mode.PAIRWISE) -> ParsedVerdict:
    """Find the single verdict mark in ``text`` (a restated response's text is not searched)."""
    body, last = _split_restatement(text)
    if last is not None:
        text = f"{body}\n{last}"
    marks = [_CANONICAL[m.group(1).lower()] for m in _MARK.finditer(text)]
    if not marks:
        return ParsedVerdict(None, ParseError.MISSING)
    allowed = OPTIONS[mode]
    if any(m not in allowed for m in marks):
        return ParsedVerdict(None, ParseError.WRONG_MODE)
    if len(set(marks)) > 1:
        return ParsedVerdict(None, ParseError.AMBIGUOUS)
    if len(marks) > 1:
        return ParsedVerdict(None, ParseError.DOUBLE)
    return ParsedVerdict(marks[0])


def strip_verdict(text: str) -> str:
    """The critique without its restatement and verdict line(s): what teacher forcing conditions on."""
    text, _ = _split_restatement(text)
    lines = [line for line in text.rstrip().splitlines() if not _MARK.search(line)]
    return "\n".join(lines).rstrip()


_SWAP = re.compile(r"\b(Response|Answer|response|answer) ([AB])\b|\[\[\s*([AaBb])\s*\]\]")


def swap_ab(text: str) -> str:
    """Rename A<->B in a critique, so it reads right when the responses are shown swapped."""

    def repl(m: re.Match[str]) -> str:
        if m.group(2):
            return f"{m.group(1)} {'B' if m.group(2) == 'A' else 'A'}"
        return "[[B]]" if m.group(3).upper() == "A" else "[[A]]"

    return _SWAP.sub(repl, text)
