"""Records that flow through the method (§3): examples, claims, verdicts, labels, rationales.

Every record carries its lineage (example id -> report id -> rationale id -> training record),
so a checkpoint's behaviour can be traced back to the data that taught it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, model_validator

from vlgenrm.contracts.base import Contract, utcnow
from vlgenrm.contracts.enums import (
    Choice,
    ClaimType,
    HumanLabel,
    LabelSource,
    Order,
    VerdictLabel,
)

Id = Annotated[str, Field(min_length=1, max_length=256, description="Stable identifier.")]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 digest.")]


class ImageRef(Contract):
    """Where an image lives: a store key (content-addressed) plus its digest."""

    key: str = Field(description="Store key, normally images/<sha256>.<ext>.")
    sha256: Sha256
    width: int | None = Field(None, gt=0)
    height: int | None = Field(None, gt=0)


class Example(Contract):
    """A preference example: image, question, two responses and the human label."""

    id: Id
    image: ImageRef
    question: str
    response_a: str
    response_b: str
    human_label: HumanLabel = HumanLabel.UNKNOWN
    category: str = Field("general", description="Category used for per-category metrics.")
    dataset: str | None = Field(None, description="Dataset the example came from.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class Claim(Contract):
    """One checkable statement a response makes about the image (§3.1)."""

    id: Id
    response: Choice
    type: ClaimType
    subject: str = Field(description="Normalised object label, e.g. 'dog'.")
    count: int | None = Field(None, ge=0, description="For count claims.")
    attribute: str | None = Field(None, description="For attribute claims, e.g. 'red'.")
    text: str | None = Field(None, description="For text claims: the asserted visible text.")
    span: str = Field("", description="The words of the response the claim came from.")

    @model_validator(mode="after")
    def _fields_match_type(self) -> Claim:
        required = {ClaimType.COUNT: "count", ClaimType.ATTRIBUTE: "attribute", ClaimType.TEXT: "text"}
        name = required.get(self.type)
        if name is not None and getattr(self, name) is None:
            raise ValueError(f"a {self.type.value} claim needs '{name}'")
        return self


class Evidence(Contract):
    """What an expert saw: a box with a label and score, and/or recognised text."""

    label: str | None = None
    score: Probability | None = None
    box: tuple[float, float, float, float] | None = Field(None, description="x0, y0, x1, y1 in pixels.")
    text: str | None = None


class ExpertVerdict(Contract):
    """One expert's finding on one claim, with its confidence ``p``."""

    claim_id: Id
    expert: str = Field(description="Registry name of the expert.")
    verdict: VerdictLabel
    confidence: Probability
    evidence: list[Evidence] = Field(default_factory=list)


class ResponseCoverage(Contract):
    """How much of one response the experts could check: a user sees coverage, not silence."""

    claims: int = Field(0, ge=0, description="Claims extracted from the response.")
    covered: int = Field(0, ge=0, description="Claims at least one registered expert covers (checkable claims).")
    judged: int = Field(0, ge=0, description="Claims whose merged verdict is supported or contradicted.")
    uncheckable: list[str] = Field(
        default_factory=list, description="Object words of the response that no registered expert covers (canonical nouns, reading order)."
    )


class ExpertReport(Contract):
    """All claims of a pair, the experts' verdicts and the scores h and s of §3.1."""

    id: Id
    example_id: Id
    claims: list[Claim] = Field(default_factory=list)
    verdicts: list[ExpertVerdict] = Field(default_factory=list)
    hallucination: dict[Choice, float] = Field(description="h(r): summed confidence of contradicted claims.")
    support: dict[Choice, float] = Field(description="s(r): summed confidence of supported claims.")
    expert_preference: Choice | None = Field(None, description="y_e, or None within the margin delta.")
    experts: list[str] = Field(default_factory=list, description="Experts consulted.")
    coverage: dict[Choice, ResponseCoverage] = Field(
        default_factory=dict, description="Per response: claims found, checkable, judged, and the uncheckable object words (empty when not measured)."
    )
    created_at: datetime = Field(default_factory=utcnow)


class RefinedPair(Contract):
    """A pair after label refinement (§3.2); ``label`` is None when the pair was dropped."""

    id: Id
    example: Example
    report_id: Id | None = None
    human_label: HumanLabel
    expert_label: Choice | None
    label: Choice | None = Field(description="The label training uses; None = dropped.")
    source: LabelSource
    reason: str = Field("", description="Human-readable account of the decision.")

    @model_validator(mode="after")
    def _dropped_only_on_conflict(self) -> RefinedPair:
        if self.label is None and self.source != LabelSource.CONFLICT:
            raise ValueError("only a conflict may leave a pair without a label")
        return self


class RationaleCandidate(Contract):
    """One generated critique of a labelled pair (§3.3)."""

    id: Id
    pair_id: Id
    example_id: Id
    order: Order = Order.AB
    sample_index: int = Field(0, ge=0)
    generator: str = Field(description="Engine and model, e.g. 'vllm:Qwen/Qwen2.5-VL-72B'.")
    text: str
    verdict: Choice | None = Field(None, description="Parsed verdict in the shown order; None = unparseable.")


class ScoredCandidate(Contract):
    """A candidate scored by the current GenRM with teacher forcing (§3.4)."""

    id: Id
    candidate: RationaleCandidate
    target: Choice = Field(description="The refined label y, in the shown order.")
    margin: float = Field(description="log p(verdict=y) - log p(verdict=not y).")
    tau: float = Field(description="The threshold tau_t in force.")
    accepted: bool
    rank: int | None = Field(None, ge=0, description="Rank among accepted candidates of the pair.")
    model_version: str = Field(description="Checkpoint that computed the margin.")


class TrainingRecord(Contract):
    """One training example for the GenRM (§3.5), with DPO's rejected critique if any."""

    id: Id
    example_id: Id
    pair_id: Id
    candidate_id: Id
    image: ImageRef
    question: str
    response_a: str
    response_b: str
    order: Order = Order.AB
    target: str = Field(description="Critique ending in the verdict line.")
    verdict: Choice
    rejected: str | None = Field(None, description="A rejected critique for the DPO term.")
    margin: float | None = None
    iteration: int = Field(0, ge=0)
