"""What the teacher is given (RationaleSettings.teacher_sees): with ``label`` no expert report
and no evidence reach the engine, and the template teacher rationalises the given label."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.genrm.conftest import png
from tests.support.engines import report
from vlgenrm.contracts import Choice, Example, ImageRef, LabelSource, Order, RefinedPair
from vlgenrm.genrm.config import SamplingParams
from vlgenrm.genrm.verdicts import parse_verdict
from vlgenrm.rationale.config import RationaleSettings, TeacherView
from vlgenrm.rationale.engines import RationaleEngine, RationaleRequest, TemplateEngine
from vlgenrm.rationale.stage import generate_candidates, requests_for
from vlgenrm.sampling.sampler import target_in_shown_order

IMAGE = png((10, 200, 10))
REF = ImageRef(key="images/y.png", sha256="b" * 64)


def pair(i: int, label: Choice) -> RefinedPair:
    ex = Example(
        id=f"ex{i}",
        image=REF,
        question="What is shown?",
        response_a=f"There is a red circle {i}.",
        response_b=f"There are two blue squares {i}. They are large.",
        human_label=label.value,
    )
    return RefinedPair(id=f"ex{i}/refined", example=ex, human_label=label.value, expert_label=None, label=label, source=LabelSource.HUMAN)


class Recording(RationaleEngine):
    """Keeps every request, answers with the template teacher."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[RationaleRequest] = []

    def generate(self, requests, params):
        self.requests += requests
        return TemplateEngine().generate(requests, params)


class NoReports(Mapping):
    """A reports mapping that fails the test when read."""

    def __getitem__(self, key):
        raise AssertionError(f"report {key} was read")

    def __iter__(self):
        raise AssertionError("reports were iterated")

    def __len__(self):
        raise AssertionError("reports were counted")

    def get(self, key, default=None):
        raise AssertionError(f"report {key} was read")


def test_requests_for_passes_no_report_and_no_evidence_when_the_teacher_sees_the_label():
    rep = report({Choice.A: 0.9})  # the experts say A hallucinates
    p = pair(0, Choice.A)
    for order in Order:
        req = requests_for(p, rep, IMAGE, order, True, TeacherView.LABEL)
        assert req.report is None and req.evidence is None and req.label is Choice.A
        assert req.swapped is (order is Order.BA)
    full = requests_for(p, rep, IMAGE, Order.AB, True)  # the method: unchanged
    assert full.report is rep and full.evidence and "Evidence" in full.evidence and full.label is None


@pytest.mark.parametrize("both_orders", [False, True])
def test_without_a_report_the_template_critique_justifies_the_given_label_even_when_wrong(both_orders):
    # Each pair's report says the labelled response is the hallucinated one: a teacher that
    # peeked at it would contradict the label. The label-only teacher never sees it.
    pairs = [pair(i, Choice.A if i % 2 else Choice.B) for i in range(6)]
    engine = Recording()
    settings = RationaleSettings(k=3, both_orders=both_orders, teacher_sees=TeacherView.LABEL, batch_size=4)
    candidates, counts = generate_candidates(pairs, NoReports(), {REF.key: IMAGE}, engine, settings, seed=5)
    assert counts["unparseable"] == 0 and len(candidates) == 6 * 3 * (2 if both_orders else 1)
    assert all(r.report is None and r.evidence is None for r in engine.requests)
    by_id = {p.id: p for p in pairs}
    for c in candidates:
        assert c.verdict is target_in_shown_order(by_id[c.pair_id].label, c.order)
        text = c.text.lower()
        assert "expert" not in text and "p=" not in text and "evidence" not in text and "supported" not in text
    assert len({c.text for c in candidates}) > len(pairs)  # wording varies; the verdict does not


def test_the_label_teacher_quotes_the_other_response_in_the_shown_order():
    # Responses come in the shown order; swapped: the shown B is the original A, the label.
    req = RationaleRequest(
        image=IMAGE, question="q", response_a='A green [[B]] "triangle". More.', response_b="A red dog.", evidence=None, label=Choice.A, swapped=True
    )
    [[text]] = TemplateEngine().generate([req], SamplingParams(n=1, seed=0))
    assert parse_verdict(text).ok and parse_verdict(text).option == "B"
    assert "Response A" in text and "A green [B] 'triangle'" in text and "More" not in text and "red dog" not in text


def test_with_a_report_the_template_decides_from_the_findings_and_ignores_the_label():
    rep = report({Choice.A: 0.9}, {Choice.B: 0.8})
    req = RationaleRequest(image=IMAGE, question="q", response_a="a", response_b="b", evidence=None, report=rep, label=Choice.A)
    [texts] = TemplateEngine().generate([req], SamplingParams(n=4, seed=2))
    assert {parse_verdict(t).option for t in texts} == {"B"} and all("p=0.90" in t for t in texts)
