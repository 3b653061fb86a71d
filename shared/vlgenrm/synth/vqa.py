"""Visual question answering and captions from scene truth: what a base VLM learns to *see*
before it ever learns to judge (§7), and the learnability ladder that checks it can.

Every item is generated from a scene whose truth is known, so the answer is exact. Scenes are
drawn from their own random streams (``pretrain/<seed>/<kind>/<index>``), disjoint from the
preference data's (``<seed>/<split>/<index>/...``), so a base model never sees a preference
example's image.

The ladder climbs from what a whole image shows to what one small part of it says:

==============  ======================================================  ===========
rung            question                                                 answers
==============  ======================================================  ===========
whole_colour    the whole image is one colour: which?                    6 colours
shape_colour    one shape on a background: what colour is it?            6 colours
exists          several shapes: is there a <shape>?                      yes / no
binding         several shapes: what colour is the <shape>?              6 colours
count           several shapes: how many <shape>s?                       one..three
sign            maybe a sign: what does it say?                          8 words, none
claim           is this one claim true? (colour, existence, count, sign)  yes / no
verify          is this description of the image true?                   yes / no
==============  ======================================================  ===========

``verify`` is image-text matching (as in BLIP's pretraining): one description, faithful or
with one hallucination of any type, true or not. It never shows two answers side by side nor
asks which is better — that is the GenRM's job, learnt later from preference data.

``caption`` (describe the image, in the responses' own grammar) is a training task only: its
answers are open text, so the ladder does not score it. ``answer`` is its generalisation:
any of the preference data's questions (describe, list the shapes, count one shape, read the
sign), answered faithfully in the responses' grammar — free-form VQA, as a VLM's instruction
data has. It is what a restating GenRM's likelihood rests on (docs/genrm.md). ``marked`` is a
training task too: it writes a response like ``verify``'s and then marks it ``(true)`` or ``(false)``, so the response's truth
is computed at its own last tokens.

The **scaffolds** (:data:`SCAFFOLDS`) are training tasks too. "Is there a star?" and "is this
claim true?" are equality functions of the text and the image: the answer is independent of
the question alone and of the image alone, so a tiny language model trained from scratch
gets no first-order gradient and sits at chance (measured: single-shape "is there a
<shape>?" stayed at 0.55 for 600 steps with perfect image features). The scaffolds have
first-order answers that build the two halves of the comparison at the answer's position:
``asked`` and ``named`` copy what the question or claim names, ``shown`` says what the image
holds about the claim's subject, ``colours`` and ``inventory`` name what the image shows. With them the same task reaches 0.98.

:func:`cell_labels` is scene truth per grid cell — what the vision stage of the base build
(:mod:`vlgenrm.genrm.pretrain`) teaches each image token to name.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from enum import StrEnum

from PIL import Image

from vlgenrm.synth.responses import Question, QuestionKind, random_question, write_faithful, write_hallucinated
from vlgenrm.synth.scene import GRID, Scene, random_scene, render
from vlgenrm.synth.vocab import COLOURS, NUMBER_WORDS, SHAPES, TEXT_WORDS, HallucinationType

NO_SIGN = "none"
COUNT_WORDS = tuple(NUMBER_WORDS[n] for n in (1, 2, 3))


class VQAKind(StrEnum):
    """A rung of the ladder (or the caption task); the order is the ladder's."""

    WHOLE_COLOUR = "whole_colour"
    SHAPE_COLOUR = "shape_colour"
    EXISTS = "exists"
    BINDING = "binding"
    COUNT = "count"
    SIGN = "sign"
    CLAIM = "claim"
    VERIFY = "verify"
    CAPTION = "caption"
    #: Training only: write a response in the preference data's grammar, then mark it (true) or (false).
    MARKED = "marked"
    #: Training only: answer one of the preference data's questions faithfully, in its grammar.
    ANSWER = "answer"
    # Scaffolds (training only): first-order halves of the comparisons above.
    ASKED = "asked"
    NAMED = "named"
    SHOWN = "shown"
    COLOURS = "colours"
    INVENTORY = "inventory"

    @property
    def options(self) -> tuple[str, ...]:
        """The closed answer set the ladder scores (empty for the open training tasks)."""
        return {
            VQAKind.WHOLE_COLOUR: tuple(sorted(COLOURS)),
            VQAKind.SHAPE_COLOUR: tuple(sorted(COLOURS)),
            VQAKind.EXISTS: ("yes", "no"),
            VQAKind.BINDING: tuple(sorted(COLOURS)),
            VQAKind.COUNT: COUNT_WORDS,
            VQAKind.SIGN: (*TEXT_WORDS, NO_SIGN),
            VQAKind.CLAIM: ("yes", "no"),
            VQAKind.VERIFY: ("yes", "no"),
        }.get(self, ())


SCAFFOLDS: tuple[VQAKind, ...] = (VQAKind.ASKED, VQAKind.NAMED, VQAKind.SHOWN, VQAKind.COLOURS, VQAKind.INVENTORY)
LADDER: tuple[VQAKind, ...] = tuple(k for k in VQAKind if k not in (VQAKind.CAPTION, VQAKind.MARKED, VQAKind.ANSWER) and k not in SCAFFOLDS)


@dataclass(frozen=True)
class VQAItem:
    """One image, one question, its exact answer."""

    kind: VQAKind
    image: bytes
    question: str
    answer: str


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


#: Rungs asked about a scene of several shapes (and maybe a sign); the others draw their own image.
SCENE_KINDS: tuple[VQAKind, ...] = (VQAKind.EXISTS, VQAKind.BINDING, VQAKind.COUNT, VQAKind.SIGN, VQAKind.VERIFY, VQAKind.CAPTION)


@dataclass(frozen=True)
class Claim:
    """One checkable sentence about a scene, whether it holds, and what it names."""

    text: str
    true: bool
    names: str = field(compare=False)
    shows: str = field(compare=False)  # what the image holds about the same subject, in names' form


def random_claim(scene: Scene, rng: random.Random) -> Claim:
    """A one-sentence claim of a random type (colour, existence, count, sign), true half the time."""
    kinds = ["colour", "exists", "count"] + (["sign"] if scene.sign else [])
    kind, true, obj = rng.choice(kinds), rng.random() < 0.5, rng.choice(scene.objects)
    if kind == "colour":
        colour = obj.colour if true else rng.choice([c for c in sorted(COLOURS) if c != obj.colour])
        return Claim(f"The {obj.shape} is {colour}.", true, f"{obj.shape} {colour}", f"{obj.shape} {obj.colour}")
    if kind == "exists":
        absent = [s for s in SHAPES if scene.find(s) is None]
        shape = obj.shape if true or not absent else rng.choice(absent)
        there = scene.find(shape) is not None
        return Claim(f"There is a {shape}.", there, shape, shape if there else f"no {shape}")
    if kind == "count":
        n = obj.count if true else rng.choice([c for c in range(1, 4) if c != obj.count])
        return Claim(
            f"There {'is' if n == 1 else 'are'} {_counted(n, obj.shape)}.", true, f"{obj.shape} {NUMBER_WORDS[n]}", f"{obj.shape} {NUMBER_WORDS[obj.count]}"
        )
    word = scene.sign if true else rng.choice([w for w in TEXT_WORDS if w != scene.sign])
    return Claim(f"The sign says {word}.", true, f"sign {word}", f"sign {scene.sign}")


#: The tasks asked about one claim: its truth, what it names, what the image shows instead.
CLAIM_KINDS: tuple[VQAKind, ...] = (VQAKind.CLAIM, VQAKind.NAMED, VQAKind.SHOWN)


def claim_item(kind: VQAKind, claim: Claim, image: bytes) -> VQAItem:
    """The item of one of :data:`CLAIM_KINDS` about ``claim``."""
    question = f"Is this true? {claim.text}"
    if kind is VQAKind.CLAIM:
        return VQAItem(kind, image, question, "yes" if claim.true else "no")
    if kind is VQAKind.NAMED:
        return VQAItem(kind, image, f"{question} What does it name?", claim.names)
    if kind is VQAKind.SHOWN:
        return VQAItem(kind, image, f"{question} What does the image show?", claim.shows)
    raise ValueError(f"{kind.value} is not asked about a claim")


def _counted(n: int, shape: str, colour: str = "") -> str:
    noun = f"{colour} {shape}".strip()
    return f"{NUMBER_WORDS[n]} {noun}{'s' if n > 1 else ''}"


def _by_shape(scene: Scene) -> list:
    return sorted(scene.objects, key=lambda o: SHAPES.index(o.shape))


@dataclass(frozen=True)
class CellLabels:
    """What each cell of the scene's grid holds, row-major; 0 = nothing, else index + 1 into
    ``(*SHAPES, "sign")``, ``sorted(COLOURS)`` and ``TEXT_WORDS``."""

    shape: tuple[int, ...]
    colour: tuple[int, ...]
    word: tuple[int, ...]

    #: The words each field's classes name (after the empty class 0).
    SHAPE_WORDS = (*SHAPES, "sign")
    COLOUR_WORDS = tuple(sorted(COLOURS))
    SIGN_WORDS = TEXT_WORDS


def cell_labels(scene: Scene) -> CellLabels:
    """Scene truth per grid cell: each shape instance owns the cell of its centre, the sign
    every cell its box overlaps (scenes are laid out on the grid, so nothing shares a cell)."""
    cell = scene.size // GRID
    shape, colour, word = [0] * GRID**2, [0] * GRID**2, [0] * GRID**2
    for obj in scene.objects:
        for x0, y0, x1, y1 in obj.boxes:
            i = (y0 + y1) // 2 // cell * GRID + (x0 + x1) // 2 // cell
            shape[i], colour[i] = 1 + SHAPES.index(obj.shape), 1 + CellLabels.COLOUR_WORDS.index(obj.colour)
    if scene.sign is not None and scene.sign_box is not None:
        x0, y0, x1, y1 = scene.sign_box
        row = (y0 + y1) // 2 // cell
        for col in range(GRID):
            if x1 >= col * cell and x0 < (col + 1) * cell:
                shape[row * GRID + col], word[row * GRID + col] = len(SHAPES) + 1, 1 + TEXT_WORDS.index(scene.sign)
    return CellLabels(tuple(shape), tuple(colour), tuple(word))


def ask(kind: VQAKind, scene: Scene, image: bytes, rng: random.Random) -> VQAItem:
    """A question of ``kind`` about ``scene`` (a :data:`SCENE_KINDS` kind, ``claim`` or a scaffold), with its exact answer."""
    if kind is VQAKind.EXISTS:
        # Half the questions ask about a present shape, so "no" is not a free 75 %.
        absent = [s for s in SHAPES if scene.find(s) is None]
        present = rng.random() < 0.5 or not absent
        shape = rng.choice([o.shape for o in scene.objects] if present else absent)
        return VQAItem(kind, image, f"Is there a {shape}?", "yes" if present else "no")
    if kind is VQAKind.BINDING:
        obj = rng.choice(scene.objects)
        return VQAItem(kind, image, f"What colour is the {obj.shape}?", obj.colour)
    if kind is VQAKind.COUNT:
        obj = rng.choice(scene.objects)
        return VQAItem(kind, image, f"How many {obj.shape}s are there?", NUMBER_WORDS[obj.count])
    if kind is VQAKind.SIGN:
        return VQAItem(kind, image, "What does the sign say?", scene.sign or NO_SIGN)
    if kind is VQAKind.VERIFY:
        _, text, true = _response(scene, rng)
        return VQAItem(kind, image, f"Is this description of the image true? {text}", "yes" if true else "no")
    if kind is VQAKind.MARKED:
        return verify_pair(scene, image, rng)[1]
    if kind is VQAKind.CAPTION:
        question = Question(QuestionKind.DESCRIBE, "Describe the image.")
        return VQAItem(kind, image, question.text, write_faithful(scene, question, rng))
    if kind is VQAKind.ANSWER:
        question = random_question(rng, scene, rng.choice(_possible_hallucinations(scene)))
        return VQAItem(kind, image, question.text, write_faithful(scene, question, rng))
    if kind in CLAIM_KINDS:
        return claim_item(kind, random_claim(scene, rng), image)
    if kind is VQAKind.ASKED:
        shape = rng.choice(SHAPES)
        question = rng.choice([f"Is there a {shape}?", f"What colour is the {shape}?", f"How many {shape}s are there?"])
        return VQAItem(kind, image, f"{question} Which shape was asked about?", shape)
    if kind is VQAKind.COLOURS:
        return VQAItem(kind, image, "Name each shape and its colour.", ", ".join(f"{o.colour} {o.shape}" for o in _by_shape(scene)))
    if kind is VQAKind.INVENTORY:
        return VQAItem(kind, image, "Count each shape and name its colour.", ", ".join(_counted(o.count, o.shape, o.colour) for o in _by_shape(scene)))
    raise ValueError(f"{kind.value} items draw their own image (make_item)")


def _possible_hallucinations(scene: Scene) -> list[HallucinationType]:
    """The hallucinations a response about ``scene`` can carry (a sign is misread only if there is one)."""
    return [h for h in HallucinationType if h is not HallucinationType.WRONG_TEXT or scene.sign is not None]


def _response(scene: Scene, rng: random.Random) -> tuple[Question, str, bool]:
    """A question about ``scene`` and a response to it: faithful, or with one hallucination of any type."""
    hallucination = rng.choice(_possible_hallucinations(scene))
    question = random_question(rng, scene, hallucination)
    true = rng.random() < 0.5
    text = write_faithful(scene, question, rng) if true else write_hallucinated(scene, question, hallucination, rng).text
    return question, text, true


def verify_pair(scene: Scene, image: bytes, rng: random.Random) -> tuple[VQAItem, VQAItem]:
    """One response to a question about ``scene`` (as ``verify`` draws it), asked two ways: as
    ``verify`` in the GenRM's own layout (question, response, "is it true?") and as ``marked``,
    which writes the response and then marks it. The mark comes right after the response's last
    word, the place a pairwise prompt's verdict later reads each response from."""
    question, text, true = _response(scene, rng)
    verify = VQAItem(VQAKind.VERIFY, image, f"Question: {question.text}\n\nResponse: {text}\n\n{VERIFY_QUESTION}", "yes" if true else "no")
    marked = VQAItem(VQAKind.MARKED, image, MARKED_PROMPT, f"{text} ({'true' if true else 'false'})")
    return verify, marked


VERIFY_QUESTION = "Is this response true of the image?"
MARKED_PROMPT = "Write a response and say whether it is true."


def marked_items(n: int, *, seed: int = 0, split: str = "train", image_size: int = 224) -> list[VQAItem]:
    """``n`` scenes, each with one response asked both ways (:func:`verify_pair`)."""
    items: list[VQAItem] = []
    for i in range(n):
        rng = random.Random(f"pretrain/{seed}/{split}/marked/{i}")
        scene = random_scene(rng, image_size, max_kinds=3, text_probability=0.5)
        items += verify_pair(scene, render(scene), rng)
    return items


def make_item(kind: VQAKind, rng: random.Random, image_size: int = 224) -> VQAItem:
    """One item of ``kind`` on an image of its own, drawn from ``rng``."""
    if kind is VQAKind.WHOLE_COLOUR:
        colour = rng.choice(sorted(COLOURS))
        return VQAItem(kind, _png(Image.new("RGB", (image_size, image_size), COLOURS[colour])), "What colour is the image?", colour)
    if kind is VQAKind.SHAPE_COLOUR:
        scene = random_scene(rng, image_size, max_kinds=1, text_probability=0.0)
        return VQAItem(kind, render(scene), "What colour is the shape?", scene.objects[0].colour)
    scene = random_scene(rng, image_size, max_kinds=3, text_probability=0.5)
    return ask(kind, scene, render(scene), rng)


def scene_items(n: int, *, seed: int = 0, split: str = "train", image_size: int = 224) -> list[VQAItem]:
    """``n`` scenes of several shapes, each asked one question of every :data:`SCENE_KINDS` kind."""
    items = []
    for i in range(n):
        rng = random.Random(f"pretrain/{seed}/{split}/scene/{i}")
        scene = random_scene(rng, image_size, max_kinds=3, text_probability=0.5)
        image = render(scene)
        items += [ask(kind, scene, image, rng) for kind in SCENE_KINDS]
    return items


def scaffold_items(n: int, *, seed: int = 0, split: str = "train", image_size: int = 224) -> list[VQAItem]:
    """``n`` scenes, each asked one claim, what the claim names (the same claim) and every
    other scaffold."""
    items = []
    for i in range(n):
        rng = random.Random(f"pretrain/{seed}/{split}/scaffold/{i}")
        scene = random_scene(rng, image_size, max_kinds=3, text_probability=0.5)
        image = render(scene)
        claim = random_claim(scene, rng)
        items += [claim_item(kind, claim, image) for kind in CLAIM_KINDS]
        items += [ask(kind, scene, image, rng) for kind in (VQAKind.ASKED, VQAKind.COLOURS, VQAKind.INVENTORY)]
    return items


def answer_items(n: int, *, seed: int = 0, split: str = "train", image_size: int = 224) -> list[VQAItem]:
    """``n`` scenes, each asked one of the preference data's questions and answered faithfully
    in the responses' grammar: free-form VQA, as a VLM's instruction data has (never two
    answers, never a judgement)."""
    items = []
    for i in range(n):
        rng = random.Random(f"pretrain/{seed}/{split}/answer/{i}")
        scene = random_scene(rng, image_size, max_kinds=3, text_probability=0.5)
        items.append(ask(VQAKind.ANSWER, scene, render(scene), rng))
    return items


def vqa_items(kind: VQAKind, n: int, *, seed: int = 0, split: str = "train", image_size: int = 224) -> list[VQAItem]:
    """``n`` items of ``kind``; the same arguments give the same items, splits are disjoint."""
    return [make_item(kind, random.Random(f"pretrain/{seed}/{split}/{kind.value}/{i}"), image_size) for i in range(n)]


__all__ = [
    "CLAIM_KINDS",
    "COUNT_WORDS",
    "answer_items",
    "LADDER",
    "NO_SIGN",
    "SCAFFOLDS",
    "SCENE_KINDS",
    "CellLabels",
    "Claim",
    "VQAItem",
    "VQAKind",
    "ask",
    "cell_labels",
    "claim_item",
    "MARKED_PROMPT",
    "VERIFY_QUESTION",
    "make_item",
    "marked_items",
    "random_claim",
    "scaffold_items",
    "scene_items",
    "verify_pair",
    "vqa_items",
]
