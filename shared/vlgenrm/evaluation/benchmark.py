"""The held-out benchmark (§3.6): a VL-RewardBench-format loader (JSON, JSON Lines or Parquet;
images inline, base64 or as files beside it) into typed examples. Nothing here runs a model."""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pydantic import ConfigDict, Field, ValidationError

from vlgenrm.contracts.base import Contract
from vlgenrm.contracts.data import Id
from vlgenrm.errors import PermanentError
from vlgenrm.evaluation.metrics import Better

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
    hallucinated: list[bool] | None = Field(None, min_length=2, max_length=2, description="Per response: does it hallucinate?")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Row fields not used above.")


# --------------------------------------------------------------------------- loading

#: Builds the error for the row being parsed.
_Bad = Callable[[str], BenchmarkFormatError]

_USED_FIELDS = {"id", "query", "response", "human_ranking", "image", "image_b64", "category", "hallucinated"}


def load_preference_benchmark(path: str | Path, *, category_map: dict[str, str] | None = None, max_image_bytes: int = 20 << 20) -> list[BenchmarkExample]:
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
    if hallucinated is not None and (not isinstance(hallucinated, list) or len(hallucinated) != 2 or not all(isinstance(h, bool) for h in hallucinated)):
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
