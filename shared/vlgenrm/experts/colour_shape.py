"""The classical colour/shape detector of the synthetic domain (§7).

The synthetic renderer paints solid shapes in saturated palette colours on a light, nearly
uniform background, plus an optional sign: dark text on a white box. Neither the background,
nor the sign's box, nor its text has colour (chroma), so the detector keeps the pixels that
are both saturated (``max(RGB) - min(RGB) >= min_chroma``) and not dark (``max(RGB) >=
min_value``); every other pixel — background, sign box, text, outlines — is excluded by
construction. Each outer contour of that mask is one shape:

* **shape**: a blob whose area over its convex hull's (solidity) is below ``star_solidity``
  is a star (stars are concave, ~0.5–0.6; convex shapes are > 0.88). Otherwise the blob is
  fitted to each convex shape — area over the minimal enclosing circle (circle), rotated
  rectangle (square) and triangle (triangle) — and the best fit wins. The polygon
  approximation (``approxPolyDP``: 3 vertices = triangle, 4 = square, ~10 concave = star,
  ≥ 6 convex = circle) is a cross-check.
* **colour**: the mean RGB of the blob's interior (eroded, saturated pixels only), named by
  the nearest ``palette`` entry (by default the synthetic renderer's, ``SYNTHETIC_PALETTE``).

Confidence rule (documented in docs/experts.md). A detection's reading is *clear* when its
best shape fit beats the runner-up by ``shape_margin``, the polygon check agrees, its
nearest colour is at most ``colour_ratio`` times as far as the runner-up colour, and the
blob is not tiny; its score is then ``confidence`` (0.95). Otherwise it is *marginal*: its
score falls linearly towards 0.5 (a coin flip) and its runner-up reading is recorded. A
verdict is computed from the best readings; its confidence is ``confidence`` when no
marginal detection's runner-up reading could change it, else the product of those
detections' scores (the probability that none of them was misread).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from vlgenrm.contracts import Claim, ClaimType, ExpertVerdict, VerdictLabel
from vlgenrm.experts.base import Detection, Expert, clamp, normalise_colour, presence_verdict
from vlgenrm.experts.config import ColourShapeConfig

#: The shapes this detector's geometry tells apart (its fits and its star test are made for them).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
#: The synthetic domain's label space, declared here by the domain's expert (the experts
#: package does not import the domain): the renderer's palette and the words its responses
#: use for the shapes. Defaults of the constructor; tests keep them equal to ``vlgenrm.synth.vocab``.
SYNTHETIC_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
SYNTHETIC_SHAPE_ALIASES: dict[str, str] = {"disc": "circle", "disk": "circle", "dot": "circle", "box": "square", "rectangle": "square"}
_CONVEX = ("circle", "square", "triangle")
#: Detections listed as evidence when nothing matched (the expert shows what it saw instead).
_MAX_EVIDENCE = 12


class ColourShapeExpert(Expert):
    """Existence, count, attribute (colour) and negated-existence claims about the four shapes."""

    name = "colour_shape"
    claim_types = frozenset({ClaimType.EXISTENCE, ClaimType.COUNT, ClaimType.ATTRIBUTE, ClaimType.NEGATED_EXISTENCE})
    labels = frozenset(SHAPES)

    def __init__(
        self, config: ColourShapeConfig | None = None, *, palette: dict[str, tuple[int, int, int]] | None = None, shape_aliases: dict[str, str] | None = None
    ) -> None:
        """``palette``: colour name -> the RGB painted (names must be canonical colour words,
        ``vocabulary.COLOUR_TERMS``); ``shape_aliases``: other words for the shapes. Both
        default to the synthetic renderer's."""
        self.config = config or ColourShapeConfig()
        self.palette = dict(SYNTHETIC_PALETTE if palette is None else palette)
        if len(self.palette) < 2 or any(normalise_colour(name) != name for name in self.palette):
            raise ValueError(f"the colour/shape palette needs >= 2 canonical colour names, got {sorted(self.palette)}")
        self.aliases = dict(SYNTHETIC_SHAPE_ALIASES if shape_aliases is None else shape_aliases)
        self._palette_names = list(self.palette)
        self._palette_rgb = np.array([self.palette[n] for n in self._palette_names], dtype=np.float64)

    # -- coverage ----------------------------------------------------------------------------
    def covers(self, claim: Claim) -> bool:
        if not super().covers(claim):
            return False
        # A claimed attribute must be a colour this detector can name (not 'large', 'shiny', ...).
        if claim.attribute is not None and normalise_colour(claim.attribute) not in self.palette:
            return False
        return not (claim.type is ClaimType.ATTRIBUTE and claim.attribute is None)

    # -- detection ---------------------------------------------------------------------------
    def in_domain(self, rgb: np.ndarray) -> bool:
        """A light, nearly uniform, colourless background (the synthetic renderer's style): the
        image border's median is light and grey-ish, most of the border is close to it, and at
        least two whole sides are (a sign or a shape may touch the other two)."""
        h, w = rgb.shape[:2]
        if min(h, w) < 24:  # cannot hold a shape of the domain's minimum size
            return False
        k = max(1, min(h, w) // 100)
        sides = [rgb[:k].reshape(-1, 3), rgb[-k:].reshape(-1, 3), rgb[:, :k].reshape(-1, 3), rgb[:, -k:].reshape(-1, 3)]
        bg = np.median(np.concatenate(sides), axis=0)
        if bg.max() - bg.min() >= self.config.min_chroma or bg.min() < 150:
            return False
        close = [np.abs(side.astype(np.int16) - bg).max(axis=1) <= 30 for side in sides]
        overall = float(np.concatenate(close).mean())
        return overall >= 0.6 and sum(float(c.mean()) >= 0.9 for c in close) >= 2

    def shape_mask(self, rgb: np.ndarray) -> np.ndarray:
        """Pixels that belong to coloured shapes (uint8 0/255)."""
        c = rgb.astype(np.int16)
        mx, mn = c.max(axis=2), c.min(axis=2)
        return (((mx - mn) >= self.config.min_chroma) & (mx >= self.config.min_value)).astype(np.uint8) * 255

    def detect(self, image: np.ndarray, claims: Sequence[Claim] = ()) -> list[Detection] | None:
        if not self.in_domain(image):
            return None
        mask = self.shape_mask(image)
        if mask.mean() / 255 > 0.6:
            return None  # mostly colour: not a scene of shapes on a light background
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        out = []
        for contour in contours:
            area = cv2.contourArea(contour)
            if area < self.config.min_area:
                continue
            det = self._describe(image, mask, contour, area)
            if det is not None:
                out.append(det)
        out.sort(key=lambda d: (d.box[1], d.box[0]))
        return out

    def _describe(self, rgb: np.ndarray, mask: np.ndarray, contour: np.ndarray, area: float) -> Detection | None:
        cfg = self.config
        shape, q_shape, alt_shape, feats = self._shape(contour, area)
        x, y, w, h = cv2.boundingRect(contour)
        # Colour: mean of the interior, eroded away from anti-aliased edges, saturated pixels only.
        local = np.zeros((h + 4, w + 4), np.uint8)
        cv2.drawContours(local, [contour - [x - 2, y - 2]], -1, 255, cv2.FILLED)
        inner = cv2.erode(local, np.ones((3, 3), np.uint8), iterations=2 if min(w, h) >= 20 else 1)
        inner = inner[2:-2, 2:-2] & mask[y : y + h, x : x + w]
        if int(inner.sum()) // 255 < 5:
            inner = local[2:-2, 2:-2] & mask[y : y + h, x : x + w]
        pixels = rgb[y : y + h, x : x + w][inner > 0]
        if len(pixels) == 0:
            return None
        mean = pixels.reshape(-1, 3).astype(np.float64).mean(axis=0)
        dist = np.linalg.norm(self._palette_rgb - mean, axis=1)
        order = np.argsort(dist)
        d1, d2 = float(dist[order[0]]), float(dist[order[1]])
        nearest, second = self._palette_names[order[0]], self._palette_names[order[1]]
        if d1 > cfg.max_colour_distance:
            colour, alt_colour, q_colour = "unknown", nearest, 0.5
        else:
            ratio = d1 / max(d2, 1e-6)
            q_colour = 0.5 + 0.45 * clamp((1.0 - ratio) / (1.0 - cfg.colour_ratio))
            colour, alt_colour = nearest, second
        clear = cfg.confidence
        q_shape, q_colour = min(q_shape, clear), min(q_colour, clear)
        alternatives: dict[str, str] = {}
        if q_shape < clear and alt_shape is not None:
            alternatives["label"] = alt_shape
        if q_colour < clear:
            alternatives["colour"] = alt_colour
        score = q_shape * q_colour / clear
        mean_hex = "#" + "".join(f"{round(v):02x}" for v in mean)
        return Detection(
            label=shape,
            box=(float(x), float(y), float(x + w), float(y + h)),
            score=round(score, 4),
            attributes={"colour": colour, "rgb": mean_hex, **feats},
            alternatives=alternatives,
        )

    def _shape(self, contour: np.ndarray, area: float) -> tuple[str, float, str | None, dict[str, str]]:
        """(shape, score, runner-up shape, features) of one blob."""
        cfg = self.config
        hull_area = cv2.contourArea(cv2.convexHull(contour))
        solidity = area / hull_area if hull_area > 0 else 1.0
        _, radius = cv2.minEnclosingCircle(contour)
        (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
        tri_area, _ = cv2.minEnclosingTriangle(contour)
        fits = {
            "circle": area / (math.pi * radius * radius) if radius > 0 else 0.0,
            "square": area / (rw * rh) if rw * rh > 0 else 0.0,
            "triangle": area / tri_area if tri_area > 0 else 0.0,
        }
        ranked = sorted(_CONVEX, key=lambda s: fits[s], reverse=True)
        vertices = len(cv2.approxPolyDP(contour, 0.03 * cv2.arcLength(contour, True), True))
        feats = {"solidity": f"{solidity:.3f}", "vertices": str(vertices), **{f"fit_{k}": f"{v:.3f}" for k, v in fits.items()}}

        if solidity < cfg.star_solidity:
            shape, runner_up = "star", ranked[0]
            q = 0.5 + 0.45 * clamp((cfg.star_solidity - solidity) / 0.1)
            margin = cfg.star_solidity - solidity
        else:
            shape, runner_up = ranked[0], ranked[1]
            margin = fits[ranked[0]] - fits[ranked[1]]
            q = 0.5 + 0.45 * clamp(margin / cfg.shape_margin) * clamp((fits[ranked[0]] - 0.7) / 0.15)
            q_convex = 0.5 + 0.45 * clamp((solidity - cfg.star_solidity) / 0.1)  # close to the star threshold?
            if q_convex < q:
                q, runner_up = q_convex, "star"

        # Cross-check with the polygon approximation (a noisier cue: it only matters when the fits are not decisive).
        poly = {3: "triangle", 4: "square"}.get(vertices)
        if poly is None and solidity < cfg.star_solidity + 0.1 and 8 <= vertices <= 12:
            poly = "star"
        elif poly is None and solidity >= 0.9 and vertices >= 6:
            poly = "circle"
        if poly is not None and poly != shape and q > 0.6 and margin < 2 * cfg.shape_margin:
            q, runner_up = 0.6, poly
        # Tiny blobs: pixelation makes every fit unreliable.
        if min(rw, rh) < cfg.min_side:
            q = min(q, 0.7)
        return shape, q, runner_up, feats

    # -- verdicts ----------------------------------------------------------------------------
    def judge(self, claim: Claim, detections: Sequence[Detection]) -> ExpertVerdict:
        shape = self.subject_label(claim)
        colour = normalise_colour(claim.attribute)

        def matches(reading: tuple[str, dict[str, str]]) -> bool:
            label, attrs = reading
            return label == shape and (colour is None or attrs.get("colour") == colour)

        found = [d for d in detections if matches(d.readings()[0])]
        verdict = presence_verdict(claim, len(found))
        # Marginal detections whose runner-up reading would change whether they match.
        could_flip = [d for d in detections if d.marginal and any(matches(r) != matches(d.readings()[0]) for r in d.readings()[1:])]
        found_ids = {id(d) for d in found}
        lo = len(found) - sum(1 for d in could_flip if id(d) in found_ids)
        hi = len(found) + sum(1 for d in could_flip if id(d) not in found_ids)
        robust = all(presence_verdict(claim, k) is verdict for k in range(lo, hi + 1))
        confidence = self.config.confidence if robust else min(self.config.confidence, math.prod(d.score for d in could_flip))
        evidence = found + [d for d in could_flip if id(d) not in found_ids]
        if not evidence and verdict is not VerdictLabel.SUPPORTED:
            evidence = list(detections[:_MAX_EVIDENCE])
        return self.verdict(claim, verdict, confidence, evidence)
