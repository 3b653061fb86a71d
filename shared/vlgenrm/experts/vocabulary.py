"""The words the experts and the claim extractor share (§3.1): colours, numbers, negation,
the shipped open-vocabulary noun list, and the *label spaces* experts declare.

A :class:`LabelSpace` is what one expert can check: its labels (``None`` = any object noun:
open-vocabulary detection), the aliases it folds onto them ("people" -> "person") and its
claim types. The lexicon claim extractor (:mod:`vlgenrm.experts.claims`) turns exactly the
nouns of the registered experts' label spaces into claims; nouns of the open-vocabulary
list (:data:`NOUNS_FILE`: COCO's 80 categories and a subset of LVIS's, with synonyms and
plurals) that no label space covers are counted as *uncheckable*.

Nothing here knows a domain: the synthetic domain's shapes are the colour/shape expert's
label space, declared by that expert (:mod:`vlgenrm.experts.colour_shape`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

from vlgenrm.contracts import ClaimType

#: The subject of claims about visible text itself ("no text is visible"); TEXT claims carry it too.
TEXT_SUBJECT = "text"

#: Colour words -> canonical colour name (basic colour terms; synonyms folded).
COLOUR_TERMS: dict[str, str] = {
    **{c: c for c in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")},
    "gray": "grey", "silver": "grey", "violet": "purple", "lavender": "purple", "lilac": "purple", "magenta": "pink",
    "crimson": "red", "scarlet": "red", "maroon": "red", "burgundy": "red", "navy": "blue", "azure": "blue",
    "turquoise": "blue", "teal": "blue", "cyan": "blue", "gold": "yellow", "golden": "yellow", "lime": "green",
    "olive": "green", "emerald": "green", "beige": "brown", "tan": "brown", "ginger": "orange", "amber": "orange",
}  # fmt: skip
#: Number words (and "both") -> the count they assert. Digits are read as numbers too.
NUMBERS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "both": 2,
}  # fmt: skip
#: Words that quantify a noun without a number: the noun phrase asserts existence.
QUANTIFIERS = frozenset({"a", "an", "the", "any", "some", "several", "many", "few", "multiple", "various", "numerous", "lots", "plenty", "no"})
#: Words that may stand between a quantifier and the noun without changing the claim.
ADJECTIVES = frozenset(
    {"small", "large", "big", "little", "tiny", "huge", "solid", "filled", "bright", "dark", "light", "pale", "coloured", "colored", "single", "other", "more"}
)
NEGATORS = frozenset(
    {"not", "never", "without", "isn't", "aren't", "don't", "doesn't", "can't", "cannot", "couldn't", "wasn't", "weren't", "didn't", "nor", "neither", "none"}
)
#: Function words: they end a noun phrase (a noun phrase never reaches back across one).
FUNCTION_WORDS = (
    frozenset(
        """
    a an the this that these those it its it's he she they his her hers their them him me my your our we you i us
    in on at of with by for from to into onto near next behind beside besides under over above below between inside
    outside around across along through against among beneath upon within toward towards beyond beside via off up
    down out and or but so while as than if then because although though also too very only just even still yet
    is are was were be been being am has have had do does did can could will would may might must shall should
    there here where which who whom whose what when how why all each every such other another same
    there's here's that's what's who's he's she's they're we're i'm you're
""".split()
    )
    | QUANTIFIERS
    | NEGATORS
)

#: The shipped noun list (package data).
NOUNS_FILE = "data/nouns.json"


def plural_forms(word: str) -> set[str]:
    """Regular plural spellings of a noun (of a phrase: of its last word): cat -> cats,
    box -> boxes, strawberry -> strawberries, knife -> knifes/knives, tomato -> tomatos/tomatoes."""
    head, _, last = word.rpartition(" ")
    prefix = f"{head} " if head else ""
    out: set[str] = set()
    if last.endswith(("s", "x", "z", "ch", "sh")):
        out.add(last + "es")
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        out.add(last[:-1] + "ies")
    elif last.endswith("fe"):
        out |= {last + "s", last[:-2] + "ves"}
    elif last.endswith("f"):
        out |= {last + "s", last[:-1] + "ves"}
    elif last.endswith("o"):
        out |= {last + "s", last + "es"}
    else:
        out.add(last + "s")
    return {prefix + p for p in out}


def normal(phrase: str) -> str:
    """Lower case, single spaces, typographic apostrophes and hyphens folded ('T-shirt' -> 't shirt')."""
    return " ".join(phrase.lower().replace("’", "'").replace("-", " ").split())


@dataclass(frozen=True)
class NounList:
    """Open-vocabulary object nouns: every spelling (synonyms, plurals) -> one canonical name."""

    forms: Mapping[str, str]
    canonical: frozenset[str]
    #: Words that never name an object here ("image", "background", "left"): neither claims nor uncheckable.
    not_objects: frozenset[str] = frozenset()
    irregular_plurals: Mapping[str, str] = field(default_factory=dict)

    @property
    def max_words(self) -> int:
        return max((len(f.split()) for f in (*self.forms, *self.not_objects)), default=1)

    def lookup(self, phrase: str) -> str | None:
        return self.forms.get(normal(phrase))

    def spellings(self, word: str) -> set[str]:
        """The word and its plurals (regular and irregular)."""
        w = normal(word)
        out = {w} | plural_forms(w)
        if w in self.irregular_plurals:
            out.add(self.irregular_plurals[w])
        return out

    @classmethod
    def build(cls, entries: Mapping[str, Iterable[str]], irregular_plurals: Mapping[str, str] | None = None, not_objects: Iterable[str] = ()) -> NounList:
        """``entries``: canonical name -> synonyms. Explicit spellings win over generated plurals."""
        irregular = {normal(k): normal(v) for k, v in (irregular_plurals or {}).items()}
        generated: dict[str, str] = {}
        explicit: dict[str, str] = {}
        for canon, synonyms in entries.items():
            canon = normal(canon)
            for word in (canon, *map(normal, synonyms)):
                explicit[word] = canon
                head, _, last = word.rpartition(" ")
                plurals = plural_forms(word)
                if last in irregular:
                    plurals.add(f"{head} {irregular[last]}".strip())
                for p in plurals:
                    generated.setdefault(p, canon)
        forms = {**generated, **explicit}
        return cls(forms=forms, canonical=frozenset(map(normal, entries)), not_objects=frozenset(map(normal, not_objects)), irregular_plurals=irregular)


@functools.cache
def default_nouns() -> NounList:
    """The shipped list: COCO's 80 categories and a subset of LVIS (``data/nouns.json``)."""
    data = json.loads(resources.files("vlgenrm.experts").joinpath(NOUNS_FILE).read_text(encoding="utf-8"))
    rename = data.get("rename", {})
    entries: dict[str, list[str]] = {}
    for section in ("coco", "lvis"):
        for canon, synonyms in data[section].items():
            entries[rename.get(canon, canon)] = list(synonyms)
    return NounList.build(entries, data.get("irregular_plurals", {}), data.get("not_objects", ()))


@dataclass(frozen=True)
class LabelSpace:
    """What one expert can check: its labels (None = any object noun), aliases and claim types."""

    name: str
    labels: frozenset[str] | None
    aliases: Mapping[str, str] = field(default_factory=dict)
    claim_types: frozenset[ClaimType] = frozenset({ClaimType.EXISTENCE, ClaimType.COUNT, ClaimType.ATTRIBUTE, ClaimType.NEGATED_EXISTENCE})

    @property
    def open(self) -> bool:
        return self.labels is None

    def spellings(self, nouns: NounList) -> dict[str, str]:
        """Every spelling this space knows -> its label: labels, aliases and their plurals, and
        the open list's synonyms of its *labels* ("kitten" -> "cat" when "cat" is a label).
        Aliases are not chained through the open list: an alias is the space's own word
        ("box" means a square to the colour/shape detector, a crate does not)."""
        if self.labels is None:
            return {}
        out: dict[str, str] = {}
        for label in self.labels:
            for form in nouns.spellings(label):
                out.setdefault(form, label)
        for form, canon in nouns.forms.items():
            if canon in self.labels:
                out.setdefault(form, canon)
        for alias, label in self.aliases.items():
            for form in nouns.spellings(alias):
                out[form] = label
        for label in self.labels:  # a label always means itself
            out[normal(label)] = label
        return out
