"""Fixtures of the vision-expert tests: a renderer in the synthetic domain's style and a tiny
random OWLv2 checkpoint built offline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vlgenrm.synth.vocab import COLOURS, SHAPES, TEXT_WORDS

DATA = Path(__file__).parent / "data"


# -- a renderer like the synthetic domain's -----------------------------------------------------
@dataclass
class Obj:
    shape: str
    colour: str
    cx: float
    cy: float
    size: float
    box: tuple[float, float, float, float]


@dataclass
class Scene:
    image: np.ndarray
    objects: list[Obj]
    word: str | None
    sign_box: tuple[int, int, int, int] | None


def shape_polygon(shape: str, cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a square (side = size), an equilateral triangle or a 5-pointed star (outer
    diameter = size) centred on (cx, cy) and rotated by angle."""
    r = size / 2
    if shape == "square":
        return [
            (cx + r * math.sqrt(2) * math.cos(angle + math.pi / 4 + k * math.pi / 2), cy + r * math.sqrt(2) * math.sin(angle + math.pi / 4 + k * math.pi / 2))
            for k in range(4)
        ]
    if shape == "triangle":
        return [(cx + r * math.cos(angle - math.pi / 2 + k * 2 * math.pi / 3), cy + r * math.sin(angle - math.pi / 2 + k * 2 * math.pi / 3)) for k in range(3)]
    if shape == "star":
        inner = 0.45
        return [
            (
                cx + (r if k % 2 == 0 else r * inner) * math.cos(angle - math.pi / 2 + k * math.pi / 5),
                cy + (r if k % 2 == 0 else r * inner) * math.sin(angle - math.pi / 2 + k * math.pi / 5),
            )
            for k in range(10)
        ]
    raise ValueError(shape)


def render_scene(
    rng: np.random.Generator,
    *,
    objects: list[tuple[str, str]] | None = None,
    n_max: int = 6,
    sign: bool | None = None,
    word: str | None = None,
) -> Scene:
    """Solid shapes (≥ 24 px, non-overlapping, random rotation) in the vocabulary colours on a
    light background, and optionally a sign: dark text on a white box with a grey border.
    Half the scenes are drawn at 2x and downscaled (anti-aliased edges), half at 1x (jagged).
    Random objects that find no free place are left out (``Scene.objects`` lists what was drawn)."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = [(256, 256), (320, 240), (384, 288), (224, 224)][int(rng.integers(4))]
    bg = tuple(int(rng.integers(235, 256)) for _ in range(3))
    ss = 2 if rng.random() < 0.5 else 1
    img = Image.new("RGB", (W * ss, H * ss), bg)
    draw = ImageDraw.Draw(img)
    taken: list[tuple[float, float, float, float]] = []
    sign = (rng.random() < 0.5 if word is None else True) if sign is None else sign
    sign_box = None
    if sign:
        word = word or str(rng.choice(TEXT_WORDS))
        sw, sh = 130, 60
        x0, y0 = int(rng.integers(4, W - sw - 4)), int(rng.integers(4, H - sh - 4))
        draw.rectangle([x0 * ss, y0 * ss, (x0 + sw) * ss, (y0 + sh) * ss], fill=(255, 255, 255), outline=(60, 60, 60), width=2 * ss)
        draw.text(((x0 + 12) * ss, (y0 + 8) * ss), word, fill=(20, 20, 20), font=ImageFont.load_default(size=40 * ss))
        sign_box = (x0, y0, x0 + sw, y0 + sh)
        taken.append(sign_box)
    else:
        word = None
    wanted = objects if objects is not None else [(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))) for _ in range(int(rng.integers(1, n_max + 1)))]
    placed: list[Obj] = []
    for shape, colour in wanted:
        for _ in range(300):
            size = float(rng.integers(24, 72))
            cx, cy = rng.uniform(size, W - size), rng.uniform(size, H - size)
            angle = rng.uniform(0, 2 * math.pi)
            if shape == "circle":
                box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
            else:
                pts = np.array(shape_polygon(shape, cx, cy, size, angle))
                box = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
            grown = (box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4)
            if grown[0] < 2 or grown[1] < 2 or grown[2] > W - 2 or grown[3] > H - 2:
                continue
            if any(not (grown[2] < o[0] or grown[0] > o[2] or grown[3] < o[1] or grown[1] > o[3]) for o in taken):
                continue
            fill = COLOURS[colour]
            if shape == "circle":
                draw.ellipse([v * ss for v in box], fill=fill)
            else:
                draw.polygon([(x * ss, y * ss) for x, y in shape_polygon(shape, cx, cy, size, angle)], fill=fill)
            taken.append(grown)
            placed.append(Obj(shape, colour, cx, cy, size, tuple(float(v) for v in box)))
            break
        else:
            if objects is not None:
                raise RuntimeError("scene too crowded")
    if ss > 1:
        img = img.resize((W, H), Image.LANCZOS)
    return Scene(np.asarray(img), placed, word, sign_box)


# -- a tiny random OWLv2 checkpoint --------------------------------------------------------------
def build_tiny_owlv2(directory: Path, seed: int = 0, image_size: int = 64) -> Path:
    """A random Owlv2ForObjectDetection (hidden 32 x 2 layers, 4 x 4 patches) with a CLIP
    tokenizer over the byte-level alphabet (no merges) and the PIL image processor, saved
    the way a real checkpoint is, so the expert loads it with ``from_pretrained``."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    # Like CLIP's vocabulary: byte symbols, the same with the end-of-word suffix, then the
    # specials last (OWLv2 masks queries whose first id is 0, so bos must not be 0).
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {a: i for i, a in enumerate(alphabet)}
    vocab.update({a + "</w>": len(alphabet) + i for i, a in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    config = Owlv2Config(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=16),
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": image_size, "width": image_size}), tokenizer=tokenizer)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_owlv2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_owlv2(tmp_path_factory.mktemp("owlv2") / "tiny-owlv2")
