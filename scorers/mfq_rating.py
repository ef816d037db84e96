"""MFQ answers: parse the first standalone digit 0-5 and score it as the rating."""

from __future__ import annotations

import re

from inspect_ai.scorer import Score, Scorer, Target, mean, scorer, stderr
from inspect_ai.solver import TaskState

from solvers.retry_parse import FAILURES_KEY

# A digit 0-5 that is a whole token: no letter, digit or underscore touching it,
# and not part of a decimal or grouped number ("2.5", "3,000").
_STANDALONE_RATING = re.compile(r"(?<![\w])(?<!\d[.,])([0-5])(?![\w])(?![.,]\d)")

def parse_rating(text: str) -> int | None:
    """The first standalone digit 0-5 in `text`, or None when there is none."""
    match = _STANDALONE_RATING.search(text or "")
    return int(match.group(1)) if match else None


@scorer(metrics=[mean(), stderr()])
def mfq_rating() -> Scorer:
    """Score = the parsed 0-5 rating; unparseable answers are unscored (NaN, reason invalid_response_format).

    Score metadata: `rating` (int or None) and `failures` (unparseable answers
    for this run, as counted by the retry solver; 0 or 1 without it).
    """

    async def score(state: TaskState, target: Target) -> Score:
        completion = state.output.completion if state.output else ""
        rating = parse_rating(completion)
        failures = state.store.get(FAILURES_KEY)
        if failures is None:
            failures = 0 if rating is not None else 1
        metadata = {"rating": rating, "failures": int(failures)}
        if rating is None:
            return Score.unscored(
                reason="invalid_response_format",
                answer=completion[:200],
                explanation="no standalone digit 0-5 in the answer",
                metadata=metadata,
            )
        return Score(value=rating, answer=str(rating), metadata=metadata)

    return score
