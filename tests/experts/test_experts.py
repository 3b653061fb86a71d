"""Vision experts: the colour/shape detector, OCR, OpenCV faces/people, OWLv2's code path, and
the registry that routes claims to them."""

from __future__ import annotations

import itertools
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.experts.conftest import DATA, render_scene
from vlgenrm.contracts import Claim, ClaimType, ExpertVerdict, VerdictLabel
from vlgenrm.errors import ConfigError
from vlgenrm.experts.base import Detection, Expert, InvalidImageError, as_rgb
from vlgenrm.experts.colour_shape import ColourShapeExpert
from vlgenrm.experts.config import ColourShapeConfig, ExpertsSettings, OCRConfig, OpenCVConfig, OpenVocabConfig
from vlgenrm.experts.registry import ExpertRegistry, default_registry
from vlgenrm.synth.vocab import COLOURS, SHAPES

S, C, U = VerdictLabel.SUPPORTED, VerdictLabel.CONTRADICTED, VerdictLabel.UNVERIFIABLE
_ids = itertools.count()


def claim(type: str, subject: str = "sign", *, count: int | None = None, attribute: str | None = None, text: str | None = None) -> Claim:
    return Claim(id=f"c{next(_ids)}", response="A", type=ClaimType(type), subject=subject, count=count, attribute=attribute, text=text)


def by_id(verdicts: list[ExpertVerdict]) -> dict[str, ExpertVerdict]:
    return {v.claim_id: v for v in verdicts}


@pytest.fixture(scope="module")
def shapes() -> ColourShapeExpert:
    return ColourShapeExpert()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.open(DATA / "astronaut.jpg").convert("RGB"))


# -- colour / shape ---------------------------------------------------------------------------------
def test_colour_shape_detection_accuracy(shapes):
    """Every rendered shape found with the right shape and colour, nothing else found."""
    rng = np.random.default_rng(2024)
    total = correct = false_pos = 0
    confusions: Counter = Counter()
    for _ in range(150):
        scene = render_scene(rng)
        dets = shapes.detect(scene.image)
        assert dets is not None
        unused = list(range(len(dets)))
        for obj in scene.objects:
            total += 1
            hit = next((j for j in unused if dets[j].box[0] - 2 <= obj.cx <= dets[j].box[2] + 2 and dets[j].box[1] - 2 <= obj.cy <= dets[j].box[3] + 2), None)
            if hit is None:
                confusions[(obj.shape, obj.colour, "missed")] += 1
                continue
            unused.remove(hit)
            got = (dets[hit].label, dets[hit].attributes["colour"])
            correct += got == (obj.shape, obj.colour)
            if got != (obj.shape, obj.colour):
                confusions[(obj.shape, obj.colour, got)] += 1
        false_pos += len(unused)
    accuracy = correct / (total + false_pos)
    print(f"colour/shape detection: {correct}/{total} objects right, {false_pos} false positives, accuracy {accuracy:.4f}")
    assert total >= 300
    assert accuracy >= 0.98, confusions.most_common(5)


def test_colour_shape_each_shape_and_colour(shapes):
    """All 24 shape x colour combinations, in scenes with a sign."""
    rng = np.random.default_rng(7)
    combos = [(s, c) for s in SHAPES for c in COLOURS]
    for start in range(0, len(combos), 4):
        scene = render_scene(rng, objects=combos[start : start + 4], sign=True)
        dets = shapes.detect(scene.image)
        assert sorted((d.label, d.attributes["colour"]) for d in dets) == sorted(combos[start : start + 4])
        assert all(d.score == pytest.approx(0.95) and not d.marginal for d in dets)


def test_sign_is_not_a_shape(shapes):
    rng = np.random.default_rng(3)
    scene = render_scene(rng, objects=[], sign=True)
    assert shapes.detect(scene.image) == []
    v = shapes.verify(scene.image, [claim("existence", "square")])[0]
    assert (v.verdict, v.confidence) == (C, 0.95)
    # a sign touching two sides of the image (the renderer keeps shapes 3 px off the edges)
    img = Image.new("RGB", (224, 224), (240, 240, 232))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 170, 70], fill=(255, 255, 255), outline=(25, 25, 25), width=2)
    draw.text((12, 8), "TAXI", fill=(25, 25, 25), font=ImageFont.load_default(size=44))
    draw.rectangle([150, 150, 200, 200], fill=COLOURS["orange"])
    assert [(d.label, d.attributes["colour"]) for d in shapes.detect(np.asarray(img))] == [("square", "orange")]


def test_colour_shape_verdicts_on_a_known_scene(shapes):
    scene = render_scene(
        np.random.default_rng(11), objects=[("circle", "red"), ("circle", "red"), ("square", "blue"), ("star", "yellow"), ("triangle", "purple")], sign=True
    )
    cases = [
        (claim("existence", "circle", attribute="red"), S),
        (claim("existence", "circle"), S),
        (claim("existence", "circle", attribute="green"), C),
        (claim("existence", "circles", attribute="crimson"), S),  # plural + colour synonym
        (claim("existence", "disc"), S),  # shape synonym
        (claim("attribute", "square", attribute="blue"), S),
        (claim("attribute", "square", attribute="orange"), C),
        (claim("count", "circle", count=2), S),
        (claim("count", "circle", count=3, attribute="red"), C),
        (claim("count", "star", count=1, attribute="yellow"), S),
        (claim("count", "square", count=0), C),
        (claim("negated_existence", "triangle", attribute="green"), S),
        (claim("negated_existence", "triangle"), C),
        (claim("negated_existence", "square", attribute="blue"), C),
        (claim("existence", "star", attribute="violet"), C),
    ]
    verdicts = shapes.verify(scene.image, [c for c, _ in cases])
    assert len(verdicts) == len(cases)
    for (c, want), v in zip(cases, verdicts, strict=True):
        assert v.claim_id == c.id and v.expert == "colour_shape"
        assert v.verdict is want, (c, v)
        assert v.confidence == pytest.approx(0.95)
    supported_red = verdicts[0]
    assert len(supported_red.evidence) == 2 and all(e.label == "red circle" and e.box is not None for e in supported_red.evidence)


def test_colour_shape_verdicts_over_random_scenes(shapes):
    """True and false existence, count and negation claims built from the ground truth."""
    rng = np.random.default_rng(99)
    right = total = 0
    for _ in range(40):
        scene = render_scene(rng)
        truth = Counter((o.shape, o.colour) for o in scene.objects)
        per_shape = Counter(o.shape for o in scene.objects)
        cases = []
        for shape in SHAPES:
            cases += [(claim("existence", shape), S if per_shape[shape] else C), (claim("negated_existence", shape), C if per_shape[shape] else S)]
            cases += [(claim("count", shape, count=per_shape[shape]), S), (claim("count", shape, count=per_shape[shape] + 1), C)]
            for colour in COLOURS:
                n = truth[(shape, colour)]
                cases += [(claim("existence", shape, attribute=colour), S if n else C), (claim("negated_existence", shape, attribute=colour), C if n else S)]
                if n:
                    cases += [(claim("count", shape, count=n, attribute=colour), S), (claim("count", shape, count=n - 1, attribute=colour), C)]
        verdicts = shapes.verify(scene.image, [c for c, _ in cases])
        total += len(cases)
        right += sum(v.verdict is want for (_, want), v in zip(cases, verdicts, strict=True))
    assert right / total >= 0.99, f"{right}/{total}"


def test_experts_on_the_synthetic_renderer(shapes, ocr):
    """The real renderer of §7 (vlgenrm.synth.scene) and its ground-truth oracle."""
    import io
    import random

    from vlgenrm.synth.scene import claim_holds, random_scene, render

    rng = random.Random(5)
    right = total = 0
    for i in range(60):
        scene = random_scene(rng, size=rng.choice([192, 224, 256]))
        image = np.asarray(Image.open(io.BytesIO(render(scene))).convert("RGB"))
        claims = [claim(t, s, attribute=c) for s in SHAPES for c in (None, *COLOURS) for t in ("existence", "negated_existence")]
        claims += [claim("count", s, count=n) for s in SHAPES for n in range(4)]
        if i % 10 == 0:  # OCR is the slow part: every tenth scene
            claims += [claim("text", "text", text=scene.sign or "STOP"), claim("text", "text", text="TAXI" if scene.sign != "TAXI" else "BANK")]
            claims += [claim("negated_existence", "text")]
        ids = {c.id: c for c in claims}
        for v in ExpertRegistry([shapes, ocr]).verify(image, claims):
            assert v.verdict is not U or ids[v.claim_id].type is ClaimType.TEXT  # text claims on a sign-less scene
            if v.verdict is not U:
                total += 1
                right += (v.verdict is S) == claim_holds(ids[v.claim_id], scene)
    print(f"verdicts on the synthetic renderer: {right}/{total} right")
    assert total >= 60 * 72 and right / total >= 0.99, f"{right}/{total}"


def test_colour_shape_coverage(shapes):
    assert shapes.covers(claim("existence", "square"))
    assert shapes.covers(claim("attribute", "star", attribute="gold"))
    assert not shapes.covers(claim("existence", "dog"))
    assert not shapes.covers(claim("existence", "square", attribute="large"))  # not a colour
    assert not shapes.covers(claim("text", "sign", text="STOP"))


def test_marginal_detections_lower_confidence(shapes):
    """A verdict that a marginal detection's runner-up reading could change gets that detection's score."""
    box = (0.0, 0.0, 30.0, 30.0)
    clear = Detection(label="circle", box=box, score=0.95, attributes={"colour": "red"})
    unsure = Detection(label="circle", box=box, score=0.6, attributes={"colour": "red"}, alternatives={"label": "square"})
    dets = [clear, unsure]
    v = shapes.judge(claim("existence", "circle"), dets)
    assert (v.verdict, v.confidence) == (S, 0.95)  # holds whatever the marginal one is
    v = shapes.judge(claim("existence", "square"), dets)
    assert (v.verdict, v.confidence) == (C, 0.6)
    v = shapes.judge(claim("count", "circle", count=2), dets)
    assert (v.verdict, v.confidence) == (S, 0.6)
    v = shapes.judge(claim("count", "circle", count=5), dets)
    assert (v.verdict, v.confidence) == (C, 0.95)  # 1 or 2 circles: never 5
    colour_unsure = Detection(label="star", box=box, score=0.7, attributes={"colour": "red"}, alternatives={"colour": "orange"})
    v = shapes.judge(claim("negated_existence", "star", attribute="orange"), [colour_unsure, unsure])
    assert (v.verdict, v.confidence) == (S, 0.7)
    v = shapes.judge(claim("count", "star", count=1), [colour_unsure, unsure])
    assert (v.verdict, v.confidence) == (S, 0.95)  # its shape is certain


def test_colour_shape_marks_ambiguous_blobs_marginal(shapes):
    img = Image.new("RGB", (200, 200), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    draw.regular_polygon((60, 60, 40), 6, fill=COLOURS["green"])  # a hexagon: between circle and square
    draw.ellipse((120, 120, 170, 170), fill=(183, 90, 25))  # between red and orange... and off-palette
    dets = shapes.detect(np.asarray(img))
    assert len(dets) == 2 and all(d.marginal and d.score < 0.95 for d in dets)


def test_colour_shape_out_of_domain_is_unverifiable(shapes, astronaut):
    verdicts = shapes.verify(astronaut, [claim("existence", "circle"), claim("count", "square", count=0)])
    assert [(v.verdict, v.confidence) for v in verdicts] == [(U, 0.0), (U, 0.0)]


def test_images_are_validated(shapes):
    grey = np.full((64, 64), 250, np.uint8)
    assert as_rgb(grey).shape == (64, 64, 3)
    assert as_rgb(Image.new("RGBA", (8, 8))).shape == (8, 8, 3)
    with pytest.raises(InvalidImageError):
        shapes.verify(np.zeros((64, 64, 3), np.float32), [claim("existence", "circle")])
    with pytest.raises(InvalidImageError):
        shapes.verify("image.png", [claim("existence", "circle")])


# -- OCR --------------------------------------------------------------------------------------------
def text_image(*words: str, size: tuple[int, int] = (360, 240)) -> np.ndarray:
    img = Image.new("RGB", size, (245, 245, 240))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=40)
    for i, word in enumerate(words):
        draw.rectangle([30, 20 + 90 * i, 210, 90 + 90 * i], fill="white", outline=(60, 60, 60), width=2)
        draw.text((45, 32 + 90 * i), word, fill=(20, 20, 20), font=font)
    draw.ellipse([260, 150, 320, 210], fill=COLOURS["red"])
    return np.asarray(img)


@pytest.fixture(scope="module")
def ocr():
    from vlgenrm.experts.ocr import OCRExpert

    return OCRExpert(OCRConfig(engines=["rapidocr"]))


def test_ocr_reads_rendered_signs(ocr):
    image = text_image("STOP", "OPEN")
    claims = [claim("text", text="STOP"), claim("text", text="open"), claim("text", text=" o p e n "), claim("text", text="EXIT"), claim("text", text="SALE!")]
    verdicts = ocr.verify(image, claims)
    assert [v.verdict for v in verdicts] == [S, S, S, C, C]
    assert all(v.expert == "ocr" for v in verdicts)
    assert verdicts[0].confidence >= 0.9 and verdicts[3].confidence >= 0.9
    assert {e.text for e in verdicts[3].evidence} == {"STOP", "OPEN"}
    assert all(e.box is not None for e in verdicts[3].evidence)


def test_ocr_near_miss_and_nothing_readable(ocr):
    v = ocr.verify(text_image("STOP"), [claim("text", text="STOPS")])[0]
    assert v.verdict is C and v.confidence < 0.3  # one letter off: likely a misreading, weak
    blank = np.full((120, 200, 3), 250, np.uint8)
    v = ocr.verify(blank, [claim("text", text="STOP")])[0]
    # "the sign says STOP" implies visible text; none was read, so it is contradicted, moderately.
    assert (v.verdict, v.confidence, v.evidence) == (C, 0.7, [])


def test_ocr_text_presence(ocr):
    """'no text is visible' / 'there is a sign': did OCR read anything?"""
    assert ocr.covers(claim("negated_existence", "text")) and ocr.covers(claim("existence", "sign"))
    assert not ocr.covers(claim("existence", "circle")) and not ocr.covers(claim("existence", "sign", attribute="red"))
    with_sign = ocr.verify(text_image("EXIT"), [claim("negated_existence", "text"), claim("existence", "sign")])
    assert [(v.verdict, v.confidence >= 0.9) for v in with_sign] == [(C, True), (S, True)]
    assert with_sign[1].evidence[0].text == "EXIT"
    blank = ocr.verify(np.full((120, 200, 3), 250, np.uint8), [claim("negated_existence", "text"), claim("existence", "text")])
    assert [(v.verdict, v.confidence) for v in blank] == [(S, 0.7), (C, 0.7)]


def test_ocr_text_comparison():
    from vlgenrm.experts.ocr import canonical_text, edit_distance, similarity

    assert canonical_text("  St0p !\n") == canonical_text("STOP") == "STOP"
    assert canonical_text("Caf e") == "CAFE"
    assert edit_distance("STOP", "OPEN") == 4 and similarity("STOP", "STOP") == 1.0 and similarity("STOP", "OPEN") == 0.0


def test_ocr_parses_tesseract_tsv():
    from vlgenrm.experts.ocr import OCRExpert

    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
        "4\t1\t1\t1\t1\t0\t62\t86\t98\t28\t-1\t\n"
        "5\t1\t1\t1\t1\t1\t62\t86\t50\t28\t96.5\tOPEN\n"
        "5\t1\t1\t1\t1\t2\t120\t86\t40\t28\t90.5\tNOW\n"
        "5\t1\t2\t1\t1\t1\t10\t10\t20\t10\t5.0\tx~\n"
    )
    [line] = OCRExpert(OCRConfig(engines=["rapidocr"]))._parse_tsv(tsv)
    assert (line.text, line.box, line.source) == ("OPEN NOW", (62.0, 86.0, 160.0, 114.0), "tesseract")
    assert line.score == pytest.approx(0.935)


def test_ocr_without_tesseract_binary():
    from vlgenrm.experts.ocr import OCRExpert

    expert = OCRExpert(OCRConfig(tesseract_cmd="/nonexistent/tesseract"))
    assert expert.engines == ["rapidocr"]


def test_tesseract_votes_where_installed():
    from vlgenrm.experts.ocr import OCRExpert

    assert shutil.which("tesseract"), "tesseract is missing: run scripts/install-system-deps.sh (make test does)"

    image = text_image("STOP")
    alone = OCRExpert(OCRConfig(engines=["tesseract"]))
    v = alone.verify(image, [claim("text", text="STOP"), claim("text", text="PARK")])
    assert [x.verdict for x in v] == [S, C]
    both = OCRExpert(OCRConfig())
    assert both.engines == ["rapidocr", "tesseract"]
    v = both.verify(image, [claim("text", text="PARK")])[0]
    assert v.verdict is C and {e.label for e in v.evidence} == {"text (rapidocr)", "text (tesseract)"}


# -- OpenCV -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def opencv():
    from vlgenrm.experts.opencv import OpenCVExpert

    return OpenCVExpert(OpenCVConfig(enabled=True))


def test_opencv_finds_the_astronauts_face(opencv, astronaut):
    faces = [d for d in opencv.detect(astronaut, [claim("existence", "face")]) if d.label == "face"]
    assert len(faces) >= 1
    x0, y0, x1, y1 = faces[0].box
    assert 0 <= x0 < x1 <= astronaut.shape[1] and 0 <= y0 < y1 <= astronaut.shape[0] and x1 - x0 >= 24
    cases = [
        claim("existence", "face"),
        claim("existence", "people"),
        claim("negated_existence", "person"),
        claim("count", "faces", count=1),
        claim("existence", "cat"),
    ]
    v = opencv.verify(astronaut, cases)
    assert [x.verdict for x in v] == [S, S, C, S, C]
    assert v[0].confidence >= 0.75 and v[0].evidence and v[0].evidence[0].box is not None
    assert v[3].confidence == 0.5  # counts are unreliable
    assert v[4].confidence == 0.4  # absence is weak evidence


def test_opencv_absence_is_weak_evidence(opencv):
    blank = np.full((240, 320, 3), 200, np.uint8)
    v = opencv.verify(blank, [claim("existence", "face"), claim("negated_existence", "people")])
    assert [(x.verdict, x.confidence) for x in v] == [(C, 0.4), (S, 0.4)]


def test_opencv_coverage(opencv):
    assert opencv.labels == frozenset({"face", "person", "cat"})
    assert opencv.covers(claim("count", "people", count=2)) and opencv.covers(claim("existence", "kitten"))
    assert not opencv.covers(claim("existence", "face", attribute="smiling"))
    assert not opencv.covers(claim("attribute", "cat", attribute="black"))
    assert not opencv.covers(claim("existence", "circle"))
    from vlgenrm.experts.opencv import OpenCVExpert

    only_cats = OpenCVExpert(OpenCVConfig(faces=False, people=False))
    assert only_cats.labels == frozenset({"cat"}) and not only_cats.covers(claim("existence", "person"))


# -- registry ---------------------------------------------------------------------------------------
class CountingExpert(Expert):
    """Covers 'circle' existence claims, like the colour/shape expert; counts detection passes."""

    claim_types = frozenset({ClaimType.EXISTENCE})
    labels = frozenset({"circle"})

    def __init__(self, name: str) -> None:
        self.name, self.passes = name, 0

    def detect(self, image, claims):
        self.passes += 1
        return []

    def judge(self, claim, detections):
        return self.verdict(claim, VerdictLabel.CONTRADICTED, 0.5)


def test_registry_routes_claims_and_passes_once_per_image(shapes, ocr, monkeypatch):
    passes: Counter = Counter()
    for expert in (shapes, ocr):
        original = expert.detect_many

        def counting(images, claims, _original=original, _name=expert.name):
            passes[_name] += len(images)  # one detection pass per image handed over
            return _original(images, claims)

        monkeypatch.setattr(expert, "detect_many", counting)
    spare = CountingExpert("spare")
    registry = ExpertRegistry([shapes, ocr, spare])
    scene = render_scene(np.random.default_rng(5), objects=[("circle", "red"), ("square", "green")], word="CAFE")
    circle, square, text, dog, cat_count = (
        claim("existence", "circle", attribute="red"), claim("count", "square", count=1), claim("text", text="CAFE"),
        claim("existence", "dog"), claim("count", "cat", count=2),
    )  # fmt: skip
    claims = [circle, square, text, dog, cat_count]
    assert [e.name for e in registry.experts_for(circle)] == ["colour_shape", "spare"]
    assert [e.name for e in registry.experts_for(text)] == ["ocr"]
    assert registry.experts_for(dog) == []

    verdicts = registry.verify(scene.image, claims)
    assert [(v.claim_id, v.expert, v.verdict) for v in verdicts] == [
        (circle.id, "colour_shape", S), (circle.id, "spare", C), (square.id, "colour_shape", S), (text.id, "ocr", S),
    ]  # fmt: skip
    assert passes == {"colour_shape": 1, "ocr": 1} and spare.passes == 1

    # several images: still one pass per image per expert (the first image is remembered);
    # images with nothing covered are skipped
    other = render_scene(np.random.default_rng(6), objects=[("star", "blue")]).image
    out = registry.verify_many([(scene.image, claims), (other, [claim("existence", "star")]), (other, [dog])])
    assert [len(v) for v in out] == [4, 1, 0]
    assert passes == {"colour_shape": 2, "ocr": 1} and spare.passes == 1


def test_registry_names_and_duplicates():
    registry = ExpertRegistry([CountingExpert("a")])
    with pytest.raises(ConfigError):
        registry.register(CountingExpert("a"))
    registry.register(CountingExpert("b"))
    assert registry.names == ["a", "b"] and "b" in registry and len(registry) == 2
    assert registry.unregister("a").name == "a" and registry.names == ["b"]


def test_default_registry_from_settings():
    assert default_registry().names == ["colour_shape", "ocr"]
    assert default_registry({"opencv": {"enabled": True}, "ocr": {"enabled": False}}).names == ["colour_shape", "opencv"]

    class WithExperts:
        experts = ExpertsSettings(colour_shape=ColourShapeConfig(enabled=False))

    assert default_registry(WithExperts()).names == ["ocr"]
    with pytest.raises(ValueError, match="bogus"):
        default_registry({"colour_shape": {"bogus": 1}})
    with pytest.raises(ConfigError):
        default_registry(42)


# -- open vocabulary (OWLv2 code path on a tiny random model) ---------------------------------------
@pytest.fixture(scope="module")
def owl(tiny_owlv2):
    from vlgenrm.experts.open_vocab import OpenVocabExpert

    return OpenVocabExpert(OpenVocabConfig(enabled=True, model=str(tiny_owlv2), device="cpu", threshold=0.0, batch_size=2))


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [render_scene(rng).image for _ in range(n)]


def _claims(i: int) -> list[Claim]:
    pool = [claim("existence", "cat"), claim("count", "people", count=2), claim("attribute", "circle", attribute="crimson"), claim("negated_existence", "dogs")]
    return pool[: 1 + i % 4]


def test_owl_runs_and_maps_labels(owl):
    images = _images(3)
    dets = owl.detect(images[2], _claims(2))
    assert {(d.label, d.attributes.get("colour"), d.attributes["query"]) for d in dets} == {
        ("cat", None, "a photo of a cat"),
        ("person", None, "a photo of a person"),  # 'people' -> person
        ("circle", "red", "a photo of a red circle"),  # colour synonym folded
    }
    h, w = images[2].shape[:2]
    assert all(0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h for d in dets)
    claims = _claims(3)
    verdicts = owl.verify(images[0], claims)
    assert [v.claim_id for v in verdicts] == [c.id for c in claims]
    assert all(v.expert == "open_vocab" and v.verdict in (S, C) for v in verdicts)


def test_owl_batched_equals_one_by_one(owl):
    images = _images(5)
    claims = [_claims(i) for i in range(5)]
    batched = owl.detect_many(images, claims)  # batch_size=2: batches of 2, 2, 1 with padded queries
    for image, cs, together in zip(images, claims, batched, strict=True):
        alone = owl.detect(image, cs)
        assert [(d.label, d.attributes) for d in together] == [(d.label, d.attributes) for d in alone]
        assert np.allclose([d.score for d in together], [d.score for d in alone], atol=1e-5)
        assert np.allclose([d.box for d in together], [d.box for d in alone], atol=1e-3)


def test_owl_respects_threshold(tiny_owlv2, owl):
    from vlgenrm.experts.open_vocab import OpenVocabExpert

    image, claims = _images(1)[0], _claims(3)
    everything = owl.detect(image, claims)
    assert everything
    cut = float(np.median([d.score for d in everything]))
    strict = OpenVocabExpert(OpenVocabConfig(model=str(tiny_owlv2), device="cpu", threshold=cut), model=owl.model, processor=owl.processor)
    kept = strict.detect(image, claims)
    assert all(d.score > cut for d in kept) and len(kept) < len(everything)
    none = OpenVocabExpert(OpenVocabConfig(model=str(tiny_owlv2), device="cpu", threshold=1.0), model=owl.model, processor=owl.processor)
    verdicts = none.verify(image, claims)
    assert [v.verdict for v in verdicts] == [C, C, C, S]  # nothing found: count 2 people wrong, 'no dogs' right
    assert [v.confidence for v in verdicts] == [0.5, 0.6, 0.5, 0.5]


def test_owl_coverage_and_config(tiny_owlv2, owl):
    from vlgenrm.experts.open_vocab import OpenVocabExpert

    assert owl.covers(claim("existence", "giraffe")) and not owl.covers(claim("text", text="STOP"))
    limited = OpenVocabExpert(OpenVocabConfig(model=str(tiny_owlv2), labels=["dog", "person"]), model=owl.model, processor=owl.processor)
    assert limited.covers(claim("count", "people", count=3)) and not limited.covers(claim("existence", "cat"))
    with pytest.raises(ConfigError):
        OpenVocabExpert(OpenVocabConfig(model=str(tiny_owlv2 / "missing")))


def test_owl_image_backend_choice(tiny_owlv2, owl, monkeypatch):
    from vlgenrm.experts import open_vocab

    monkeypatch.setattr(open_vocab, "_scipy_available", lambda: False)
    cfg = dict(model=str(tiny_owlv2), device="cpu")
    assert open_vocab.OpenVocabExpert(OpenVocabConfig(**cfg), model=owl.model, processor=owl.processor).image_backend == "builtin"
    with pytest.raises(ConfigError):
        open_vocab.OpenVocabExpert(OpenVocabConfig(**cfg, image_backend="processor"), model=owl.model, processor=owl.processor)


def test_owl_builtin_preprocessing_matches_the_processor(owl):
    pytest.importorskip("scipy")
    from vlgenrm.experts.open_vocab import owl_pixel_values

    images = _images(2) + [np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)]
    ref = owl.processor.image_processor(images=[Image.fromarray(i) for i in images], return_tensors="np")["pixel_values"]
    assert np.abs(owl_pixel_values(images, owl.processor.image_processor) - ref).max() < 1e-4


def test_owl_through_the_registry(owl, shapes):
    registry = ExpertRegistry([shapes, owl])
    scene = render_scene(np.random.default_rng(8), objects=[("circle", "red")])
    c = claim("existence", "circle", attribute="red")
    verdicts = registry.verify(scene.image, [c, claim("existence", "giraffe")])
    assert [v.expert for v in verdicts] == ["colour_shape", "open_vocab", "open_vocab"]
    assert verdicts[0].verdict is S and verdicts[0].confidence == 0.95


def test_bundled_test_image_is_small():
    files = [p for p in Path(DATA).iterdir() if p.suffix in {".jpg", ".png"}]
    assert files and all(p.stat().st_size <= 150_000 for p in files)


def test_detection_passes_are_memoised_per_image_and_claims_where_they_matter():
    """A later iteration (or arm, or seed) verifying the same image pays no second pass; an
    expert whose detections depend on the claims runs again when the claims differ."""
    scene = render_scene(np.random.default_rng(7), objects=[("circle", "red")], word=None)
    other = render_scene(np.random.default_rng(8), objects=[("circle", "blue")], word=None)
    red, blue = claim("existence", "circle", attribute="red"), claim("existence", "circle", attribute="blue")
    plain = CountingExpert("plain")
    plain.verify(scene.image, [red])
    plain.verify(scene.image.copy(), [blue])  # same pixels, other claims, other array
    plain.verify_many([(scene.image, [red]), (other.image, [red]), (other.image, [blue])])
    assert plain.passes == 2

    queried = CountingExpert("queried")
    queried.uses_claims = True
    queried.verify(scene.image, [red])
    queried.verify(scene.image, [red])
    queried.verify(scene.image, [blue])
    assert queried.passes == 2

    small = CountingExpert("small")
    small.memo_size = 1
    for image in (scene.image, other.image, scene.image):
        small.verify(image, [red])
    assert small.passes == 3  # the first image was dropped when the second came
    verdicts = small.verify(scene.image, [red, blue])
    assert [v.claim_id for v in verdicts] == [red.id, blue.id]
