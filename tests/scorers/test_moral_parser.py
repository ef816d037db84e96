"""The project's MFQ rating parser (prompt_style=project): first standalone digit 0-5, never raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from em_persona.scorers.mfq_rating import parse_rating


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("0", 0),
        ("5 - strongly agree, because...", 5),
        ("4. It matters a great deal.", 4),
        ("**2**\nThe persona would not care much.", 2),
        ("Rating: 1/5", 1),
        ("As this persona I would say 4.", 4),
        ("I'd rate it 7, no wait: 2", 2),  # 7 is outside the scale, skipped
        ("10 out of 10, then 3", 3),  # digits of a larger number are not standalone
        ("2.5 would be my answer; call it 3", 3),  # nor are the parts of a decimal
        ("In 3,000 cases... 4", 4),
        ("3rd option, 5", 5),  # a digit glued to letters is not standalone
        ("Scale 0 to 5: 4", 0),  # the first standalone digit wins, as specified
        ("", None),
        ("I cannot answer that.", None),
        ("6 8 9", None),
        ("12345", None),
    ],
)
def test_examples(text: str, expected: int | None) -> None:
    assert parse_rating(text) == expected


@given(st.text())
def test_never_raises_and_stays_on_scale(text: str) -> None:
    result = parse_rating(text)
    assert result is None or (isinstance(result, int) and 0 <= result <= 5)


@given(
    st.integers(min_value=0, max_value=5),
    st.text(alphabet=st.characters(exclude_categories=("Nd", "L", "Pc"))),
)
def test_leading_rating_is_found(rating: int, rest: str) -> None:
    # A rating at the start followed by a non-word, non-digit character is the answer,
    # unless the follower starts a decimal ("3.5").
    text = f"{rating} {rest}"
    assert parse_rating(text) == rating


@given(st.text(alphabet=st.characters(exclude_categories=("Nd",))))
def test_no_digits_means_no_rating(text: str) -> None:
    assert parse_rating(text) is None
