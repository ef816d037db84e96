"""A guard for tasks built on an earlier harmfulness log: the log must be the evaluated model's own."""

from __future__ import annotations

from inspect_ai.solver import Generate, Solver, TaskState, solver

from em_persona.contract.harm_logs import HarmLogError, model_mismatch_message


@solver
def require_log_model(log_model: str, log_path: str, allow_other_model: bool = False) -> Solver:
    """Stop the sample (and, with fail_on_error, the eval) before any generation when the
    evaluated model is not the one that wrote the harmfulness log."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        evaluated = str(state.model)
        if not allow_other_model and evaluated != log_model:
            raise HarmLogError(model_mismatch_message(log_path, log_model, evaluated))
        return state

    return solve
