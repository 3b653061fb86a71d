"""Margin-based rejection sampling (§3.4) and the training records it yields (§3.5).

Pure logic: the GenRM is injected as ``margin_fn`` (the service passes one that calls
``GenRM.margins``), so nothing here imports torch. Everything is deterministic: candidates are
ranked by margin, ties broken by candidate id; pairs and candidates keep their input order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from vlgenrm.contracts import Choice, Contract, Order, RationaleCandidate, RefinedPair, ScoredCandidate, TrainingRecord
from vlgenrm.genrm.verdicts import strip_verdict, verdict_line
from vlgenrm.sampling.config import SamplerSettings

#: ``margin_fn(batch) -> margins``: m = log p(verdict = y) - log p(verdict = not y) of each
#: (pair, candidate), y being the target in the candidate's shown order (``shown_target``).
MarginFn = Callable[[list[tuple[RefinedPair, RationaleCandidate]]], list[float]]


class HardPoolEntry(Contract):
    """A pair with no accepted candidate, carried into the next iteration with more samples."""

    id: str = Field(min_length=1, description="<pair id>/hard/<iteration>.")
    pair: RefinedPair
    iteration: int = Field(ge=0, description="Iteration t in which no candidate was accepted.")
    extra_samples: int = Field(ge=0, description="Additional candidates to generate next time.")
    best_margin: float | None = Field(None, description="Highest margin among scored candidates, None if none.")
    reason: str = Field(description="Why nothing was accepted.")


class CategoryStats(Contract):
    """Acceptance within one category (from ``Example.category``)."""

    pairs: int = Field(ge=0)
    scored: int = Field(ge=0, description="Parseable candidates that received a margin.")
    accepted: int = Field(ge=0)
    hard: int = Field(ge=0)
    acceptance_rate: float = Field(description="accepted / scored (0 when nothing scored).")
    pair_acceptance_rate: float = Field(description="Pairs with >= 1 accepted / pairs.")


class ThresholdPoint(Contract):
    """What a given threshold would have kept."""

    tau: float
    kept_ratio: float = Field(description="Fraction of pairs with >= 1 candidate of the right verdict and m >= tau.")


class MarginHistogram(Contract):
    """Margins of the scored candidates, binned; ``accepted`` and ``rejected`` share ``edges``."""

    edges: list[float] = Field(default_factory=list)
    accepted: list[int] = Field(default_factory=list)
    rejected: list[int] = Field(default_factory=list)


class CritiqueProbe(Contract):
    """Does the current GenRM read the critiques? The margin filter rests on it: a GenRM that
    ignores them accepts exactly the pairs it already gets right. Candidates whose verdict is
    the label, scored with their critique and without any (same pair, same order)."""

    candidates: int = Field(ge=0, description="Probed candidates (right verdict).")
    mean_lift: float = Field(description="Mean of (margin with the critique - margin without).")
    helped: float = Field(description="Fraction whose critique raised the margin.")
    rescued: int = Field(ge=0, description="Below tau without the critique, at or above with it.")
    sunk: int = Field(ge=0, description="At or above tau without the critique, below with it.")


class SamplingStats(Contract):
    """Counts and curves of one sampling run (the stage report's data)."""

    iteration: int = Field(ge=0)
    tau: float
    model_version: str
    pairs: int = Field(ge=0, description="Labelled pairs considered.")
    skipped: int = Field(0, ge=0, description="Pairs without a label (dropped in refinement), ignored.")
    candidates: int = Field(ge=0, description="Candidates of the considered pairs.")
    unparseable: int = Field(ge=0, description="Candidates without a verdict; never scored.")
    scored: int = Field(ge=0)
    accepted: int = Field(ge=0)
    kept: int = Field(ge=0, description="Accepted candidates within the top n = training records.")
    hard: int = Field(ge=0, description="Pairs sent to the hard pool.")
    dpo_pairs: int = Field(ge=0, description="Records with a rejected critique attached.")
    acceptance_rate: float = Field(description="accepted / scored.")
    pair_acceptance_rate: float = Field(description="(pairs - hard) / pairs.")
    by_category: dict[str, CategoryStats] = Field(default_factory=dict)
    kept_ratio_by_threshold: list[ThresholdPoint] = Field(default_factory=list)
    histogram: MarginHistogram = Field(default_factory=MarginHistogram)
    critique_probe: CritiqueProbe | None = Field(None, description="How the critiques moved the margins (None when off or nothing to probe).")


@dataclass(frozen=True)
class PairSelection:
    """The outcome for one pair."""

    scored: list[ScoredCandidate]
    records: list[TrainingRecord]
    hard: HardPoolEntry | None


@dataclass(frozen=True)
class SamplingResult:
    """Everything one sampling run produced, in input order."""

    scored: list[ScoredCandidate]
    records: list[TrainingRecord]
    hard_pool: list[HardPoolEntry]
    stats: SamplingStats


def tau(t: int, settings: SamplerSettings) -> float:
    """tau_t = tau0 + t * delta_tau."""
    if t < 0:
        raise ValueError(f"iteration must be >= 0, got {t}")
    return settings.tau0 + t * settings.delta_tau


def target_in_shown_order(label: Choice, order: Order) -> Choice:
    """The refined label as seen by a reader of the responses in ``order`` (BA swaps A/B)."""
    if order is Order.AB:
        return label
    return Choice.B if label is Choice.A else Choice.A


def shown_target(pair: RefinedPair, candidate: RationaleCandidate) -> Choice:
    """The target y of ``candidate`` (its shown order); the pair must be labelled."""
    if pair.label is None:
        raise ValueError(f"pair {pair.id} has no label (dropped in refinement)")
    return target_in_shown_order(pair.label, candidate.order)


def shown_responses(pair: RefinedPair, order: Order) -> tuple[str, str]:
    """(response shown as A, response shown as B)."""
    ex = pair.example
    return (ex.response_a, ex.response_b) if order is Order.AB else (ex.response_b, ex.response_a)


def normalise_critique(text: str, verdict: Choice) -> str:
    """The critique ending in exactly one canonical verdict line."""
    body = strip_verdict(text)
    return f"{body}\n{verdict_line(verdict.value)}" if body else verdict_line(verdict.value)


def select(
    pair: RefinedPair,
    candidates: Sequence[RationaleCandidate],
    margins: Sequence[float | None],
    t: int,
    settings: SamplerSettings,
    model_version: str,
) -> PairSelection:
    """Apply §3.4 to one pair. ``margins[i]`` belongs to ``candidates[i]``; None = not scored
    (only allowed for unparseable candidates, which are never accepted either way). Without
    ``settings.margin_filter`` only the verdict decides; margins still rank the accepted."""
    if len(candidates) != len(margins):
        raise ValueError(f"{len(candidates)} candidates but {len(margins)} margins")
    threshold = tau(t, settings)
    scored: list[ScoredCandidate] = []
    for c, m in zip(candidates, margins, strict=True):
        if c.pair_id != pair.id or c.example_id != pair.example.id:
            raise ValueError(f"candidate {c.id} belongs to pair {c.pair_id}, not {pair.id}")
        if m is None:
            if c.verdict is not None:
                raise ValueError(f"parseable candidate {c.id} has no margin")
            continue
        y = shown_target(pair, c)
        ok = c.verdict is not None and c.verdict is y and (m >= threshold or not settings.margin_filter)
        scored.append(ScoredCandidate(id=f"{c.id}/score", candidate=c, target=y, margin=m, tau=threshold, accepted=ok, model_version=model_version))
    ranked = sorted((s for s in scored if s.accepted), key=lambda s: (-s.margin, s.candidate.id))
    for rank, s in enumerate(ranked):
        s.rank = rank
    records = [_record(pair, s, scored, t, settings) for s in ranked[: settings.top_n]]
    hard = None
    if not ranked:
        best = max((s.margin for s in scored), default=None)
        hard = HardPoolEntry(
            id=f"{pair.id}/hard/{t}",
            pair=pair,
            iteration=t,
            extra_samples=settings.hard_pool_extra_samples,
            best_margin=best,
            reason=_hard_reason(candidates, scored, threshold),
        )
    return PairSelection(scored=scored, records=records, hard=hard)


def _hard_reason(candidates: Sequence[RationaleCandidate], scored: list[ScoredCandidate], threshold: float) -> str:
    if not candidates:
        return "no candidates"
    if not any(s.candidate.verdict is not None for s in scored):
        return "no parseable candidate"
    right = [s.margin for s in scored if s.candidate.verdict is s.target]
    if not right:
        return "no candidate with the target verdict"
    return f"best margin {max(right):.3f} of a right-verdict candidate < tau {threshold:.3f}"


def _record(pair: RefinedPair, kept: ScoredCandidate, scored: list[ScoredCandidate], t: int, settings: SamplerSettings) -> TrainingRecord:
    c = kept.candidate
    rejected = None
    if settings.dpo:
        pool = [s for s in scored if not s.accepted and s.candidate.verdict is not None and s.candidate.order is c.order]
        if pool:
            worst = min(pool, key=lambda s: (s.margin, s.candidate.id))
            assert worst.candidate.verdict is not None
            rejected = normalise_critique(worst.candidate.text, worst.candidate.verdict)
    response_a, response_b = shown_responses(pair, c.order)
    return TrainingRecord(
        id=f"{c.id}/train",
        example_id=pair.example.id,
        pair_id=pair.id,
        candidate_id=c.id,
        image=pair.example.image,
        question=pair.example.question,
        response_a=response_a,
        response_b=response_b,
        order=c.order,
        target=normalise_critique(c.text, kept.target),
        verdict=kept.target,
        rejected=rejected,
        margin=kept.margin,
        iteration=t,
    )


def sample(
    pairs: Sequence[RefinedPair],
    candidates_by_pair: Mapping[str, Sequence[RationaleCandidate]],
    margin_fn: MarginFn,
    t: int,
    settings: SamplerSettings,
    model_version: str,
) -> SamplingResult:
    """Score every parseable candidate in ONE ``margin_fn`` call, then ``select`` per pair; a
    second call scores the probed pairs without critiques (``settings.critique_probe``).

    Pairs without a label are skipped (counted); candidates of unknown pairs are an error.
    """
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate pair ids")
    unknown = set(candidates_by_pair) - set(ids)
    if unknown:
        raise ValueError(f"candidates for unknown pairs: {sorted(unknown)[:5]}")
    labelled = [p for p in pairs if p.label is not None]
    batch = [(p, c) for p in labelled for c in candidates_by_pair.get(p.id, ()) if c.verdict is not None]
    margins = list(margin_fn(batch)) if batch else []
    if len(margins) != len(batch):
        raise ValueError(f"margin_fn returned {len(margins)} margins for {len(batch)} candidates")
    if not all(math.isfinite(m) for m in margins):
        raise ValueError("margin_fn returned a non-finite margin")
    by_candidate = {id(c): float(m) for (_, c), m in zip(batch, margins, strict=True)}

    selections: list[tuple[RefinedPair, PairSelection]] = []
    unparseable = 0
    for p in labelled:
        cands = list(candidates_by_pair.get(p.id, ()))
        unparseable += sum(c.verdict is None for c in cands)
        selections.append((p, select(p, cands, [by_candidate.get(id(c)) for c in cands], t, settings, model_version)))

    scored = [s for _, sel in selections for s in sel.scored]
    records = [r for _, sel in selections for r in sel.records]
    hard_pool = [sel.hard for _, sel in selections if sel.hard is not None]
    stats = _stats(selections, len(pairs) - len(labelled), unparseable, t, settings, model_version)
    stats.critique_probe = _probe_critiques(labelled[: settings.critique_probe], batch, by_candidate, margin_fn, tau(t, settings))
    return SamplingResult(scored=scored, records=records, hard_pool=hard_pool, stats=stats)


def _probe_critiques(
    probed: Sequence[RefinedPair],
    batch: Sequence[tuple[RefinedPair, RationaleCandidate]],
    by_candidate: Mapping[int, float],
    margin_fn: MarginFn,
    threshold: float,
) -> CritiqueProbe | None:
    ids = {p.id for p in probed}
    right = [(p, c) for p, c in batch if p.id in ids and c.verdict is shown_target(p, c)]
    # One critique-free margin per (pair, order): a candidate with no text is the bare prompt.
    bare = {(p.id, c.order): (p, c.model_copy(update={"text": ""})) for p, c in right}
    if not bare:
        return None
    without = dict(zip(bare, margin_fn(list(bare.values())), strict=True))
    pairs = [(by_candidate[id(c)], float(without[(p.id, c.order)])) for p, c in right]
    return CritiqueProbe(
        candidates=len(pairs),
        mean_lift=sum(w - wo for w, wo in pairs) / len(pairs),
        helped=sum(w > wo for w, wo in pairs) / len(pairs),
        rescued=sum(wo < threshold <= w for w, wo in pairs),
        sunk=sum(w < threshold <= wo for w, wo in pairs),
    )


def _rate(num: int, den: int) -> float:
    return num / den if den else 0.0


def margin_histogram(margins: Sequence[float], accepted: Sequence[bool], bins: int = 30) -> MarginHistogram:
    """Bin accepted and rejected margins on shared edges (empty when there are no margins)."""
    if len(margins) != len(accepted):
        raise ValueError("margins and accepted flags differ in length")
    if not margins:
        return MarginHistogram()
    values = np.asarray(margins, dtype=float)
    flags = np.asarray(accepted, dtype=bool)
    edges = np.histogram_bin_edges(values, bins=bins)
    acc, _ = np.histogram(values[flags], bins=edges)
    rej, _ = np.histogram(values[~flags], bins=edges)
    return MarginHistogram(edges=[float(e) for e in edges], accepted=[int(n) for n in acc], rejected=[int(n) for n in rej])


def _stats(
    selections: list[tuple[RefinedPair, PairSelection]],
    skipped: int,
    unparseable: int,
    t: int,
    settings: SamplerSettings,
    model_version: str,
) -> SamplingStats:
    scored = [s for _, sel in selections for s in sel.scored]
    n_pairs, n_scored = len(selections), len(scored)
    n_accepted = sum(s.accepted for s in scored)
    n_hard = sum(sel.hard is not None for _, sel in selections)

    categories: dict[str, list[PairSelection]] = {}
    for p, sel in selections:
        categories.setdefault(p.example.category, []).append(sel)
    by_category = {}
    for name in sorted(categories):
        sels = categories[name]
        cs = [s for sel in sels for s in sel.scored]
        acc, hard = sum(s.accepted for s in cs), sum(sel.hard is not None for sel in sels)
        by_category[name] = CategoryStats(
            pairs=len(sels),
            scored=len(cs),
            accepted=acc,
            hard=hard,
            acceptance_rate=_rate(acc, len(cs)),
            pair_acceptance_rate=_rate(len(sels) - hard, len(sels)),
        )

    # best right-verdict margin per pair: the pair keeps >= 1 candidate at threshold x iff best >= x
    best = [max((s.margin for s in sel.scored if s.candidate.verdict is s.target), default=-math.inf) for _, sel in selections]
    curve = [ThresholdPoint(tau=x, kept_ratio=_rate(sum(b >= x for b in best), n_pairs)) for x in settings.thresholds]
    records = [r for _, sel in selections for r in sel.records]
    return SamplingStats(
        iteration=t,
        tau=tau(t, settings),
        model_version=model_version,
        pairs=n_pairs,
        skipped=skipped,
        candidates=n_scored + unparseable,
        unparseable=unparseable,
        scored=n_scored,
        accepted=n_accepted,
        kept=len(records),
        hard=n_hard,
        dpo_pairs=sum(r.rejected is not None for r in records),
        acceptance_rate=_rate(n_accepted, n_scored),
        pair_acceptance_rate=_rate(n_pairs - n_hard, n_pairs),
        by_category=by_category,
        kept_ratio_by_threshold=curve,
        histogram=margin_histogram([s.margin for s in scored], [s.accepted for s in scored], settings.histogram_bins),
    )
