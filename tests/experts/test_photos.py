"""The experts stage on real photographs and ordinary language (issue 15).

The photographs are the ones scikit-image's wheel bundles (``skimage/data``: astronaut,
chelsea, coffee, camera, rocket, page, motorcycle_left, text), read as files from the
installed package (no network, no import of skimage itself). 24 pairs of a faithful and a
hallucinated answer — wrong animal, wrong person count, wrong text, invented objects, wrong
colour — with hand labels for every claim, and human labels half of which are deliberately
wrong. The CPU experts judge them: OpenCV (Haar faces, Haar cat faces, HOG people) and OCR
(rapidocr only, so the numbers do not depend on a tesseract binary); colour/shape stays
registered and covers no photo claim.

What is asserted is what these experts can do, measured (docs/experts.md):

* every pair yields claims, exactly the ones written down below, and the object words no
  expert covers are reported as uncheckable;
* merged verdicts agree with the hand labels at the measured rate, and every confident
  verdict (p >= 0.85) is right; the known misses are low-confidence (p <= 0.8);
* refinement (design defaults) flips the wrong human labels where the experts are confident
  (|h(A) - h(B)| >= 1), drops the near-confident conflicts, and never makes a label worse by
  flipping it.
"""

from __future__ import annotations

import datetime
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlgenrm.contracts import Choice, Example, ImageRef, LabelSource, VerdictLabel
from vlgenrm.experts.config import AnnotationSettings, RefinementSettings
from vlgenrm.experts.pipeline import Annotator, coverage
from vlgenrm.experts.refine import refine
from vlgenrm.experts.verify import claim_findings

WHEN = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
PHOTOS = {
    "astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png", "camera": "camera.png",
    "rocket": "rocket.jpg", "page": "page.png", "motorcycle": "motorcycle_left.png", "text": "text.png",
}  # fmt: skip
E, C, N, T = "existence", "count", "negated_existence", "text"


@dataclass(frozen=True)
class Pair:
    image: str
    a: str
    b: str
    better: str  # the faithful response (truth)
    human: str  # the human label given (deliberately wrong in half of the pairs)
    claims_a: tuple[tuple[str, str, bool], ...]  # (claim type, subject, holds in the photo) in reading order
    claims_b: tuple[tuple[str, str, bool], ...]


PAIRS = [
    Pair("astronaut", "A smiling woman in an orange space suit poses in front of an American flag.",
         "Two women in orange space suits stand in front of a flag.", "A", "A",
         ((E, "person", True),), ((C, "person", False),)),
    Pair("astronaut", "A woman smiles at the camera, holding a white helmet.",
         "No person is in the picture and no face is visible: an empty space suit hangs next to a helmet.", "A", "B",
         ((E, "person", True),), ((N, "person", False), (N, "face", False))),
    Pair("astronaut", "A cat sits on the astronaut's lap next to her helmet.", "The astronaut's face is clearly visible; she is smiling.",
         "B", "B", ((E, "cat", False), (E, "person", True)), ((E, "person", True), (E, "face", True))),
    Pair("astronaut", "A woman in a space suit; there is no cat in the picture.", "A dog sits in front of the flag and there is no person.",
         "A", "A", ((E, "person", True), (N, "cat", True)), ((N, "person", False),)),
    Pair("chelsea", "A tabby cat with green eyes looks at the camera.", "A brown dog with green eyes looks at the camera.",
         "A", "B", ((E, "cat", True),), ()),
    Pair("chelsea", "A close-up of a cat; there are no people in the picture.", "A woman holds a cat in her arms.",
         "A", "A", ((E, "cat", True), (N, "person", True)), ((E, "person", False), (E, "cat", True))),
    Pair("chelsea", "There is no text in the picture, only a cat.", "A sign next to the cat says 'NO PETS'.",
         "A", "B", ((N, "text", True), (E, "cat", True)), ((T, "text", False), (E, "cat", True))),
    Pair("chelsea", "Two kittens play with a ball of yarn.", "The cat's face fills the frame; no person is visible.",
         "B", "B", ((C, "cat", False),), ((E, "cat", True), (N, "person", True))),
    Pair("coffee", "A cup of coffee on a red saucer with a spoon; there are no people.", "A man is drinking coffee at a wooden table.",
         "A", "A", ((N, "person", True),), ((E, "person", False),)),
    Pair("coffee", "The cup says 'COFFEE' and the saucer says 'CAFE DEL MAR'.", "There is no text in the image, just a cup and a spoon.",
         "B", "A", ((T, "text", False), (T, "text", False)), ((N, "text", True),)),
    Pair("coffee", "An espresso cup sits on a saucer on a wooden table.", "A cat is sleeping next to an espresso cup.",
         "A", "A", (), ((E, "cat", False),)),
    Pair("coffee", "A cup of coffee on a green saucer, next to a woman's hand.", "A cup of coffee on a red saucer; no person is in the picture.",
         "B", "B", ((E, "person", False),), ((N, "person", True),)),
    Pair("camera", "A man in a dark coat looks through a camera on a tripod.", "Two women are taking photos with a camera on a tripod.",
         "A", "B", ((E, "person", True),), ((C, "person", False),)),
    Pair("camera", "A photographer and his dog stand on the lawn.", "A photographer stands on a lawn with a camera.",
         "B", "B", ((E, "person", True),), ((E, "person", True),)),
    Pair("camera", "There is no text in the photo.", "A sign in the background says PARK.",
         "A", "A", ((N, "text", True),), ((T, "text", False),)),
    Pair("rocket", "A rocket stands on the launch pad at night; no people are visible.", "A crowd of people watches the rocket launch.",
         "A", "A", ((N, "person", True),), ((E, "person", False), (E, "person", False))),
    Pair("rocket", "The rocket is lit by floodlights against a dark blue sky.", "A cat sits on the launch pad under the rocket.",
         "A", "B", (), ((E, "cat", False),)),
    Pair("page", "The page is titled 'Region-based segmentation'.", "The page is titled 'Deep learning for cats'.",
         "A", "B", ((T, "text", True),), ((T, "text", False),)),
    Pair("page", "A printed page with Python code; no people are in it.", "A photo of a man holding a page of text.",
         "A", "B", ((N, "person", True),), ((E, "person", False),)),
    Pair("page", "The heading reads 'Edge detection' and a woman is pointing at it.",
         "The first line says 'Let us first determine markers of the coins'.", "B", "A",
         ((T, "text", False), (E, "person", False)), ((T, "text", True),)),
    Pair("motorcycle", "A red motorcycle is parked in a garage; no people are around.", "A man sits on a red motorcycle in a garage.",
         "A", "A", ((N, "person", True),), ((E, "person", False),)),
    Pair("motorcycle", "The fuel tank says HONDA.", "The fuel tank says YAMAHA.", "B", "A",
         ((T, "text", False),), ((T, "text", True),)),
    Pair("motorcycle", "A blue motorcycle with a woman on it.", "A red motorcycle in a garage; nobody is sitting on it and there is no person.",
         "B", "A", ((E, "person", False),), ((N, "person", True),)),
    Pair("text", "Handwritten equations on a sheet of paper; no people.", "A woman writes equations on a whiteboard.",
         "A", "B", ((N, "person", True),), ((E, "person", False),)),
]  # fmt: skip


def photo_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        pytest.fail("scikit-image is not installed: `make install` installs the dev extra (pyproject.toml pins it)")
    return Path(spec.origin).parent / "data"


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    folder = photo_dir()
    return {name: np.asarray(Image.open(folder / file).convert("RGB")) for name, file in PHOTOS.items()}


@pytest.fixture(scope="module")
def annotated(photos):
    """The 24 pairs through the experts stage once (OpenCV + rapidocr + colour/shape)."""
    settings = AnnotationSettings(experts={"opencv": {"enabled": True}, "ocr": {"engines": ["rapidocr"]}})
    examples = [
        Example(
            id=f"photo-{i:02d}",
            image=ImageRef(key=f"images/{p.image}.png", sha256="0" * 64),
            question="Describe the image.",
            response_a=p.a,
            response_b=p.b,
            human_label=p.human,
            category=p.image,
        )
        for i, p in enumerate(PAIRS)
    ]
    out = Annotator(settings).annotate(examples, [photos[p.image] for p in PAIRS], WHEN)
    return examples, out


def test_the_photos_are_bundled_real_photographs(photos):
    assert len(PAIRS) >= 20 and {p.image for p in PAIRS} == set(PHOTOS)
    for name, image in photos.items():
        assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 170, name
        assert len(np.unique(image.reshape(-1, 3)[::97], axis=0)) > 100, name  # a photograph, not a drawing


def test_claims_are_found_in_ordinary_language(annotated):
    examples, out = annotated
    per_pair = []
    for pair, report in zip(PAIRS, out.reports, strict=True):
        got = {side: [(c.type.value, c.subject) for c in report.claims if c.response is side] for side in Choice}
        assert got[Choice.A] == [(t, s) for t, s, _ in pair.claims_a], pair.a
        assert got[Choice.B] == [(t, s) for t, s, _ in pair.claims_b], pair.b
        assert report.claims, "every pair has claims"
        per_pair.append(len(report.claims))
    print(f"\nclaims per pair: {sum(per_pair) / len(per_pair):.2f} (min {min(per_pair)}, max {max(per_pair)}, total {sum(per_pair)})")
    assert sum(per_pair) >= 2 * len(PAIRS)


def test_uncheckable_object_words_are_reported(annotated):
    _, out = annotated
    by_pair = [report.coverage for report in out.reports]
    assert "dog" in by_pair[4][Choice.B].uncheckable and by_pair[4][Choice.B].claims == 0  # "a brown dog": no CPU expert sees dogs
    assert {"cup", "saucer", "spoon"} <= set(by_pair[8][Choice.A].uncheckable)
    assert "motorcycle" in by_pair[20][Choice.A].uncheckable
    for report in out.reports:
        for side, cov in report.coverage.items():
            mine = [c for c in report.claims if c.response is side]
            assert cov.claims == len(mine) and cov.covered == len(mine)  # the lexicon extracts only what some expert covers
            assert 0 <= cov.judged <= cov.covered
    words = sum(len(c.uncheckable) for r in out.reports for c in r.coverage.values())
    assert out.counts["uncheckable_words"] == words and out.counts["checkable_pairs"] == len(PAIRS)
    assert coverage(out.counts) == 1.0
    print(f"\nuncheckable object words: {words} over {2 * len(PAIRS)} responses; coverage {coverage(out.counts):.2f}")


def test_expert_verdicts_against_hand_labels(annotated):
    _, out = annotated
    right = judged = unverifiable = 0
    confident_wrong, misses = [], []
    for pair, report in zip(PAIRS, out.reports, strict=True):
        findings = claim_findings(report.claims, report.verdicts)
        truth = [h for _, _, h in pair.claims_a] + [h for _, _, h in pair.claims_b]
        claims = [c for c in report.claims if c.response is Choice.A] + [c for c in report.claims if c.response is Choice.B]
        for claim, holds in zip(claims, truth, strict=True):
            verdict, p = findings[claim.id]
            if verdict is VerdictLabel.UNVERIFIABLE:
                unverifiable += 1
                continue
            judged += 1
            ok = (verdict is VerdictLabel.SUPPORTED) == holds
            right += ok
            if not ok:
                misses.append((pair.image, claim.span, verdict.value, p))
                if p >= 0.85:
                    confident_wrong.append(misses[-1])
    accuracy = right / judged
    print(f"\nverdict accuracy vs hand labels {right}/{judged} = {accuracy:.3f}; unverifiable {unverifiable}")
    for miss in misses:
        print("  miss:", miss)
    assert unverifiable == 0
    assert not confident_wrong, confident_wrong
    assert all(p <= 0.8 for *_, p in misses)
    assert accuracy >= 0.70  # measured 0.737 (42/57): Haar misses Chelsea's cat face and the cameraman, HOG sees a person in a launch tower


def _label_accuracy(pairs) -> tuple[float, float, float]:
    right = sum(p.label is not None and p.label.value == q.better for p, q in zip(pairs, PAIRS, strict=True))
    kept = sum(p.label is not None for p in pairs)
    return right / len(pairs), kept / len(pairs), right / max(kept, 1)


def test_refinement_fixes_wrong_human_labels_where_the_experts_are_confident(annotated):
    examples, out = annotated
    human = sum(p.human == p.better for p in PAIRS) / len(PAIRS)
    overall, kept, among_kept = _label_accuracy(out.pairs)
    flips = [(q, p) for q, p in zip(PAIRS, out.pairs, strict=True) if p.source is LabelSource.EXPERT_OVERRIDE]
    print(
        f"\nhuman labels right {human:.3f}; refined (defaults, flip_threshold 1.0): right {overall:.3f} of all, "
        f"kept {kept:.3f}, right among kept {among_kept:.3f}; flips {len(flips)}"
    )
    assert human == 0.5
    assert flips and all(p.label.value == q.better != q.human for q, p in flips)  # every flip fixes a wrong label
    assert {PAIRS.index(q) for q, _ in flips} >= {1, 9}  # "no person" on the astronaut; invented text on the coffee cup
    assert overall > human and among_kept > human
    # No confident expert preference keeps a wrong human label: it is flipped or dropped.
    for q, p, report in zip(PAIRS, out.pairs, out.reports, strict=True):
        gap = abs(report.hallucination[Choice.A] - report.hallucination[Choice.B])
        if report.expert_preference is not None and report.expert_preference.value == q.better and gap >= 1.0:
            assert p.label is not None and p.label.value == q.better

    # A lower threshold flips more, including the HOG false positive on the rocket's tower.
    lower = [refine(ex, report, RefinementSettings(flip_threshold=0.5)) for ex, report in zip(examples, out.reports, strict=True)]
    overall_05, kept_05, among_05 = _label_accuracy(lower)
    print(f"refined (flip_threshold 0.5): right {overall_05:.3f} of all, kept {kept_05:.3f}, right among kept {among_05:.3f}")
    assert overall_05 > overall
