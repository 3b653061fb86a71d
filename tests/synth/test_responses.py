"""Writers vs. extractor: every sentence parses; faithful claims are all true, hallucinated
responses carry a false claim of the intended kind."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from vlgenrm.contracts import Choice, ClaimType
from vlgenrm.experts.claims import LexiconClaimExtractor
from vlgenrm.synth.responses import (
    COMPATIBLE,
    QuestionKind,
    random_question,
    write_faithful,
    write_hallucinated,
)
from vlgenrm.synth.scene import claim_holds, random_scene
from vlgenrm.synth.vocab import HallucinationType

from .truth import is_true

EXTRACTOR = LexiconClaimExtractor()
SENTENCE = re.compile(r"[^.!?]+[.!?]")


def check_pair(seed: int, kind: HallucinationType) -> tuple[str, str]:
    rng = random.Random(seed)
    scene = random_scene(rng, text_probability=0.5)
    question = random_question(rng, scene, kind)
    assert question.kind in COMPATIBLE[kind]
    good = write_faithful(scene, question, rng)
    bad = write_hallucinated(scene, question, kind, rng)
    for text in (good, bad.text):
        for sentence in SENTENCE.findall(text):
            assert EXTRACTOR.extract(sentence, Choice.A, "s"), f"no claim parsed from {sentence!r}"
    claims = EXTRACTOR.extract(good, Choice.A, "g")
    assert claims, good
    for claim in claims:
        assert is_true(claim, scene), (good, claim, scene)
        assert claim_holds(claim, scene)
    false = [c for c in EXTRACTOR.extract(bad.text, Choice.B, "b") if not is_true(c, scene)]
    assert false, (bad.text, scene)
    for claim in false:
        assert not claim_holds(claim, scene)
    # The false claim is of the intended kind.
    if kind is HallucinationType.WRONG_TEXT:
        assert any(c.type is ClaimType.TEXT for c in false)
    elif kind is HallucinationType.WRONG_OBJECT:
        assert any(scene.find(c.subject) is None for c in false)
    elif kind is HallucinationType.WRONG_COLOUR:
        assert any((o := scene.find(c.subject)) and c.attribute not in (None, o.colour) for c in false)
    else:
        assert any(c.type is ClaimType.COUNT and (o := scene.find(c.subject)) and c.count != o.count for c in false)
    return good, bad.text


def test_four_hundred_pairs_parse_and_match_the_truth():
    seen_kinds, texts = set(), []
    for seed in range(100):
        for kind in HallucinationType:
            texts += check_pair(seed * 7 + 1, kind)
            seen_kinds.add(kind)
    assert len(texts) == 800 and seen_kinds == set(HallucinationType)
    corpus = " ".join(texts)
    # The writers really vary their phrasing.
    for needle in (
        "There are",
        "I can see",
        "The image shows",
        " a ",
        " an ",
        "two",
        "2 ",
        "There is no",
        "sign says",
        "text reads",
        '"',
        "No text is visible",
    ):
        assert needle in corpus, needle
    assert re.search(r"\b(crimson|scarlet|navy|violet|gold|lime)\b", corpus)
    assert re.search(r"\b(discs?|disks?|dots?|box(es)?|rectangles?)\b", corpus)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), kind=st.sampled_from(list(HallucinationType)))
def test_property_any_seed(seed, kind):
    check_pair(seed, kind)


def test_questions_fit_their_hallucination():
    rng = random.Random(3)
    scene = random_scene(rng)
    for _ in range(50):
        q = random_question(rng, scene, HallucinationType.WRONG_TEXT)
        assert q.kind in (QuestionKind.DESCRIBE, QuestionKind.SIGN)
        q = random_question(rng, scene, HallucinationType.WRONG_COUNT)
        if q.kind is QuestionKind.COUNT:
            assert scene.find(q.shape or "") is not None and q.shape in q.text


def test_same_rng_same_text():
    def write(seed: int) -> tuple[str, str]:
        rng = random.Random(seed)
        scene = random_scene(rng)
        q = random_question(rng, scene, HallucinationType.WRONG_COLOUR)
        return write_faithful(scene, q, rng), write_hallucinated(scene, q, HallucinationType.WRONG_COLOUR, rng).text

    assert write(11) == write(11)
