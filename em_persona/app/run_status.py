"""Which task x model runs of an experiment finished, read from their Inspect logs.

`eval_set` is not the judge of that: after Ctrl-C it returns success with no logs at all, and the
log of the interrupted task stays in status "started". So every run is matched to the newest log
in its folder with its task, model, arguments, sample count and grader, and only a finished
"success" log counts as done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

State = Literal["done", "interrupted", "cancelled", "error", "incomplete", "not started"]
EXIT_INTERRUPTED = 130  # the shell's code for a run ended by SIGINT
EXIT_FAILED = 1


@dataclass(frozen=True)
class Unit:
    """One task x model run of an experiment."""

    label: str  # the task entry's label: task name, arguments, limit
    task: str
    model: str
    log_dir: Path
    args: dict[str, Any] | None = None  # the arguments passed to the task function; None: not known yet
    samples: int | None = None  # dataset size; None: not known yet
    grader: str | None = None


@dataclass(frozen=True)
class UnitStatus:
    """Where one run stands, and the log that says so."""

    unit: Unit
    state: State
    log: Path | None = None
    detail: str = ""

    @property
    def done(self) -> bool:
        return self.state == "done"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _log_state(log: Any) -> tuple[State, str]:
    if log.status == "success" and not log.invalidated:
        results = log.results
        logged = results.logged_samples if results is not None else None
        if results is not None and logged is not None and logged < results.total_samples:
            return "incomplete", f"{results.logged_samples} of {results.total_samples} samples"
        return "done", ""
    if log.status == "started":
        return "interrupted", "its log was left unfinished"
    if log.status == "error":
        message = (log.error.message if log.error else "").strip().splitlines()
        return "error", message[-1][:200] if message else ""
    if log.status == "cancelled":
        return "cancelled", ""
    return "error", f"log status {log.status!r}"


def _grader_of(log: Any) -> str | None:
    roles = log.eval.model_roles or {}
    grader = roles.get("grader")
    return getattr(grader, "model", None) if grader is not None else None


def _matches(unit: Unit, log: Any) -> bool:
    if log.eval.task.split("/")[-1] != unit.task or log.eval.model != unit.model:
        return False
    if unit.args is not None and _canonical(log.eval.task_args_passed or {}) != _canonical(unit.args):
        return False
    if unit.samples is not None and log.eval.dataset.samples not in (None, unit.samples):
        return False
    return unit.grader is None or _grader_of(log) in (None, unit.grader)


def _location(log: Any) -> Path | None:
    location = getattr(log, "location", None)
    return Path(str(location).removeprefix("file://")) if location else None


def unit_statuses(units: list[Unit], returned: list[Any] | tuple[Any, ...] = ()) -> list[UnitStatus]:
    """The state of every unit: that of its matching log among `returned` (the logs eval_set gave
    back), else of its newest matching log on disk, else "not started"."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    headers: dict[Path, list[tuple[Path | None, Any]]] = {}
    for folder in {u.log_dir for u in units}:
        found: list[tuple[float, Path, Any]] = []
        if folder.is_dir():
            for info in list_eval_logs(str(folder), recursive=False):
                path = Path(info.name.removeprefix("file://"))
                try:
                    found.append((info.mtime or 0.0, path, read_eval_log(info, header_only=True)))
                except Exception as exc:  # an unreadable log finishes nothing; skip it
                    found.append((info.mtime or 0.0, path, exc))
        found.sort(key=lambda h: h[0], reverse=True)
        headers[folder] = [(_location(log), log) for log in returned] + [(p, log) for _, p, log in found]
    out = []
    for unit in units:
        status = UnitStatus(unit, "not started")
        for where, log in headers[unit.log_dir]:
            if isinstance(log, Exception) or not _matches(unit, log):
                continue
            state, detail = _log_state(log)
            status = UnitStatus(unit, state, where, detail)
            break
        out.append(status)
    return out


class RunIncomplete(click.ClickException):
    """Some task x model runs did not finish; the message lists them and how to resume."""

    def __init__(self, message: str, interrupted: bool) -> None:
        super().__init__(message)
        self.exit_code = EXIT_INTERRUPTED if interrupted else EXIT_FAILED  # type: ignore[misc]  # click reads it per instance


def unfinished_lines(statuses: list[UnitStatus]) -> list[str]:
    """One line per run that did not finish: task entry x model: state (detail)."""
    return [
        f"  {s.unit.label} x {s.unit.model}: {s.state}" + (f" ({s.detail})" if s.detail else "")
        for s in statuses
        if not s.done
    ]


def incomplete_message(
    statuses: list[UnitStatus], source: Path, log_dir: Path, interrupted: bool, report: Path | None
) -> str:
    """What did not finish, where finished logs are, how to resume, and what became of the report."""
    todo = [s for s in statuses if not s.done]
    how = "interrupted" if interrupted else "incomplete"
    lines = [
        f"run {how}: {len(todo)} of {len(statuses)} task x model runs did not finish:",
        *unfinished_lines(statuses),
    ]
    if interrupted:
        lines.append("(a 'Completed all tasks' line from Inspect above counts only the tasks it got to)")
    lines.append(
        f"Finished logs are kept in {log_dir}. Resume with the same command: em-persona run {source}"
    )
    if report is None:
        lines.append("No report was written (pass --report-anyway for one marked incomplete).")
    else:
        lines.append(f"Report marked INCOMPLETE RUN: {report}")
    return "\n".join(lines)


def incomplete_banner(statuses: list[UnitStatus]) -> str:
    """The report banner of an incomplete run."""
    todo = [s for s in statuses if not s.done]
    listed = "; ".join(f"{s.unit.label} x {s.unit.model} ({s.state})" for s in todo[:20])
    more = f"; and {len(todo) - 20} more" if len(todo) > 20 else ""
    return (
        f"INCOMPLETE RUN: {len(todo)} of {len(statuses)} task x model runs did not finish, so their numbers "
        f"are missing or partial: {listed}{more}."
    )
