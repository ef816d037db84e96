"""Every task of the toolkit and its declaration (`SPEC`), found by looking, not by a list.

Importing this module imports every module of the `em_persona.tasks` package, so Inspect's
registry knows every @task (it is the package's `inspect_ai` entry point: `inspect eval
em_persona/harmfulness` works from any folder), and `specs()` collects the `SPEC = TaskSpec(...)`
each task file declares. Adding an experiment is adding its task file (with its SPEC), its
data and prompt files, its doc and its test: nothing here or elsewhere names it. `register()`
adds a declaration from outside the package (a test's toy experiment, a user's plug-in).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping
from typing import Any

import em_persona.tasks as _package
from em_persona.contract.declarations import TaskSpec

_REGISTERED: dict[str, TaskSpec] = {}


def _modules() -> list[Any]:
    return [
        importlib.import_module(f"{_package.__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda i: i.name)
        if info.name != "registry"
    ]


_MODULES = _modules()


def specs() -> dict[str, TaskSpec]:
    """Every declared task by name: the package's SPECs, then the registered ones."""
    found = {m.SPEC.name: m.SPEC for m in _MODULES if isinstance(getattr(m, "SPEC", None), TaskSpec)}
    found.update(_REGISTERED)
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


def spec_for(name: str) -> TaskSpec | None:
    """The declaration of task `name`, or None for a task the toolkit does not know."""
    return specs().get(name)


def register(spec: TaskSpec) -> None:
    """Declare a task from outside the package (replaces a registered one of the same name)."""
    _REGISTERED[spec.name] = spec


def unregister(name: str) -> None:
    """Forget a task declared with `register`."""
    _REGISTERED.pop(name, None)


def parameters(spec: TaskSpec) -> dict[str, inspect.Parameter]:
    """The parameters of the task function, annotations evaluated."""
    return dict(inspect.signature(spec.task, eval_str=True).parameters)


def effective_args(spec: TaskSpec, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The task function's defaults overlaid with `args` (what a run of it used)."""
    out = {
        name: p.default for name, p in parameters(spec).items() if p.default is not inspect.Parameter.empty
    }
    out.update(dict(args or {}))
    return out
