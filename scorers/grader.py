"""Who judges a run: the `grader` model role, else an explicit grader model, else the evaluated
model itself (self-judged), which every judge task says on the terminal and in its log header."""

from __future__ import annotations

import logging
from typing import Any

from inspect_ai.model._model import model_roles

logger = logging.getLogger(__name__)

GRADER_KEY = "grader"
"""Task metadata key: "role" (the `grader` role), a model name, or "evaluated model"."""
SELF_JUDGED_KEY = "self_judged"
"""Task metadata key: True when the evaluated model judges its own answers."""
SELF_JUDGED_TEXT = "evaluated model"


def judge_metadata(task: str, grader_model: str | None = None) -> dict[str, Any]:
    """Task-metadata entries naming the judge of this run; warns when the run will be self-judged.

    Call it from a @task function: Inspect binds `--model-role grader=...` before it builds the
    tasks, so the role is visible here (callers that build Task objects themselves, like the
    pipeline, bind the roles first).
    """
    if "grader" in model_roles():
        return {GRADER_KEY: "role", SELF_JUDGED_KEY: False}
    if grader_model:
        return {GRADER_KEY: grader_model, SELF_JUDGED_KEY: False}
    logger.warning(
        "%s: no `grader` model role is bound, so the evaluated model will judge its own answers "
        "(self-judged). Pass --model-role grader=PROVIDER/MODEL to use a judge.", task)
    return {GRADER_KEY: SELF_JUDGED_TEXT, SELF_JUDGED_KEY: True}


def is_self_judged(judge_model: str | None, evaluated_model: str | None) -> bool:
    """True when a score's judge is the model whose answer it scores."""
    return bool(judge_model) and judge_model == evaluated_model
