"""Questions and responses about a scene: a faithful writer and a hallucinating one.

Both writers first decide *what* to assert (:class:`Content`), then phrase it with the same
randomised grammar, so a hallucinated response differs from a faithful one in what it says,
never in how it says it. Every sentence they write is in the grammar that
:class:`~vlgenrm.experts.claims.LexiconClaimExtractor` parses:

- objects:   ``There is/are <np>, <np> and <np>.`` | ``I can see ...`` | ``I see ...`` |
  ``The image shows ...`` | ``In the picture, there is/are ...`` | ``The picture contains ...``
  | ``I count ...`` (count questions); ``<np>`` = ``(a|an|<number word>|<digit>) [colour] shape[s]``;
  ``a``/``an`` asserts existence, a number asserts a count.
- negation:  ``There is no [colour] shape.`` | ``There are no [colour] shapes.`` | ``I see no shapes.``
- sign:      ``The sign says W.`` | ``The sign reads W.`` | ``The text reads W.`` |
  ``There is a sign that says W.`` | ``The sign shows the word W.`` | ``A sign reads "W".``
  (W upper case, title case or quoted)
- no sign:   ``There is no sign.`` | ``No text is visible.`` | ``There is no text in the image.`` | ``I see no sign.``

Colours and shapes appear as themselves or as a vocab synonym ("crimson", "disc", "box").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum

from vlgenrm.synth.scene import Scene
from vlgenrm.synth.vocab import COLOUR_SYNONYMS, COLOURS, NUMBER_WORDS, SHAPE_SYNONYMS, SHAPES, TEXT_WORDS, HallucinationType

SYNONYM_RATE = 0.2  # how often a synonym replaces the plain word
COLOUR_OMIT_RATE = 0.15  # how often a faithful mention leaves out the colour
NEGATION_RATE = 0.3  # how often a response adds a true-looking "there is no ..." sentence


class QuestionKind(StrEnum):
    DESCRIBE = "describe"
    SHAPES = "shapes"
    COUNT = "count"
    SIGN = "sign"


_QUESTIONS: dict[QuestionKind, tuple[str, ...]] = {
    QuestionKind.DESCRIBE: ("Describe the image.", "What is in this picture?", "Describe what you see."),
    QuestionKind.SHAPES: ("What shapes can you see?", "Which shapes are in the image?", "List the shapes in the picture."),
    QuestionKind.COUNT: ("How many {shapes} are there?", "Count the {shapes} in the image."),
    QuestionKind.SIGN: ("What does the sign say?", "Is there any text in the image? What does it say?"),
}
#: Questions whose answer can carry each kind of hallucination.
COMPATIBLE: dict[HallucinationType, tuple[QuestionKind, ...]] = {
    HallucinationType.WRONG_OBJECT: (QuestionKind.DESCRIBE, QuestionKind.SHAPES),
    HallucinationType.WRONG_COLOUR: (QuestionKind.DESCRIBE, QuestionKind.SHAPES, QuestionKind.COUNT),
    HallucinationType.WRONG_COUNT: (QuestionKind.DESCRIBE, QuestionKind.SHAPES, QuestionKind.COUNT),
    HallucinationType.WRONG_TEXT: (QuestionKind.DESCRIBE, QuestionKind.SIGN),
}


@dataclass(frozen=True)
class Question:
    kind: QuestionKind
    text: str
    shape: str | None = None  # the shape a COUNT question asks about


@dataclass(frozen=True)
class Mention:
    """An assertion about one shape: ``count`` instances, stated exactly or as 'a'/'an'."""

    shape: str
    colour: str | None
    count: int
    exact: bool  # False only for count 1: "a red circle" (existence), not "one red circle" (count)


@dataclass
class Content:
    """What a response asserts, before it is phrased."""

    mentions: list[Mention] = field(default_factory=list)
    absent: list[tuple[str, str | None]] = field(default_factory=list)  # (shape, colour) said to be absent
    sign: str | None = None  # "the sign says <sign>"
    deny_sign: bool = False  # "there is no sign"


@dataclass(frozen=True)
class Hallucinated:
    text: str
    type: HallucinationType
    detail: str  # what was changed, e.g. "circle: red -> blue" (truth records only)


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("x", "s")) else "s")


def random_question(rng: random.Random, scene: Scene, hallucination: HallucinationType) -> Question:
    """A question whose answer can carry ``hallucination``."""
    kind = rng.choice(COMPATIBLE[hallucination])
    template = rng.choice(_QUESTIONS[kind])
    if kind is QuestionKind.COUNT:
        shape = rng.choice(scene.objects).shape
        return Question(kind, template.format(shapes=plural(shape)), shape)
    return Question(kind, template)


# --------------------------------------------------------------------------- content


def faithful_content(scene: Scene, question: Question, rng: random.Random) -> Content:
    """True assertions answering the question."""
    content = Content()
    if question.kind in (QuestionKind.DESCRIBE, QuestionKind.SHAPES):
        for obj in scene.objects:
            colour = None if rng.random() < COLOUR_OMIT_RATE else obj.colour
            content.mentions.append(Mention(obj.shape, colour, obj.count, exact=obj.count > 1 or rng.random() < 0.5))
        if rng.random() < NEGATION_RATE:
            _add_negation(content, scene, rng)
    elif question.kind is QuestionKind.COUNT:
        obj = scene.find(question.shape or "")
        if obj is None:
            raise ValueError(f"count question about {question.shape!r}, which the scene lacks")
        colour = None if rng.random() < COLOUR_OMIT_RATE else obj.colour
        content.mentions.append(Mention(obj.shape, colour, obj.count, exact=True))
    if question.kind in (QuestionKind.DESCRIBE, QuestionKind.SIGN):
        if scene.sign is not None:
            content.sign = scene.sign
        elif question.kind is QuestionKind.SIGN or rng.random() < 0.5:
            content.deny_sign = True
    return content


def _add_negation(content: Content, scene: Scene, rng: random.Random) -> None:
    """Say that a shape neither in the scene nor mentioned is absent (true for the faithful)."""
    mentioned = {m.shape for m in content.mentions}
    candidates = [s for s in SHAPES if scene.find(s) is None and s not in mentioned]
    if candidates:
        colour = rng.choice(sorted(COLOURS)) if rng.random() < 0.5 else None
        content.absent.append((rng.choice(candidates), colour))


def hallucinated_content(scene: Scene, question: Question, kind: HallucinationType, rng: random.Random) -> tuple[Content, str]:
    """A faithful answer with one controlled departure from the image, and what it was."""
    content = faithful_content(scene, question, rng)
    if kind is HallucinationType.WRONG_TEXT:
        wrong = rng.choice([w for w in TEXT_WORDS if w != scene.sign])
        content.sign, content.deny_sign = wrong, False
        return content, f"sign: {scene.sign or 'none'} -> {wrong}"
    if not content.mentions:
        raise ValueError(f"{kind.value} needs a question about shapes, got {question.kind.value}")
    # The departure must not show in the text alone: a colour is changed where one is stated
    # (adding one would make the hallucinated answer the longer, more colourful one), and an
    # invented shape replaces a mention instead of adding one (measured before: a text-only
    # classifier of length and word counts told the better response 0.642 of the time).
    coloured = [j for j, m in enumerate(content.mentions) if m.colour is not None]
    i = rng.choice(coloured) if kind is HallucinationType.WRONG_COLOUR and coloured else rng.randrange(len(content.mentions))
    m = content.mentions[i]
    true_colour = scene.find(m.shape).colour  # type: ignore[union-attr]  # mentions come from the scene
    if kind is HallucinationType.WRONG_COLOUR:
        wrong = rng.choice([c for c in sorted(COLOURS) if c != true_colour])
        content.mentions[i] = replace(m, colour=wrong)
        return content, f"{m.shape}: {true_colour} -> {wrong}"
    if kind is HallucinationType.WRONG_COUNT:
        wrong = rng.choice([n for n in range(1, 5) if n != m.count])
        content.mentions[i] = replace(m, count=wrong, exact=True)
        return content, f"{m.shape}: {m.count} -> {wrong}"
    # WRONG_OBJECT: a shape the scene lacks, in place of a mention, said as that mention was.
    absent = [s for s in SHAPES if scene.find(s) is None]
    negated = {s for s, _ in content.absent}
    shape = rng.choice([s for s in absent if s not in negated] or absent)  # keep its negations, as the faithful one does
    colour = rng.choice(sorted(COLOURS)) if m.colour is not None else None
    content.mentions[i] = Mention(shape, colour, m.count, m.exact)
    detail = f"{m.shape} -> {shape}"
    content.absent = [(s, c) for s, c in content.absent if s != shape]  # never contradict itself
    return content, detail


# --------------------------------------------------------------------------- phrasing

_REVERSE_COLOUR = {c: [s for s, t in sorted(COLOUR_SYNONYMS.items()) if t == c] for c in COLOURS}
_REVERSE_SHAPE = {s: [w for w, t in sorted(SHAPE_SYNONYMS.items()) if t == s] for s in SHAPES}
_LIST_OPENERS = (
    "There {be} {list}.",
    "I can see {list}.",
    "I see {list}.",
    "The image shows {list}.",
    "In the picture, there {be} {list}.",
    "The picture contains {list}.",
)
_SIGN_TEMPLATES = (
    "The sign says {w}.",
    "The sign reads {w}.",
    "The text reads {w}.",
    "There is a sign that says {w}.",
    "The sign shows the word {w}.",
    'A sign reads "{w}".',
)
_NO_SIGN = ("There is no sign.", "No text is visible.", "There is no text in the image.", "I see no sign.")


def _word(rng: random.Random, plain: str, synonyms: dict[str, list[str]]) -> str:
    options = synonyms.get(plain, [])
    return rng.choice(options) if options and rng.random() < SYNONYM_RATE else plain


def noun_phrase(m: Mention, rng: random.Random) -> str:
    """E.g. 'two red circles', '3 navy boxes', 'an orange star', 'one disc'."""
    noun = _word(rng, m.shape, _REVERSE_SHAPE)
    words = [_word(rng, m.colour, _REVERSE_COLOUR)] if m.colour else []
    words.append(noun if m.count == 1 else plural(noun))
    if m.exact:
        number = NUMBER_WORDS.get(m.count) if rng.random() < 0.6 else None
        return " ".join([number or str(m.count), *words])
    return " ".join(["an" if words[0][0] in "aeiou" else "a", *words])


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _list_sentence(mentions: list[Mention], rng: random.Random, counting: bool) -> str:
    openers = (*_LIST_OPENERS, "I count {list}.") if counting else _LIST_OPENERS
    be = "is" if mentions[0].count == 1 else "are"  # agrees with the nearest noun phrase
    return rng.choice(openers).format(be=be, list=_join([noun_phrase(m, rng) for m in mentions]))


def _negation_sentence(shape: str, colour: str | None, rng: random.Random) -> str:
    noun = _word(rng, shape, _REVERSE_SHAPE)
    adjective = f"{_word(rng, colour, _REVERSE_COLOUR)} " if colour else ""
    return rng.choice((f"There is no {adjective}{noun}.", f"There are no {adjective}{plural(noun)}.", f"I see no {adjective}{plural(noun)}."))


def _sign_word(word: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.7:
        return word
    if r < 0.85:
        return word.title()
    return f'"{word}"'


def phrase(content: Content, question: Question, rng: random.Random) -> str:
    """Turn content into sentences, varying wording and order under ``rng``."""
    blocks: list[str] = []
    mentions = list(content.mentions)
    rng.shuffle(mentions)
    if mentions:
        if len(mentions) > 1 and rng.random() < 0.4:
            blocks += [_list_sentence([m], rng, question.kind is QuestionKind.COUNT) for m in mentions]
        else:
            blocks.append(_list_sentence(mentions, rng, question.kind is QuestionKind.COUNT))
    blocks += [_negation_sentence(s, c, rng) for s, c in content.absent]
    if content.sign is not None:
        template = rng.choice(_SIGN_TEMPLATES)
        word = content.sign if template.endswith('"{w}".') else _sign_word(content.sign, rng)
        blocks.append(template.format(w=word))
    elif content.deny_sign:
        blocks.append(rng.choice(_NO_SIGN))
    if rng.random() < 0.3:
        rng.shuffle(blocks)
    return " ".join(blocks)


def write_faithful(scene: Scene, question: Question, rng: random.Random) -> str:
    """A response whose every claim is true of the scene."""
    return phrase(faithful_content(scene, question, rng), question, rng)


def write_hallucinated(scene: Scene, question: Question, kind: HallucinationType, rng: random.Random) -> Hallucinated:
    """A response with at least one false claim of the given kind."""
    content, detail = hallucinated_content(scene, question, kind, rng)
    return Hallucinated(phrase(content, question, rng), kind, detail)
