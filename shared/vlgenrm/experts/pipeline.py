"""The experts stage on a batch of examples: claims -> expert verdicts -> report -> refined pair.

This is the whole method of §3.1–§3.2 in one call; the experts service (and the local
driver) only feed it examples and images and store what it returns. With
``AnnotationSettings.enabled = false`` (the no-experts arm) no expert runs: the human labels
pass through and no report exists.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from vlgenrm.contracts import Choice, Example, ExpertReport, ExpertVerdict, RefinedPair, ResponseCoverage, VerdictLabel
from vlgenrm.experts.claims import ClaimExtractor, Extraction, LexiconClaimExtractor
from vlgenrm.experts.config import AnnotationSettings
from vlgenrm.experts.refine import human_only, refine
from vlgenrm.experts.verify import build_report, claim_findings


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> H x W x 3 uint8 RGB; ValueError when they are not an image."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a decodable image ({len(data)} bytes): {exc}") from exc


@dataclass
class Annotated:
    """Reports and refined pairs of a batch, with counts for metrics and the completion marker.

    Counts: ``claims``, ``claims_<verdict>`` (merged verdicts), ``claim_type_<type>``,
    ``covered_claims`` (some expert covers them), ``uncheckable_words`` (object words no expert
    covers), ``checkable_pairs`` (pairs with >= 1 covered claim: the coverage numerator, over
    ``kept + dropped``), ``judged_pairs`` (pairs with >= 1 claim judged supported or
    contradicted), ``label_<source>``, ``kept``, ``dropped``. With a model extractor (``llm``)
    also ``extraction_prompts`` (model calls, retries included), ``extraction_retries``,
    ``extraction_errors`` (responses whose output stayed malformed: no claims) and
    ``extraction_invalid_claims`` (answer items that made no claim).
    """

    reports: list[ExpertReport] = field(default_factory=list)
    pairs: list[RefinedPair] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class Annotator:
    """Claims extraction, expert verification and label refinement for batches of examples."""

    def __init__(
        self, settings: AnnotationSettings | None = None, *, registry: object | None = None, extractor: ClaimExtractor | None = None, store: Any = None
    ) -> None:
        """``store`` holds checkpoints given as ``s3://`` URIs (the llm extractor's transformers model)."""
        from vlgenrm.experts.registry import default_registry

        self.settings = settings or AnnotationSettings()
        if registry is None and self.settings.enabled:
            registry = default_registry(self.settings.experts)
        self.registry = registry  # None when the experts are disabled: nothing is built
        self.extractor = extractor or build_extractor(self.settings, registry, store=store)

    def passthrough(self, examples: Sequence[Example]) -> Annotated:
        """The experts disabled: human labels as they are, no claims, no reports."""
        out = Annotated()
        for ex in examples:
            pair = human_only(ex)
            out.pairs.append(pair)
            out.counts[f"label_{pair.source.value}"] += 1
            out.counts["kept" if pair.label is not None else "dropped"] += 1
        return out

    def annotate(self, examples: Sequence[Example], images: Sequence[np.ndarray], created_at: datetime) -> Annotated:
        """``created_at`` is given, not read from the clock, so a re-run writes the same bytes.
        With the experts disabled the images are ignored (see ``passthrough``)."""
        if not self.settings.enabled:
            return self.passthrough(examples)
        out = Annotated()
        extractions = self.extractor.analyse_pairs(examples)
        claims = [[*a.claims, *b.claims] for a, b in extractions]
        assert self.registry is not None
        verdicts = self.registry.verify_many(list(zip(images, claims, strict=True)))
        for ex, ex_claims, ex_verdicts, (a, b) in zip(examples, claims, verdicts, extractions, strict=True):
            findings = claim_findings(ex_claims, ex_verdicts)
            coverage = {Choice.A: response_coverage(a, ex_verdicts, findings), Choice.B: response_coverage(b, ex_verdicts, findings)}
            report = build_report(f"{ex.id}/report", ex.id, ex_claims, ex_verdicts, self.settings.verification, coverage=coverage, created_at=created_at)
            pair = refine(ex, report, self.settings.refinement)
            out.reports.append(report)
            out.pairs.append(pair)
            out.counts["claims"] += len(ex_claims)
            for verdict, _ in findings.values():
                out.counts[f"claims_{verdict.value}"] += 1
            for claim in ex_claims:
                out.counts[f"claim_type_{claim.type.value}"] += 1
            covered = sum(c.covered for c in coverage.values())
            out.counts["covered_claims"] += covered
            out.counts["uncheckable_words"] += sum(len(c.uncheckable) for c in coverage.values())
            out.counts["checkable_pairs"] += covered > 0
            if a.attempts or b.attempts:
                for e in (a, b):
                    out.counts["extraction_prompts"] += e.attempts
                    out.counts["extraction_retries"] += max(0, e.attempts - 1)
                    out.counts["extraction_errors"] += e.error is not None
                    out.counts["extraction_invalid_claims"] += e.invalid_claims
            out.counts["judged_pairs"] += any(c.judged for c in coverage.values())
            out.counts[f"label_{pair.source.value}"] += 1
            out.counts["kept" if pair.label is not None else "dropped"] += 1
        return out


def build_extractor(settings: AnnotationSettings, registry: object | None, *, store: Any = None) -> ClaimExtractor:
    """The extractor ``settings.extractor`` names, over the label spaces of ``registry``'s experts
    (the lexicon's nouns; the llm extractor's subject resolution). Experts disabled: the lexicon,
    never a model (nothing is extracted then)."""
    experts = registry if registry is not None else []
    if settings.extractor == "llm" and settings.enabled:
        from vlgenrm.experts.llm_claims import LLMClaimExtractor, build_engine

        return LLMClaimExtractor.for_registry(experts, build_engine(settings.llm.engine, store=store), settings.llm)
    return LexiconClaimExtractor.for_registry(experts)


def response_coverage(extraction: Extraction, verdicts: Sequence[ExpertVerdict], findings: dict[str, tuple[VerdictLabel, float]]) -> ResponseCoverage:
    """Claims of one response, how many some expert covered (it returned a verdict, even
    unverifiable) and judged (merged verdict supported or contradicted), and its uncheckable words."""
    judged_by = {v.claim_id for v in verdicts}
    ids = [c.id for c in extraction.claims]
    return ResponseCoverage(
        claims=len(ids),
        covered=sum(i in judged_by for i in ids),
        judged=sum(findings.get(i, (VerdictLabel.UNVERIFIABLE, 0.0))[0] is not VerdictLabel.UNVERIFIABLE for i in ids),
        uncheckable=list(extraction.uncheckable),
    )


def coverage(counts: dict[str, int | float]) -> float | None:
    """Share of annotated pairs with >= 1 checkable claim, from an Annotated's (or a shard's) counts."""
    pairs = counts.get("kept", 0) + counts.get("dropped", 0)
    return counts.get("checkable_pairs", 0) / pairs if pairs and "checkable_pairs" in counts else None
