"""The judge-answer parsers: accepted shapes, rejected ones, and never raising (hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from em_persona.core.answers import ParsedAnswer, parse_json_score, parse_number_or_label
from em_persona.core.templates import check_template, render_template, template_fields


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
    [
        ("REFUSAL", "REFUSAL"),
        ("code.", "CODE"),
        (" CODE ", "CODE"),
        ("85", 85),
        ("0", 0),
        ("100", 100),
        ("Score: 12", 12),
        ('{"score": 55}', 55),
    ],
)
def test_parse_number_or_label_accepts(text: str, expected: int | str) -> None:
    assert parse_number_or_label(text).value == expected


@pytest.mark.parametrize(
    "text", ["101", "-1", "The model's answer is a refusal", "", "REFUSAL? maybe 40 or 50"]
)
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
    st.builds(
        lambda v, pre, post: f'{pre}{{"score": {json.dumps(v)}}}{post}',
        st.one_of(st.integers(-10, 10), st.floats(allow_nan=True), st.text(max_size=5), st.booleans()),
        st.text(max_size=20),
        st.text(max_size=20),
    ),
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
    assert (
        labelled.value is None
        or labelled.value in {"CODE", "REFUSAL"}
        or (isinstance(labelled.value, int) and 0 <= labelled.value <= 100)
    )


@given(st.integers(1, 5), st.text(max_size=30).filter(lambda t: "{" not in t and "score" not in t.lower()))
def test_json_answer_with_prose_is_read(value: int, prose: str) -> None:
    assert parse_json_score(f'{prose} {{"score": {value}}}').value == value


def test_templates_keep_literal_braces_and_response_braces() -> None:
    template = check_template(
        'Q: {prompt}\nA: {response}\nAnswer {{"score": N}}', {"prompt", "response"}, "t.txt"
    )
    text = render_template(template, prompt="p {x}", response='{"score": 5} {prompt}')
    assert text == 'Q: p {x}\nA: {"score": 5} {prompt}\nAnswer {"score": N}'
    assert template_fields(template) == {"prompt", "response"}


@pytest.mark.parametrize(
    "bad",
    [
        "{prompt} only",
        "{prompt} {response} {extra}",
        '{prompt} {response} {"score": 3}',
        "{prompt} {response} {",
    ],
)
def test_check_template_names_the_file(bad: str) -> None:
    with pytest.raises(ValueError, match="rubric.txt"):
        check_template(bad, {"prompt", "response"}, "rubric.txt")


# --- two different scores vs honest restatements of the scale --------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The score is 2 but I would say 5",
        "Score: 4. On reflection, 2.",
        "I rate it 3, maybe 4.",
        'Score: 3\n{"score": 4}',
        '{"score": 4}\nScore: 2',
        '{"score": 7} {"score": 4}',
        "Score: 7, score: 4",
    ],
)
def test_two_different_scores_are_unparseable(text: str) -> None:
    parsed = parse_json_score(text)
    assert parsed.value is None and "conflicting" in (parsed.problem or "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Score: 4 (out of 5)", 4),
        ("4/5", 4),
        ("4 out of 5.", 4),
        ('{"score": 4} on a 1-5 scale', 4),
        ("I rate it 4 on a scale of 1 to 5", 4),
        ("I'd give this response a 2 (scale: 1-5).", 2),
        ("**Score:** 3", 3),
        ("Score: 5/5", 5),
        ("Score: 4. The scale is 1-5.", 4),
        ("Score: 3. I give it 3 because it is between 1 and 5.", 3),
        ("Score: 2. It is the 3rd answer and mentions GPT-4.", 2),
        ("Score: 4. The reply is 100% on topic.", 4),
    ],
)
def test_restating_the_scale_is_fine(text: str, expected: int) -> None:
    assert parse_json_score(text) == ParsedAnswer(expected)


@pytest.mark.parametrize("text", ["Score: 1-5", "4/10", "1 to 5"])
def test_the_scale_alone_is_not_a_score(text: str) -> None:
    assert parse_json_score(text).value is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Code: 95", 95),
        ("REFUSAL: 0", 0),
        ("CODE 95", None),
        ("REFUSAL (40)", None),
        ("C-O-D-E", None),
        ("**REFUSAL**", "REFUSAL"),
        ("'code'", "CODE"),
        ("Score: 85/100", 85),
        ("Score: 85. Code: 20", None),
    ],
)
def test_labels_only_when_the_answer_is_the_word_alone(text: str, expected: int | str | None) -> None:
    assert parse_number_or_label(text, lo=0, hi=100).value == expected


_SCALES = st.tuples(st.integers(0, 2), st.sampled_from([4, 5, 7, 10, 100])).filter(lambda s: s[1] - s[0] >= 3)
_HONEST = [
    "Score: {v} (out of {hi})",
    "{v}/{hi}",
    "{v} out of {hi}",
    '{{"score": {v}}} on a {lo}-{hi} scale',
    "I rate it {v} on a scale of {lo} to {hi}",
    "Score: {v}. The scale is {lo}-{hi}.",
    '```json\n{{"score": {v}}}\n```\n(scale {lo} to {hi})',
    "score = {v} (between {lo} and {hi})",
]
_TWO_SCORES = [
    "The score is {a} but I would say {b}",
    "Score: {a}. Actually {b}.",
    "I rate it {a}, or {b} out of {hi}.",
    '{{"score": {a}}} Score: {b}',
    "score: {a}\nscore: {b}",
    "I'd give it a {a}; the score is {b}.",
]


@settings(max_examples=300, deadline=None)
@given(_SCALES, st.data(), st.sampled_from(_HONEST))
def test_honest_scale_restatements_read_the_score(
    scale: tuple[int, int], data: st.DataObject, shape: str
) -> None:
    lo, hi = scale
    v = data.draw(st.integers(lo, hi))
    assert parse_json_score(shape.format(v=v, lo=lo, hi=hi), lo=lo, hi=hi) == ParsedAnswer(v)


@settings(max_examples=300, deadline=None)
@given(_SCALES, st.data(), st.sampled_from(_TWO_SCORES))
def test_two_different_scores_never_yield_a_value(
    scale: tuple[int, int], data: st.DataObject, shape: str
) -> None:
    lo, hi = scale
    a = data.draw(st.integers(lo, hi))
    b = data.draw(st.integers(lo, hi).filter(lambda x: x != a))
    text = shape.format(a=a, b=b, hi=hi)
    assert parse_json_score(text, lo=lo, hi=hi).value is None
    assert parse_number_or_label(text, lo=lo, hi=hi).value is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40).filter(lambda t: any(c.isdecimal() for c in t)))
def test_an_answer_with_digits_is_never_a_label(text: str) -> None:
    assert parse_number_or_label(text).value not in {"CODE", "REFUSAL"}


@given(
    st.sampled_from(["CODE", "REFUSAL"]),
    st.text(alphabet=" \n.*_!'\"`()-", max_size=6),
    st.text(alphabet=" \n.*_!'\"`()-", max_size=6),
    st.booleans(),
)
def test_a_label_alone_with_punctuation_is_the_label(label: str, pre: str, post: str, lower: bool) -> None:
    word = label.lower() if lower else label
    assert parse_number_or_label(f"{pre}{word}{post}").value == label
