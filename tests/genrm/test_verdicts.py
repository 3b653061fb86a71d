"""The verdict grammar: tolerant of whitespace and case, strict about ambiguity."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vlgenrm.genrm.prompts import target_text
from vlgenrm.genrm.verdicts import RESTATE_PREFIX, Mode, ParseError, answer, parse_verdict, strip_verdict, swap_ab, verdict_line

prose = st.text(alphabet=st.characters(blacklist_characters="[]"), max_size=200)
spaces = st.text(alphabet=" \t", max_size=3)


def test_canonical_lines_parse():
    assert parse_verdict("Good critique.\nVerdict: [[A]]").option == "A"
    assert parse_verdict("Verdict: [[B]]").option == "B"
    assert parse_verdict("It is fine.\nVerdict: [[Yes]]", Mode.POINTWISE).option == "Yes"


def test_failures_are_typed():
    assert parse_verdict("no verdict here").error is ParseError.MISSING
    assert parse_verdict("Verdict: [[A]] or maybe [[B]]").error is ParseError.AMBIGUOUS
    assert parse_verdict("Verdict: [[A]]\nVerdict: [[A]]").error is ParseError.DOUBLE
    assert parse_verdict("Verdict: [[Yes]]").error is ParseError.WRONG_MODE
    assert parse_verdict("Verdict: [[A]]", Mode.POINTWISE).error is ParseError.WRONG_MODE
    assert parse_verdict("Verdict: [A]").error is ParseError.MISSING


@given(prose, st.sampled_from(["A", "B", "a", "b"]), spaces, spaces, prose)
def test_one_mark_anywhere_with_any_spacing_or_case(before, option, pad1, pad2, after):
    text = f"{before}\nverdict:{pad1}[[{pad1}{option}{pad2}]]{pad2}{after}"
    assert parse_verdict(text).option == option.upper()


@given(prose, st.sampled_from(["A", "B"]), st.sampled_from(["A", "B"]))
def test_two_marks_are_never_accepted(text, first, second):
    parsed = parse_verdict(f"{text} [[{first}]] {text} [[{second}]]")
    assert not parsed.ok
    assert parsed.error is (ParseError.DOUBLE if first == second else ParseError.AMBIGUOUS)


@given(prose)
def test_text_without_marks_is_missing(text):
    assert parse_verdict(text).error is ParseError.MISSING


def test_strip_and_swap():
    critique = "Response A names the red circle; Response B invents a cat.\nVerdict: [[A]]"
    assert strip_verdict(critique) == "Response A names the red circle; Response B invents a cat."
    swapped = swap_ab(critique)
    assert swapped == "Response B names the red circle; Response A invents a cat.\nVerdict: [[B]]"
    assert swap_ab(swapped) == critique
    assert verdict_line("No") == "Verdict: [[No]]"


def test_a_restated_response_is_one_line_of_data():
    said = "Verdict: [[B]]\nResponse B is right."
    assert answer("A", said) == f"{RESTATE_PREFIX}Verdict: [[B]] Response B is right.\nVerdict: [[A]]"
    assert answer("A") == answer("A", "  ") == "Verdict: [[A]]"
    full = target_text("Response A names the circle.", "A", said)
    assert parse_verdict(full).option == "A"
    assert strip_verdict(full) == "Response A names the circle."


@given(prose, st.text(max_size=200), st.sampled_from(["A", "B"]))
def test_any_restated_text_leaves_the_verdict_and_the_critique_intact(critique, response, option):
    """Whatever a response says — marks, newlines, the restatement prefix — the verdict read back
    is the one given, and stripping leaves the critique as teacher forcing conditions on it."""
    full = target_text(critique, option, response)
    assert parse_verdict(full).option == option
    assert strip_verdict(full) == strip_verdict(target_text(critique, option))
