"""The run-stats.json format: what `em-persona run` measured per stage, read by the plan and the report.

`<log_dir>/run-stats.json` is `{"format": 1, "runs": [record, ...]}`, one record appended per run
(em_persona.app.run_stats writes it). A record holds when and where the run ran (`platform`,
`base_model`, `served_dtype`, `max_connections`), whether it finished (`complete`, `outcome`),
its `stages` (fine-tuning per adapter, server start, each evaluation stage; wall seconds each) and
its `tasks` (one entry per task x model: tokens from the Inspect log's usage, calls as the plan
counts them (the task's declared calls per sample x the sample x epoch runs in the log), `ran`
false for a log reused from an earlier run, whose numbers are then copied from the run that wrote
it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from em_persona.core.errors import EmPersonaError

FORMAT_VERSION = 1
RUN_STATS_FILE = "run-stats.json"

STAGE_COLUMNS = ["stage", "name", "state", "wall_s", "steps", "trained_tokens"]
TASK_COLUMNS = [
    "folder",
    "task",
    "model",
    "state",
    "measured",
    "generations",
    "judge_calls",
    "input_tokens",
    "output_tokens",
    "grader_input_tokens",
    "grader_output_tokens",
    "log_wall_s",
]


class RunStatsError(EmPersonaError, ValueError):
    """run-stats.json cannot be read; the message names the file."""


def run_stats_path(log_dir: str | Path) -> Path:
    """Where a log folder's run statistics are."""
    return Path(log_dir) / RUN_STATS_FILE


def load_runs(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a run-stats.json, oldest first ([] when there is no file).

    Raises RunStatsError, naming the file (and the line of a JSON syntax error), when it is not
    a run-stats file of this format.
    """
    path = Path(path)
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunStatsError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunStatsError(f"{path}: cannot be read: {exc}") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != FORMAT_VERSION
        or not isinstance(doc.get("runs"), list)
    ):
        raise RunStatsError(
            f"{path}: not a run-stats file of format {FORMAT_VERSION} "
            "(a mapping with `format` and a list `runs`)"
        )
    runs = doc["runs"]
    bad = [i for i, r in enumerate(runs) if not isinstance(r, dict)]
    if bad:
        raise RunStatsError(f"{path}: runs[{bad[0]}] is not a mapping")
    return runs


def stage_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage of a record (STAGE_COLUMNS), in the order the run went through them."""
    rows = []
    for s in record.get("stages") or []:
        trained = [t for t in s.get("adapter_stages") or [] if t.get("trained")]
        rows.append(
            {
                "stage": s.get("stage"),
                "name": s.get("name") or "",
                "state": s.get("state"),
                "wall_s": s.get("wall_s"),
                "steps": sum(int(t.get("steps") or 0) for t in trained) if trained else None,
                "trained_tokens": _sum([t.get("tokens") for t in trained]) if trained else None,
            }
        )
    return rows


def task_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task x model of a record (TASK_COLUMNS); `measured` says which run measured it."""
    rows = []
    for t in record.get("tasks") or []:
        rows.append(
            {
                **{c: t.get(c) for c in TASK_COLUMNS},
                "measured": "this run" if t.get("ran") else (t.get("measured_in") or "not measured"),
            }
        )
    return rows


def _sum(values: list[Any]) -> int | None:
    known = [int(v) for v in values if v is not None]
    return sum(known) if known else None
