"""The VL-RewardBench loader: every accepted form, every rejected row, on hand-made files."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlgenrm.errors import PermanentError
from vlgenrm.evaluation.benchmark import BenchmarkExample, BenchmarkFormatError, load_preference_benchmark


def png(color: str = "red", size: tuple[int, int] = (2, 2)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Every row gets every column: ``Table.from_pylist`` takes the columns from the first row only."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    pq.write_table(pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows]), path)
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


RED, GREEN, BLUE = png("red"), png("green"), png("blue")


def base_rows() -> list[dict[str, Any]]:
    """Three rows, one per image form and per category source (id prefix, query_source, explicit)."""
    return [
        {"id": "RLAIF-V_001", "query": "What is shown?", "response": ["A red square.", "A red dog."], "human_ranking": [0, 1], "hallucinated": [False, True]},
        {"id": "q2", "query_source": "MathVerse", "query": "Area?", "response": ["3", "4"], "human_ranking": [1, 0]},
        {"id": "q3", "category": "ocr", "query": "Text?", "response": ["none", "hello"], "human_ranking": [0, 1]},
    ]


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "red.png").write_bytes(RED)
    rows = base_rows()
    rows[0]["image"] = "images/red.png"  # relative to the file's folder
    rows[1]["image"] = {"bytes": b64(GREEN), "path": None}  # HF Image feature, base64 in JSON
    rows[2]["image_b64"] = b64(BLUE)
    return write_jsonl(tmp_path / "bench.jsonl", rows)


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    rows = base_rows()
    for row, img in zip(rows, (RED, GREEN, BLUE), strict=True):
        row["image"] = {"bytes": img, "path": "ignored-when-bytes-are-present.png"}
    return write_parquet(tmp_path / "bench.parquet", rows)


def test_jsonl_and_parquet_forms_load_the_same_examples(jsonl_file, parquet_file):
    from_jsonl = load_preference_benchmark(jsonl_file)
    assert from_jsonl == load_preference_benchmark(parquet_file)
    first, second, third = from_jsonl
    assert [e.better for e in from_jsonl] == [0, 1, 0]  # [1, 0]: response 1 has the lower rank
    assert [e.category for e in from_jsonl] == ["hallucination", "reasoning", "ocr"]
    assert [e.image for e in from_jsonl] == [RED, GREEN, BLUE]
    assert first.hallucinated == [False, True] and second.hallucinated is None
    assert second.metadata == {"query_source": "MathVerse"} and third.metadata == {}
    assert first.responses == ["A red square.", "A red dog."]


def test_a_json_array_and_absolute_image_paths_are_accepted(tmp_path):
    image = tmp_path / "sub" / "x.png"
    image.parent.mkdir()
    image.write_bytes(RED)
    row = base_rows()[1] | {"image": str(image)}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([row]))
    (example,) = load_preference_benchmark(path)
    assert example.image == RED and example.better == 1


def test_category_map_replaces_the_default_and_unknown_sources_are_general(tmp_path):
    rows = [
        {"id": "foo_1", "image_b64": b64(RED)},
        {"id": "bar_2", "image_b64": b64(RED)},
        {"id": "RLAIF-V_3", "image_b64": b64(RED)},  # a default key, absent from the custom map
        {"id": "foo_4", "query_source": "baz", "image_b64": b64(RED)},  # query_source wins over the id
    ]
    rows = [r | {"query": "q", "response": ["a", "b"], "human_ranking": [0, 1]} for r in rows]
    path = write_jsonl(tmp_path / "b.jsonl", rows)
    loaded = load_preference_benchmark(path, category_map={"foo": "custom", "baz": "other"})
    assert [e.category for e in loaded] == ["custom", "general", "general", "other"]
    assert load_preference_benchmark(path)[2].category == "hallucination"


def test_benchmark_examples_round_trip_through_json_with_base64_images(jsonl_file):
    example = load_preference_benchmark(jsonl_file)[0]
    wire = example.to_json_bytes()
    assert b64(RED).encode() in wire
    assert BenchmarkExample.model_validate_json(wire) == example


GOOD = {"id": "ok", "query": "q", "response": ["a", "b"], "human_ranking": [0, 1], "image_b64": b64(RED)}
BAD_ROWS: list[tuple[str, Any, str]] = [
    ("missing query", {k: v for k, v in GOOD.items() if k != "query"} | {"id": "x"}, "missing field 'query'"),
    ("missing image", {k: v for k, v in GOOD.items() if k != "image_b64"} | {"id": "x"}, "missing field 'image'"),
    ("three responses", GOOD | {"id": "x", "response": ["a", "b", "c"]}, "exactly 2 responses, got 3"),
    ("one response", GOOD | {"id": "x", "response": ["a"]}, "exactly 2 responses, got 1"),
    ("tied ranking", GOOD | {"id": "x", "human_ranking": [0, 0]}, "permutation of"),
    ("1-based ranking", GOOD | {"id": "x", "human_ranking": [1, 2]}, "permutation of"),
    ("text ranking", GOOD | {"id": "x", "human_ranking": ["0", 1]}, "permutation of"),
    ("image file missing", {k: v for k, v in GOOD.items() if k != "image_b64"} | {"id": "x", "image": "nope.png"}, "image file not found"),
    ("image not an image", GOOD | {"id": "x", "image_b64": b64(b"definitely not a png")}, "not decodable"),
    ("truncated png", GOOD | {"id": "x", "image_b64": b64(RED[:30])}, "not decodable"),
    ("bad base64", GOOD | {"id": "x", "image_b64": "***"}, "not valid base64"),
    ("two image fields", GOOD | {"id": "x", "image": {"bytes": b64(RED), "path": None}}, "ambiguous"),
    ("bad hallucinated", GOOD | {"id": "x", "hallucinated": [True]}, "'hallucinated'"),
    ("duplicate id", GOOD, "duplicate id 'ok'"),
    ("not json", "{oops", "invalid JSON"),
    ("not an object", "[1, 2]", "expected an object"),
]


@pytest.mark.parametrize(("bad", "problem"), [(b, p) for _, b, p in BAD_ROWS], ids=[n for n, _, _ in BAD_ROWS])
def test_every_bad_row_is_a_format_error_naming_file_and_row(tmp_path, bad, problem):
    path = write_jsonl(tmp_path / "bench.jsonl", [GOOD, bad])
    with pytest.raises(BenchmarkFormatError) as info:
        load_preference_benchmark(path)
    assert info.value.row == 2 and isinstance(info.value, PermanentError)
    assert f"{path}: row 2: " in str(info.value) and problem in str(info.value)


def test_images_larger_than_the_limit_are_rejected_in_every_form(tmp_path, jsonl_file, parquet_file):
    for path in (jsonl_file, parquet_file):  # row 1 is a file path in JSONL, raw bytes in Parquet
        with pytest.raises(BenchmarkFormatError, match=r"row 1: .*larger than max_image_bytes=10\b"):
            load_preference_benchmark(path, max_image_bytes=10)
    write_jsonl(tmp_path / "b64.jsonl", [GOOD])
    with pytest.raises(BenchmarkFormatError, match="larger than max_image_bytes"):
        load_preference_benchmark(tmp_path / "b64.jsonl", max_image_bytes=10)


def test_bad_parquet_rows_and_bad_files(tmp_path):
    rows = [
        GOOD | {"image_b64": None, "image": {"bytes": RED, "path": None}},
        GOOD | {"id": "y", "image_b64": None, "image": {"bytes": b"\x89PNG junk", "path": None}},
    ]
    write_parquet(tmp_path / "b.parquet", rows)
    with pytest.raises(BenchmarkFormatError, match=r"b\.parquet: row 2: image is not decodable"):
        load_preference_benchmark(tmp_path / "b.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "b.csv").write_text("id\n")
    for name, problem in [("junk.parquet", "unreadable Parquet"), ("empty.jsonl", "no rows"), ("b.csv", "unknown suffix"), ("absent.jsonl", "file not found")]:
        with pytest.raises(BenchmarkFormatError, match=problem) as info:
            load_preference_benchmark(tmp_path / name)
        assert info.value.row is None and name in str(info.value)
