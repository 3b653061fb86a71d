"""LexiconClaimExtractor: the grammar of §3.1 over the synthetic vocabulary."""

from __future__ import annotations

import pytest

from vlgenrm.contracts import Choice, ClaimType, Example, ImageRef
from vlgenrm.experts.claims import ClaimExtractor, LexiconClaimExtractor

X = LexiconClaimExtractor()
E, C, N, T = ClaimType.EXISTENCE, ClaimType.COUNT, ClaimType.NEGATED_EXISTENCE, ClaimType.TEXT


def summary(text: str) -> list[tuple]:
    """(type, subject, count, attribute, text) of each claim, in order."""
    return [(c.type, c.subject, c.count, c.attribute, c.text) for c in X.extract(text, Choice.A, "ex")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("There is a red circle.", [(E, "circle", None, "red", None)]),
        ("I see an orange star", [(E, "star", None, "orange", None)]),
        ("There is a circle.", [(E, "circle", None, None, None)]),
        ("There are two red circles and a blue square.", [(C, "circle", 2, "red", None), (E, "square", None, "blue", None)]),
        ("There is one green star.", [(C, "star", 1, "green", None)]),
        ("I count 3 stars.", [(C, "star", 3, None, None)]),
        ("Red circles everywhere", [(E, "circle", None, "red", None)]),
        # synonyms
        ("Two crimson discs, a navy box and 2 lime dots.", [(C, "circle", 2, "red", None), (E, "square", None, "blue", None), (C, "circle", 2, "green", None)]),
        ("three violet rectangles", [(C, "square", 3, "purple", None)]),
        ("A gold disk", [(E, "circle", None, "yellow", None)]),
        # plurals of -x words, case
        ("THERE ARE FOUR BOXES.", [(C, "square", 4, None, None)]),
        ("tWo ReD cIrClEs", [(C, "circle", 2, "red", None)]),
        # adjectives between quantifier and noun are skipped
        ("two small red circles", [(C, "circle", 2, "red", None)]),
        # negation
        ("There is no yellow triangle.", [(N, "triangle", None, "yellow", None)]),
        ("There are no stars.", [(N, "star", None, None, None)]),
        ("I see no stars or circles.", [(N, "star", None, None, None), (N, "circle", None, None, None)]),
        ("There isn't a blue square.", [(N, "square", None, "blue", None)]),
        ("I do not see any triangles", [(N, "triangle", None, None, None)]),
        ("0 stars", [(N, "star", None, None, None)]),
        ("There is no sign.", [(N, "text", None, None, None)]),
        ("No text is visible.", [(N, "text", None, None, None)]),
        # text
        ("The sign says STOP.", [(T, "text", None, None, "STOP")]),
        ("the text reads open", [(T, "text", None, None, "OPEN")]),
        ('A sign reads "exit".', [(T, "text", None, None, "EXIT")]),
        ("There is a sign that says Cafe.", [(T, "text", None, None, "CAFE")]),
        ("The sign shows the word SALE.", [(T, "text", None, None, "SALE")]),
        ("The image shows the word TAXI and two stars.", [(T, "text", None, None, "TAXI"), (C, "star", 2, None, None)]),
        ('The label reads "NO PARKING".', [(T, "text", None, None, "NO PARKING")]),
        # junk and unknown words: nothing, never an error
        ("", []),
        ("Lorem ipsum dolor sit amet.", []),
        ("There are two dogs and a purple hexagon.", []),
        ("The image shows something red.", []),
        ("!!! ... ;;; 42", []),
        ("The sign says nothing.", []),
    ],
)
def test_grammar(text, expected):
    assert summary(text) == expected


def test_ids_spans_and_response_are_deterministic():
    claims = X.extract("The sign says STOP. There are 2 Red Circles and no stars.", Choice.B, "pair-7")
    assert [c.id for c in claims] == ["pair-7-B-0", "pair-7-B-1", "pair-7-B-2"]
    assert [c.span for c in claims] == ["sign says STOP", "2 Red Circles", "no stars"]
    assert all(c.response is Choice.B for c in claims)
    assert claims == X.extract("The sign says STOP. There are 2 Red Circles and no stars.", Choice.B, "pair-7")


def test_extract_pair_prefixes_with_the_example_id():
    example = Example(
        id="e1",
        image=ImageRef(key="images/x.png", sha256="0" * 64),
        question="Describe the image.",
        response_a="A red circle.",
        response_b="Two blue squares. The sign says OPEN.",
    )
    claims = X.extract_pair(example)
    assert [c.id for c in claims] == ["e1-A-0", "e1-B-0", "e1-B-1"]
    assert isinstance(X, ClaimExtractor)


def test_claims_validate_as_contracts():
    for claim in X.extract("two red circles, a star, no squares. The sign reads BANK.", Choice.A, "v"):
        assert type(claim).model_validate_json(claim.to_json_bytes()) == claim


# -- open vocabulary: label spaces of the registered experts + the shipped noun list --------------
def _photo_extractor() -> LexiconClaimExtractor:
    """The label spaces of colour/shape, OCR and OpenCV (person, face, cat), as the registry declares them."""
    from vlgenrm.experts.registry import default_registry

    return LexiconClaimExtractor.for_registry(default_registry({"opencv": {"enabled": True}}))


PHOTO = _photo_extractor()


def photo(text: str) -> tuple[list[tuple], list[str]]:
    out = PHOTO.analyse(text, Choice.A, "ex")
    return [(c.type, c.subject, c.count, c.attribute, c.text) for c in out.claims], out.uncheckable


@pytest.mark.parametrize(
    ("text", "claims", "uncheckable"),
    [
        (
            "A woman in a white space suit smiles; behind her is a space shuttle and an American flag.",
            [(E, "person", None, None, None)],
            ["space suit", "space shuttle", "flag"],
        ),
        ("Two cats sit on a red sofa next to a dog.", [(C, "cat", 2, None, None)], ["couch", "dog"]),
        ("Two sleeping tabby cats lie on a rug.", [(C, "cat", 2, None, None)], ["rug"]),  # modifiers between number and noun
        ("Both women wear helmets.", [(C, "person", 2, None, None)], ["helmet"]),
        (
            "An orange cat. The cat is bright orange. I see an orange.",
            [(E, "cat", None, "orange", None), (E, "cat", None, "orange", None)],
            ["orange"],
        ),  # colour word vs noun
        ("A baby elephant eats cat food.", [], ["elephant", "food"]),  # a noun before a noun modifies it
        ("The cat's face fills the frame. A woman's face.", [(E, "cat", None, None, None), (E, "person", None, None, None), (E, "face", None, None, None)], []),
        (
            "A crowd of people watches the launch. A man faces the camera.",
            [(E, "person", None, None, None), (E, "person", None, None, None), (E, "person", None, None, None)],
            ["camera"],
        ),
        # negation, for any noun
        (
            "I don't see cats. There is no dog, without a hat. None of the kittens.",
            [(N, "cat", None, None, None), (N, "cat", None, None, None)],
            ["dog", "hat"],
        ),
        ("Neither a cat nor a person is visible.", [(N, "cat", None, None, None), (N, "person", None, None, None)], []),
        ("The woman is not wearing glasses.", [(E, "person", None, None, None)], ["eyeglasses"]),
        # visible text on any object: quoted, capitalised or after a text noun
        ("The tank says YAMAHA.", [(T, "text", None, None, "YAMAHA")], ["tank"]),
        ("The heading reads 'Region-based segmentation'.", [(T, "text", None, None, "REGION-BASED SEGMENTATION")], []),
        ('A mug printed with "I love NY".', [(T, "text", None, None, "I LOVE NY")], ["cup"]),
        ("A sign next to the cat says 'NO PETS'.", [(T, "text", None, None, "NO PETS"), (E, "cat", None, None, None)], []),
        ("The sign says NO PARKING.", [(T, "text", None, None, "NO PARKING")], []),
        ("The man reads books. The screen shows a dog.", [(E, "person", None, None, None)], ["book", "monitor", "dog"]),
        # synonyms from the open list reach the experts' labels; an alias is not chained ("a crate" is no square)
        ("A kitten, an astronaut and a crate.", [(E, "cat", None, None, None), (E, "person", None, None, None)], ["box"]),
        ("A box.", [(E, "square", None, None, None)], []),
    ],
)
def test_open_vocabulary_grammar(text, claims, uncheckable):
    assert photo(text) == (claims, uncheckable)


def test_label_spaces_decide_what_is_a_claim():
    from vlgenrm.experts.vocabulary import LabelSpace

    only_dogs = LexiconClaimExtractor([LabelSpace("dogs", frozenset({"dog"}), {"puppy": "dog"})])
    out = only_dogs.analyse("Two puppies and a cat. The sign says STOP.", Choice.A, "x")
    assert [(c.type, c.subject, c.count) for c in out.claims] == [(C, "dog", 2)]
    assert out.uncheckable == ["cat", "text"]  # no expert sees cats or reads text
    # An open space (OWLv2: labels None) covers every noun of the list.
    anything = LexiconClaimExtractor([LabelSpace("owl", None)])
    out = anything.analyse("Two cats sit on a red sofa next to a dog.", Choice.A, "x")
    assert [(c.type, c.subject, c.count, c.attribute) for c in out.claims] == [(C, "cat", 2, None), (E, "couch", None, "red"), (E, "dog", None, None)]
    assert out.uncheckable == []
    # No label space at all: nothing is a claim, every object is uncheckable.
    nothing = LexiconClaimExtractor([]).analyse("A red circle and a dog.", Choice.A, "x")
    assert nothing.claims == [] and nothing.uncheckable == ["dog"]


def test_default_extractor_uses_the_default_registry_label_spaces():
    from vlgenrm.experts.registry import default_registry

    assert X.label_spaces == tuple(default_registry().label_spaces())
    assert [s.name for s in X.label_spaces] == ["colour_shape", "ocr"]
    assert X.analyse("There are two dogs and a purple hexagon.", Choice.A, "x").uncheckable == ["dog"]


def test_the_noun_list_ships_coco_and_lvis_names():
    import json
    from importlib import resources

    from vlgenrm.experts.vocabulary import default_nouns

    data = json.loads(resources.files("vlgenrm.experts").joinpath("data/nouns.json").read_text())
    assert len(data["coco"]) == 80 and len(data["lvis"]) >= 300
    nouns = default_nouns()
    spellings: dict[str, str] = {}
    for section in ("coco", "lvis"):
        for canon, synonyms in data[section].items():
            for word in (canon, *synonyms):
                assert spellings.setdefault(word, canon) == canon, f"{word!r} names two nouns"
    for word, canon in [
        ("people", "person"),
        ("women", "person"),
        ("sofas", "couch"),
        ("mice", "mouse"),
        ("knives", "knife"),
        ("hot dogs", "hot dog"),
        ("t-shirts", "shirt"),
        ("strawberries", "strawberry"),
        ("teddy bears", "teddy bear"),
    ]:
        assert nouns.lookup(word) == canon, word
    assert nouns.lookup("image") is None and "background" in nouns.not_objects


def test_experts_package_does_not_import_the_synthetic_domain():
    import subprocess
    import sys

    probe = (
        "import sys, vlgenrm.experts.claims, vlgenrm.experts.registry, vlgenrm.experts.colour_shape, vlgenrm.experts.pipeline, "
        "vlgenrm.experts.ocr, vlgenrm.experts.opencv; print(sorted(m for m in sys.modules if m.startswith('vlgenrm.synth')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_synthetic_label_space_matches_the_synthetic_domain():
    """The colour/shape expert declares the synthetic vocabulary; the domain's renderer and writer use the same."""
    from vlgenrm.experts.base import normalise_colour
    from vlgenrm.experts.colour_shape import SHAPES, SYNTHETIC_PALETTE, SYNTHETIC_SHAPE_ALIASES
    from vlgenrm.synth import vocab

    assert SYNTHETIC_PALETTE == vocab.COLOURS and SYNTHETIC_SHAPE_ALIASES == vocab.SHAPE_SYNONYMS and SHAPES == vocab.SHAPES
    assert all(normalise_colour(word) == colour for word, colour in vocab.COLOUR_SYNONYMS.items())
    space = next(s for s in X.label_spaces if s.name == "colour_shape")
    assert space.labels == frozenset(vocab.SHAPES) and dict(space.aliases) == vocab.SHAPE_SYNONYMS
