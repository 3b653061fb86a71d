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

import numpy as np
from pydantic import BaseModel, Field

from vlgenrm.contracts import Example, ExpertReport, RefinedPair
from vlgenrm.experts.base import ExpertsSettings
from vlgenrm.experts.claims import ClaimExtractor, LexiconClaimExtractor
from vlgenrm.experts.refine import RefinementSettings, human_only, refine
from vlgenrm.experts.verify import VerificationSettings, build_report, claim_findings


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> H x W x 3 uint8 RGB; ValueError when they are not an image."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a decodable image ({len(data)} bytes): {exc}") from exc


class AnnotationSettings(BaseModel):
    """Everything the experts stage is configured with (an Iteration's ``spec.experts``)."""

    enabled: bool = Field(True, description="Run the vision experts; false = human labels pass through (source=human) and no ExpertReport is written (the no-experts arm).")
    experts: ExpertsSettings = Field(default_factory=ExpertsSettings)
    verification: VerificationSettings = Field(default_factory=VerificationSettings)
    refinement: RefinementSettings = Field(default_factory=RefinementSettings)
    batch_size: int = Field(16, ge=1, description="Examples whose images are verified together.")


@dataclass
class Annotated:
    """Reports and refined pairs of a batch, with counts for metrics and the completion marker."""

    reports: list[ExpertReport] = field(default_factory=list)
    pairs: list[RefinedPair] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


class Annotator:
    """Claims extraction, expert verification and label refinement for batches of examples."""

    def __init__(self, settings: AnnotationSettings | None = None, *, registry: object | None = None, extractor: ClaimExtractor | None = None) -> None:
        from vlgenrm.experts.registry import default_registry

        self.settings = settings or AnnotationSettings()
        if registry is None and self.settings.enabled:
            registry = default_registry(self.settings.experts)
        self.registry = registry  # None when the experts are disabled: nothing is built
        self.extractor = extractor or LexiconClaimExtractor()

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
        claims = [self.extractor.extract_pair(ex) for ex in examples]
        assert self.registry is not None
        verdicts = self.registry.verify_many(list(zip(images, claims, strict=True)))
        for ex, ex_claims, ex_verdicts in zip(examples, claims, verdicts, strict=True):
            report = build_report(f"{ex.id}/report", ex.id, ex_claims, ex_verdicts, self.settings.verification, created_at=created_at)
            pair = refine(ex, report, self.settings.refinement)
            out.reports.append(report)
            out.pairs.append(pair)
            out.counts["claims"] += len(ex_claims)
            for verdict, _ in claim_findings(ex_claims, ex_verdicts).values():
                out.counts[f"claims_{verdict.value}"] += 1
            out.counts[f"label_{pair.source.value}"] += 1
            out.counts["kept" if pair.label is not None else "dropped"] += 1
        return out
