"""Robust parsing of model answers that should hold one score or label (judges, predictions, ratings).

Judges are asked for strict answers (`{"score": N}` or a bare number), but real
models wrap them in code fences, add prose, or write "Score: 4". These helpers
accept those shapes, reject everything ambiguous, and never raise: the result is
either a value inside the allowed range (or an allowed label such as CODE) or
"unparseable" with a short reason the scorer records.

Ambiguous means: two different scores in one answer ("The score is 2 but I would
say 5", or a JSON score contradicted by a "Score: N" line). Restating the scale is
not a second score: "out of 5", "/5", "1-5", "1 to 5" and "between 1 and 5" are
dropped before numbers are read, but only when they name the judge's own scale.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

UNPARSEABLE = "unparseable"
"""Marker used in reasons and docs for an answer that yields no value."""

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_WRAP = r"[*_`\"']*"  # markdown emphasis and quotes around a key or a number
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*(.*?)```", re.DOTALL)
_KEYED_NUMBER = re.compile(
    rf"{_WRAP}(?P<key>[A-Za-z_][A-Za-z0-9_]*){_WRAP}\s*(?:[:=]|\bis\b:?|\bof\b){_WRAP}\s*{_WRAP}(?P<num>{_NUMBER})",
    re.IGNORECASE,
)
# "I rate it 4", "I'd give this response a 2", "rated as 3"
_RATED_NUMBER = re.compile(
    r"\b(?:rate|rates|rated|give|gives|gave|assign|assigns|assigned)\s+"
    r"(?:(?:it|this|that|the)(?:\s+(?!(?:a|an|as)\b)[A-Za-z]+)?\s+)?(?:(?:a|an|as)\s+)?"
    rf"{_WRAP}(?P<num>{_NUMBER})",
    re.IGNORECASE,
)
# a number standing alone: not part of a word ("3rd", "GPT-4", "x86") or of a dotted version
_LOOSE_NUMBER = re.compile(rf"(?<![\w.\-]){_NUMBER}(?!\w|\.\d)")
_BARE_NUMBER = re.compile(r"^\s*[\"'*(\[]*\s*(?P<num>[-+]?\d+(?:\.\d+)?)\s*[\"'*)\].!]*\s*$")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_DIGIT = re.compile(r"\d")


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


def _json_objects(text: str) -> list[tuple[Any, int, int]]:
    """Every JSON value that starts at a '{' in the text and decodes cleanly, with its span."""
    decoder = json.JSONDecoder()
    found: list[tuple[Any, int, int]] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError, ValueError):
            pos = text.find("{", pos + 1)
            continue
        found.append((obj, pos, end))
        pos = text.find("{", end)
    return found


@lru_cache(maxsize=64)
def _scale_pattern(lo: int, hi: int) -> re.Pattern[str]:
    """Honest restatements of the scale [lo, hi]: "lo-hi", "lo to hi", "between lo and hi", "/hi", "out of hi"."""
    low, high = re.escape(str(lo)), re.escape(str(hi))
    end = r"(?!\w|\.\d)"
    return re.compile(
        rf"(?<![\w.]){low}\s*(?:-|\u2013|\u2014|\bto\b)\s*{high}{end}"
        rf"|\bbetween\s+{low}\s+and\s+{high}{end}"
        rf"|(?:/|\bout\s+of\b)\s*{high}{end}",
        re.IGNORECASE,
    )


def _without_scale(text: str, lo: int, hi: int) -> str:
    """The text with restatements of its own scale (and brackets they leave empty) blanked out."""
    dropped = _scale_pattern(lo, hi).sub(lambda m: " " * len(m.group(0)), text)
    return _EMPTY_BRACKETS.sub(lambda m: " " * len(m.group(0)), dropped)


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _read_values(raw_values: list[Any], lo: int, hi: int) -> tuple[list[int], list[str]]:
    candidates: list[int] = []
    problems: list[str] = []
    for raw in raw_values:
        value, problem = _as_int(raw, lo, hi)
        if value is not None:
            candidates.append(value)
        elif problem:
            problems.append(problem)
    return candidates, problems


def _decide(candidates: list[int], problems: list[str], what: str) -> ParsedAnswer:
    """One distinct valid value and no invalid one -> that value; anything else is unparseable."""
    distinct = sorted(set(candidates))
    if len(distinct) > 1:
        return ParsedAnswer(None, f"conflicting {what} values {distinct}")
    if distinct and problems:
        return ParsedAnswer(None, f"conflicting {what} values: {distinct[0]} and another where {problems[0]}")
    if distinct:
        return ParsedAnswer(distinct[0])
    if problems:
        return ParsedAnswer(None, problems[0])
    return ParsedAnswer(None, f"no {what} found")


def parse_json_score(text: Any, *, key: str = "score", lo: int = 1, hi: int = 5) -> ParsedAnswer:
    """Read an integer score in [lo, hi] from a judge answer such as `{"score": 4}`.

    Accepted, in order: JSON objects holding `key` (also inside code fences or
    surrounded by prose), then `key: N` / `key = N` / `key is N` / `key of N` or
    "I rate it N" written as text, then an answer that is only a number (optionally
    "N/5", "N out of 5"). Restatements of the scale are ignored. Unparseable: two
    different scores (a textual score next to any other number that could be a
    score on this scale, or a JSON score contradicted by a `key: N` line), an
    out-of-range score, or no score at all. Never raises.
    """
    try:
        return _parse_json_score(text, key=key, lo=lo, hi=hi)
    except Exception as exc:  # defensive: a parser bug must not crash an eval
        return ParsedAnswer(None, f"parser error: {type(exc).__name__}")


def _keyed(text: str, keys: set[str]) -> list[re.Match[str]]:
    return [m for m in _KEYED_NUMBER.finditer(text) if m.group("key").lower() in keys]


def _parse_json_score(
    text: Any, *, key: str, lo: int, hi: int, aliases: tuple[str, ...] = ()
) -> ParsedAnswer:
    if not isinstance(text, str):
        return ParsedAnswer(None, f"answer is {type(text).__name__}, not text")
    if not text.strip():
        return ParsedAnswer(None, "empty answer")
    keys = {key.lower(), *(a.lower() for a in aliases)}
    body = text.strip()
    for fenced in _FENCE.findall(body):
        body = body + "\n" + fenced
    objects = _json_objects(body)
    json_values = [
        obj[k]
        for obj, _, _ in objects
        if isinstance(obj, dict)
        for k in obj
        if isinstance(k, str) and k.lower() == key.lower()
    ]
    if json_values:  # JSON is what the judge was asked for; a "key: N" line beside it must agree
        outside = _without_scale(_blank(body, [(s, e) for _, s, e in objects]), lo, hi)
        textual = [m.group("num") for m in _keyed(outside, keys)]
        return _decide(*_read_values(json_values + textual, lo, hi), key)

    plain = _without_scale(_FENCE.sub(lambda m: m.group(1), text), lo, hi)
    matches = _keyed(plain, keys) + list(_RATED_NUMBER.finditer(plain))
    if matches:
        candidates, problems = _read_values([m.group("num") for m in matches], lo, hi)
        rest = _blank(plain, [m.span() for m in matches])
        others = [
            value
            for value in (float(n) for n in _LOOSE_NUMBER.findall(rest))
            if lo <= value <= hi and value not in candidates
        ]
        if candidates and others:
            shown = sorted({*candidates, *others})
            return ParsedAnswer(None, f"conflicting {key} values {[_show(v) for v in shown]}")
        return _decide(candidates, problems, key)
    return _bare_number(plain, text, lo, hi, key)


def _show(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _bare_number(plain: str, text: str, lo: int, hi: int, what: str) -> ParsedAnswer:
    match = _BARE_NUMBER.match(plain)
    if match:
        value, problem = _as_int(match.group("num"), lo, hi)
        return ParsedAnswer(value, problem)
    return ParsedAnswer(None, f"no {what} found in {text.strip()[:60]!r}")


def parse_number_or_label(
    text: Any,
    *,
    lo: int = 0,
    hi: int = 100,
    labels: tuple[str, ...] = ("CODE", "REFUSAL"),
    key: str = "score",
) -> ParsedAnswer:
    """Read a 0-100 style judge answer: a number in [lo, hi] or one of `labels`.

    A label counts only when the answer holds no digit and is that word alone
    (case-insensitive, punctuation and markdown around it allowed), so prose that
    merely mentions "refusal" is not a label, and "Code: 95" is the number 95.
    Numbers are read like `parse_json_score` (bare number, `key: N`, JSON); a label
    may stand in for the key ("Code: 95"). Never raises.
    """
    try:
        if not isinstance(text, str):
            return ParsedAnswer(None, f"answer is {type(text).__name__}, not text")
        if not _DIGIT.search(text):
            for label in labels:
                if re.fullmatch(rf"[\W_]*{re.escape(label)}[\W_]*", text, re.IGNORECASE):
                    return ParsedAnswer(label)
        return _parse_json_score(text, key=key, lo=lo, hi=hi, aliases=labels)
    except Exception as exc:  # defensive: a parser bug must not crash an eval
        return ParsedAnswer(None, f"parser error: {type(exc).__name__}")
