"""The judge call loop shared by every judge scorer: ask until the answer parses, at most
1 + max_retries times (the parsers themselves are in em_persona.core.answers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inspect_ai.model import CachePolicy, ChatMessage, ChatMessageAssistant, ChatMessageUser

from em_persona.core.answers import ParsedAnswer


def judge_cache_policy(cache: bool) -> CachePolicy | bool:
    """Inspect cache of judge calls: no expiry and shared across epochs (an unchanged answer judged
    again, by the same judge with the same prompt, costs no call), or off."""
    return CachePolicy(expiry=None, per_epoch=False) if cache else False


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
