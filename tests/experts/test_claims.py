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
        ("There are two red circles and a blue square.",
         [(C, "circle", 2, "red", None), (E, "square", None, "blue", None)]),
        ("There is one green star.", [(C, "star", 1, "green", None)]),
        ("I count 3 stars.", [(C, "star", 3, None, None)]),
        ("Red circles everywhere", [(E, "circle", None, "red", None)]),
        # synonyms
        ("Two crimson discs, a navy box and 2 lime dots.",
         [(C, "circle", 2, "red", None), (E, "square", None, "blue", None), (C, "circle", 2, "green", None)]),
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
    example = Example(id="e1", image=ImageRef(key="images/x.png", sha256="0" * 64), question="Describe the image.",
                      response_a="A red circle.", response_b="Two blue squares. The sign says OPEN.")
    claims = X.extract_pair(example)
    assert [c.id for c in claims] == ["e1-A-0", "e1-B-0", "e1-B-1"]
    assert isinstance(X, ClaimExtractor)


def test_claims_validate_as_contracts():
    for claim in X.extract("two red circles, a star, no squares. The sign reads BANK.", Choice.A, "v"):
        assert type(claim).model_validate_json(claim.to_json_bytes()) == claim
