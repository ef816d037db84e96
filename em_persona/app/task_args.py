"""The tasks an experiment file can name (every declared task: em_persona.tasks.registry) and checks
of the arguments a file gives them, against the task function's own signature."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError

from em_persona.contract.declarations import TaskSpec
from em_persona.core.yaml_lines import did_you_mean
from em_persona.tasks.registry import parameters, specs

PIPELINE_ARGS: dict[str, str] = {
    "harm_log": "the evaluated model's harmfulness log of this run",
    "harm_logs": "the harmfulness logs of the task's models in this run",
}
"""Arguments the pipeline fills from earlier logs of the same run; a file may not set them."""

ARG_MINIMUM: dict[str, int | float] = {
    "epochs": 1,
    "paraphrases": 1,
    "max_tokens": 1,
    "foil_max_tokens": 1,
    "log_epoch": 1,
    "personas": 0,
    "max_retries": 0,
    "judge_max_retries": 0,
    "temperature": 0.0,
}
"""Lower bounds of count-like arguments, by name: task signatures carry types, not ranges (a task
that annotates `Annotated[int, Field(ge=...)]` is checked by its own annotation as well)."""

_STRICT = ConfigDict(strict=True)


def known_tasks() -> tuple[str, ...]:
    """Names of the declared tasks (em_persona.tasks.registry: each task file's SPEC, and registered ones)."""
    return tuple(sorted(specs()))


def task_spec(name: str) -> TaskSpec:
    """The declaration of task `name` (KeyError for an unknown task)."""
    spec = specs().get(name)
    if spec is None:
        raise KeyError(f"unknown task {name!r}")
    return spec


def task_function(name: str) -> Callable[..., Any]:
    """The @task function of task `name`."""
    return task_spec(name).task


def task_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The parameters of task `name`, with their annotations evaluated."""
    return parameters(task_spec(name))


def task_default(name: str, arg: str) -> Any:
    """The default of argument `arg` of task `name`; None when it has none."""
    param = task_parameters(name).get(arg)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def check_args(task: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """(argument, problem) for every argument the task does not take, may not be given in a file,
    or whose value does not fit the task's annotation (strictly: "10" is no int) or minimum."""
    params = task_parameters(task)
    problems = []
    for key, value in args.items():
        if key in PIPELINE_ARGS:
            problems.append((key, f"{key!r} is filled by the pipeline ({PIPELINE_ARGS[key]}); remove it"))
            continue
        param = params.get(key)
        if param is None:
            problems.append(
                (
                    key,
                    f"task {task!r} has no argument {key!r}{did_you_mean(key, params)}; "
                    f"it takes: {', '.join(p for p in params if p not in PIPELINE_ARGS)}",
                )
            )
            continue
        problem = _type_problem(param, value)
        if (
            problem is None
            and key in ARG_MINIMUM
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            if value < ARG_MINIMUM[key]:
                problem = f"must be >= {ARG_MINIMUM[key]}, got {value!r}"
        if problem is not None:
            problems.append((key, f"{task}({key}=...): {problem}"))
    return problems


def _type_problem(param: inspect.Parameter, value: Any) -> str | None:
    if param.annotation is inspect.Parameter.empty:
        return None
    try:
        adapter = TypeAdapter(param.annotation, config=_STRICT)
    except Exception:  # an annotation pydantic cannot express: the task function checks it itself
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        messages = list(dict.fromkeys(err["msg"] for err in exc.errors()))
        return f"{'; or '.join(messages)} (got {value!r}, expected {_type_name(param.annotation)})"
    return None


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
