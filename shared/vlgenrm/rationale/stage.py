"""§3.3 on a batch of refined pairs: k candidate critiques per labelled pair, optionally in both
orders, each with the evidence block; verdicts parsed; unparseable candidates counted and
dropped; lineage kept (pair -> candidate).

What the generator is given is explicit (``RationaleSettings.teacher_sees``): the experts'
report (the method), or only the pair's label (the control arms: no ExpertReport, no evidence
block ever reaches the engine).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from vlgenrm.contracts import ExpertReport, Order, RationaleCandidate, RefinedPair
from vlgenrm.genrm.prompts import evidence_block
from vlgenrm.genrm.verdicts import parse_verdict
from vlgenrm.rationale.config import RationaleSettings, TeacherView
from vlgenrm.rationale.engines import RationaleEngine, RationaleRequest


def requests_for(
    pair: RefinedPair, report: ExpertReport | None, image: bytes, order: Order, with_evidence: bool, teacher_sees: TeacherView = TeacherView.EXPERTS
) -> RationaleRequest:
    """The request for one pair and order. With ``teacher_sees=label`` the report is never
    passed on (nor its evidence), whatever the caller holds; the pair's label is, instead."""
    ex = pair.example
    if teacher_sees is TeacherView.LABEL:
        report, with_evidence = None, False
    swapped = order is Order.BA
    a, b = (ex.response_b, ex.response_a) if swapped else (ex.response_a, ex.response_b)
    evidence = evidence_block(report) if (report is not None and with_evidence) else None
    if evidence and swapped:
        from vlgenrm.genrm.verdicts import swap_ab

        evidence = swap_ab(evidence)
    label = pair.label if teacher_sees is TeacherView.LABEL else None
    return RationaleRequest(
        image=image, question=ex.question, response_a=a, response_b=b, evidence=evidence or None, report=report, swapped=swapped, label=label
    )


def generate_candidates(
    pairs: Sequence[RefinedPair],
    reports: Mapping[str, ExpertReport],
    images: Mapping[str, bytes],
    engine: RationaleEngine,
    settings: RationaleSettings,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    extra_samples: Mapping[str, int] | None = None,
) -> tuple[list[RationaleCandidate], Counter[str]]:
    """Candidates for the labelled pairs (dropped pairs are skipped), in a deterministic order.

    ``extra_samples`` (pair id -> n) gives hard-pool pairs of the previous iteration more tries.
    With ``settings.teacher_sees=label`` ``reports`` is not read at all.
    """
    counts: Counter[str] = Counter()
    extra_samples = extra_samples or {}
    jobs: list[tuple[RefinedPair, Order, RationaleRequest, int]] = []
    for pair in pairs:
        if pair.label is None:
            counts["pairs_unlabelled"] += 1
            continue
        counts["pairs"] += 1
        n = settings.k + extra_samples.get(pair.id, 0)
        counts["pairs_hard"] += pair.id in extra_samples
        report = reports.get(pair.example.id) if settings.teacher_sees is TeacherView.EXPERTS else None
        for order in (Order.AB, Order.BA) if settings.both_orders else (Order.AB,):
            request = requests_for(pair, report, images[pair.example.image.key], order, settings.with_evidence, settings.teacher_sees)
            jobs.append((pair, order, request, n))
    # Engines sample n per request, so requests are grouped by n (ordinary pairs, then hard ones).
    jobs.sort(key=lambda job: job[3])
    candidates: list[RationaleCandidate] = []
    batches = [jobs[i : i + settings.batch_size] for i in range(0, len(jobs), settings.batch_size)]
    batches = [[j for j in batch if j[3] == n] for batch in batches for n in sorted({j[3] for j in batch})]
    done = 0
    for chunk in batches:
        start = done
        params = settings.sampling.model_copy(update={"n": chunk[0][3], "seed": seed + start})
        outputs = engine.generate([req for _, _, req, _ in chunk], params)
        done += len(chunk)
        for (pair, order, _, _), texts in zip(chunk, outputs, strict=True):
            for i, text in enumerate(texts):
                counts["candidates"] += 1
                parsed = parse_verdict(text)
                if not parsed.ok:
                    counts["unparseable"] += 1
                    counts[f"unparseable_{parsed.error.value}"] += 1
                    continue
                candidates.append(
                    RationaleCandidate(
                        id=f"{pair.id}/{order.value}/{i}",
                        pair_id=pair.id,
                        example_id=pair.example.id,
                        order=order,
                        sample_index=i,
                        generator=engine.name,
                        text=text,
                        verdict=parsed.choice(),
                    )
                )
        if progress is not None:
            progress(done, len(jobs))
    counts["parseable"] = len(candidates)
    return candidates, counts
