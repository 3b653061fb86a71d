"""The codec is total: any byte string becomes a contract or a typed DecodeFailure, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.bus import task
from vlgenrm.bus.codec import MAX_DETAIL_CHARS, Decoded, DecodeFailure, decode
from vlgenrm.contracts import DeadLetter, DeadLetterReason, StageEvent, StageTask

TASK = task(1)
GOOD: dict[str, Any] = json.loads(TASK.to_json_bytes())


def with_(**fields: Any) -> bytes:
    return json.dumps(GOOD | fields).encode()


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + "1" + close * depth).encode()


UNDECODABLE: dict[str, bytes | None] = {
    "empty": b"",
    "tombstone": None,
    "random bytes": b"\xff\xfe\x00\x81",
    "truncated UTF-8": task(1).to_json_bytes()[:-1] + b"\xc3",
    "encoded surrogate (CESU-8)": b'{"schema_version":1,"task_id":"\xed\xa0\x80"}',
    "lone surrogate escape": b'{"schema_version":1,"task_id":"\\ud800"}',
    "UTF-8 BOM": b"\xef\xbb\xbf" + task(1).to_json_bytes(),
    "5000-digit integer": b'{"schema_version":1,"n":' + b"9" * 5000 + b"}",
    "5000-digit schema_version": b'{"schema_version":' + b"1" * 5000 + b"}",
    "5000-digit negative in a list": b'{"schema_version":1,"config":{"x":[-' + b"7" * 5000 + b"]}}",
    "deep arrays": nested(100_000),
    "deep objects": ('{"a":' * 50_000 + "1" + "}" * 50_000).encode(),
    "deep nesting inside a field": with_(config={"x": 1}).replace(b'{"x": 1}', nested(5_000)),
    "NaN": b'{"schema_version":1,"config":{"x":NaN}}',
    "Infinity": b'{"schema_version":1,"config":{"x":Infinity}}',
    "-Infinity": b'{"schema_version":-Infinity}',
    "float overflowing to inf": with_(config={"x": 0}).replace(b'"x": 0', b'"x": 1e999'),
    "duplicate key": b'{"schema_version":1,"schema_version":2}',
    "duplicate key nested": with_(config={"a": 1}).replace(b'{"a": 1}', b'{"a": 1, "a": 2}'),
    "two documents": b"{} {}",
    "trailing comma": b'{"schema_version":1,}',
    "single quotes": b"{'schema_version':1}",
    "comment": b'{"schema_version":1 /* x */}',
    "unterminated string": b'{"schema_version":1,"task_id":"abc',
}


@pytest.mark.parametrize("data", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_input_that_is_not_strict_json_is_undecodable(data):
    result = decode(data, StageTask)
    assert isinstance(result, DecodeFailure), result
    assert result.reason is DeadLetterReason.UNDECODABLE and result.detail


INVALID: dict[str, bytes] = {
    "array": b"[]",
    "string": b'"StageTask"',
    "number": b"1",
    "null": b"null",
    "no schema_version": json.dumps({k: v for k, v in GOOD.items() if k != "schema_version"}).encode(),
    "schema_version true": with_(schema_version=True),
    "schema_version 1.0": with_(schema_version=1.0),
    "schema_version '1'": with_(schema_version="1"),
    "schema_version [1]": with_(schema_version=[1]),
    "unknown field": with_(surprise=1),
    "huge task_id": with_(task_id="x" * 2_000_000),
    "another contract": StageEvent(event_id="e", task_id="t", shard=task(1).shard, type="shard_done").to_json_bytes(),
}


@pytest.mark.parametrize("data", INVALID.values(), ids=INVALID.keys())
def test_json_that_is_not_the_contract_is_invalid(data):
    result = decode(data, StageTask)
    assert isinstance(result, DecodeFailure), result
    assert result.reason is DeadLetterReason.INVALID and result.detail
    assert len(result.detail) <= MAX_DETAIL_CHARS


@pytest.mark.parametrize("version", [0, -1, 2, 99, 10**30, 10**3999], ids=["0", "-1", "2", "99", "1e30", "1e3999"])
def test_unknown_schema_versions_are_reported_as_such(version):
    result = decode(with_(schema_version=version), StageTask)
    assert isinstance(result, DecodeFailure) and result.reason is DeadLetterReason.UNKNOWN_SCHEMA_VERSION
    assert "supports [1]" in result.detail and len(result.detail) <= MAX_DETAIL_CHARS


WRONG_VALUES: list[Any] = [None, True, 0, -1, 1.5, "", "x", [], [1], {}, {"a": 1}]


@pytest.mark.parametrize("field", [f for f in GOOD if f != "schema_version"])
def test_a_wrong_type_at_any_field_is_invalid_and_names_the_field(field):
    wrong_somewhere = 0
    for value in WRONG_VALUES:
        result = decode(with_(**{field: value}), StageTask)
        if isinstance(result, Decoded):
            # Accepted: then it must be what the field can hold (e.g. 0 for iteration_index).
            assert StageTask.model_validate_json(with_(**{field: value})) == result.message
            continue
        wrong_somewhere += 1
        assert result.reason is DeadLetterReason.INVALID, (field, value, result)
        assert field in result.detail, (field, value, result.detail)
    assert wrong_somewhere >= len(WRONG_VALUES) - 3  # at most a few of them fit any one field


def test_valid_contracts_decode_including_big_strings_and_moderate_nesting():
    assert decode(TASK.to_json_bytes(), StageTask) == Decoded(TASK)
    assert decode(bytearray(TASK.to_json_bytes()), StageTask) == Decoded(TASK)
    big = decode(with_(config={"x": "a" * 5_000_000}), StageTask)
    assert isinstance(big, Decoded) and len(big.message.config["x"]) == 5_000_000
    deep = json.loads(nested(100))
    ok = decode(with_(config={"x": deep}), StageTask)
    assert isinstance(ok, Decoded) and ok.message.config["x"] == deep
    emoji = decode(with_(task_id="\U0001f600"), StageTask)  # a surrogate *pair* is fine
    assert isinstance(emoji, Decoded) and emoji.message.task_id == "\U0001f600"


def test_bytes_fields_are_read_as_base64_as_they_are_written():
    letter = DeadLetter(reason=DeadLetterReason.INVALID, detail="d", original=b"\xff\x00raw", topic="t", partition=0, offset=3, group="g")
    assert decode(letter.to_json_bytes(), DeadLetter) == Decoded(letter)


# --------------------------------------------------------------------------- properties

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def check_total(data: bytes) -> None:
    result = decode(data, StageTask)
    if isinstance(result, Decoded):
        assert decode(result.message.to_json_bytes(), StageTask) == result  # what we accept, we can write back
    else:
        assert isinstance(result.reason, DeadLetterReason) and 0 < len(result.detail) <= MAX_DETAIL_CHARS


@PROPERTY
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_fail_with_a_reason(data):
    check_total(data)


@PROPERTY
@given(st.sampled_from(sorted(GOOD)), JSON)
def test_any_json_at_any_field_decodes_or_fails_with_a_reason(field, value):
    check_total(with_(**{field: value}))


@PROPERTY
@given(st.binary(min_size=1, max_size=8), st.integers(min_value=0, max_value=len(task(1).to_json_bytes())))
def test_bytes_spliced_into_a_valid_record_decode_or_fail_with_a_reason(junk, at):
    data = task(1).to_json_bytes()
    check_total(data[:at] + junk + data[at:])
