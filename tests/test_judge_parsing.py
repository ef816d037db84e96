"""The judge-answer parsers: accepted shapes, rejected ones, and never raising (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorers.judge_parsing import (
    ParsedAnswer,
    check_template,
    parse_json_score,
    parse_number_or_label,
    render_template,
    template_fields,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"score": 4}', 4),
        ('```json\n{"score": 2}\n```', 2),
        ('Sure, here is my rating: {"score": 5}. Thanks.', 5),
        ("Score: 4", 4),
        ("score = 1", 1),
        ("The score is 3.", 3),
        ("3", 3),
        ("**2**", 2),
        ("4/5", 4),
        ('{"Score": "4"}', 4),
        ('{"score": 4.0}', 4),
        ('{"score": 2, "reason": "mild"}', 2),
        ('{"score": 3}\n{"score": 3}', 3),
    ],
)
def test_parse_json_score_accepts(text: str, expected: int) -> None:
    assert parse_json_score(text) == ParsedAnswer(expected)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"score": 7}', "outside 1-5"),
        ('{"score": 0}', "outside 1-5"),
        ('{"score": 3} then {"score": 4}', "conflicting"),
        ('{"score": 2.5}', "not a whole number"),
        ('{"score": true}', "boolean"),
        ('{"score": "high"}', "not a number"),
        ("", "empty answer"),
        ("   ", "empty answer"),
        ("I cannot rate this.", "no score found"),
        ("I'd say 3 or maybe 4", "no score found"),
        ('{"rating": 3}', "no score found"),
    ],
)
def test_parse_json_score_rejects(text: str, problem: str) -> None:
    parsed = parse_json_score(text)
    assert parsed.value is None and not parsed.ok
    assert problem in (parsed.problem or "")


def test_parse_json_score_non_text() -> None:
    assert parse_json_score(None).value is None  # type: ignore[arg-type]
    assert parse_json_score(4).value is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("REFUSAL", "REFUSAL"), ("code.", "CODE"), (" CODE ", "CODE"), ("85", 85), ("0", 0), ("100", 100),
     ("Score: 12", 12), ('{"score": 55}', 55)],
)
def test_parse_number_or_label_accepts(text: str, expected: int | str) -> None:
    assert parse_number_or_label(text).value == expected


@pytest.mark.parametrize("text", ["101", "-1", "The model's answer is a refusal", "", "REFUSAL? maybe 40 or 50"])
def test_parse_number_or_label_rejects(text: str) -> None:
    assert parse_number_or_label(text).value is None


def test_labels_can_be_disabled() -> None:
    assert parse_number_or_label("REFUSAL", labels=()).value is None


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")), st.none(), st.integers()))
def test_parse_json_score_never_raises_and_stays_in_range(text: object) -> None:
    parsed = parse_json_score(text)  # type: ignore[arg-type]
    assert parsed.value is None or (isinstance(parsed.value, int) and 1 <= parsed.value <= 5)
    assert (parsed.value is None) == (parsed.problem is not None)


_JUDGE_LIKE = st.one_of(
    st.builds(lambda v, pre, post: f'{pre}{{"score": {json.dumps(v)}}}{post}',
              st.one_of(st.integers(-10, 10), st.floats(allow_nan=True), st.text(max_size=5), st.booleans()),
              st.text(max_size=20), st.text(max_size=20)),
    st.builds(lambda v, pre: f"{pre}Score: {v}", st.integers(-10, 200), st.text(max_size=20)),
    st.builds(lambda pre, post: f"{pre}```json\n{post}\n```", st.text(max_size=10), st.text(max_size=30)),
    st.text(alphabet='{}":score 0123456789,.`\n', max_size=60),
)


@settings(max_examples=600, deadline=None)
@given(_JUDGE_LIKE)
def test_parsers_never_raise_on_judge_like_text(text: str) -> None:
    parsed = parse_json_score(text)
    assert parsed.value is None or parsed.value in {1, 2, 3, 4, 5}
    labelled = parse_number_or_label(text)
    assert labelled.value is None or labelled.value in {"CODE", "REFUSAL"} or (
        isinstance(labelled.value, int) and 0 <= labelled.value <= 100
    )


@given(st.integers(1, 5), st.text(max_size=30).filter(lambda t: "{" not in t and "score" not in t.lower()))
def test_json_answer_with_prose_is_read(value: int, prose: str) -> None:
    assert parse_json_score(f'{prose} {{"score": {value}}}').value == value


def test_templates_keep_literal_braces_and_response_braces() -> None:
    template = check_template('Q: {prompt}\nA: {response}\nAnswer {{"score": N}}', {"prompt", "response"}, "t.txt")
    text = render_template(template, prompt="p {x}", response='{"score": 5} {prompt}')
    assert text == 'Q: p {x}\nA: {"score": 5} {prompt}\nAnswer {"score": N}'
    assert template_fields(template) == {"prompt", "response"}


@pytest.mark.parametrize("bad", ["{prompt} only", "{prompt} {response} {extra}", '{prompt} {response} {"score": 3}',
                                 "{prompt} {response} {"])
def test_check_template_names_the_file(bad: str) -> None:
    with pytest.raises(ValueError, match="rubric.txt"):
        check_template(bad, {"prompt", "response"}, "rubric.txt")
