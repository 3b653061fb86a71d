"""Evaluation harness (§3.6): a VL-RewardBench-format loader and model-independent metrics.

Nothing here runs a model. The scorer produces predictions elsewhere; this module turns a
benchmark file into typed examples and typed predictions into reports: pairwise accuracy
(overall, per category, macro mean) with Wilson 95 % intervals, a collapse check on the
confidences, hallucination-detection precision/recall/F1 and best-of-N selection accuracy.

Sums are kept exact (``Fraction``) and divided once, so a hand-computed accuracy such as
11/20 comes back as exactly ``0.55`` whatever the order of the predictions.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlgenrm.contracts.base import Contract, utcnow
from vlgenrm.contracts.data import Id, Probability
from vlgenrm.errors import PermanentError

#: Source (``query_source`` or id prefix) -> category, in the spirit of VL-RewardBench.
DEFAULT_CATEGORY_MAP: dict[str, str] = {
    "rlaif-v": "hallucination",
    "rlhf-v": "hallucination",
    "povid": "hallucination",
    "mathverse": "reasoning",
    "mmmu-pro": "reasoning",
    "wildvision": "general",
    "vlfeedback": "general",
}
FALLBACK_CATEGORY = "general"

Better = Literal[0, 1]


class BenchmarkFormatError(PermanentError):
    """A benchmark file or one of its rows is unusable; names the file and the 1-based row."""

    def __init__(self, path: str | Path, row: int | None, problem: str) -> None:
        self.path, self.row, self.problem = str(path), row, problem
        where = f"{self.path}: row {row}" if row is not None else self.path
        super().__init__(f"{where}: {problem}")


class BenchmarkExample(Contract):
    """One preference pair of a held-out benchmark, image included."""

    # Raw bytes in Python, base64 in JSON: images are binary.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    id: Id
    query: str
    responses: list[str] = Field(min_length=2, max_length=2)
    better: Better = Field(description="Index of the human-preferred response.")
    category: str = Field(min_length=1)
    image: bytes = Field(description="Raw image bytes (base64 in JSON).")
    hallucinated: list[bool] | None = Field(None, min_length=2, max_length=2,
                                            description="Per response: does it hallucinate?")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Row fields not used above.")


# --------------------------------------------------------------------------- loading

#: Builds the error for the row being parsed.
_Bad = Callable[[str], BenchmarkFormatError]

_USED_FIELDS = {"id", "query", "response", "human_ranking", "image", "image_b64", "category", "hallucinated"}


def load_preference_benchmark(
    path: str | Path, *, category_map: dict[str, str] | None = None, max_image_bytes: int = 20 << 20
) -> list[BenchmarkExample]:
    """Read a VL-RewardBench-format file (``.jsonl``/``.json``/``.parquet``) into examples.

    ``.json`` may hold one array of rows or JSON lines. Rows are numbered from 1 (for JSON
    lines: the physical line number) in every :class:`BenchmarkFormatError`.

    ``category_map`` replaces :data:`DEFAULT_CATEGORY_MAP` (extend it with ``{**DEFAULT_CATEGORY_MAP, ...}``);
    it is consulted only for rows without a ``category``. Raises :class:`BenchmarkFormatError`
    on the first bad row, an unknown suffix, an unreadable file or a file without rows.
    """
    path = Path(path)
    mapping = DEFAULT_CATEGORY_MAP if category_map is None else category_map
    if not path.is_file():
        raise BenchmarkFormatError(path, None, "file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _json_rows(path)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise BenchmarkFormatError(path, None, f"unknown suffix {suffix!r}; expected .jsonl, .json or .parquet")
    examples: list[BenchmarkExample] = []
    seen: set[str] = set()
    for row_no, row in rows:
        example = _parse_row(path, row_no, row, mapping, max_image_bytes)
        if example.id in seen:
            # A duplicate would silently count twice in every metric.
            raise BenchmarkFormatError(path, row_no, f"duplicate id {example.id!r}")
        seen.add(example.id)
        examples.append(example)
    if not examples:
        raise BenchmarkFormatError(path, None, "no rows")
    return examples


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, value): a JSON array's 1-based index, else the physical line number."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BenchmarkFormatError(path, None, f"not UTF-8 text: {exc}") from exc
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchmarkFormatError(path, None, f"invalid JSON: {exc}") from exc
        yield from enumerate(values, start=1)
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchmarkFormatError(path, line_no, f"invalid JSON: {exc}") from exc


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based row number, row dict), in batches so a large benchmark is not held twice."""
    try:
        reader = pq.ParquetFile(path)
        row_no = 0
        for batch in reader.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                row_no += 1
                yield row_no, row
    except (pa.ArrowException, OSError) as exc:
        raise BenchmarkFormatError(path, None, f"unreadable Parquet: {exc}") from exc


def _parse_row(path: Path, row_no: int, row: Any, mapping: dict[str, str], max_bytes: int) -> BenchmarkExample:
    def bad(problem: str) -> BenchmarkFormatError:
        return BenchmarkFormatError(path, row_no, problem)

    if not isinstance(row, dict):
        raise bad(f"expected an object, got {type(row).__name__}")
    # Parquet fills absent columns with nulls; treat null as absent so both forms agree.
    row = {k: v for k, v in row.items() if v is not None}
    for name in ("id", "query", "response", "human_ranking"):
        if name not in row:
            raise bad(f"missing field {name!r}")
    if not isinstance(row["id"], str | int) or isinstance(row["id"], bool) or str(row["id"]) == "":
        raise bad("'id' must be a non-empty string")
    if not isinstance(row["query"], str):
        raise bad("'query' must be a string")
    responses = row["response"]
    if not isinstance(responses, list) or len(responses) != 2:
        count = len(responses) if isinstance(responses, list) else "not a list"
        raise bad(f"'response' must hold exactly 2 responses, got {count}")
    if not all(isinstance(r, str) for r in responses):
        raise bad("'response' entries must be strings")
    ranking = row["human_ranking"]
    if not isinstance(ranking, list) or any(type(r) is not int for r in ranking) or sorted(ranking) != [0, 1]:
        raise bad(f"'human_ranking' must be a permutation of [0, 1], got {ranking!r}")
    hallucinated = row.get("hallucinated")
    if hallucinated is not None and (not isinstance(hallucinated, list) or len(hallucinated) != 2
                                     or not all(isinstance(h, bool) for h in hallucinated)):
        raise bad("'hallucinated' must be a list of 2 booleans")
    image = _image_bytes(path, row, bad, max_bytes)
    try:
        return BenchmarkExample(
            id=str(row["id"]),
            query=row["query"],
            responses=responses,
            better=ranking.index(0),  # the lowest rank is the preferred response
            category=_category(row, mapping),
            image=image,
            hallucinated=hallucinated,
            metadata={k: v for k, v in row.items() if k not in _USED_FIELDS},
        )
    except ValidationError as exc:
        raise bad(f"invalid example: {exc}") from exc


def _image_bytes(path: Path, row: dict[str, Any], bad: _Bad, max_bytes: int) -> bytes:
    """Resolve ``image`` (path string or HF ``{bytes, path}`` dict) or ``image_b64`` to checked bytes."""
    image, b64 = row.get("image"), row.get("image_b64")
    if image is not None and b64 is not None:
        raise bad("both 'image' and 'image_b64' are set; which one is the image is ambiguous")
    if image is None and b64 is None:
        raise bad("missing field 'image' (or 'image_b64')")
    if b64 is not None:
        data = _decode(b64, bad, "image_b64")
    elif isinstance(image, str):
        data = _read_image_file(path, image, bad, max_bytes)
    elif isinstance(image, dict):
        raw, ref = image.get("bytes"), image.get("path")
        if raw is not None:
            data = _decode(raw, bad, "image.bytes")
        elif isinstance(ref, str) and ref:
            data = _read_image_file(path, ref, bad, max_bytes)
        else:
            raise bad("'image' dict has neither 'bytes' nor 'path'")
    else:
        raise bad(f"'image' must be a path or a {{bytes, path}} dict, got {type(image).__name__}")
    if len(data) > max_bytes:
        raise bad(f"image is {len(data)} bytes, larger than max_image_bytes={max_bytes}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        raise bad(f"image is not decodable: {exc}") from exc
    return data


def _decode(value: Any, bad: _Bad, field: str) -> bytes:
    """Raw bytes pass through (Parquet); strings are base64 (JSON)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad(f"'{field}' is not valid base64: {exc}") from exc
    raise bad(f"'{field}' must be bytes or a base64 string, got {type(value).__name__}")


def _read_image_file(path: Path, ref: str, bad: _Bad, max_bytes: int) -> bytes:
    file = Path(ref) if Path(ref).is_absolute() else path.parent / ref
    if not file.is_file():
        raise bad(f"image file not found: {file}")
    size = file.stat().st_size
    if size > max_bytes:  # checked before reading: never load a huge file just to reject it
        raise bad(f"image file {file} is {size} bytes, larger than max_image_bytes={max_bytes}")
    return file.read_bytes()


def _category(row: dict[str, Any], mapping: dict[str, str]) -> str:
    """Explicit ``category``, else ``query_source``, else the id prefix, else ``general``."""
    explicit = row.get("category")
    if isinstance(explicit, str) and explicit.strip():
        return explicit.strip()
    norm = {k.lower().replace("_", "-"): v for k, v in mapping.items()}
    for source in (row.get("query_source"), row.get("id")):
        if source is None:
            continue
        key = str(source).lower().replace("_", "-")
        # Longest prefix wins, so a specific source can override a general one.
        hits = [k for k in norm if key.startswith(k)]
        if hits:
            return norm[max(hits, key=len)]
    return FALLBACK_CATEGORY


# --------------------------------------------------------------------------- predictions and reports


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PairPrediction(_Model):
    """A model's verdict on one pair; ``p_first`` is already averaged over both presentation orders.

    Correct iff ``(p_first > 0.5) == (better == 0)``. Exactly 0.5 (no epsilon) is a coin flip and
    counts as half-correct, so an undecided model scores 0.5 rather than being biased to one side.
    """

    example_id: Id
    category: str = Field(min_length=1)
    p_first: Probability = Field(allow_inf_nan=False, description="P(response 0 is better).")
    better: Better


class HallucinationPrediction(_Model):
    """Whether the model flags one response as hallucinating, and the truth."""

    example_id: Id
    response: int = Field(ge=0, description="Index of the response within its example.")
    predicted: bool
    actual: bool


class BestOfNGroup(_Model):
    """Scores for N candidates answering the same query, and the index of the truly best one."""

    group_id: Id
    scores: list[float] = Field(min_length=1)
    best: int = Field(ge=0)

    @field_validator("scores")
    @classmethod
    def _no_nan(cls, scores: list[float]) -> list[float]:
        if any(math.isnan(s) for s in scores):
            raise ValueError("scores must not be NaN (argmax would be meaningless)")
        return scores

    @model_validator(mode="after")
    def _best_in_range(self) -> BestOfNGroup:
        if self.best >= len(self.scores):
            raise ValueError(f"best={self.best} is out of range for {len(self.scores)} scores")
        return self


Interval = tuple[float, float]

#: Mean |p - 0.5| below this (or a spread of p below it) means the verdicts carry no signal.
COLLAPSE_THRESHOLD = 0.02
#: Equal-width bins of p over [0, 1] in :class:`ConfidenceReport`.
CONFIDENCE_BINS = 10


def wilson_interval(successes: float, n: int, z: float = 1.96) -> Interval:
    """Wilson score interval of ``successes / n`` (default: 95 %); ``n == 0`` gives ``(0, 1)``.

    ``successes`` may be fractional (ties count half). Wilson rather than the normal
    approximation because it stays inside [0, 1] and is honest at 0/n and n/n.
    """
    if n < 0 or z <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n and z > 0, got {successes}/{n}, z={z}")
    if n == 0:
        return (0.0, 1.0)  # no evidence: every rate is possible
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Exact at 0/n and n/n, clamped elsewhere: float rounding can put a bound a hair past the estimate.
    low = 0.0 if successes == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if successes == n else min(1.0, max(p, centre + half))
    return (low, high)


class AccuracyReport(_Model):
    """Pairwise accuracy overall, per category and as the unweighted mean of categories.

    Every accuracy but the macro mean has its Wilson 95 % interval (``*_ci``); the macro mean has
    none, as its categories' sizes differ. Reports written before the intervals existed get them
    derived from their accuracies and counts when read.
    """

    overall: float = Field(ge=0.0, le=1.0)
    per_category: dict[str, float]
    macro: float = Field(ge=0.0, le=1.0, description="Mean of per-category accuracies.")
    counts: dict[str, int]
    n: int = Field(ge=1)
    overall_ci: Interval = Field((0.0, 1.0), description="Wilson 95 % interval of the overall accuracy.")
    per_category_ci: dict[str, Interval] = Field(default_factory=dict, description="Wilson 95 % interval per category.")

    @model_validator(mode="before")
    @classmethod
    def _derive_intervals(cls, data: Any) -> Any:
        # accuracy * n is the (half-integer) credit, so an old report's intervals are recoverable.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "overall_ci" not in data and _numbers(data.get("overall"), data.get("n")):
            data["overall_ci"] = _interval_of(data["overall"], data["n"])
        per_cat, counts = data.get("per_category"), data.get("counts")
        if "per_category_ci" not in data and isinstance(per_cat, dict) and isinstance(counts, dict):
            data["per_category_ci"] = {c: _interval_of(a, counts[c]) for c, a in per_cat.items()
                                       if _numbers(a, counts.get(c))}
        return data


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values)


def _interval_of(accuracy: float, n: int) -> Interval:
    """The interval of a stored rate; rounding to half-credits undoes float error in ``accuracy * n``."""
    if not 0 <= accuracy <= 1:
        return (0.0, 1.0)  # the field validator reports the bad accuracy itself
    return wilson_interval(min(round(accuracy * n * 2) / 2, n), int(n))


class ConfidenceReport(_Model):
    """How decided the pairwise verdicts are: the check that a constant answer is not read as signal.

    ``mean_confidence`` is mean |p - 0.5| (0 = always undecided, 0.5 = always certain);
    ``p_std`` is the standard deviation of p. ``collapsed`` is true when either is below
    ``threshold``: an undecided model (p ~ 0.5) and a model that gives one answer to everything
    (p constant) both reach an accuracy that is only the benchmark's label balance.
    ``histogram`` counts p in ``len(histogram)`` equal bins over [0, 1] (the last bin includes 1).
    """

    mean_confidence: float = Field(ge=0.0, le=0.5, description="Mean |p - 0.5|.")
    p_std: float = Field(ge=0.0, le=0.5, description="Population standard deviation of p.")
    histogram: list[int] = Field(min_length=1, description="Counts of p in equal-width bins over [0, 1].")
    threshold: float = Field(COLLAPSE_THRESHOLD, ge=0.0, le=0.5)
    collapsed: bool
    collapse_reason: Literal["undecided", "constant"] | None = Field(
        None, description="undecided: mean |p - 0.5| < threshold; constant: std of p < threshold.")
    n: int = Field(ge=1)

    @model_validator(mode="after")
    def _counts_add_up(self) -> ConfidenceReport:
        if sum(self.histogram) != self.n or any(c < 0 for c in self.histogram):
            raise ValueError(f"histogram counts {self.histogram} do not add up to n={self.n}")
        if self.collapsed != (self.collapse_reason is not None):
            raise ValueError("collapse_reason is set exactly when collapsed is true")
        return self


class DetectionReport(_Model):
    """Hallucination detection with 'hallucinates' as the positive class.

    0/0 is reported as 0.0 (precision with no positive predictions, recall with no positive
    truths, F1 when both are 0): a detector that never fires earns no credit.
    """

    precision: float = Field(ge=0.0, le=1.0)
    recall: float = Field(ge=0.0, le=1.0)
    f1: float = Field(ge=0.0, le=1.0)
    tp: int = Field(ge=0)
    fp: int = Field(ge=0)
    fn: int = Field(ge=0)
    tn: int = Field(ge=0)


class BestOfNReport(_Model):
    """How often the highest-scored candidate is the truly best one (ties share credit)."""

    accuracy: float = Field(ge=0.0, le=1.0)
    mean_n: float = Field(ge=1.0)
    groups: int = Field(ge=1)


def _ratio(num: Fraction | int, den: int) -> float:
    return float(Fraction(num) / den) if den else 0.0


def pairwise_accuracy(preds: list[PairPrediction]) -> AccuracyReport:
    """Accuracy of ``preds`` (0.5 ties count half); raises ValueError when empty."""
    if not preds:
        # An empty evaluation must not read as 0.0 accuracy and still drive a promotion decision.
        raise ValueError("pairwise_accuracy needs at least one prediction")
    credit: dict[str, Fraction] = defaultdict(Fraction)
    counts: dict[str, int] = defaultdict(int)
    for p in preds:
        if p.p_first == 0.5:
            score = Fraction(1, 2)
        else:
            score = Fraction(int((p.p_first > 0.5) == (p.better == 0)))
        credit[p.category] += score
        counts[p.category] += 1
    cats = sorted(counts)
    per_cat = {c: credit[c] / counts[c] for c in cats}
    total = sum(credit.values(), Fraction())
    return AccuracyReport(
        overall=_ratio(total, len(preds)),
        per_category={c: float(per_cat[c]) for c in cats},
        macro=_ratio(sum(per_cat.values(), Fraction()), len(cats)),
        counts={c: counts[c] for c in cats},
        n=len(preds),
        overall_ci=wilson_interval(float(total), len(preds)),
        per_category_ci={c: wilson_interval(float(credit[c]), counts[c]) for c in cats},
    )


def confidence_report(preds: list[PairPrediction], threshold: float = COLLAPSE_THRESHOLD,
                      bins: int = CONFIDENCE_BINS) -> ConfidenceReport:
    """Mean |p - 0.5|, spread and histogram of ``preds``' p, and the collapse verdict."""
    if not preds:
        raise ValueError("confidence_report needs at least one prediction")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    ps = [p.p_first for p in preds]
    n = len(ps)
    mean = math.fsum(ps) / n
    histogram = [0] * bins
    for p in ps:
        histogram[min(int(p * bins), bins - 1)] += 1
    mean_confidence = math.fsum(abs(p - 0.5) for p in ps) / n
    p_std = math.sqrt(math.fsum((p - mean) ** 2 for p in ps) / n)
    reason: Literal["undecided", "constant"] | None = None
    if mean_confidence < threshold:
        reason = "undecided"
    elif n > 1 and p_std < threshold:  # one prediction has no spread to measure
        reason = "constant"
    return ConfidenceReport(mean_confidence=min(mean_confidence, 0.5), p_std=min(p_std, 0.5), histogram=histogram,
                            threshold=threshold, collapsed=reason is not None, collapse_reason=reason, n=n)


def hallucination_detection(flags: list[HallucinationPrediction]) -> DetectionReport:
    """Precision, recall and F1 of hallucination flags; 0/0 is 0.0 (see :class:`DetectionReport`)."""
    tp = sum(f.predicted and f.actual for f in flags)
    fp = sum(f.predicted and not f.actual for f in flags)
    fn = sum(not f.predicted and f.actual for f in flags)
    tn = len(flags) - tp - fp - fn
    # F1 as 2tp/(2tp+fp+fn): equal to 2PR/(P+R) but one exact division.
    return DetectionReport(precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
                           f1=_ratio(2 * tp, 2 * tp + fp + fn), tp=tp, fp=fp, fn=fn, tn=tn)


def best_of_n_accuracy(groups: list[BestOfNGroup]) -> BestOfNReport:
    """Argmax selection accuracy; a group whose best is among k tied maxima counts 1/k."""
    if not groups:
        raise ValueError("best_of_n_accuracy needs at least one group")
    credit = Fraction()
    for g in groups:
        top = max(g.scores)
        tied = [i for i, s in enumerate(g.scores) if s == top]
        if g.best in tied:
            credit += Fraction(1, len(tied))
    return BestOfNReport(accuracy=_ratio(credit, len(groups)),
                         mean_n=_ratio(sum(len(g.scores) for g in groups), len(groups)), groups=len(groups))


class EvaluationReport(Contract):
    """The result of evaluating one checkpoint on one benchmark; what promotion reads."""

    model: str = Field(min_length=1, description="Model or checkpoint name.")
    dataset: str = Field(min_length=1)
    created_at: datetime = Field(default_factory=utcnow)
    accuracy: AccuracyReport
    confidence: ConfidenceReport | None = Field(None, description="Collapse check of the pairwise verdicts (absent in old reports).")
    hallucination: DetectionReport | None = None
    best_of_n: BestOfNReport | None = None

    def to_markdown(self) -> str:
        """A human-readable summary: collapse warning, accuracy table with intervals, confidence, detection, best-of-N."""
        acc, conf = self.accuracy, self.confidence
        lines = [f"# Evaluation: {_md(self.model)} on {_md(self.dataset)}", "", f"_Created {self.created_at.isoformat()}_", ""]
        if conf is not None and conf.collapsed:
            # First and loud: every number below is meaningless for a collapsed model.
            lines += [(f"> **COLLAPSED ({conf.collapse_reason}): the model gives the same answer to everything: "
                       f"accuracy is not signal.** Mean |p − 0.5| = {conf.mean_confidence:.4f}, std of p = "
                       f"{conf.p_std:.4f} (threshold {conf.threshold:g})."), ""]
        lo, hi = acc.overall_ci
        lines += [
            "## Pairwise accuracy",
            "",
            "Per category (hallucination type on the synthetic set), with Wilson 95 % intervals:",
            "",
            "| Category | N | Accuracy | 95 % CI |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {_md(c)} | {acc.counts[c]} | {acc.per_category[c]:.4f} | {_ci(acc.per_category_ci.get(c))} |"
                  for c in acc.per_category]
        lines += [
            f"| **Overall** | {acc.n} | **{acc.overall:.4f}** | {_ci(acc.overall_ci)} |",
            f"| **Macro mean** | {len(acc.per_category)} categories | {acc.macro:.4f} | – |",
        ]
        if lo <= 0.5 <= hi:
            lines += ["", (f"Chance (0.5) is inside the overall 95 % interval {_ci(acc.overall_ci)}: "
                           "this accuracy is not distinguishable from a coin flip.")]
        if conf is not None:
            width = 1 / len(conf.histogram)
            lines += ["", "## Confidence", "",
                      (f"Mean |p − 0.5| = {conf.mean_confidence:.4f}, std of p = {conf.p_std:.4f} over {conf.n} pairs "
                       f"(collapsed below {conf.threshold:g}: {'**yes**' if conf.collapsed else 'no'})."), "",
                      "| P(response 0 better) | Count |", "|---|---:|"]
            for i, count in enumerate(conf.histogram):
                close = "]" if i == len(conf.histogram) - 1 else ")"
                lines.append(f"| [{i * width:.2f}, {(i + 1) * width:.2f}{close} | {count} |")
        if (h := self.hallucination) is not None:
            lines += ["", "## Hallucination detection", "",
                      "| Precision | Recall | F1 | TP | FP | FN | TN |", "|---:|---:|---:|---:|---:|---:|---:|",
                      f"| {h.precision:.4f} | {h.recall:.4f} | {h.f1:.4f} | {h.tp} | {h.fp} | {h.fn} | {h.tn} |"]
        if (b := self.best_of_n) is not None:
            lines += ["", "## Best-of-N selection", "", "| Groups | Mean N | Accuracy |", "|---:|---:|---:|",
                      f"| {b.groups} | {b.mean_n:.2f} | {b.accuracy:.4f} |"]
        return "\n".join(lines) + "\n"


def _ci(interval: Interval | None) -> str:
    return "–" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"


def _md(text: str) -> str:
    """Escape table-breaking characters in names that come from data."""
    return text.replace("|", "\\|").replace("\n", " ")
