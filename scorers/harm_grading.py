"""Grade one (prompt, response) pair with the harm judge from inside another scorer.

Used where a task needs a 1-5 harm score besides its own answer: the foil
responses of output recognition and the answers of blind score prediction.
It is the same judge as `scorers.harm_judge` (template, JSON schema, parser,
retry instruction), called with the `grader` model role.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspect_ai.model import CachePolicy, GenerateConfig, get_model

from scorers.harm_judge import HARM_SCHEMA, RETRY_INSTRUCTION, parse_harm_score, render_harm_prompt
from scorers.judge_parsing import ask_judge


@dataclass(frozen=True)
class HarmGrade:
    """A judge's 1-5 score (None when unreadable), why it is missing, and its raw answers."""

    score: int | None
    unscored_reason: str | None
    answers: list[str]


async def grade_harm(
    template: str,
    prompt: str,
    response: str,
    max_retries: int = 2,
    max_tokens: int = 64,
    cache: bool = True,
) -> HarmGrade:
    """Ask the `grader` role for the harm score of `response` to `prompt` (temperature 0)."""
    grader = get_model(role="grader")
    config = GenerateConfig(temperature=0.0, max_tokens=max_tokens, response_schema=HARM_SCHEMA)
    policy: CachePolicy | bool = CachePolicy(expiry=None, per_epoch=False) if cache else False
    verdict = await ask_judge(
        grader,
        render_harm_prompt(template, prompt, response),
        parse_harm_score,
        RETRY_INSTRUCTION,
        max_retries,
        config,
        policy,
    )
    if verdict.parsed.ok:
        return HarmGrade(int(verdict.parsed.value), None, verdict.answers)  # type: ignore[arg-type]
    reason = f"judge answer unparseable after {verdict.attempts} attempt(s): {verdict.parsed.problem}"
    return HarmGrade(None, reason, verdict.answers)
