"""Who judges a run: the `grader` model role, else an explicit grader model, else the evaluated
model itself (self-judged), which every judge task says on the terminal and in its log.

Two places record it:
- the log header (`Task.metadata`, via `judge_metadata` when the task is built): "role", a model
  name, "evaluated model" (self-judged), or "decided when scored" when the task object was
  built outside an eval (e.g. `eval(harmfulness(), model_roles=...)` builds it first, before
  Inspect binds the roles);
- every judge score (`resolve_grader` inside `score()`, where the roles are always bound):
  `judge_model` and `self_judged`, with a terminal warning the first time a task self-judges.
"""

from __future__ import annotations

import logging
from typing import Any

from inspect_ai.model import Model, get_model, model_roles

# Inspect has no public way to ask whether a model is active (tasks being resolved or run).
from inspect_ai.model._model import active_model_context_var

from em_persona.contract.keys import GRADER_KEY, SELF_JUDGED_KEY, SELF_JUDGED_TEXT, UNDECIDED

logger = logging.getLogger(__name__)

_WARNED: set[str] = set()


def _warn(task: str) -> None:
    if task not in _WARNED:
        _WARNED.add(task)
        logger.warning(
            "%s: no `grader` model role is bound, so the evaluated model judges its own answers "
            "(self-judged). Pass --model-role grader=PROVIDER/MODEL to use a judge.",
            task,
        )


def _inside_eval() -> bool:
    """True while Inspect resolves or runs tasks (an active model is set), False for a bare call."""
    return active_model_context_var.get(None) is not None


def judge_metadata(task: str, grader_model: str | None = None) -> dict[str, Any]:
    """Task-metadata entries naming the judge of this run; warns when the run will be self-judged.

    Call it from a @task function. Inspect binds `--model-role grader=...` before it builds the
    tasks it is given by name or file, so the role is visible here; a Task object built by hand
    before `eval()` cannot know its roles yet and records UNDECIDED (the scores then say).
    """
    if "grader" in model_roles():
        return {GRADER_KEY: "role", SELF_JUDGED_KEY: False}
    if grader_model:
        return {GRADER_KEY: grader_model, SELF_JUDGED_KEY: False}
    if not _inside_eval():
        return {GRADER_KEY: UNDECIDED, SELF_JUDGED_KEY: None}
    _warn(task)
    return {GRADER_KEY: SELF_JUDGED_TEXT, SELF_JUDGED_KEY: True}


def resolve_grader(task: str, grader_model: str | None = None) -> tuple[Model, bool]:
    """The judge model for a score (the `grader` role, else `grader_model`, else the evaluated
    model) and whether that makes the score self-judged; call only inside `score()`."""
    self_judged = "grader" not in model_roles() and not grader_model
    if self_judged:
        _warn(task)
    return get_model(role="grader", default=grader_model), self_judged


def is_self_judged(judge_model: str | None, evaluated_model: str | None) -> bool:
    """True when a score's judge is the model whose answer it scores."""
    return bool(judge_model) and judge_model == evaluated_model
