"""The synthetic domain's vocabulary, shared by the renderer, the response writer, the claim
extractor and the colour/shape expert, so all four agree on what a word means."""

from __future__ import annotations

from enum import StrEnum

#: Colour name -> the RGB the renderer paints (well separated in hue, so OpenCV can tell them apart).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
#: Words a sign in the image may say (upper case, 4 letters: easy for OCR to read back).
TEXT_WORDS: tuple[str, ...] = ("STOP", "OPEN", "EXIT", "SALE", "CAFE", "PARK", "BANK", "TAXI")
NUMBER_WORDS: dict[int, str] = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}

#: Other words that name the same shape or colour (normalised to the key on extraction).
SHAPE_SYNONYMS: dict[str, str] = {"disc": "circle", "disk": "circle", "dot": "circle", "box": "square", "rectangle": "square"}
COLOUR_SYNONYMS: dict[str, str] = {"violet": "purple", "crimson": "red", "scarlet": "red", "navy": "blue", "gold": "yellow", "lime": "green"}


class HallucinationType(StrEnum):
    """How a response departs from the image."""

    WRONG_OBJECT = "wrong_object"  # mentions a shape that is not there
    WRONG_COLOUR = "wrong_colour"  # right shape, wrong colour
    WRONG_COUNT = "wrong_count"  # right shape and colour, wrong number
    WRONG_TEXT = "wrong_text"  # misreads the sign
