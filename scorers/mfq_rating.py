"""MFQ answers: parse the 0-5 rating and score it, with the paper's rule or this project's stricter one.

- ``paper`` (default): the authors' `extract_rating` (pinned `run_mfq_sampling.py`, registry
  source `mfq_sampling`): the first match of its `re.search` regex in the stripped answer,
  read with `ast` at run time (never executed).
- ``project``: `parse_rating`, the first *standalone* digit 0-5 (not touching a letter,
  digit or underscore, not part of a decimal or grouped number).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from inspect_ai.scorer import Score, Scorer, Target, mean, scorer, stderr
from inspect_ai.solver import TaskState

from em_persona.contract.keys import FAILURES_KEY
from em_persona.core.registry import load_source
from em_persona.core.upstream_py import SearchRule, search_rule

PARSE_STYLES: tuple[str, ...] = ("paper", "project")
PAPER_PARSE_FUNCTION = "extract_rating"
"""The upstream function (run_mfq_sampling.py) whose regex is the paper's parse rule."""

# A digit 0-5 that is a whole token: no letter, digit or underscore touching it,
# and not part of a decimal or grouped number ("2.5", "3,000").
_STANDALONE_RATING = re.compile(r"(?<![\w])(?<!\d[.,])([0-5])(?![\w])(?![.,]\d)")

_UNPARSED = {
    "paper": "no match of the authors' rating regex (extract_rating) in the stripped answer",
    "project": "no standalone digit 0-5 in the answer",
}


def parse_rating(text: str) -> int | None:
    """Project rule: the first standalone digit 0-5 in `text`, or None when there is none."""
    match = _STANDALONE_RATING.search(text or "")
    return int(match.group(1)) if match else None


def paper_rule() -> SearchRule:
    """The authors' parse rule, read from the pinned run_mfq_sampling.py."""
    path = load_source("mfq_sampling")
    return search_rule(path.read_text(encoding="utf-8"), str(path), PAPER_PARSE_FUNCTION)


def paper_parser(rule: SearchRule) -> Callable[[str], int | None]:
    """`extract_rating` as the authors run it, returning None where theirs returns -1."""

    def parse_paper_rating(text: str) -> int | None:
        match = rule.search(text or "")
        if match is None:
            return None
        try:
            return int(match.group())
        except ValueError:  # upstream catches this and returns -1
            return None

    return parse_paper_rating


def rating_parser(prompt_style: str = "paper") -> Callable[[str], int | None]:
    """The parse rule of a prompt style: "paper" (authors' regex) or "project" (`parse_rating`)."""
    if prompt_style == "paper":
        return paper_parser(paper_rule())
    if prompt_style == "project":
        return parse_rating
    raise ValueError(f"prompt_style must be one of {', '.join(PARSE_STYLES)}; got {prompt_style!r}")


@scorer(metrics=[mean(), stderr()])
def mfq_rating(prompt_style: str = "paper") -> Scorer:
    """Score = the parsed 0-5 rating; unparseable answers are unscored (NaN, reason invalid_response_format).

    `prompt_style` picks the parse rule ("paper": the authors' regex; "project": standalone digit).
    Score metadata: `rating` (int or None) and `failures` (unparseable answers
    for this run, as counted by the retry solver; 0 or 1 without it).
    """
    parse = rating_parser(prompt_style)

    async def score(state: TaskState, target: Target) -> Score:
        completion = state.output.completion if state.output else ""
        rating = parse(completion)
        failures = state.store.get(FAILURES_KEY)
        if failures is None:
            failures = 0 if rating is not None else 1
        metadata = {"rating": rating, "failures": int(failures)}
        if rating is None:
            return Score.unscored(
                reason="invalid_response_format",
                answer=completion[:200],
                explanation=_UNPARSED[prompt_style],
                metadata=metadata,
            )
        return Score(value=rating, answer=str(rating), metadata=metadata)

    return score
