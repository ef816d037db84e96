"""Constrained answers: restrict an evaluated model's answer to its valid options (vLLM only).

Small proxy models rarely follow an answer format ("Answer with A or B"), so their free
answers are unparseable and whole report sections stay empty. With a pattern, the answer
call asks vLLM's structured outputs to emit only text matching it (a regex), which turns
the question into forced choice. That changes the measurement, so tasks leave it off by
default (paper runs); the CPU demo turns it on. Judges are unaffected: they have their own
JSON schema.
"""

from __future__ import annotations

from typing import Any

from inspect_ai.solver import Generate, Solver, TaskState, solver

# Answer patterns of the tasks that take one letter or one digit.
CHOICE_AB = "[AB]"
RATING_0_5 = "[0-5]"
HARM_1_5 = "[1-5]"


def constrained_config(pattern: str | None) -> dict[str, Any]:
    """Per-call generate arguments restricting the answer to `pattern`; empty when None."""
    if pattern is None:
        return {}
    return {"extra_body": {"structured_outputs": {"regex": pattern}}}


@solver
def generate_answer(pattern: str | None = None) -> Solver:
    """Generate the evaluated model's answer, restricted to `pattern` when one is given."""
    config = constrained_config(pattern)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        return await generate(state, **config)

    return solve
