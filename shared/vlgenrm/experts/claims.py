"""Claim extraction (§3.1): turn a response into checkable claims about the image.

:class:`ClaimExtractor` is the interface (the ``llm`` extractor, :mod:`vlgenrm.experts.llm_claims`, is the other implementation);
:class:`LexiconClaimExtractor` is the CPU default: a small grammar over the **label spaces
of the registered experts** (:class:`~vlgenrm.experts.vocabulary.LabelSpace`), because a
claim is only worth extracting if some expert can check it. Object nouns of the shipped
open-vocabulary list (COCO's 80 categories, a subset of LVIS, synonyms and plurals) that no
label space covers produce no claim but are counted as *uncheckable*, so a user sees what the
experts could not look at. An open label space (an expert with ``labels = None``: OWLv2)
covers the whole open list.

How phrases map to claims: a noun phrase yields ONE claim carrying everything it asserts,
so a verifier never has to re-join pieces (examples with the synthetic domain's label space
and the OpenCV experts' ``person``/``cat``/``face``):

=================================  ====================================================
phrase                             claim
=================================  ====================================================
"a red circle", "red circles"      EXISTENCE  subject=circle attribute=red
"a circle", "the woman"            EXISTENCE  subject=circle | person attribute=None
"two red circles", "2 discs",      COUNT      subject=circle count=2 attribute=red|None
"two tabby cats", "both women"     COUNT      subject=cat | person count=2
"one star"                         COUNT      subject=star count=1 ("a star" is existence)
"no green triangle", "no stars",   NEGATED_EXISTENCE subject=triangle attribute=green|None
"there isn't a star", "0 stars",
"without a hat", "I don't see cats"
"the sign says STOP",              TEXT       subject=text text=STOP (upper-cased)
"the text reads open", "the word X",
"the tank says YAMAHA",
'a mug printed with "I <3 NY"'
"no sign", "no text is visible"    NEGATED_EXISTENCE subject=text
=================================  ====================================================

Rules, for any noun: the nearest colour word before the noun is its ``attribute`` (a
canonical colour name; ATTRIBUTE claims are never produced); size words and up to two other
modifiers may stand between the quantifier and the noun ("two sleeping tabby cats"); a noun
directly followed by another noun is a modifier of it ("cat food" is food, "a baby elephant"
an elephant); multi-word nouns match longest first ("teddy bear", "stop sign"); a colour word
is a noun only after an article or number and before no noun ("an orange" vs "an orange
cat"). Visible text: after says/reads/shows/... when the sentence names a text noun (sign,
label, ...), or any object noun with a quoted or capitalised value ("the tank says YAMAHA"),
or quoted after printed/written/labelled. "A sign" alone asserts nothing beyond its TEXT
claim; only its negation is a claim. Words outside every label space and the noun list
produce nothing, never an error.
"""

from __future__ import annotations

import abc
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from vlgenrm.contracts import Choice, Claim, ClaimType, Example
from vlgenrm.experts.vocabulary import (
    ADJECTIVES,
    COLOUR_TERMS,
    FUNCTION_WORDS,
    NEGATORS,
    NUMBERS,
    QUANTIFIERS,
    TEXT_SUBJECT,
    LabelSpace,
    NounList,
    default_nouns,
    normal,
)


class Extraction(BaseModel):
    """The claims of one response and the object words no registered expert covers."""

    model_config = ConfigDict(frozen=True)

    claims: list[Claim] = Field(default_factory=list)
    uncheckable: list[str] = Field(default_factory=list, description="Canonical object nouns no label space covers, in reading order.")
    attempts: int = Field(0, ge=0, description="Model calls spent on this response (0 for extractors without a model).")
    invalid_claims: int = Field(0, ge=0, description="Items of a model's answer that made no claim (dropped).")
    error: str | None = Field(None, description="Why no claims could be read (a model's output stayed malformed); None = fine.")


class ClaimExtractor(abc.ABC):
    """Turns one response into claims; ids are ``f"{id_prefix}-{response}-{i}"``."""

    name: str = "extractor"

    @abc.abstractmethod
    def extract(self, response_text: str, response: Choice, id_prefix: str) -> list[Claim]:
        """Every claim of the response, in reading order."""

    def analyse(self, response_text: str, response: Choice, id_prefix: str) -> Extraction:
        """Claims plus the uncheckable object words (extractors that cannot tell report none)."""
        return Extraction(claims=self.extract(response_text, response, id_prefix))

    def extract_pair(self, example: Example) -> list[Claim]:
        """Claims of both responses of an example (A's first), prefixed by the example id."""
        return [*self.extract(example.response_a, Choice.A, example.id), *self.extract(example.response_b, Choice.B, example.id)]

    def analyse_pair(self, example: Example) -> tuple[Extraction, Extraction]:
        """:meth:`analyse` of response A, then of response B."""
        return self.analyse(example.response_a, Choice.A, example.id), self.analyse(example.response_b, Choice.B, example.id)

    def analyse_pairs(self, examples: Sequence[Example]) -> list[tuple[Extraction, Extraction]]:
        """:meth:`analyse_pair` of every example; extractors that batch (a model) override it."""
        return [self.analyse_pair(ex) for ex in examples]


# --------------------------------------------------------------------------- lexicon

_NEG_REACH = 3  # "I do not see any stars": a negator this many words before the quantifier
_MAX_MODIFIERS = 2  # unknown words allowed between a quantifier and its noun ("two sleeping tabby cats")

_QUOTE = '"“”‘’'
_QUOTED = rf"(?:[{_QUOTE}](?P<quoted>[^{_QUOTE}]+)[{_QUOTE}]|'(?P<squoted>[^']+)'(?![A-Za-z]))"
_TEXT_VALUE = rf"(?:{_QUOTED}|(?P<bare>[A-Za-z0-9][A-Za-z0-9-]*))"
_SAYS_VERBS = "says|say|said|reads|read|shows|show|displays|display|spells|spell|spelling|reading|saying"
#: "<noun ...> says STOP": the noun is looked for in the words before the verb.
_SAYS = re.compile(rf"\b(?P<verb>{_SAYS_VERBS})\s*:?\s+(?:the\s+(?:words?|text|letters|name)\s+)?{_TEXT_VALUE}", re.IGNORECASE)
#: "... the word SALE", "the words 'NO PARKING'".
_THE_WORD = re.compile(rf"\bthe\s+words?\s+{_TEXT_VALUE}", re.IGNORECASE)
#: 'printed with "NASA"', 'a label reading "EXIT"', 'the text "OPEN"'.
_PRINTED = re.compile(
    rf"\b(?:printed|written|labell?ed|marked|inscribed|stamped|lettered|titled|captioned|with)\s+"
    rf"(?:with\s+|on\s+it\s+)?(?:the\s+(?:words?|text|letters|name)\s+)?{_QUOTED}",
    re.IGNORECASE,
)
_QUOTED_TEXT = re.compile(rf"\b(?:text|letters|lettering|inscription)\s+{_QUOTED}", re.IGNORECASE)
#: Words that start a verb's object: after "faces"/"watches" they make it a verb, not a noun.
_OBJECT_STARTS = frozenset(
    {
        "a",
        "an",
        "the",
        "his",
        "her",
        "their",
        "its",
        "my",
        "our",
        "your",
        "at",
        "into",
        "towards",
        "toward",
        "through",
        "over",
        "on",
        "out",
        "up",
        "down",
        "away",
        "forward",
        "ahead",
        "this",
        "that",
        "him",
        "them",
        "it",
    }
)
_WRITING_VERBS = frozenset({"says", "say", "said", "reads", "read", "spells", "spell", "spelling", "reading", "saying"})
_COPULAS = frozenset({"is", "are", "was", "were", "looks", "look", "appears", "appear", "seems", "seem"})
_INTENSIFIERS = frozenset({"all", "mostly", "mainly", "entirely", "completely", "very", "bright", "dark", "light", "pale", "deep"})
_NOT_TEXT = frozenset({"nothing", "something", "anything", "a", "an", "the", "that", "it", "is", "no", "this", "some", "any", "its", "his", "her", "their"})
_TEXT_LOOKBACK = 6  # "the sign next to the cat says": a text noun at most this many words before the verb
_OBJECT_LOOKBACK = 4  # "the tank on the left says": any other noun at most this many
_CAPS_RUN = re.compile(r"(?:\s+[A-Z0-9][A-Z0-9-]+\b)*")
_TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*|\d+")
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


@dataclass(frozen=True)
class _Noun:
    """A noun (or multi-word noun) at tokens first..last of a sentence, and what it resolves to."""

    first: int
    last: int
    subject: str
    checkable: bool  # some label space covers it (else it is only counted as uncheckable)
    possessive: bool = False


@dataclass
class _Vocabulary:
    closed: list[dict[str, str]] = field(default_factory=list)  # per closed label space: spelling -> label
    open_space: bool = False  # some expert covers any object noun
    text_claims: bool = False  # some expert checks TEXT claims


@functools.cache
def default_label_spaces() -> tuple[LabelSpace, ...]:
    """The label spaces of the default registry (colour/shape and OCR with default settings)."""
    from vlgenrm.experts.registry import default_registry

    return tuple(default_registry().label_spaces())


class LexiconClaimExtractor(ClaimExtractor):
    """Grammar-and-lexicon extractor over label spaces and an open noun list; deterministic, CPU only.

    ``label_spaces``: what the registered experts can check, in registry order (the first
    space that knows a word names its subject); None = those of the default registry.
    ``nouns``: the open-vocabulary list (default: the shipped one).
    """

    name = "lexicon"

    def __init__(self, label_spaces: Iterable[LabelSpace] | None = None, nouns: NounList | None = None) -> None:
        self.label_spaces: tuple[LabelSpace, ...] = default_label_spaces() if label_spaces is None else tuple(label_spaces)
        self.nouns = nouns or default_nouns()
        vocab = _Vocabulary()
        for space in self.label_spaces:
            if space.open:
                vocab.open_space = True
            else:
                vocab.closed.append(space.spellings(self.nouns))
            vocab.text_claims |= ClaimType.TEXT in space.claim_types
        self._vocab = vocab
        self._max_words = max([self.nouns.max_words, *(len(s.split()) for sp in vocab.closed for s in sp)])

    @classmethod
    def for_registry(cls, registry: object, nouns: NounList | None = None) -> LexiconClaimExtractor:
        """The extractor for a registry's experts (anything iterable over experts with ``label_space()``)."""
        spaces = registry.label_spaces() if hasattr(registry, "label_spaces") else [e.label_space() for e in registry]  # type: ignore[attr-defined]
        return cls(spaces, nouns)

    # -- the interface -------------------------------------------------------------------
    def extract(self, response_text: str, response: Choice, id_prefix: str) -> list[Claim]:
        return self.analyse(response_text, response, id_prefix).claims

    def analyse(self, response_text: str, response: Choice, id_prefix: str) -> Extraction:
        found: list[_Found] = []
        uncheckable: list[tuple[int, str]] = []
        for sentence in _SENTENCE.finditer(response_text):
            f, u = self._sentence(response_text, sentence.start(), sentence.end())
            found += f
            uncheckable += u
        found.sort(key=lambda f: f.start)
        claims = [
            Claim(
                id=f"{id_prefix}-{response.value}-{i}",
                response=response,
                type=f.claim_type,
                subject=f.subject,
                count=f.count,
                attribute=f.attribute,
                text=f.text,
                span=f.span,
            )
            for i, f in enumerate(found)
        ]
        return Extraction(claims=claims, uncheckable=[w for _, w in sorted(uncheckable, key=lambda x: x[0])])

    # -- words ---------------------------------------------------------------------------
    def resolve(self, phrase: str) -> tuple[str, bool] | None:
        """(subject, checkable) of a noun phrase's head, or None when it names no known object."""
        w = normal(phrase)
        if w in self.nouns.not_objects:
            return None
        for spellings in self._vocab.closed:
            if w in spellings:
                return spellings[w], True
        canon = self.nouns.forms.get(w)
        if canon is None:
            return None
        for spellings in self._vocab.closed:
            # A label the open list spells differently ("kitten" -> "cat"); never an alias
            # ("crate" -> "box" is no square, though the colour/shape detector calls squares boxes).
            if spellings.get(canon) == canon:
                return canon, True
        return canon, self._vocab.open_space

    def _nouns(self, words: Sequence[str]) -> list[_Noun]:
        """The nouns of a sentence's words, longest match first, left to right."""
        out: list[_Noun] = []
        i, n = 0, len(words)
        while i < n:
            for size in range(min(self._max_words, n - i), 0, -1):
                parts = list(words[i : i + size])
                possessive = parts[-1].endswith("'s")
                # "the cat's face" is a cat face; a possessive ends a single noun ("the woman's").
                parts = [w[:-2] if w.endswith("'s") else w for w in parts]
                phrase = " ".join(parts)
                if phrase in self.nouns.not_objects:
                    hit = None
                    break
                if size == 1 and phrase in COLOUR_TERMS and not self._colour_is_noun(words, i):
                    continue
                hit = self.resolve(phrase)
                if hit is not None:
                    out.append(_Noun(i, i + size - 1, hit[0], hit[1], possessive))
                    break
            else:
                size = 1
            i += size
        return self._drop_verbs(words, out)

    def _drop_verbs(self, words: Sequence[str], nouns: list[_Noun]) -> list[_Noun]:
        """Nouns that are verbs here: the second of two adjacent nouns when the first is a plural
        ("people watch") or when an object follows it ("a woman faces the camera")."""
        out: list[_Noun] = []
        for noun in nouns:
            prev = out[-1] if out else None
            if prev is not None and prev.last + 1 == noun.first and noun.first == noun.last and not prev.possessive:
                after = words[noun.last + 1] if noun.last + 1 < len(words) else ""
                if self._is_plural(words[prev.last]) or (words[noun.first].endswith("s") and after in _OBJECT_STARTS):
                    continue
            out.append(noun)
        return out

    def _is_plural(self, word: str) -> bool:
        return word in self.nouns.irregular_plurals.values() or (word.endswith("s") and not word.endswith(("ss", "us", "is")))

    @staticmethod
    def _colour_is_noun(words: Sequence[str], i: int) -> bool:
        """'an orange', 'two limes': a colour word after an article or number (and, as a
        singular, before nothing noun-like is decided by the compound rule)."""
        previous = words[i - 1] if i > 0 else ""
        return previous in ("a", "an", "the", "some") or previous in NUMBERS or previous.isdigit()

    # -- sentences -----------------------------------------------------------------------
    def _sentence(self, text: str, start: int, end: int) -> tuple[list[_Found], list[tuple[int, str]]]:
        sentence = text[start:end]
        found, masked = self._text_claims(sentence, start)
        nouns_found, uncheckable = self._noun_phrases(masked, start)
        if not self._vocab.text_claims:
            # No expert reads text: its claims are counted like uncheckable objects.
            uncheckable += [(f.start, TEXT_SUBJECT) for f in found]
            found = []
        return found + nouns_found, uncheckable

    def _text_claims(self, sentence: str, offset: int) -> tuple[list[_Found], str]:
        """TEXT claims of a sentence, and the sentence with their words blanked."""
        found: list[_Found] = []
        masked = sentence

        def blank(a: int, b: int) -> None:
            nonlocal masked
            masked = masked[:a] + " " * (b - a) + masked[b:]

        def value_of(m: re.Match[str]) -> tuple[str, int, bool]:
            """(value, end, quoted) of a match, a bare ALL-CAPS value extended over following ALL-CAPS words."""
            quoted = m.groupdict().get("quoted") or m.groupdict().get("squoted")
            if quoted:
                return quoted.strip(), m.end(), True
            bare = m.group("bare") or ""
            stop = m.end()
            if bare.isupper() and len(bare) >= 2:
                run = _CAPS_RUN.match(masked, stop)
                if run:
                    bare, stop = (bare + masked[stop : run.end()]).strip(), run.end()
            return " ".join(bare.split()), stop, False

        for m in list(_SAYS.finditer(masked)):
            value, stop, quoted = value_of(m)
            if not value or value.lower() in _NOT_TEXT:
                continue
            noun = self._text_noun_before(masked, m.start())
            verb = m.group("verb").lower()
            if noun is None:
                # No noun before the verb ("the heading reads ..."): only text that looks like text.
                if not (quoted or (value.isupper() and len(value) >= 2 and verb in _WRITING_VERBS)):
                    continue
                noun = (m.start(), m.start(), False)
            noun_start, noun_end, is_text_noun = noun
            if not is_text_noun:
                # Any object may carry text, but then the value must look like text:
                # quoted, or capitalised ("the tank says YAMAHA"; not "the man reads books").
                capitalised = value[0].isupper() or value[0].isdigit()
                if not (quoted or (capitalised and verb not in ("shows", "show", "displays", "display")) or value.isupper()):
                    continue
            found.append(_Found(offset + noun_start, ClaimType.TEXT, TEXT_SUBJECT, sentence[noun_start:stop], text=value.upper()))
            # Blank the text noun, the verb and the value so they are neither read again nor
            # taken for objects; other nouns stay claims of their own ("the tank", "the cat" exist).
            blank(m.start(), stop)
            if is_text_noun:
                blank(noun_start, noun_end)
        for pattern in (_THE_WORD, _PRINTED, _QUOTED_TEXT):
            for m in list(pattern.finditer(masked)):
                value, stop, _ = value_of(m)
                if not value or value.lower() in _NOT_TEXT:
                    continue
                found.append(_Found(offset + m.start(), ClaimType.TEXT, TEXT_SUBJECT, sentence[m.start() : stop], text=value.upper()))
                blank(m.start(), stop)
        return found, masked

    def _text_noun_before(self, masked: str, position: int) -> tuple[int, int, bool] | None:
        """(start, end, is a text noun) of the noun carrying the text, at most a few words before
        ``position``: a text noun if there is one, else the nearest object noun (or 'it'); None
        when there is none."""
        tokens = list(_TOKEN.finditer(masked[:position]))[-_TEXT_LOOKBACK:]
        nearest: tuple[int, int, bool] | None = None
        for back, t in enumerate(reversed(tokens)):
            word = normal(t.group())
            hit = ("it", False) if word == "it" else self.resolve(word)
            if hit is None:
                continue
            if hit[0] == TEXT_SUBJECT and hit[1]:
                return t.start(), t.end(), True  # a text noun wins: "a sign next to the cat says ..."
            if back < _OBJECT_LOOKBACK:
                nearest = nearest or (t.start(), t.end(), False)
        return nearest

    def _noun_phrases(self, sentence: str, offset: int) -> tuple[list[_Found], list[tuple[int, str]]]:
        tokens = list(_TOKEN.finditer(sentence))
        words = [normal(t.group()) for t in tokens]
        nouns = self._nouns(words)
        starts = {n.first for n in nouns}
        inside = {k: n for n in nouns for k in range(n.first, n.last + 1)}
        found: list[_Found] = []
        uncheckable: list[tuple[int, str]] = []
        previous_negated = False
        for noun in nouns:
            # A noun right before another noun modifies it: "cat food", "a baby elephant".
            if not noun.possessive and noun.last + 1 in starts:
                continue
            k, colour, first = self._phrase_start(words, noun.first, inside)
            colour = colour or self._predicate_colour(words, noun.last)
            quantifier = words[k] if k >= 0 else ""
            before = words[max(0, k - _NEG_REACH) : k]
            negated = (
                quantifier in ("no", "zero", "0")
                or quantifier in NEGATORS
                and quantifier != "nor"
                or (quantifier in ("a", "an", "any") and any(w in NEGATORS for w in before))
                or (quantifier in ("or", "nor") and previous_negated)
                or (  # "no stars or circles"
                    quantifier == "the" and before[-2:] == ["none", "of"]  # "none of the cats"
                )
                or (  # "I don't see cats": a bare noun after a negated verb
                    quantifier not in QUANTIFIERS
                    and quantifier not in NUMBERS
                    and not quantifier.isdigit()
                    and any(w in NEGATORS for w in words[max(0, noun.first - _NEG_REACH) : noun.first])
                )
            )
            span = sentence[tokens[first].start() : tokens[noun.last].end()]
            at = offset + tokens[first].start()
            previous_negated = negated
            if not noun.checkable:
                uncheckable.append((offset + tokens[noun.first].start(), noun.subject))
                continue
            if noun.subject == TEXT_SUBJECT:
                # Only "no sign"/"no text" is a claim; "a sign" is implied by its TEXT claim.
                if negated:
                    found.append(_Found(at, ClaimType.NEGATED_EXISTENCE, TEXT_SUBJECT, span))
                continue
            if negated:
                found.append(_Found(at, ClaimType.NEGATED_EXISTENCE, noun.subject, span, attribute=colour))
            elif quantifier.isdigit() or quantifier in NUMBERS:
                count = int(quantifier) if quantifier.isdigit() else NUMBERS[quantifier]
                found.append(_Found(at, ClaimType.COUNT, noun.subject, span, count=count, attribute=colour))
            else:
                found.append(_Found(at, ClaimType.EXISTENCE, noun.subject, span, attribute=colour))
        return found, uncheckable

    @staticmethod
    def _predicate_colour(words: Sequence[str], last: int) -> str | None:
        """'the cat is orange', 'the bus is bright red': a colour said of the noun right after it."""
        j = last + 1
        if j >= len(words) or words[j] not in _COPULAS:
            return None
        j += 1
        if j < len(words) and words[j] in _INTENSIFIERS:
            j += 1
        if j < len(words) and words[j] in COLOUR_TERMS and (j + 1 >= len(words) or words[j + 1] in FUNCTION_WORDS):
            return COLOUR_TERMS[words[j]]
        return None

    @staticmethod
    def _phrase_start(words: Sequence[str], head: int, inside: dict[int, _Noun]) -> tuple[int, str | None, int]:
        """(index of the quantifier or -1, colour, first token of the span) of the noun at ``head``.

        Size words and colours may stand between quantifier and noun; when that walk ends on
        an unknown word, up to ``_MAX_MODIFIERS`` such words (and modifier nouns) are skipped
        too, but only if a quantifier or number then follows ("two sleeping tabby cats")."""

        def is_quantifier(w: str) -> bool:
            return w in QUANTIFIERS or w in NUMBERS or w.isdigit() or w in ("or", "nor", "zero")

        k, colour = head - 1, None
        while k >= 0 and (words[k] in ADJECTIVES or (colour is None and words[k] in COLOUR_TERMS)):
            colour = colour or COLOUR_TERMS.get(words[k])
            k -= 1
        if k < 0 or is_quantifier(words[k]) or words[k] in FUNCTION_WORDS or (k in inside and k + 1 not in inside):
            first = k if k >= 0 and (is_quantifier(words[k]) and words[k] not in ("or", "nor", "the")) else k + 1
            return k, colour, max(first, 0)
        # Unknown words: modifiers when a quantifier comes before them.
        j, skipped, colour2 = k, 0, colour
        while j >= 0 and skipped <= _MAX_MODIFIERS:
            w = words[j]
            if is_quantifier(w):
                first = j if w not in ("or", "nor", "the") else j + 1
                return j, colour2, first
            if w in FUNCTION_WORDS or (j in inside and inside[j].last + 1 not in inside):
                break
            if w in COLOUR_TERMS:
                colour2 = colour2 or COLOUR_TERMS[w]
            elif w not in ADJECTIVES:
                skipped += 1
            j -= 1
        return k, colour, k + 1
