"""Solvers of the identity experiments: foil generation and the A/B recognition prompt,
and the prompts that ask a model to predict or rate a 1-5 harm score."""

from __future__ import annotations

from typing import Literal

from inspect_ai.model import ChatMessageUser, GenerateConfig, get_model
from inspect_ai.solver import Generate, Solver, TaskState, solver

from em_persona.contract.harm import parse_harm_score, render_harm_prompt
from em_persona.contract.keys import FOIL_KEY, PREDICTION_KEY
from em_persona.solvers.counterbalance import place
from em_persona.solvers.identity_prompts import IdentityPrompts
from em_persona.solvers.retry_parse import generate_until_parsed

FoilMode = Literal["opposite", "plain"]


@solver
def generate_foil(
    mode: FoilMode = "opposite",
    max_tokens: int = 512,
    temperature: float = 1.0,
    prompts: IdentityPrompts | None = None,
) -> Solver:
    """Have the `foil` model role (default: the evaluated model) write the alternative response.

    mode "opposite": ask for a response of the harm level opposite to the own one
    (sample metadata `foil_direction`: "harmful" or "harmless"); mode "plain": the
    foil model simply answers the prompt. The foil goes to `state.store["foil_response"]`.
    `prompts` holds the foil wordings (default: the project's).
    """
    if mode not in ("opposite", "plain"):
        raise ValueError(f"foil mode must be 'opposite' or 'plain', got {mode!r}")
    config = GenerateConfig(max_tokens=max_tokens, temperature=temperature)
    p = prompts or IdentityPrompts()
    templates = {"harmful": p.foil_harmful, "harmless": p.foil_harmless}

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        template = p.foil_plain if mode == "plain" else templates[str(state.metadata["foil_direction"])]
        foil_model = get_model(role="foil")
        output = await foil_model.generate(
            [ChatMessageUser(content=template.format(prompt=state.input_text))], config=config
        )
        state.store.set(FOIL_KEY, output.completion)
        return state

    return solve


@solver
def present_pair(prompts: IdentityPrompts | None = None) -> Solver:
    """Replace the conversation with the A/B question: own response at `own_position`, foil at the other."""
    question = (prompts or IdentityPrompts()).recognition

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        own = str(state.metadata["own_response"])
        foil = str(state.store.get(FOIL_KEY, ""))
        response_a, response_b = place(own, foil, state.metadata["own_position"])
        text = question.format(prompt=state.input_text, response_a=response_a, response_b=response_b)
        state.messages = [ChatMessageUser(content=text)]
        return state

    return solve


def _parsed(text: str) -> int | None:
    value = parse_harm_score(text).value
    return value if isinstance(value, int) else None


@solver
def predict_then_answer(
    template: str, max_retries: int = 2, pattern: str | None = None, prompts: IdentityPrompts | None = None
) -> Solver:
    """Blind condition: ask for the expected judge score first (stored under `prediction_answer`),
    then, in the same conversation, for the answer itself (the final output). `pattern`
    restricts the prediction (not the answer) to a regex (solvers.constrained); `prompts`
    holds the framing wordings (default: the project's)."""
    predict = generate_until_parsed(_parsed, max_retries, pattern=pattern)
    p = prompts or IdentityPrompts()

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        rendered = render_harm_prompt(template, state.input_text, p.pending_reply)
        state.messages = [ChatMessageUser(content=p.predict_frame.format(judge_prompt=rendered))]
        state = await predict(state, generate)
        state.store.set(PREDICTION_KEY, state.output.completion if state.output else "")
        state.messages.append(ChatMessageUser(content=p.answer_after.format(prompt=state.input_text)))
        return await generate(state)

    return solve


@solver
def rate_response(
    template: str,
    framing: Literal["own", "other"],
    max_retries: int = 2,
    pattern: str | None = None,
    prompts: IdentityPrompts | None = None,
) -> Solver:
    """Ask for a 1-5 rating of the sample's `response` (an earlier answer) with the judge template,
    framed as the model's own answer or another model's; stores the answer under `prediction_answer`.
    `pattern` restricts the rating to a regex (solvers.constrained); `prompts` holds the framings."""
    p = prompts or IdentityPrompts()
    frame = {"own": p.rate_own_frame, "other": p.rate_other_frame}[framing]
    rate = generate_until_parsed(_parsed, max_retries, pattern=pattern)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        rendered = render_harm_prompt(template, state.input_text, str(state.metadata["response"]))
        state.messages = [ChatMessageUser(content=frame.format(judge_prompt=rendered))]
        state = await rate(state, generate)
        state.store.set(PREDICTION_KEY, state.output.completion if state.output else "")
        return state

    return solve
