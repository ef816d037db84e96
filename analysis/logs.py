"""Inspect logs -> per-sample tables, through each task's declaration; and the table of the logs.

`read_logs(logdir)` lists the logs with Inspect's own `list_eval_logs`, reads each header, and
hands every finished log of a declared task to that task's `rows` (em_persona.contract.
declarations). It decides which logs are used: when a model has several logs of one task with
the same grader(s) and epochs whose measured task arguments agree (all but the task's
`not_measured()`), the newest is used and the others are marked superseded, naming the log that
replaced them; logs that measure different things are all used, pooled unless they differ in an
argument the task keeps apart. Unusable logs (unreadable or truncated files, runs that did not
finish, logs a task refuses) are listed with the reason. Nothing here names a task.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from em_persona.analysis.tables import SampleTables, frames_from_rows, is_missing
from em_persona.contract.declarations import LogInput, TaskSpec, UnusableLog
from em_persona.contract.keys import SELF_JUDGED_KEY
from em_persona.core.provenance import NOT_PAPER_KEY, ORIGIN_KEY, PROMPTS_KEY
from em_persona.tasks.registry import effective_args, specs

PROBES_DIR = "probes"
"""`<logdir>/probes/`: activation-probe results (read by the report, not Inspect logs)."""

UNKNOWN = "unknown"
"""What the report says where a log does not record a fact (older logs, unreadable files)."""
NO_JUDGE = "no judge"
"""`self_judged` of a log that records its prompts but no judge (the task ran without one)."""

LOG_COLUMNS = [
    "log",
    "task",
    "model",
    "grader",
    "dataset",
    "condition",
    "status",
    "created",
    "samples",
    "used",
    "usable",
    "prompt_origin",
    "prompts_not_paper",
    "self_judged",
    "note",
]
"""The logs table: one row per file Inspect lists as a log. `usable` is False for a log whose data
is lost (unreadable or truncated file, run not finished, failed validation); `used` is True when
its samples feed the report; `dataset` / `condition` are the task's arguments of that name (what a
number is computed from); `prompt_origin` / `prompts_not_paper` / `self_judged` come from the
header's `eval.metadata` (em_persona.core.provenance, em_persona.contract.keys), "unknown" when
the log predates them."""


def _log_files(logdir: Path) -> list[tuple[Path, str | None]]:
    """(file, task name from the listing) of every log Inspect's own listing finds under `logdir`
    (so `eval-set.json`, `logs.json`, `models.yaml` and `probes/` are never taken for logs)."""
    from inspect_ai.log import list_eval_logs

    if not logdir.is_dir():
        raise FileNotFoundError(f"{logdir}: log folder not found")
    files = []
    for info in list_eval_logs(str(logdir.resolve()), recursive=True):
        name = info.name
        path = Path(unquote(urlparse(name).path)) if name.startswith("file://") else Path(name)
        if path.relative_to(logdir.resolve()).parts[0] == PROBES_DIR:
            continue
        files.append((path, info.task or None))
    return sorted(files)


def _grader_of(header: Any) -> str | None:
    roles = getattr(header.eval, "model_roles", None) or {}
    grader = roles.get("grader")
    if isinstance(grader, list):
        grader = grader[0] if grader else None
    return getattr(grader, "model", None)


def _task_name(task: str) -> str:
    return task.split("@")[-1].split("/")[-1]


def _provenance(header: Any) -> dict[str, object]:
    """prompt_origin, prompts_not_paper and self_judged from the header's eval.metadata;
    "unknown" where a log predates them."""
    meta = dict(getattr(header.eval, "metadata", None) or {})
    origin = meta.get(ORIGIN_KEY)
    roles = meta.get(NOT_PAPER_KEY)
    judged = meta.get(SELF_JUDGED_KEY)
    if isinstance(
        roles, list | tuple
    ):  # each role with its origin (project / custom) when the log lists them
        origins = {
            str(p.get("role")): str(p.get("origin"))
            for p in meta.get(PROMPTS_KEY) or []
            if isinstance(p, dict) and p.get("origin") != "paper"
        }
        roles = [f"{r} ({origins[str(r)]})" if str(r) in origins else str(r) for r in roles]
    if isinstance(judged, bool):
        self_judged: object = judged
    else:  # a log with prompt marks but no judge mark: the run had no judge (or decides per score)
        self_judged = NO_JUDGE if origin else UNKNOWN
    return {
        "prompt_origin": str(origin) if origin else UNKNOWN,
        "prompts_not_paper": ", ".join(str(r) for r in roles) if isinstance(roles, list | tuple) else UNKNOWN,
        "self_judged": self_judged,
    }


def _status_note(header: Any) -> str:
    status = getattr(header, "status", None)
    if status == "started":
        return "unfinished (status started): the run was interrupted or is still running"
    if status == "cancelled":
        return "cancelled (status cancelled): the run was stopped before it finished"
    error = getattr(header, "error", None)
    detail = str(getattr(error, "message", "") or "").strip().splitlines()
    return f"status {status}" + (f": {detail[0][:300]}" if detail else "")


def _measured(spec: TaskSpec, args: dict[str, Any]) -> dict[str, str]:
    """The task arguments that define what is measured, as JSON text."""
    skip = spec.not_measured()
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in sorted(args.items()) if k not in skip}


def _differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """`name=x vs y` for every argument both logs set to different values."""
    return [f"{k}={a[k]} vs {b[k]}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]


def _unreadable_entry(rel: str, listed_task: str | None, exc: Exception) -> dict[str, object]:
    return {
        "log": rel,
        "task": _task_name(listed_task.replace("-", "_")) if listed_task else None,
        "model": None,
        "grader": None,
        "dataset": "",
        "condition": "",
        "status": "unreadable",
        "created": None,
        "samples": 0,
        "used": False,
        "usable": False,
        "prompt_origin": UNKNOWN,
        "prompts_not_paper": UNKNOWN,
        "self_judged": UNKNOWN,
        "note": f"unreadable (truncated, or not an Inspect log): {type(exc).__name__}: {exc}",
    }


def read_logs(
    logdir: Path, progress: bool = False, declared: Iterable[TaskSpec] | None = None
) -> tuple[SampleTables, pd.DataFrame]:
    """Read every Inspect log under `logdir` into per-sample tables (see the module doc).

    Returns (SampleTables, logs table with columns LOG_COLUMNS).
    """
    from inspect_ai.log import read_eval_log
    from tqdm import tqdm

    by_name = {s.name: s for s in (declared if declared is not None else specs().values())}
    logdir = Path(logdir)
    headers = []
    log_rows: list[dict] = []
    for file, listed_task in _log_files(logdir):
        rel = str(file.relative_to(logdir.resolve()))
        try:
            header = read_eval_log(str(file), header_only=True)
        except Exception as exc:  # a truncated file, a .json that is not a log
            log_rows.append(_unreadable_entry(rel, listed_task, exc))
            continue
        headers.append((file, rel, header))
    # newest first: an older log of the same measurement is superseded by the newer one. `created`
    # has whole seconds; two runs started in the same second are told apart by when each file was
    # last written (the later run finishes later).
    headers.sort(key=lambda t: (str(t[2].eval.created), t[0].stat().st_mtime_ns, t[1]), reverse=True)
    accepted: dict[tuple, list[tuple[str, dict[str, str]]]] = {}
    rows: dict[str, list[dict]] = {}
    for file, rel, header in tqdm(headers, desc="reading logs", disable=not progress):
        task = _task_name(header.eval.task)
        spec = by_name.get(task)
        model = header.eval.model
        args = effective_args(spec, getattr(header.eval, "task_args", None)) if spec else {}
        meta = dict(getattr(header.eval, "metadata", None) or {})
        entry = {
            "log": rel,
            "task": task,
            "model": model,
            "grader": _grader_of(header),
            "dataset": str(args.get("dataset") or ""),
            "condition": str(meta.get("condition") or args.get("condition") or ""),
            "status": header.status,
            "created": str(header.eval.created),
            "samples": 0,
            "used": False,
            "usable": True,
            **_provenance(header),
            "note": "",
        }
        log_rows.append(entry)
        if spec is None:
            entry["note"] = "not an em-persona experiment"
            continue
        if header.status != "success":
            entry.update(usable=False, note=_status_note(header))
            continue
        try:
            found = spec.rows(LogInput(file, header))
        except UnusableLog as exc:
            entry.update(usable=False, note=str(exc))
            continue
        except Exception as exc:  # a log whose samples cannot be read (truncated after the header)
            entry.update(usable=False, note=f"samples unreadable: {type(exc).__name__}: {exc}")
            continue
        graders = (
            found.graders if found.graders is not None else ((entry["grader"],) if entry["grader"] else ())
        )
        if found.graders is not None:
            entry["grader"] = ", ".join(found.graders)
        group = (task, model, tuple(graders), getattr(header.eval.config, "epochs", None))
        measured = _measured(spec, args)
        replaced_by = next(
            (other for other, m in accepted.get(group, []) if not _differences(measured, m)), None
        )
        if replaced_by is not None:
            entry["note"] = (
                f"superseded by {replaced_by} (a newer log of the same task, model, grader(s), "
                "epochs and measured task arguments)"
            )
            continue
        first_table = next(iter(spec.tables))
        entry["samples"] = (
            found.samples if found.samples is not None else len(found.tables.get(first_table, []))
        )
        for name, table_rows in found.tables.items():
            rows.setdefault(name, []).extend(table_rows)
        if found.judges:  # the judges that actually scored decide, else the header's mark
            entry["self_judged"] = model in found.judges
        others = accepted.setdefault(group, [])
        pooled = [
            (other, diffs)
            for other, m in others
            if (diffs := _differences(measured, m))
            and not any(d.split("=")[0] in spec.kept_apart for d in diffs)
        ]
        if pooled:
            entry["note"] = "pooled with " + "; ".join(
                f"{other} (task arguments differ: {', '.join(diffs)})" for other, diffs in pooled
            )
        entry["used"] = True
        others.append((rel, measured))
    logs = pd.DataFrame(log_rows, columns=LOG_COLUMNS).sort_values("log").reset_index(drop=True)
    return SampleTables(frames_from_rows(rows)), logs


def unusable_logs(logs: pd.DataFrame) -> pd.DataFrame:
    """The rows of the logs table whose data is lost (`usable` False)."""
    return logs[~logs["usable"].astype(bool)].reset_index(drop=True)


def data_loss(logs: pd.DataFrame) -> list[dict[str, object]]:
    """Per experiment that lost data: {"experiment", "models" (the models that lost data, "unknown
    model" for files too damaged to say), "logs" (one "file: reason" line each)}. The experiment of an
    unreadable file is taken from its name."""
    lost = unusable_logs(logs)
    out: list[dict[str, object]] = []
    for task, group in lost.groupby(lost["task"].fillna("unknown experiment"), sort=True):
        models = sorted({str(m) for m in group["model"] if not is_missing(m)})
        if group["model"].map(is_missing).any():
            models.append("unknown model")
        out.append(
            {
                "experiment": str(task),
                "models": ", ".join(models),
                "logs": [f"{row.log}: {row.note}" for row in group.itertuples()],
            }
        )
    return out
