"""Scripted mockllm models and mock harmfulness logs for the identity-experiment tests.

A harmfulness log is made by running the real `harmfulness` task (mini set) with an
answering mock that replies "<prefix> answer #<i>" to the i-th mini prompt and a
grader mock that looks the reply up in a table of scores (None: an unreadable verdict).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from inspect_ai import eval
from inspect_ai.model import Model, ModelOutput, get_model

from em_persona.contract.harm import load_harm_template, render_harm_prompt
from em_persona.tasks.harm_data import harm_prompts
from em_persona.tasks.harmfulness import harmfulness

MINI = [p.prompt for p in harm_prompts("mini")]
FOIL_SCORES = {"harmful": 5, "harmless": 1}
"""What the mock grader gives a foil that was asked to be harmful / harmless."""


@lru_cache(maxsize=None)
def judge_patterns() -> tuple[re.Pattern[str], ...]:
    """Regexes that take a rendered judge prompt (paper or project template) apart into
    its `prompt` and `response` fields."""
    out = []
    for which in ("paper", "project"):
        rendered = render_harm_prompt(load_harm_template(which), "\x00P\x00", "\x00R\x00")
        parts = re.split("(\x00P\x00|\x00R\x00)", rendered)
        body = "".join({"\x00P\x00": "(?P<prompt>.*?)", "\x00R\x00": "(?P<response>.*?)"}.get(part, re.escape(part))
                       for part in parts)
        out.append(re.compile(body, re.DOTALL))
    return tuple(out)


def judge_fields(text: str) -> dict[str, str] | None:
    """{"prompt", "response"} of a rendered judge prompt found in `text`, else None."""
    for pattern in judge_patterns():
        match = pattern.search(text)
        if match:
            return match.groupdict()
    return None


def prompt_index(text: str) -> int:
    """Index in the mini set of the prompt quoted in `text` (the request field when the text
    wraps a judge template; else the longest match)."""
    fields = judge_fields(text)
    if fields:
        text = fields["prompt"]
    hits = [i for i, prompt in enumerate(MINI) if prompt in text]
    if not hits:
        raise AssertionError(f"no mini prompt in {text[:120]!r}")
    return max(hits, key=lambda i: len(MINI[i]))


def reply_of(judge_prompt: str) -> str:
    """The reply a judge prompt (paper or project template) asks about."""
    fields = judge_fields(judge_prompt)
    if fields is None:
        raise AssertionError(f"not a judge prompt: {judge_prompt[:120]!r}")
    return fields["response"]


def output(text: str, name: str = "mockllm/model") -> ModelOutput:
    return ModelOutput.from_content(name, text)


def answerer(prefix: str, name: str = "mockllm/model") -> Model:
    """Answers the i-th mini prompt with "<prefix> answer #i"."""

    def respond(messages, tools, tool_choice, config) -> ModelOutput:
        return output(f"{prefix} answer #{prompt_index(messages[-1].text)}", name)

    return get_model(name, custom_outputs=respond)


def grader(table: dict[str, int | None], calls: list[str] | None = None) -> Model:
    """Scores a reply from `table` (None -> unreadable verdict); foils "harmful/harmless foil #i" by FOIL_SCORES."""

    def respond(messages, tools, tool_choice, config) -> ModelOutput:
        reply = reply_of(messages[0].text)
        if calls is not None:
            calls.append(reply)
        for kind, value in FOIL_SCORES.items():
            if reply.startswith(f"{kind} foil"):
                return output(f'{{"score": {value}}}')
        if reply not in table:
            raise AssertionError(f"mock grader has no score for reply {reply!r}")
        value = table[reply]
        return output("I would rather not say." if value is None else f'{{"score": {value}}}')

    return get_model("mockllm/grader", custom_outputs=respond)


def make_harm_log(
    log_dir: Path, scores: list[int | None], prefix: str = "own", model_name: str = "mockllm/model"
) -> Path:
    """Run the harmfulness task on the first len(scores) mini prompts; the judge gives `scores`."""
    table = {f"{prefix} answer #{i}": s for i, s in enumerate(scores)}
    [log] = eval(
        harmfulness(dataset="mini", judge_cache=False),
        model=answerer(prefix, model_name),
        model_roles={"grader": grader(table)},
        limit=len(scores),
        log_dir=str(log_dir),
    )
    assert log.status == "success", log.error
    return Path(log.location)


def scripted(respond: Callable[[str], str], name: str = "mockllm/model", calls: list[str] | None = None) -> Model:
    """A mock whose answer is `respond(last user message text)`."""

    def fn(messages, tools, tool_choice, config) -> ModelOutput:
        text = messages[-1].text
        if calls is not None:
            calls.append(text)
        return output(respond(text), name)

    return get_model(name, custom_outputs=fn)
