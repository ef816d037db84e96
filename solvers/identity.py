"""Solvers of the identity experiments: foil generation and the A/B recognition prompt,
and the prompts that ask a model to predict or rate a 1-5 harm score."""

from __future__ import annotations

from typing import Literal

from inspect_ai.model import ChatMessageUser, GenerateConfig, get_model
from inspect_ai.solver import Generate, Solver, TaskState, solver

from scorers.harm_judge import parse_harm_score, render_harm_prompt
from scorers.prediction import PREDICTION_KEY
from scorers.recognition import FOIL_KEY
from solvers.counterbalance import place
from solvers.retry_parse import generate_until_parsed
from solvers.identity_prompts import (
    ANSWER_AFTER,
    FOIL_HARMFUL,
    FOIL_HARMLESS,
    FOIL_PLAIN,
    PENDING_REPLY,
    PREDICT_FRAME,
    RATE_OTHER_FRAME,
    RATE_OWN_FRAME,
    RECOGNITION,
)

FoilMode = Literal["opposite", "plain"]

_FOIL_TEMPLATES = {"harmful": FOIL_HARMFUL, "harmless": FOIL_HARMLESS}


@solver
def generate_foil(mode: FoilMode = "opposite", max_tokens: int = 512, temperature: float = 1.0) -> Solver:
    """Have the `foil` model role (default: the evaluated model) write the alternative response.

    mode "opposite": ask for a response of the harm level opposite to the own one
    (sample metadata `foil_direction`: "harmful" or "harmless"); mode "plain": the
    foil model simply answers the prompt. The foil goes to `state.store["foil_response"]`.
    """
    if mode not in ("opposite", "plain"):
        raise ValueError(f"foil mode must be 'opposite' or 'plain', got {mode!r}")
    config = GenerateConfig(max_tokens=max_tokens, temperature=temperature)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        template = FOIL_PLAIN if mode == "plain" else _FOIL_TEMPLATES[str(state.metadata["foil_direction"])]
        foil_model = get_model(role="foil")
        output = await foil_model.generate(
            [ChatMessageUser(content=template.format(prompt=state.input_text))], config=config
        )
        state.store.set(FOIL_KEY, output.completion)
        return state

    return solve


@solver
def present_pair() -> Solver:
    """Replace the conversation with the A/B question: own response at `own_position`, foil at the other."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        own = str(state.metadata["own_response"])
        foil = str(state.store.get(FOIL_KEY, ""))
        response_a, response_b = place(own, foil, state.metadata["own_position"])
        text = RECOGNITION.format(prompt=state.input_text, response_a=response_a, response_b=response_b)
        state.messages = [ChatMessageUser(content=text)]
        return state

    return solve


def _parsed(text: str) -> int | None:
    value = parse_harm_score(text).value
    return value if isinstance(value, int) else None


@solver
def predict_then_answer(template: str, max_retries: int = 2, pattern: str | None = None) -> Solver:
    """Blind condition: ask for the expected judge score first (stored under `prediction_answer`),
    then, in the same conversation, for the answer itself (the final output). `pattern`
    restricts the prediction (not the answer) to a regex (solvers.constrained)."""
    predict = generate_until_parsed(_parsed, max_retries, pattern=pattern)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        rendered = render_harm_prompt(template, state.input_text, PENDING_REPLY)
        state.messages = [ChatMessageUser(content=PREDICT_FRAME.format(judge_prompt=rendered))]
        state = await predict(state, generate)
        state.store.set(PREDICTION_KEY, state.output.completion if state.output else "")
        state.messages.append(ChatMessageUser(content=ANSWER_AFTER.format(prompt=state.input_text)))
        return await generate(state)

    return solve


@solver
def rate_response(
    template: str, framing: Literal["own", "other"], max_retries: int = 2, pattern: str | None = None
) -> Solver:
    """Ask for a 1-5 rating of the sample's `response` (an earlier answer) with the judge template,
    framed as the model's own answer or another model's; stores the answer under `prediction_answer`.
    `pattern` restricts the rating to a regex (solvers.constrained)."""
    frame = {"own": RATE_OWN_FRAME, "other": RATE_OTHER_FRAME}[framing]
    rate = generate_until_parsed(_parsed, max_retries, pattern=pattern)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        rendered = render_harm_prompt(template, state.input_text, str(state.metadata["response"]))
        state.messages = [ChatMessageUser(content=frame.format(judge_prompt=rendered))]
        state = await rate(state, generate)
        state.store.set(PREDICTION_KEY, state.output.completion if state.output else "")
        return state

    return solve
