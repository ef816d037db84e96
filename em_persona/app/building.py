"""Building an experiment's Inspect tasks (under the run's model roles), cut to seeded subsets."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from em_persona.app.experiment import (
    Experiment,
    TaskRun,
)
from em_persona.app.task_args import task_function

SUBSET_SEED = 0
PLAN_ROLE_MODEL = "mockllm/model"


def echo(msg: str = "") -> None:
    click.echo(msg, err=False)


# --- building tasks ---------------------------------------------------------


@contextmanager
def model_roles_bound(roles: dict[str, Any]) -> Iterator[None]:
    """Bind `roles` (role -> Model) as Inspect's model roles while tasks are built.

    Judge tasks record who judges (scorers.grader.judge_metadata) when they are constructed, from
    Inspect's model-role context. `inspect eval --model-role` binds that context before it builds
    tasks; the pipeline builds Task objects itself, so it binds the run's roles the same way, with
    the function Inspect calls (`init_model_roles`, private API), and restores the previous ones.
    eval_set binds the roles again when the tasks run.
    """
    from inspect_ai.model._model import init_model_roles, model_roles

    previous = model_roles()
    init_model_roles(roles)
    try:
        yield
    finally:
        init_model_roles(previous)


def build_task(spec: TaskRun, roles: dict[str, Any] | None = None, **extra: Any) -> Any:
    """The Inspect Task of `spec` (with `extra` arguments) built under `roles`, cut to a seeded subset
    when it has a limit."""
    from inspect_ai import task_with
    from inspect_ai.dataset import MemoryDataset

    with model_roles_bound(roles or {}):
        task = task_function(spec.task)(**spec.args, **extra)
    if spec.limit is None or spec.limit >= len(task.dataset):
        return task
    keep = sorted(random.Random(SUBSET_SEED).sample(range(len(task.dataset)), spec.limit))
    samples = [task.dataset[i] for i in keep]
    return task_with(
        task, dataset=MemoryDataset(samples, name=task.dataset.name, location=task.dataset.location)
    )


def _placeholder_roles(spec: TaskRun) -> dict[str, Any]:
    """Roles for tasks built only to be counted (plan, preflight): no server runs yet, so a mockllm
    stands in for the grader; the Task objects are never run."""
    from inspect_ai.model import get_model

    if spec.grader is None:
        return {}
    placeholder = get_model(PLAN_ROLE_MODEL)
    return {"grader": placeholder, "foil": placeholder}


def build_independent(exp: Experiment) -> tuple[dict[int, Any], list[str]]:
    """Build every task that needs no earlier log once (for the plan); problems as `file:line` lines."""
    built, problems = {}, []
    for spec in exp.tasks:
        if spec.depends_on_earlier_logs:
            continue
        try:
            built[spec.index] = build_task(spec, _placeholder_roles(spec))
        except Exception as exc:  # a task function's own check (bad value, missing data): report, run nothing
            message = " ".join(str(exc).split()) or type(exc).__name__
            problems.append(f"{exp.where('tasks', spec.index)}: tasks[{spec.index}] ({spec.task}): {message}")
    return built, problems


# The pipeline's defaults for batch runs (an experiment file's `eval:` overrides each).
# log_realtime=False: Inspect then keeps no live per-event sample buffer, which costs CPU on every
# sample (measured in benchmarks/harness_overhead.py, see benchmarks/RESULTS.md); finished samples
# are still flushed to the log as they complete, so `inspect view` shows them and an interrupted
# run resumes from them. What it loses: the live transcript of samples still running.
# log_dir_allow_dirty: after an edit of the experiment file, logs of the old task settings stay
# beside the new ones; the report takes the newest log of each task x model (analysis/logs.py).
BATCH_EVAL_DEFAULTS: dict[str, Any] = {
    "retry_attempts": 3,
    "max_connections": 32,
    "fail_on_error": 0.2,
    "log_level": "warning",
    "log_realtime": False,
    "log_dir_allow_dirty": True,
}


def eval_kwargs(exp: Experiment) -> dict[str, Any]:
    """Inspect's eval_set options of a run: the batch defaults, then the experiment file's `eval:`."""
    kwargs = dict(BATCH_EVAL_DEFAULTS)
    kwargs.update({k: v for k, v in exp.eval.items() if k != "foil"})
    return kwargs
