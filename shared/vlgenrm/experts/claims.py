"""Claim extraction (§3.1): turn a response into checkable claims about the image.

:class:`ClaimExtractor` is the interface (an LLM-based extractor can implement it later);
:class:`LexiconClaimExtractor` is the CPU default, a small grammar over the synthetic
domain's vocabulary (:mod:`vlgenrm.synth.vocab`).

How phrases map to claims: a noun phrase yields ONE claim carrying everything it asserts,
so a verifier never has to re-join pieces:

=================================  ====================================================
phrase                             claim
=================================  ====================================================
"a red circle", "red circles"      EXISTENCE  subject=circle attribute=red
"a circle"                         EXISTENCE  subject=circle attribute=None
"two red circles", "2 discs",      COUNT      subject=circle count=2 attribute=red|None
"one star"                         COUNT      subject=star count=1 ("a star" is existence)
"no green triangle", "no stars",   NEGATED_EXISTENCE subject=triangle attribute=green|None
"there isn't a star", "0 stars"
"the sign says STOP",              TEXT       subject=text text=STOP (upper-cased)
"the text reads OPEN", "the word X"
"no sign", "no text is visible"    NEGATED_EXISTENCE subject=text
=================================  ====================================================

``attribute`` always holds a colour (canonical vocab name); ATTRIBUTE claims are never
produced. Synonyms ("disc", "crimson"), plurals, number words, digits and any letter case
are normalised. Words outside the vocabulary produce no claim, never an error.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

from vlgenrm.contracts import Choice, Claim, ClaimType, Example
from vlgenrm.synth.scene import TEXT_SUBJECT
from vlgenrm.synth.vocab import COLOUR_SYNONYMS, COLOURS, NUMBER_WORDS, SHAPE_SYNONYMS, SHAPES


class ClaimExtractor(abc.ABC):
    """Turns one response into claims; ids are ``f"{id_prefix}-{response}-{i}"``."""

    name: str = "extractor"

    @abc.abstractmethod
    def extract(self, response_text: str, response: Choice, id_prefix: str) -> list[Claim]:
        """Every claim of the response, in reading order."""

    def extract_pair(self, example: Example) -> list[Claim]:
        """Claims of both responses of an example (A's first), prefixed by the example id."""
        return [*self.extract(example.response_a, Choice.A, example.id), *self.extract(example.response_b, Choice.B, example.id)]


# --------------------------------------------------------------------------- lexicon

def _with_plurals(words: dict[str, str]) -> dict[str, str]:
    out = dict(words)
    for word, canonical in words.items():
        out[word + ("es" if word.endswith(("x", "s")) else "s")] = canonical
    return out


SHAPE_WORDS: dict[str, str] = _with_plurals({**{s: s for s in SHAPES}, **SHAPE_SYNONYMS})
COLOUR_WORDS: dict[str, str] = {**{c: c for c in COLOURS}, **COLOUR_SYNONYMS}
_EXTRA_NUMBERS = {"seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "zero": 0}
NUMBERS: dict[str, int] = {**{w: n for n, w in NUMBER_WORDS.items() if n > 0}, **_EXTRA_NUMBERS}
TEXT_NOUNS = frozenset({"sign", "signs", "text", "texts", "writing", "word", "words", "label", "labels", "caption"})
#: Words that may stand between a quantifier and the noun without changing the claim.
ADJECTIVES = frozenset({"small", "large", "big", "little", "tiny", "huge", "solid", "filled", "bright", "dark",
                        "light", "pale", "coloured", "colored", "single", "other", "more"})
NEGATORS = frozenset({"not", "never", "without", "isn't", "aren't", "don't", "doesn't", "can't", "cannot",
                      "couldn't", "wasn't", "weren't", "didn't"})
_NEG_REACH = 3  # "I do not see any stars": a negator this many words before the quantifier

_QUOTE = "\"'“”‘’"
_TEXT_VALUE = rf"(?:[{_QUOTE}](?P<quoted>[^{_QUOTE}]+)[{_QUOTE}]|(?P<bare>[A-Za-z0-9][A-Za-z0-9-]*))"
_TEXT_PATTERNS = (
    # "the sign says STOP", "a sign that reads 'OPEN'", "the text on it shows EXIT"
    re.compile(rf"\b(?:sign|text|writing|label|caption|word)s?\b(?:\s+[\w']+){{0,3}}?\s+"
               rf"(?:says|say|said|reads|read|shows|show|displays)\s+(?:the\s+words?\s+)?{_TEXT_VALUE}", re.IGNORECASE),
    # "... shows the word SALE"
    re.compile(rf"\bthe\s+words?\s+{_TEXT_VALUE}", re.IGNORECASE),
)
_NOT_TEXT = frozenset({"nothing", "something", "anything", "a", "an", "the", "that", "it", "is", "no"})
_TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?|\d+")
_SENTENCE = re.compile(r"[^.!?;\n]+")


@dataclass(frozen=True)
class _Found:
    start: int  # offset in the text, for reading order
    claim_type: ClaimType
    subject: str
    span: str
    count: int | None = None
    attribute: str | None = None
    text: str | None = None


class LexiconClaimExtractor(ClaimExtractor):
    """Grammar-and-lexicon extractor for the synthetic domain; deterministic, CPU only."""

    name = "lexicon"

    def extract(self, response_text: str, response: Choice, id_prefix: str) -> list[Claim]:
        found: list[_Found] = []
        for sentence in _SENTENCE.finditer(response_text):
            found += self._sentence(response_text, sentence.start(), sentence.end())
        found.sort(key=lambda f: f.start)
        return [
            Claim(id=f"{id_prefix}-{response.value}-{i}", response=response, type=f.claim_type, subject=f.subject,
                  count=f.count, attribute=f.attribute, text=f.text, span=f.span)
            for i, f in enumerate(found)
        ]

    def _sentence(self, text: str, start: int, end: int) -> list[_Found]:
        sentence = text[start:end]
        found: list[_Found] = []
        masked = sentence
        for pattern in _TEXT_PATTERNS:
            for m in pattern.finditer(masked):
                value = (m.group("quoted") or m.group("bare") or "").strip()
                if value.lower() in _NOT_TEXT:
                    continue
                found.append(_Found(start + m.start(), ClaimType.TEXT, TEXT_SUBJECT, sentence[m.start():m.end()],
                                    text=value.upper()))
                # Blank the match so its words are neither read again nor taken for objects.
                masked = masked[:m.start()] + " " * (m.end() - m.start()) + masked[m.end():]
        found += self._noun_phrases(masked, start)
        return found

    def _noun_phrases(self, sentence: str, offset: int) -> list[_Found]:
        tokens = list(_TOKEN.finditer(sentence))
        words = [t.group().lower().replace("’", "'") for t in tokens]
        found: list[_Found] = []
        previous_negated = False
        for j, word in enumerate(words):
            is_text = word in TEXT_NOUNS
            if word not in SHAPE_WORDS and not is_text:
                continue
            k, colour = j - 1, None
            while k >= 0 and (words[k] in ADJECTIVES or (colour is None and words[k] in COLOUR_WORDS)):
                colour = colour or COLOUR_WORDS.get(words[k])
                k -= 1
            quantifier = words[k] if k >= 0 else ""
            negated = quantifier in ("no", "zero", "0") or (
                quantifier in ("a", "an", "any") and any(w in NEGATORS for w in words[max(0, k - _NEG_REACH):k])
            ) or (quantifier in ("or", "nor") and previous_negated)  # "no stars or circles"
            first = k if quantifier in NUMBERS or quantifier.isdigit() or quantifier in ("a", "an", "no", "any") else k + 1
            span = sentence[tokens[max(first, 0)].start():tokens[j].end()]
            at = offset + tokens[max(first, 0)].start()
            previous_negated = negated
            if is_text:
                # Only "no sign"/"no text" is a claim; "a sign" is implied by its TEXT claim.
                if negated:
                    found.append(_Found(at, ClaimType.NEGATED_EXISTENCE, TEXT_SUBJECT, span))
                continue
            shape = SHAPE_WORDS[word]
            if negated:
                found.append(_Found(at, ClaimType.NEGATED_EXISTENCE, shape, span, attribute=colour))
            elif quantifier.isdigit() or quantifier in NUMBERS:
                count = int(quantifier) if quantifier.isdigit() else NUMBERS[quantifier]
                found.append(_Found(at, ClaimType.COUNT, shape, span, count=count, attribute=colour))
            else:
                found.append(_Found(at, ClaimType.EXISTENCE, shape, span, attribute=colour))
        return found
