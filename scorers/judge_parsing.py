"""Robust parsing of LLM-judge answers and the judge call loop, shared by every judge scorer.

Judges are asked for strict answers (`{"score": N}` or a bare number), but real
models wrap them in code fences, add prose, or write "Score: 4". These helpers
accept those shapes, reject everything ambiguous, and never raise: the result is
either a value inside the allowed range (or an allowed label such as CODE) or
"unparseable" with a short reason the scorer records.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspect_ai.model import ChatMessage, ChatMessageAssistant, ChatMessageUser

UNPARSEABLE = "unparseable"
"""Marker used in reasons and docs for an answer that yields no value."""

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*(.*?)```", re.DOTALL)
_KEYED_NUMBER = re.compile(
    r"""["']?(?P<key>[A-Za-z_][A-Za-z0-9_]*)["']?\s*(?:[:=]|\bis\b)\s*["']?(?P<num>[-+]?\d+(?:\.\d+)?)""",
    re.IGNORECASE,
)
_BARE_NUMBER = re.compile(r"^\s*[\"'*(\[]*\s*(?P<num>[-+]?\d+(?:\.\d+)?)\s*[\"'*)\].!]*\s*$")
_OUT_OF = re.compile(r"^\s*(?P<num>[-+]?\d+(?:\.\d+)?)\s*(?:/|out of)\s*(?P<den>\d+)\s*\.?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAnswer:
    """Outcome of parsing one judge answer.

    `value` is an int within the requested range, one of the allowed labels
    (e.g. "CODE"), or None when the answer is unparseable; `problem` then says why.
    """

    value: int | str | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """True when a value (number or label) was read."""
        return self.value is not None


def _as_int(raw: Any, lo: int, hi: int) -> tuple[int | None, str | None]:
    """Convert a JSON value or numeric string to an int in [lo, hi]."""
    if isinstance(raw, bool):
        return None, f"score is a boolean ({raw!r}), not a number"
    if isinstance(raw, str):
        try:
            raw = float(raw.strip())
        except ValueError:
            return None, f"score {raw[:40]!r} is not a number"
    if not isinstance(raw, int | float) or not math.isfinite(raw):
        return None, f"score {str(raw)[:40]!r} is not a finite number"
    if float(raw) != int(raw):
        return None, f"score {raw} is not a whole number"
    value = int(raw)
    if not lo <= value <= hi:
        return None, f"score {value} is outside {lo}-{hi}"
    return value, None


def _json_objects(text: str) -> list[Any]:
    """Every JSON value that starts at a '{' in the text and decodes cleanly."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError, ValueError):
            pos = text.find("{", pos + 1)
            continue
        found.append(obj)
        pos = text.find("{", end)
    return found


def _decide(candidates: list[int], problems: list[str], what: str) -> ParsedAnswer:
    distinct = sorted(set(candidates))
    if len(distinct) == 1:
        return ParsedAnswer(distinct[0])
    if len(distinct) > 1:
        return ParsedAnswer(None, f"conflicting {what} values {distinct}")
    if problems:
        return ParsedAnswer(None, problems[0])
    return ParsedAnswer(None, f"no {what} found")


def parse_json_score(text: Any, *, key: str = "score", lo: int = 1, hi: int = 5) -> ParsedAnswer:
    """Read an integer score in [lo, hi] from a judge answer such as `{"score": 4}`.

    Accepted, in order: JSON objects holding `key` (also inside code fences or
    surrounded by prose), then `key: N` / `key = N` / `key is N` written as text,
    then an answer that is only a number (optionally "N/5"). Several different
    scores, an out-of-range score or no score at all give an unparseable result.
    Never raises.
    """
    try:
        return _parse_json_score(text, key=key, lo=lo, hi=hi)
    except Exception as exc:  # defensive: a parser bug must not crash an eval
        return ParsedAnswer(None, f"parser error: {type(exc).__name__}")


def _parse_json_score(text: Any, *, key: str, lo: int, hi: int) -> ParsedAnswer:
    if not isinstance(text, str):
        return ParsedAnswer(None, f"answer is {type(text).__name__}, not text")
    if not text.strip():
        return ParsedAnswer(None, "empty answer")
    body = text.strip()
    for fenced in _FENCE.findall(body):
        body = body + "\n" + fenced
    json_values = [
        obj[k] for obj in _json_objects(body) if isinstance(obj, dict)
        for k in obj if isinstance(k, str) and k.lower() == key.lower()
    ]
    keyed_values = [
        m.group("num") for m in _KEYED_NUMBER.finditer(text) if m.group("key").strip().lower() == key.lower()
    ]
    for raw_values in (json_values, keyed_values):  # JSON first; "Key: N" text only when no JSON names the key
        candidates: list[int] = []
        problems: list[str] = []
        for raw in raw_values:
            value, problem = _as_int(raw, lo, hi)
            if value is not None:
                candidates.append(value)
            elif problem:
                problems.append(problem)
        if candidates or problems:
            return _decide(candidates, problems, key)
    return _bare_number(text, lo, hi, key)


def _bare_number(text: str, lo: int, hi: int, what: str) -> ParsedAnswer:
    stripped = _FENCE.sub(lambda m: m.group(1), text).strip()
    match = _BARE_NUMBER.match(stripped)
    if match:
        value, problem = _as_int(match.group("num"), lo, hi)
        return ParsedAnswer(value, problem)
    match = _OUT_OF.match(stripped)
    if match and int(match.group("den")) == hi:
        value, problem = _as_int(match.group("num"), lo, hi)
        return ParsedAnswer(value, problem)
    return ParsedAnswer(None, f"no {what} found in {stripped[:60]!r}")


def parse_number_or_label(
    text: Any, *, lo: int = 0, hi: int = 100, labels: tuple[str, ...] = ("CODE", "REFUSAL"), key: str = "score"
) -> ParsedAnswer:
    """Read a 0-100 style judge answer: a number in [lo, hi] or one of `labels`.

    A label counts only when the answer is that word alone (case-insensitive,
    punctuation allowed), so prose that merely mentions "refusal" is not a label.
    Numbers are read like `parse_json_score` (bare number, `key: N`, JSON).
    Never raises.
    """
    try:
        if not isinstance(text, str):
            return ParsedAnswer(None, f"answer is {type(text).__name__}, not text")
        word = re.sub(r"[^A-Za-z]", "", text)
        for label in labels:
            if word.upper() == label.upper():
                return ParsedAnswer(label)
        return _parse_json_score(text, key=key, lo=lo, hi=hi)
    except Exception as exc:  # defensive: a parser bug must not crash an eval
        return ParsedAnswer(None, f"parser error: {type(exc).__name__}")


# --- judge prompt templates and the ask-until-parsed loop -------------------------


def template_fields(template: str) -> set[str]:
    """Names of the `{field}` placeholders in a str.format template (doubled braces are literal)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(template: str, fields: set[str], origin: str) -> str:
    """Return the template if its placeholders are exactly `fields`, else raise a clear ValueError."""
    try:
        found = template_fields(template)
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"{origin}: judge template is not a valid format string ({exc}); "
                         "write literal braces as {{ and }}") from exc
    if found != fields:
        raise ValueError(
            f"{origin}: judge template placeholders are {sorted(found)}, expected exactly {sorted(fields)}; "
            "write literal braces as {{ and }}"
        )
    return template


def render_template(template: str, **values: str) -> str:
    """Fill a checked template; braces inside the values are kept as they are."""
    return template.format(**values)


@dataclass(frozen=True)
class JudgeVerdict:
    """What a judge said after at most 1 + max_retries calls."""

    parsed: ParsedAnswer
    answers: list[str]

    @property
    def attempts(self) -> int:
        """Number of judge calls made."""
        return len(self.answers)


async def ask_judge(
    grader: Any,
    prompt: str,
    parse: Callable[[str], ParsedAnswer],
    retry_instruction: str,
    max_retries: int,
    config: Any,
    cache: Any,
) -> JudgeVerdict:
    """Ask `grader` until `parse` accepts its answer, at most 1 + `max_retries` times.

    A retry shows the judge its previous answer and why it could not be read, so
    the conversation (and therefore the cache key) differs from the first call;
    an identical repeat at temperature 0 would just return the same answer.
    """
    messages: list[ChatMessage] = [ChatMessageUser(content=prompt)]
    answers: list[str] = []
    parsed = ParsedAnswer(None, "judge was not called")
    for _ in range(1 + max(0, max_retries)):
        output = await grader.generate(messages, config=config, cache=cache)
        answer = output.completion
        answers.append(answer)
        parsed = parse(answer)
        if parsed.ok:
            break
        messages = [
            *messages,
            ChatMessageAssistant(content=answer or "(empty answer)"),
            ChatMessageUser(content=f"Your answer could not be read ({parsed.problem}). {retry_instruction}"),
        ]
    return JudgeVerdict(parsed=parsed, answers=answers)
