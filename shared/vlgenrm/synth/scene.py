"""Scenes of the synthetic domain (§7): what an image truly shows, and how it is drawn.

A scene is laid out on a 4 x 4 grid of cells: each shape instance gets a cell of its own and
the sign (when there is one) spans three adjacent cells of a row, so nothing overlaps and the
layout always fits, with no rejection loop. Shapes are painted with the exact RGB of
:data:`~vlgenrm.synth.vocab.COLOURS` and no anti-aliasing, so a pixel either has a shape's
colour or does not; the sign text is anti-aliased dark grey on white (no hue), which the
colour detector ignores and OCR reads easily.
"""

from __future__ import annotations

import io
import math
import random
from functools import cache

from PIL import Image, ImageDraw, ImageFont
from pydantic import Field, model_validator

from vlgenrm.contracts import Claim, ClaimType, Contract
from vlgenrm.synth.vocab import COLOURS, SHAPES, TEXT_WORDS

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, inclusive
RGB = tuple[int, int, int]

GRID = 4
MIN_IMAGE_SIZE = 192  # below this a 4 x 4 cell cannot hold the sign's >= 28 px letters
MIN_SHAPE_PX = 24
MAX_COUNT = 3
#: Light backgrounds: varied so a model cannot key on one, all far from every shape colour.
BACKGROUNDS: tuple[RGB, ...] = ((245, 245, 245), (250, 246, 236), (236, 242, 248), (240, 240, 232), (248, 240, 244))
SIGN_FILL: RGB = (255, 255, 255)
SIGN_INK: RGB = (25, 25, 25)
#: Subject of TEXT claims and of "there is no text" negations.
TEXT_SUBJECT = "text"


class SceneObject(Contract):
    """One kind of shape in the scene: ``count`` instances of the same shape and colour."""

    shape: str = Field(description="One of vocab.SHAPES.")
    colour: str = Field(description="One of vocab.COLOURS.")
    count: int = Field(ge=1, le=MAX_COUNT)
    boxes: list[Box] = Field(default_factory=list, description="Where each instance is drawn.")

    @model_validator(mode="after")
    def _known_words(self) -> SceneObject:
        if self.shape not in SHAPES or self.colour not in COLOURS:
            raise ValueError(f"unknown shape/colour {self.shape!r}/{self.colour!r}")
        if self.boxes and len(self.boxes) != self.count:
            raise ValueError(f"{self.count} instances but {len(self.boxes)} boxes")
        return self


class Scene(Contract):
    """The whole truth about one image. Each shape appears in one colour only, so 'the red
    circles' and 'the circles' name the same instances and counts are unambiguous."""

    size: int = Field(ge=MIN_IMAGE_SIZE, description="Width and height in pixels.")
    background: RGB = BACKGROUNDS[0]
    objects: list[SceneObject] = Field(min_length=1)
    sign: str | None = Field(None, description="The word on the sign; None = no sign.")
    sign_box: Box | None = None
    sign_font_px: int | None = None

    @model_validator(mode="after")
    def _one_colour_per_shape(self) -> Scene:
        shapes = [o.shape for o in self.objects]
        if len(set(shapes)) != len(shapes):
            raise ValueError("a shape may appear in one colour only")
        return self

    def find(self, shape: str) -> SceneObject | None:
        """The object of that shape, if the scene has one."""
        return next((o for o in self.objects if o.shape == shape), None)


def sign_font_px(size: int) -> int:
    """Font size whose capitals are >= 28 px high (load_default's cap height is ~0.7 em)."""
    return max(44, round(size * 0.2))


@cache
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def random_scene(rng: random.Random, size: int = 224, max_kinds: int = 3, text_probability: float = 0.5) -> Scene:
    """A random scene: 1..max_kinds shapes in distinct colours, 1..3 instances each, maybe a sign."""
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {size} < {MIN_IMAGE_SIZE}")
    if not 1 <= max_kinds < len(SHAPES):
        # At least one shape must stay absent, so 'wrong object' hallucinations exist.
        raise ValueError(f"max_kinds must be in 1..{len(SHAPES) - 1}")
    kinds = rng.randint(1, max_kinds)
    shapes = rng.sample(SHAPES, kinds)
    colours = rng.sample(sorted(COLOURS), kinds)
    counts = [rng.randint(1, MAX_COUNT) for _ in shapes]
    background = rng.choice(BACKGROUNDS)
    cell = size // GRID
    free = [(r, c) for r in range(GRID) for c in range(GRID)]

    sign = sign_box = font_px = None
    if rng.random() < text_probability:
        sign = rng.choice(TEXT_WORDS)
        font_px = sign_font_px(size)
        row, col0 = rng.randrange(GRID), rng.randint(0, GRID - 3)
        free = [(r, c) for r, c in free if not (r == row and col0 <= c < col0 + 3)]
        sign_box = _place_sign(rng, sign, font_px, (col0 * cell, row * cell, (col0 + 3) * cell, (row + 1) * cell))

    cells = rng.sample(free, sum(counts))
    objects = []
    for shape, colour, count in zip(shapes, colours, counts, strict=True):
        mine, cells = cells[:count], cells[count:]
        boxes = [_place_shape(rng, cell, r, c) for r, c in mine]
        objects.append(SceneObject(shape=shape, colour=colour, count=count, boxes=boxes))
    return Scene(size=size, background=background, objects=objects, sign=sign, sign_box=sign_box, sign_font_px=font_px)


def _place_shape(rng: random.Random, cell: int, row: int, col: int) -> Box:
    pad = 3  # keeps >= 6 px between shapes of neighbouring cells
    side = rng.randint(max(MIN_SHAPE_PX, cell // 2), cell - 2 * pad)
    x = col * cell + pad + rng.randint(0, cell - 2 * pad - side)
    y = row * cell + pad + rng.randint(0, cell - 2 * pad - side)
    return (x, y, x + side - 1, y + side - 1)


def _place_sign(rng: random.Random, word: str, font_px: int, area: Box) -> Box:
    left, top, right, bottom = _font(font_px).getbbox(word)
    pad = 6
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    ax0, ay0, ax1, ay1 = area
    if w > ax1 - ax0 - 2 or h > ay1 - ay0 - 2:
        raise ValueError(f"sign {word!r} at {font_px}px does not fit {area}")
    x = rng.randint(ax0 + 1, ax1 - 1 - w)
    y = rng.randint(ay0 + 1, ay1 - 1 - h)
    return (x, y, x + w - 1, y + h - 1)


def _polygon(shape: str, box: Box) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    if shape == "triangle":
        return [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    # A five-pointed star, point up; a fat inner radius keeps it one solid blob for detectors.
    cx, cy, outer = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    inner = outer * 0.45
    points = []
    for i in range(10):
        radius = outer if i % 2 == 0 else inner
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render(scene: Scene) -> bytes:
    """The scene as PNG bytes; the same scene always gives the same bytes."""
    image = Image.new("RGB", (scene.size, scene.size), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        rgb = COLOURS[obj.colour]
        for box in obj.boxes:
            if obj.shape == "circle":
                draw.ellipse(box, fill=rgb)
            elif obj.shape == "square":
                draw.rectangle(box, fill=rgb)
            else:
                draw.polygon(_polygon(obj.shape, box), fill=rgb)
    if scene.sign is not None and scene.sign_box is not None and scene.sign_font_px is not None:
        font = _font(scene.sign_font_px)
        x0, y0, x1, y1 = scene.sign_box
        draw.rectangle(scene.sign_box, fill=SIGN_FILL, outline=SIGN_INK, width=2)
        left, top, right, bottom = font.getbbox(scene.sign)
        # Centre the ink (not the font's line box) inside the sign.
        tx = (x0 + x1 + 1 - (right - left)) / 2 - left
        ty = (y0 + y1 + 1 - (bottom - top)) / 2 - top
        draw.text((tx, ty), scene.sign, font=font, fill=SIGN_INK)
    buf = io.BytesIO()
    image.save(buf, "PNG")  # no timestamp chunks: byte-identical for identical scenes
    return buf.getvalue()


def claim_holds(claim: Claim, scene: Scene) -> bool:
    """The ground truth of a claim about the scene (the oracle experts are measured against).

    EXISTENCE: a shape of that subject (and colour, if given) is present. COUNT: it is present
    exactly ``count`` times. NEGATED_EXISTENCE: it is absent; subject ``text`` = no sign.
    TEXT: the sign says ``text`` (case-insensitive). ATTRIBUTE: the subject has that colour.
    """
    if claim.type is ClaimType.TEXT:
        return scene.sign is not None and (claim.text or "").upper() == scene.sign.upper()
    if claim.subject == TEXT_SUBJECT:
        return scene.sign is None if claim.type is ClaimType.NEGATED_EXISTENCE else scene.sign is not None
    obj = scene.find(claim.subject)
    matches = obj is not None and (claim.attribute is None or claim.attribute == obj.colour)
    if claim.type is ClaimType.NEGATED_EXISTENCE:
        return not matches
    if claim.type is ClaimType.COUNT:
        return (obj.count if matches and obj is not None else 0) == claim.count
    return matches
