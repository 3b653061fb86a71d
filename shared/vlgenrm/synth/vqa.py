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
verify          is this description of the image true?                   yes / no
==============  ======================================================  ===========

``verify`` is image-text matching (as in BLIP's pretraining): one description, faithful or
with one hallucination of any type, true or not. It never shows two answers side by side nor
asks which is better — that is the GenRM's job, learnt later from preference data.

``caption`` (describe the image, in the responses' own grammar) is a training task only: its
answers are open text, so the ladder does not score it.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image

from vlgenrm.synth.responses import Question, QuestionKind, random_question, write_faithful, write_hallucinated
from vlgenrm.synth.scene import Scene, random_scene, render
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
    VERIFY = "verify"
    CAPTION = "caption"

    @property
    def options(self) -> tuple[str, ...]:
        """The closed answer set the ladder scores (empty for the open caption task)."""
        return {
            VQAKind.WHOLE_COLOUR: tuple(sorted(COLOURS)),
            VQAKind.SHAPE_COLOUR: tuple(sorted(COLOURS)),
            VQAKind.EXISTS: ("yes", "no"),
            VQAKind.BINDING: tuple(sorted(COLOURS)),
            VQAKind.COUNT: COUNT_WORDS,
            VQAKind.SIGN: (*TEXT_WORDS, NO_SIGN),
            VQAKind.VERIFY: ("yes", "no"),
            VQAKind.CAPTION: (),
        }[self]


LADDER: tuple[VQAKind, ...] = tuple(k for k in VQAKind if k is not VQAKind.CAPTION)


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


def ask(kind: VQAKind, scene: Scene, image: bytes, rng: random.Random) -> VQAItem:
    """A question of ``kind`` about ``scene`` (one of :data:`SCENE_KINDS`), with its exact answer."""
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
        hallucination = rng.choice([h for h in HallucinationType if h is not HallucinationType.WRONG_TEXT or scene.sign is not None])
        question = random_question(rng, scene, hallucination)
        true = rng.random() < 0.5
        text = write_faithful(scene, question, rng) if true else write_hallucinated(scene, question, hallucination, rng).text
        return VQAItem(kind, image, f"Is this description of the image true? {text}", "yes" if true else "no")
    if kind is VQAKind.CAPTION:
        question = Question(QuestionKind.DESCRIBE, "Describe the image.")
        return VQAItem(kind, image, question.text, write_faithful(scene, question, rng))
    raise ValueError(f"{kind.value} items draw their own image (make_item)")


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


def vqa_items(kind: VQAKind, n: int, *, seed: int = 0, split: str = "train", image_size: int = 224) -> list[VQAItem]:
    """``n`` items of ``kind``; the same arguments give the same items, splits are disjoint."""
    return [make_item(kind, random.Random(f"pretrain/{seed}/{split}/{kind.value}/{i}"), image_size) for i in range(n)]


__all__ = ["COUNT_WORDS", "LADDER", "NO_SIGN", "SCENE_KINDS", "VQAItem", "VQAKind", "ask", "make_item", "scene_items", "vqa_items"]
