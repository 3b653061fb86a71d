"""The rationale stage logic: k per pair and order, parsing, lineage, hard-pool extras."""

from __future__ import annotations

from tests.genrm.conftest import png
from vlgenrm.contracts import Choice, Example, ImageRef, LabelSource, Order, RefinedPair
from vlgenrm.genrm.config import SamplingParams
from vlgenrm.rationale.config import RationaleSettings
from vlgenrm.rationale.engines import RationaleEngine
from vlgenrm.rationale.stage import generate_candidates

IMAGE = png((200, 10, 10))
REF = ImageRef(key="images/x.png", sha256="a" * 64)


class ScriptedEngine(RationaleEngine):
    """Returns a parseable critique, an unparseable one and a double verdict, in turn."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls: list[tuple[int, SamplingParams]] = []

    def generate(self, requests, params):
        self.calls.append((len(requests), params))
        texts = ["Response A is right.\nVerdict: [[A]]", "no verdict here", "[[A]] and again [[A]]"]
        return [[texts[i % 3] for i in range(params.n)] for _ in requests]


def pair(i: int, label: Choice | None) -> RefinedPair:
    ex = Example(id=f"ex{i}", image=REF, question="q?", response_a="a", response_b="b", human_label="A")
    source = LabelSource.AGREE if label else LabelSource.CONFLICT
    return RefinedPair(id=f"ex{i}/refined", example=ex, human_label="A", expert_label=label, label=label, source=source)


def test_k_per_pair_and_order_parsing_and_lineage():
    engine = ScriptedEngine()
    pairs = [pair(0, Choice.A), pair(1, None), pair(2, Choice.B)]
    settings = RationaleSettings(k=3, both_orders=True, batch_size=2)
    candidates, counts = generate_candidates(pairs, {}, {REF.key: IMAGE}, engine, settings, seed=1)
    assert counts["pairs"] == 2 and counts["pairs_unlabelled"] == 1
    assert counts["candidates"] == 2 * 2 * 3 and counts["unparseable"] == 2 * 2 * 2
    assert counts["unparseable_missing"] == 4 and counts["unparseable_double"] == 4
    assert len(candidates) == 4 and {c.order for c in candidates} == {Order.AB, Order.BA}
    for c in candidates:
        assert c.pair_id == f"{c.example_id}/refined" and c.verdict is Choice.A and c.generator == "scripted"
        assert c.id.startswith(c.pair_id)
    assert [n for n, _ in engine.calls] == [2, 2]


def test_hard_pool_pairs_get_more_samples():
    engine = ScriptedEngine()
    pairs = [pair(0, Choice.A), pair(1, Choice.B)]
    candidates, counts = generate_candidates(pairs, {}, {REF.key: IMAGE}, engine, RationaleSettings(k=2), seed=0, extra_samples={"ex1/refined": 4})
    assert counts["candidates"] == 2 + 6 and counts["pairs_hard"] == 1
    assert sorted(params.n for _, params in engine.calls) == [2, 6]
