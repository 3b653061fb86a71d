"""VQA from scene truth: exact answers, the claims' truth, and the grid cells the vision stage learns."""

from __future__ import annotations

import random
import re

from vlgenrm.synth.responses import _QUESTIONS
from vlgenrm.synth.scene import GRID, random_scene
from vlgenrm.synth.vocab import NUMBER_WORDS, SHAPES
from vlgenrm.synth.vqa import (
    LADDER,
    MARKED_PROMPT,
    SCAFFOLDS,
    VERIFY_QUESTION,
    CellLabels,
    VQAKind,
    answer_items,
    cell_labels,
    marked_items,
    random_claim,
    scaffold_items,
)

WORD_NUMBERS = {w: n for n, w in NUMBER_WORDS.items()}


def _holds(text: str, scene) -> bool:  # an oracle of its own, from the sentence's words
    if m := re.fullmatch(r"The (\w+) is (\w+)\.", text):
        obj = scene.find(m[1])
        return obj is not None and obj.colour == m[2]
    if m := re.fullmatch(r"There is a (\w+)\.", text):
        return scene.find(m[1]) is not None
    if m := re.fullmatch(r"There (?:is|are) (\w+) (\w+?)s?\.", text):
        obj = scene.find(m[2])
        return obj is not None and obj.count == WORD_NUMBERS[m[1]]
    m = re.fullmatch(r"The sign says (\w+)\.", text)
    assert m, text
    return scene.sign == m[1]


def test_claims_are_true_as_often_as_false_and_say_what_holds() -> None:
    truths = []
    for i in range(400):
        rng = random.Random(f"claims/{i}")
        scene = random_scene(rng)
        claim = random_claim(scene, rng)
        assert claim.true == _holds(claim.text, scene), claim
        assert claim.true == (claim.names == claim.shows)  # the scaffolds' two halves decide it
        truths.append(claim.true)
    assert 0.4 < sum(truths) / len(truths) < 0.6


def test_cell_labels_put_every_instance_in_its_own_cell() -> None:
    for i in range(200):
        scene = random_scene(random.Random(f"cells/{i}"))
        labels = cell_labels(scene)
        cell = scene.size // GRID
        shapes = [s for s in labels.shape if 0 < s <= len(SHAPES)]
        assert len(shapes) == sum(o.count for o in scene.objects)
        for obj in scene.objects:
            for x0, y0, x1, y1 in obj.boxes:
                at = (y0 + y1) // 2 // cell * GRID + (x0 + x1) // 2 // cell
                assert CellLabels.SHAPE_WORDS[labels.shape[at] - 1] == obj.shape
                assert CellLabels.COLOUR_WORDS[labels.colour[at] - 1] == obj.colour
        sign_cells = [j for j, s in enumerate(labels.shape) if s == len(SHAPES) + 1]
        if scene.sign is None:
            assert not sign_cells and not any(labels.word)
        else:
            assert 1 <= len(sign_cells) <= 3 and len({j // GRID for j in sign_cells}) == 1  # one row
            assert {CellLabels.SIGN_WORDS[labels.word[j] - 1] for j in sign_cells} == {scene.sign}


def test_scaffolds_name_what_the_question_and_the_image_hold() -> None:
    items = scaffold_items(30, split="eval")
    assert {it.kind for it in items} == {VQAKind.CLAIM, *SCAFFOLDS}
    for it in items:
        if it.kind is VQAKind.ASKED:
            assert it.answer in SHAPES and f" {it.answer}" in it.question
        if it.kind in (VQAKind.NAMED, VQAKind.SHOWN):
            assert it.answer.split()[-1] in it.question or it.kind is VQAKind.SHOWN
        if it.kind is VQAKind.INVENTORY:
            for part in it.answer.split(", "):
                count, _colour, shape = part.split()
                assert count in WORD_NUMBERS and shape.rstrip("s") in SHAPES
    # the claim and the naming of it share one sentence
    claims = [it for it in items if it.kind is VQAKind.CLAIM]
    named = [it for it in items if it.kind is VQAKind.NAMED]
    assert [c.question for c in claims] == [n.question.removesuffix(" What does it name?") for n in named]


def test_a_response_is_asked_in_the_genrm_layout_and_marked_with_the_same_truth() -> None:
    truths = []
    for i, item in enumerate(marked_items(60)):
        if i % 2 == 0:
            verify = item
            assert verify.kind is VQAKind.VERIFY and verify.question.startswith("Question: ")
            assert verify.question.endswith(f"\n\n{VERIFY_QUESTION}") and verify.answer in VQAKind.VERIFY.options
            continue
        response = verify.question.split("\n\nResponse: ", 1)[1].rsplit("\n\n", 1)[0]
        assert item.kind is VQAKind.MARKED and item.question == MARKED_PROMPT and item.image == verify.image
        assert item.answer == f"{response} ({'true' if verify.answer == 'yes' else 'false'})"  # the mark right after the response
        truths.append(verify.answer == "yes")
    assert 0.3 < sum(truths) / len(truths) < 0.7
    assert VQAKind.MARKED not in LADDER  # open text: trained, never scored


def test_answers_ask_the_preference_questions_and_count_right() -> None:
    """Free-form answers in the responses' grammar: every kind of the preference data's
    questions, the same item for the same index, and counts that match the scene."""
    items = answer_items(120)
    asked = {
        kind
        for it in items
        for kind, templates in _QUESTIONS.items()
        if any(it.question == t.split("{")[0] or it.question.startswith(t.split("{")[0]) for t in templates)
    }
    assert asked == set(_QUESTIONS)
    assert [it.answer for it in answer_items(5)] == [it.answer for it in items[:5]]
    assert {it.image for it in answer_items(20, split="eval")}.isdisjoint({it.image for it in items})
    counted = 0
    for i, it in enumerate(items):
        if m := re.fullmatch(r"(?:How many|Count the) (\w+)s (?:are there\?|in the image\.)", it.question):
            rng = random.Random(f"pretrain/0/train/answer/{i}")
            scene = random_scene(rng, 224, max_kinds=3, text_probability=0.5)
            numbers = {**WORD_NUMBERS, **{str(n): n for n in range(1, 7)}, "a": 1, "an": 1}
            said = [numbers[w] for w in re.findall(r"\w+", it.answer) if w in numbers]  # shapes may be synonyms; the number is not
            assert said[:1] == [scene.find(m[1]).count], (it.question, it.answer)
            counted += 1
    assert counted >= 5
    assert VQAKind.ANSWER not in LADDER  # open text: trained, never scored
