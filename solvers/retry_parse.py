"""Generate, and regenerate a bounded number of times while the answer cannot be parsed."""

from __future__ import annotations

from collections.abc import Callable

from inspect_ai.solver import Generate, Solver, TaskState, solver

from em_persona.contract.keys import FAILED_RESPONSES_KEY, FAILURES_KEY
from em_persona.solvers.constrained import constrained_config


@solver
def generate_until_parsed(
    parse: Callable[[str], object | None],
    max_retries: int = 5,
    failures_key: str = FAILURES_KEY,
    pattern: str | None = None,
) -> Solver:
    """Call the model; while `parse(completion)` is None, drop that answer and ask again.

    At most `1 + max_retries` generations. Records in `state.store`:
    `failures_key` (how many answers failed to parse; equals `1 + max_retries`
    when none succeeded) and `failed_responses` (their texts). The last answer
    stays in `state.output`, parsed or not, so a scorer sees it. `pattern` restricts every
    answer to a regex (vLLM structured outputs; see solvers.constrained).
    """
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    config = constrained_config(pattern)

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        history = list(state.messages)
        failed: list[str] = []
        for attempt in range(max_retries + 1):
            if attempt > 0:
                state.messages = list(history)
            state = await generate(state, **config)
            completion = state.output.completion if state.output else ""
            if parse(completion) is not None:
                break
            failed.append(completion)
        state.store.set(failures_key, len(failed))
        state.store.set(FAILED_RESPONSES_KEY, failed)
        return state

    return solve
