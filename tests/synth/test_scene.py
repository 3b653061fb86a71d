"""Scenes: random layouts that fit, exact colours, legible signs, byte-identical PNGs."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from vlgenrm.contracts import Choice, Claim, ClaimType
from vlgenrm.synth.scene import MIN_SHAPE_PX, SIGN_INK, Scene, SceneObject, claim_holds, random_scene, render
from vlgenrm.synth.vocab import COLOURS, SHAPES, TEXT_WORDS

from .truth import is_true


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def test_same_seed_same_bytes_and_different_seeds_differ():
    assert render(random_scene(random.Random(7))) == render(random_scene(random.Random(7)))
    assert random_scene(random.Random(7)) == random_scene(random.Random(7))
    assert render(random_scene(random.Random(7))) != render(random_scene(random.Random(8)))


@pytest.mark.parametrize("seed", range(40))
def test_scene_truth_is_well_formed(seed):
    scene = random_scene(random.Random(seed), size=224 if seed % 2 else 192)
    assert 1 <= len(scene.objects) <= 3
    assert len({o.shape for o in scene.objects}) == len(scene.objects)
    assert len({o.colour for o in scene.objects}) == len(scene.objects)
    boxes = [b for o in scene.objects for b in o.boxes] + ([scene.sign_box] if scene.sign_box else [])
    for o in scene.objects:
        assert 1 <= o.count <= 3 and len(o.boxes) == o.count
        for x0, y0, x1, y1 in o.boxes:
            assert x1 - x0 + 1 >= MIN_SHAPE_PX and y1 - y0 + 1 >= MIN_SHAPE_PX
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and 0 <= a[1] and a[2] < scene.size and a[3] < scene.size
        assert not any(overlap(a, b) for b in boxes[i + 1 :]), "shapes must not overlap"
    assert scene.sign is None or scene.sign in TEXT_WORDS


@pytest.mark.parametrize("seed", range(12))
def test_shapes_are_painted_in_their_exact_colours(seed):
    scene = random_scene(random.Random(seed))
    image = pixels(render(scene))
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    assert tuple(colours[counts.argmax()]) == scene.background
    present = {o.colour for o in scene.objects}
    for obj in scene.objects:
        mask = np.all(image == COLOURS[obj.colour], axis=-1)
        for x0, y0, x1, y1 in obj.boxes:
            inside = mask[y0 : y1 + 1, x0 : x1 + 1].sum()
            # Even a star fills over a quarter of its box; nothing of this colour leaks outside boxes.
            assert inside >= 0.25 * (x1 - x0 + 1) * (y1 - y0 + 1)
        assert mask.sum() == sum(mask[y0 : y1 + 1, x0 : x1 + 1].sum() for x0, y0, x1, y1 in obj.boxes)
    for colour in set(COLOURS) - present:
        assert not np.all(image == COLOURS[colour], axis=-1).any()


def test_sign_text_is_dark_large_and_inside_the_sign():
    for scene in (random_scene(random.Random(i), text_probability=1.0) for i in range(10)):
        assert scene.sign is not None and scene.sign_box is not None
        image = pixels(render(scene)).astype(int)
        x0, y0, x1, y1 = scene.sign_box
        inner = image[y0 + 3 : y1 - 2, x0 + 3 : x1 - 2]
        ink = np.all(np.abs(inner - SIGN_INK) < 40, axis=-1)
        rows = np.flatnonzero(ink.any(axis=1))
        assert rows.size and rows[-1] - rows[0] + 1 >= 28, "letters must be at least 28 px high"
        assert np.all(inner[~ink] >= 40), "sign background is light"
        assert (inner == 255).all(axis=-1).mean() > 0.4, "white sign behind the text"


def test_no_sign_without_text_probability():
    assert all(random_scene(random.Random(i), text_probability=0.0).sign is None for i in range(20))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        random_scene(random.Random(0), size=100)
    with pytest.raises(ValueError):
        random_scene(random.Random(0), max_kinds=len(SHAPES))
    with pytest.raises(ValueError):
        Scene(size=224, objects=[SceneObject(shape="circle", colour="red", count=1), SceneObject(shape="circle", colour="blue", count=1)])
    with pytest.raises(ValueError):
        SceneObject(shape="hexagon", colour="red", count=1)


def test_claim_holds_agrees_with_the_test_oracle():
    scene = Scene(size=224, objects=[SceneObject(shape="circle", colour="red", count=2)], sign="STOP")

    def claim(type_: ClaimType, subject: str = "circle", **kw) -> Claim:
        return Claim(id="c", response=Choice.A, type=type_, subject=subject, **kw)

    cases = [
        (claim(ClaimType.EXISTENCE), True),
        (claim(ClaimType.EXISTENCE, attribute="red"), True),
        (claim(ClaimType.EXISTENCE, attribute="blue"), False),
        (claim(ClaimType.EXISTENCE, "star"), False),
        (claim(ClaimType.COUNT, count=2, attribute="red"), True),
        (claim(ClaimType.COUNT, count=3), False),
        (claim(ClaimType.COUNT, count=2, attribute="blue"), False),
        (claim(ClaimType.NEGATED_EXISTENCE, "star"), True),
        (claim(ClaimType.NEGATED_EXISTENCE, attribute="blue"), True),
        (claim(ClaimType.NEGATED_EXISTENCE), False),
        (claim(ClaimType.NEGATED_EXISTENCE, "text"), False),
        (claim(ClaimType.TEXT, "text", text="STOP"), True),
        (claim(ClaimType.TEXT, "text", text="OPEN"), False),
    ]
    for c, expected in cases:
        assert claim_holds(c, scene) is expected, c
        assert is_true(c, scene) is expected, c
