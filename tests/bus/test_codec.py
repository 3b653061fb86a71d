"""The codec is total: any byte string becomes a contract or a typed DecodeFailure, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.bus import CORPUS, corpus, task
from vlgenrm.bus.codec import MAX_DETAIL_CHARS, Decoded, DecodeFailure, decode
from vlgenrm.contracts import DeadLetter, DeadLetterReason, StageTask

TASK = task(1)
GOOD: dict[str, Any] = json.loads(TASK.to_json_bytes())


def with_(**fields: Any) -> bytes:
    return json.dumps(GOOD | fields).encode()


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + "1" + close * depth).encode()


UNDECODABLE: dict[str, bytes | None] = {
    "tombstone": None,
    "deep arrays, 100,000 levels": nested(100_000),  # the corpus keeps 10,000 (small files)
    **corpus(DeadLetterReason.UNDECODABLE),
}


@pytest.mark.parametrize("data", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_input_that_is_not_strict_json_is_undecodable(data):
    result = decode(data, StageTask)
    assert isinstance(result, DecodeFailure), result
    assert result.reason is DeadLetterReason.UNDECODABLE and result.detail


INVALID: dict[str, bytes] = {"huge task_id": with_(task_id="x" * 2_000_000), **corpus(DeadLetterReason.INVALID)}


@pytest.mark.parametrize("data", INVALID.values(), ids=INVALID.keys())
def test_json_that_is_not_the_contract_is_invalid(data):
    result = decode(data, StageTask)
    assert isinstance(result, DecodeFailure), result
    assert result.reason is DeadLetterReason.INVALID and result.detail
    assert len(result.detail) <= MAX_DETAIL_CHARS


UNKNOWN_VERSIONS: dict[str, bytes] = {"1e3999": with_(schema_version=10**3999), **corpus(DeadLetterReason.UNKNOWN_SCHEMA_VERSION)}


def test_the_corpus_holds_every_class_of_input():
    assert (len(UNDECODABLE), len(INVALID), len(UNKNOWN_VERSIONS)) >= (24, 12, 6)
    assert len(list(CORPUS.iterdir())) == sum(len(corpus(r)) for r in DeadLetterReason)  # every file named by a reason


@pytest.mark.parametrize("data", UNKNOWN_VERSIONS.values(), ids=UNKNOWN_VERSIONS.keys())
def test_unknown_schema_versions_are_reported_as_such(data):
    result = decode(data, StageTask)
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
