"""Margin-based rejection sampling (§3.4) on constructed margins: no model involved."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlgenrm.contracts import Choice, Example, ImageRef, LabelSource, Order, RationaleCandidate, RefinedPair
from vlgenrm.genrm.verdicts import parse_verdict, strip_verdict, verdict_line
from vlgenrm.sampling.config import SamplerSettings
from vlgenrm.sampling.report import margin_histogram_png, stage_report_markdown
from vlgenrm.sampling.sampler import SamplingStats, sample, select, target_in_shown_order, tau

CATEGORIES = ("counting", "ocr", "colour")
IMAGE = ImageRef(key="images/" + "0" * 64 + ".png", sha256="0" * 64)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_pair(i: int, label: Choice | None, category: str = "counting") -> RefinedPair:
    ex = Example(id=f"ex{i}", image=IMAGE, question=f"q{i}?", response_a=f"answer A{i}", response_b=f"answer B{i}", category=category)
    source = LabelSource.AGREE if label is not None else LabelSource.CONFLICT
    return RefinedPair(id=f"pair{i}", example=ex, human_label=label.value if label else "unknown", expert_label=label, label=label, source=source)


def make_candidate(pair: RefinedPair, j: int, order: Order, verdict: Choice | None) -> RationaleCandidate:
    line = f"\nverdict:[[ {verdict.value.lower()} ]]" if verdict else ""
    return RationaleCandidate(
        id=f"{pair.id}/c{j}",
        pair_id=pair.id,
        example_id=pair.example.id,
        order=order,
        sample_index=j,
        generator="test:teacher",
        text=f"Critique {j} of {pair.id}.{line}",
        verdict=verdict,
    )


@dataclass
class World:
    pairs: list[RefinedPair]
    cands: dict[str, list[RationaleCandidate]]
    margin: dict[str, float]

    def margin_fn(self, batch: list[tuple[RefinedPair, RationaleCandidate]]) -> list[float]:
        return [self.margin[c.id] for _, c in batch]

    def margins_for(self, pair: RefinedPair) -> list[float | None]:
        return [self.margin[c.id] if c.verdict is not None else None for c in self.cands[pair.id]]


margins_st = st.sampled_from([x / 2 for x in range(-8, 9)])  # ties are common on purpose
cand_st = st.tuples(st.sampled_from(list(Order)), st.sampled_from([Choice.A, Choice.B, None]), margins_st)
pair_st = st.tuples(st.sampled_from(list(Choice)), st.sampled_from(CATEGORIES), st.lists(cand_st, max_size=6))


@st.composite
def worlds(draw: st.DrawFn, min_pairs: int = 1) -> World:
    specs = draw(st.lists(pair_st, min_size=min_pairs, max_size=5))
    pairs, cands, margin = [], {}, {}
    for i, (label, category, cspecs) in enumerate(specs):
        p = make_pair(i, label, category)
        pairs.append(p)
        cands[p.id] = []
        for j, (order, verdict, m) in enumerate(cspecs):
            c = make_candidate(p, j, order, verdict)
            cands[p.id].append(c)
            margin[c.id] = m
    return World(pairs, cands, margin)


sampler_settings_st = st.builds(
    SamplerSettings,
    tau0=st.sampled_from([-1.0, 0.0, 0.5]),
    delta_tau=st.sampled_from([0.0, 0.5, 1.0]),
    top_n=st.integers(1, 3),
    dpo=st.booleans(),
)


# -- the rule ---------------------------------------------------------------------------------
@FAST
@given(worlds(), sampler_settings_st, st.integers(0, 4))
def test_accepted_iff_right_verdict_and_margin_at_least_tau(w: World, s: SamplerSettings, t: int) -> None:
    res = sample(w.pairs, w.cands, w.margin_fn, t, s, "m0")
    labels = {p.id: p.label for p in w.pairs}
    for sc in res.scored:
        c = sc.candidate
        assert sc.target is target_in_shown_order(labels[c.pair_id], c.order)
        assert sc.tau == tau(t, s) == s.tau0 + t * s.delta_tau
        assert sc.margin == w.margin[c.id]
        assert sc.accepted == (c.verdict is sc.target and sc.margin >= sc.tau)
        assert (sc.rank is not None) == sc.accepted
        assert sc.model_version == "m0"


@FAST
@given(worlds(), sampler_settings_st, st.integers(0, 3), st.integers(1, 3))
def test_a_later_iteration_never_accepts_more(w: World, s: SamplerSettings, t: int, dt: int) -> None:
    early = {sc.id for sc in sample(w.pairs, w.cands, w.margin_fn, t, s, "m").scored if sc.accepted}
    late = {sc.id for sc in sample(w.pairs, w.cands, w.margin_fn, t + dt, s, "m").scored if sc.accepted}
    assert late <= early


def test_tau_schedule() -> None:
    s = SamplerSettings()
    assert [tau(t, s) for t in range(4)] == [0.0, 0.5, 1.0, 1.5]
    with pytest.raises(ValueError):
        tau(-1, s)


def test_unparseable_candidates_are_never_accepted_even_with_a_margin() -> None:
    p = make_pair(0, Choice.A)
    c = make_candidate(p, 0, Order.AB, None)
    sel = select(p, [c], [99.0], 0, SamplerSettings(), "m")
    assert not sel.scored[0].accepted and sel.records == [] and sel.hard is not None
    assert sel.hard.reason == "no parseable candidate"


# -- top n, hard pool --------------------------------------------------------------------------
@FAST
@given(worlds(), sampler_settings_st, st.integers(0, 2))
def test_top_n_keeps_the_highest_accepted_margins(w: World, s: SamplerSettings, t: int) -> None:
    for p in w.pairs:
        sel = select(p, w.cands[p.id], w.margins_for(p), t, s, "m")
        accepted = sorted((sc for sc in sel.scored if sc.accepted), key=lambda sc: sc.rank)
        assert [sc.rank for sc in accepted] == list(range(len(accepted)))
        assert len(sel.records) == min(s.top_n, len(accepted))
        kept = {r.candidate_id for r in sel.records}
        kept_m = [sc.margin for sc in accepted if sc.candidate.id in kept]
        other_m = [sc.margin for sc in accepted if sc.candidate.id not in kept]
        assert not other_m or min(kept_m) >= max(other_m)
        assert (sel.hard is None) == bool(accepted)


@FAST
@given(worlds(), sampler_settings_st, st.integers(0, 3))
def test_hard_pool_holds_exactly_the_pairs_without_an_accepted_candidate(w: World, s: SamplerSettings, t: int) -> None:
    res = sample(w.pairs, w.cands, w.margin_fn, t, s, "m")
    with_accept = {sc.candidate.pair_id for sc in res.scored if sc.accepted}
    hard = {h.pair.id: h for h in res.hard_pool}
    assert set(hard) == {p.id for p in w.pairs} - with_accept
    for pid, h in hard.items():
        margins = [w.margin[c.id] for c in w.cands[pid] if c.verdict is not None]
        assert h.best_margin == (max(margins) if margins else None)
        assert h.iteration == t and h.extra_samples == s.hard_pool_extra_samples and h.reason


def test_tie_break_by_candidate_id_is_independent_of_input_order() -> None:
    p = make_pair(0, Choice.A)
    cands = [make_candidate(p, j, Order.AB, Choice.A) for j in range(5)]
    for seed in range(5):
        shuffled = cands[:]
        random.Random(seed).shuffle(shuffled)
        sel = select(p, shuffled, [1.0] * 5, 0, SamplerSettings(top_n=2), "m")
        assert [r.candidate_id for r in sel.records] == ["pair0/c0", "pair0/c1"]


# -- records: DPO, order, lineage ----------------------------------------------------------------
@FAST
@given(worlds(), sampler_settings_st, st.integers(0, 2))
def test_dpo_rejected_is_the_lowest_margin_rejected_candidate_of_the_same_order(w: World, s: SamplerSettings, t: int) -> None:
    res = sample(w.pairs, w.cands, w.margin_fn, t, s, "m")
    by_id = {sc.candidate.id: sc for sc in res.scored}
    for r in res.records:
        pool = [sc for sc in res.scored if sc.candidate.pair_id == r.pair_id and not sc.accepted and sc.candidate.order is r.order]
        if not s.dpo or not pool:
            assert r.rejected is None
            continue
        assert r.rejected is not None and r.rejected != r.target
        worst = min(pool, key=lambda sc: (sc.margin, sc.candidate.id))
        assert worst.candidate.verdict is not None
        assert strip_verdict(r.rejected) == strip_verdict(worst.candidate.text)
        assert parse_verdict(r.rejected).choice() is worst.candidate.verdict
        assert not worst.accepted and worst.candidate.id != r.candidate_id and by_id[r.candidate_id].accepted
    assert res.stats.dpo_pairs == sum(r.rejected is not None for r in res.records)


@FAST
@given(worlds(), sampler_settings_st)
def test_records_trace_to_their_pair_and_candidate(w: World, s: SamplerSettings) -> None:
    res = sample(w.pairs, w.cands, w.margin_fn, 0, s, "m")
    pairs = {p.id: p for p in w.pairs}
    cands = {c.id: c for cs in w.cands.values() for c in cs}
    for r in res.records:
        p, c = pairs[r.pair_id], cands[r.candidate_id]
        assert r.id == f"{c.id}/train" and c.pair_id == p.id and r.example_id == p.example.id == c.example_id
        assert r.image == p.example.image and r.question == p.example.question and r.iteration == 0
        assert r.order is c.order and r.verdict is target_in_shown_order(p.label, c.order) is c.verdict
        shown = (p.example.response_a, p.example.response_b)
        assert (r.response_a, r.response_b) == (shown if c.order is Order.AB else shown[::-1])
        assert r.target == strip_verdict(c.text) + "\n" + verdict_line(r.verdict.value)
        assert r.target.count("[[") == 1 and r.margin == w.margin[c.id]


def test_ba_order_flips_the_target() -> None:
    assert target_in_shown_order(Choice.A, Order.AB) is Choice.A
    assert target_in_shown_order(Choice.A, Order.BA) is Choice.B
    assert target_in_shown_order(Choice.B, Order.BA) is Choice.A
    p = make_pair(0, Choice.A)
    ab, ba_wrong, ba = (make_candidate(p, 0, Order.AB, Choice.A), make_candidate(p, 1, Order.BA, Choice.A), make_candidate(p, 2, Order.BA, Choice.B))
    sel = select(p, [ab, ba_wrong, ba], [1.0, 1.0, 1.0], 0, SamplerSettings(top_n=3), "m")
    assert [sc.accepted for sc in sel.scored] == [True, False, True]
    rec = next(r for r in sel.records if r.order is Order.BA)
    assert (rec.response_a, rec.response_b, rec.verdict) == ("answer B0", "answer A0", Choice.B)
    assert rec.target.endswith("Verdict: [[B]]") and rec.rejected is not None and rec.rejected.endswith("Verdict: [[A]]")


# -- sample(): batching, stats, errors ---------------------------------------------------------
@FAST
@given(worlds(min_pairs=0), sampler_settings_st, st.integers(0, 3))
def test_margin_fn_called_once_with_only_parseable_candidates_and_stats_add_up(w: World, s: SamplerSettings, t: int) -> None:
    calls: list[list[tuple[RefinedPair, RationaleCandidate]]] = []

    def fn(batch: list[tuple[RefinedPair, RationaleCandidate]]) -> list[float]:
        calls.append(batch)
        return w.margin_fn(batch)

    res = sample(w.pairs, w.cands, fn, t, s, "m")
    parseable = [c for p in w.pairs for c in w.cands[p.id] if c.verdict is not None]
    assert len(calls) == (1 if parseable else 0) + (res.stats.critique_probe is not None)
    if calls:
        assert [c.id for _, c in calls[0]] == [c.id for c in parseable]
        assert all(c.pair_id == p.id for p, c in calls[0])
    for probe in calls[1:]:  # the critique probe: bare prompts, one per probed (pair, order)
        assert all(c.text == "" for _, c in probe) and len({(p.id, c.order) for p, c in probe}) == len(probe)
    st_ = res.stats
    total = sum(len(cs) for cs in w.cands.values())
    assert st_.pairs == len(w.pairs) and st_.candidates == total == st_.scored + st_.unparseable
    assert st_.scored == len(res.scored) == len(parseable)
    assert st_.accepted == sum(sc.accepted for sc in res.scored) >= st_.kept == len(res.records)
    assert st_.hard == len(res.hard_pool) and st_.pairs - st_.hard == len({r.pair_id for r in res.records})
    assert sum(c.pairs for c in st_.by_category.values()) == st_.pairs
    assert sum(c.accepted for c in st_.by_category.values()) == st_.accepted
    assert sum(c.hard for c in st_.by_category.values()) == st_.hard
    assert sum(st_.histogram.accepted) == st_.accepted and sum(st_.histogram.rejected) == st_.scored - st_.accepted
    ratios = [pt.kept_ratio for pt in st_.kept_ratio_by_threshold]
    assert ratios == sorted(ratios, reverse=True)
    at_tau = [pt.kept_ratio for pt in st_.kept_ratio_by_threshold if pt.tau == st_.tau]
    assert not at_tau or not st_.pairs or at_tau[0] == pytest.approx(st_.pair_acceptance_rate)
    assert SamplingStats.from_json_bytes(st_.to_json_bytes()) == st_
    again = sample(w.pairs, w.cands, w.margin_fn, t, s, "m")
    assert again.records == res.records and again.stats == st_


def test_the_critique_probe_measures_how_critiques_move_the_margin() -> None:
    pairs = [make_pair(i, Choice.A) for i in range(4)]
    cands = {p.id: [make_candidate(p, 0, Order.AB, Choice.A), make_candidate(p, 1, Order.AB, Choice.B)] for p in pairs}
    # Without a critique the GenRM's margin is 0.2; a critique adds +1 for pairs 0-1 and -1 for pairs 2-3.
    lift = {"pair0": 1.0, "pair1": 1.0, "pair2": -1.0, "pair3": -1.0}

    def fn(batch: list[tuple[RefinedPair, RationaleCandidate]]) -> list[float]:
        return [0.2 + (lift[p.id] if c.text else 0.0) for p, c in batch]

    probe = sample(pairs, cands, fn, 0, SamplerSettings(tau0=0.5, critique_probe=3), "m").stats.critique_probe
    # Three pairs probed, their right-verdict candidates only (the wrong-verdict ones argue against y).
    assert probe is not None and probe.candidates == 3
    assert probe.mean_lift == pytest.approx(1 / 3) and probe.helped == pytest.approx(2 / 3)
    assert (probe.rescued, probe.sunk) == (2, 0)  # 0.2 < tau 0.5 <= 1.2
    assert sample(pairs, cands, fn, 0, SamplerSettings(critique_probe=0), "m").stats.critique_probe is None


def test_unlabelled_pairs_are_skipped_and_bad_inputs_rejected() -> None:
    dropped, p = make_pair(0, None), make_pair(1, Choice.B)
    c = make_candidate(p, 0, Order.AB, Choice.B)
    res = sample([dropped, p], {p.id: [c]}, lambda b: [2.0] * len(b), 0, SamplerSettings(), "m")
    assert res.stats.skipped == 1 and res.stats.pairs == 1 and len(res.records) == 1
    with pytest.raises(ValueError, match="returned 0 margins"):
        sample([p], {p.id: [c]}, lambda b: [], 0, SamplerSettings(), "m")
    with pytest.raises(ValueError, match="non-finite"):
        sample([p], {p.id: [c]}, lambda b: [float("nan")], 0, SamplerSettings(), "m")
    with pytest.raises(ValueError, match="unknown pairs"):
        sample([p], {"other": [c]}, lambda b: [1.0], 0, SamplerSettings(), "m")
    with pytest.raises(ValueError, match="belongs to pair"):
        select(dropped, [c], [1.0], 0, SamplerSettings(), "m")
    with pytest.raises(ValueError, match="duplicate"):
        sample([p, p], {}, lambda b: [], 0, SamplerSettings(), "m")


# -- report ---------------------------------------------------------------------------------------
def _stats() -> SamplingStats:
    pairs, cands, margin = [], {}, {}
    for i, cat in enumerate(CATEGORIES * 2):
        p = make_pair(i, Choice.A if i % 2 else Choice.B, cat)
        pairs.append(p)
        cands[p.id] = [make_candidate(p, j, Order(["AB", "BA"][j % 2]), [Choice.A, Choice.B, None][(i + j) % 3]) for j in range(4)]
        margin.update({c.id: (i - c.sample_index) / 2 for c in cands[p.id]})
    return sample(pairs, cands, World(pairs, cands, margin).margin_fn, 1, SamplerSettings(), "ckpt-7").stats


def test_histogram_png_and_markdown(tmp_path) -> None:
    stats = _stats()
    png = margin_histogram_png(stats, tmp_path / "h.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert (tmp_path / "h.png").read_bytes() == png
    buf = io.BytesIO()
    raw = margin_histogram_png(([0.1, -1.0, 2.5], [True, False, True]), buf, tau=0.5)
    assert raw.startswith(b"\x89PNG") and buf.getvalue() == raw
    assert margin_histogram_png(([], [])).startswith(b"\x89PNG")
    md = stage_report_markdown(stats)
    for cat in CATEGORIES:
        assert f"| {cat} |" in md
    assert "ckpt-7" in md and "| 0.5 ← |" in md and f"| pairs | {stats.pairs} |" in md
    assert stats.critique_probe is not None and f"{stats.critique_probe.candidates} candidates of the first pairs" in md
