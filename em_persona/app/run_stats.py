"""What a run measured, appended to `<log_dir>/run-stats.json` (format: em_persona.contract.run_stats).

`run_experiment` makes one `RunRecorder`, times each stage with it (fine-tuning per adapter, server
start, each evaluation stage), and saves it at the end, also when the run is interrupted or fails
(then marked incomplete). Calls and tokens per task x model come from the Inspect logs: the header's
`stats.model_usage` and `stats.role_usage` (the grader's usage apart from the evaluated model's) and
its sample count times the task's declared calls per sample. A log reused from an earlier run is not measured again:
its numbers are copied from the record of the run that wrote it.
"""

from __future__ import annotations

import functools
import os
import platform as platform_module
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from em_persona.contract.declarations import Calls
from em_persona.contract.run_stats import FORMAT_VERSION, RunStatsError, load_runs, run_stats_path
from em_persona.core.files import write_json_atomic

GRADER_ROLE = "grader"


def current_platform() -> dict[str, Any]:
    """Where this process runs: `name` (e.g. "GPU: NVIDIA H200" or "CPU: <model> (8 cores)"),
    `kind` ("gpu" / "cpu"), the GPU names, the CPU model and the cores this process may use."""
    gpus = list(_gpu_names())
    cpu = _cpu_name()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if gpus:
        name = f"GPU: {gpus[0]}" + (f" x{len(gpus)}" if len(gpus) > 1 else "")
    else:
        name = f"CPU: {cpu} ({cores} cores)"
    return {"name": name, "kind": "gpu" if gpus else "cpu", "gpus": gpus, "cpu": cpu, "cores": cores}


@functools.cache  # the machine does not change while the process runs; nvidia-smi takes seconds
def _gpu_names() -> tuple[str, ...]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return (
        tuple(line.strip() for line in out.stdout.splitlines() if line.strip()) if out.returncode == 0 else ()
    )


@functools.cache
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform_module.processor() or platform_module.machine() or "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class RunRecorder:
    """The measurements of one run, saved by `save` as one record of run-stats.json."""

    log_dir: Path
    header: dict[str, Any]
    stages: list[dict[str, Any]] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    _t0: float = field(default_factory=time.monotonic)
    earlier_logs: frozenset[Path] = frozenset()
    """Logs already there when the run began: a log not among them was written by this run."""

    @classmethod
    def for_experiment(cls, exp: Any, max_connections: int | None) -> RunRecorder:
        """A recorder for experiment `exp` (an em_persona.app.experiment.Experiment)."""
        header = {
            "experiment": exp.name,
            "source": str(exp.source),
            "platform": current_platform(),
            "base_model": {"name": exp.base_name, "path": exp.base_path},
            "served_dtype": exp.serve.get("dtype"),
            "max_connections": max_connections,
        }
        return cls(Path(exp.log_dir), header, earlier_logs=existing_logs(Path(exp.log_dir)))

    @contextmanager
    def stage(self, stage: str, name: str = "", **facts: Any) -> Iterator[dict[str, Any]]:
        """Time one stage; its entry (yielded, to add facts to) is kept also when it fails."""
        entry: dict[str, Any] = {"stage": stage, "name": name, "state": "running", **facts}
        self.stages.append(entry)
        t0 = time.monotonic()
        try:
            yield entry
        except KeyboardInterrupt:
            entry["state"] = "interrupted"
            raise
        except BaseException as exc:
            entry["state"] = f"error: {type(exc).__name__}"
            raise
        else:
            if entry["state"] == "running":
                entry["state"] = "done"
        finally:
            entry["wall_s"] = round(time.monotonic() - t0, 3)

    def record(
        self, statuses: list[Any], outcome: str, calls: Mapping[str, Calls] | None = None
    ) -> dict[str, Any]:
        """The record of this run: its header, stages and the task x model runs of `statuses`
        (run_status.UnitStatus, the experiment's final states); `calls`: each task entry's declared
        calls per sample, by its label."""
        calls = calls or {}
        complete = outcome == "done"
        return {
            **self.header,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": _now(),
            "wall_s": round(time.monotonic() - self._t0, 3),
            "complete": complete,
            "outcome": outcome,
            "stages": self.stages,
            "tasks": [task_entry(s, self.earlier_logs, calls.get(s.unit.label)) for s in statuses],
        }

    def save(self, statuses: list[Any], outcome: str, calls: Mapping[str, Calls] | None = None) -> Path:
        """Append this run's record to run-stats.json (atomically); returns the file."""
        return append_record(self.log_dir, self.record(statuses, outcome, calls))


BATCH_SETTINGS = ("per_device_train_batch_size", "gradient_accumulation_steps")


def manifest_examples(manifest: Mapping[str, Any], missing_batch: int | None = None) -> int | None:
    """The training examples an adapter manifest (manifest.json) records: global steps x per-device
    batch x gradient accumulation x processes (1 when not recorded). None without global steps; a
    batch setting missing (or null / 0) counts as `missing_batch`, and makes the count None when
    that is None. Raises ValueError / TypeError for a value that is not a number."""
    train = manifest.get("train") or {}
    settings = (manifest.get("config") or {}).get("train") or {}
    steps = train.get("global_steps")
    if steps is None:
        return None
    examples = int(steps) * int(train.get("processes") or 1)
    for key in BATCH_SETTINGS:
        value = settings.get(key) or missing_batch
        if value is None:
            return None
        examples *= int(value)
    return examples


def adapter_stage(result: Any) -> dict[str, Any]:
    """What a fine-tuning stage result (finetune.train.StageResult) says about its training."""
    manifest = result.manifest or {}
    train = manifest.get("train") or {}
    return {
        "name": result.name,
        "trained": bool(result.trained),
        "steps": train.get("global_steps"),
        # a manifest without the batch settings: one example per device and step
        "examples": manifest_examples(manifest, missing_batch=1),
        "runtime_s": train.get("runtime_s"),
        "tokens": train.get("tokens"),
        "device": manifest.get("device"),
    }


# --- task x model entries from the Inspect logs ----------------------------------------------------


def _tokens(usage: Any) -> dict[str, int]:
    return {"input_tokens": int(usage.input_tokens or 0), "output_tokens": int(usage.output_tokens or 0)}


def _wall(stats: Any) -> float | None:
    try:
        start = datetime.fromisoformat(stats.started_at)
        end = datetime.fromisoformat(stats.completed_at)
    except (TypeError, ValueError):
        return None
    return round((end - start).total_seconds(), 3)


def _sample_epochs(log_path: Path) -> int | None:
    """How many sample x epoch runs the log holds (its sample summaries; an unfinished log: those done)."""
    from inspect_ai.log import read_eval_log_sample_summaries

    try:
        return len(read_eval_log_sample_summaries(str(log_path)))
    except Exception:  # no summaries readable: the count is not known
        return None


def log_measures(log_path: Path, calls: Calls | None = None) -> dict[str, Any]:
    """Calls, tokens (evaluated model, grader, other roles) and wall seconds of one Inspect log.

    Calls are the task's declared calls per sample (`calls`: generations, judge) times the sample x
    epoch runs in the log, as the plan counts them (parse retries are not counted): reading every
    sample's model events would take minutes for a paper-sized log.
    """
    from inspect_ai.log import read_eval_log

    log = read_eval_log(str(log_path), header_only=True)
    stats = log.stats
    roles = {role: _tokens(u) for role, u in (stats.role_usage or {}).items()}
    models = {m: _tokens(u) for m, u in (stats.model_usage or {}).items()}
    evaluated = {
        k: max(0, sum(u[k] for u in models.values()) - sum(u[k] for u in roles.values()))
        for k in ("input_tokens", "output_tokens")
    }
    grader = roles.get(GRADER_ROLE, {"input_tokens": 0, "output_tokens": 0})
    runs = _sample_epochs(log_path) if calls is not None else None
    return {
        "started_at": stats.started_at or None,
        "samples": log.eval.dataset.samples,
        "epochs": log.eval.config.epochs,
        "sample_epochs": runs,
        "generations": runs * calls.generations if calls is not None and runs is not None else None,
        "judge_calls": runs * calls.judge if calls is not None and runs is not None else None,
        **evaluated,
        "grader_input_tokens": grader["input_tokens"],
        "grader_output_tokens": grader["output_tokens"],
        "usage": {"models": models, "roles": roles},
        "log_wall_s": _wall(stats),
    }


def existing_logs(log_dir: Path) -> frozenset[Path]:
    """Every Inspect log file under `log_dir` (resolved paths)."""
    if not log_dir.is_dir():
        return frozenset()
    return frozenset(
        p.resolve() for p in log_dir.rglob("*") if p.suffix in (".eval", ".json") and p.is_file()
    )


def task_entry(status: Any, earlier_logs: frozenset[Path], calls: Calls | None = None) -> dict[str, Any]:
    """One task x model run of the experiment (a run_status.UnitStatus): measured from its log when
    this run wrote it (`ran`: the log is not among `earlier_logs`), else only named (append_record
    copies the earlier measurement)."""
    unit = status.unit
    entry: dict[str, Any] = {
        "folder": unit.log_dir.name,
        "label": unit.label,
        "task": unit.task,
        "model": unit.model,
        "grader": unit.grader,
        "state": status.state,
        "log": str(status.log) if status.log is not None else None,
        "ran": False,
    }
    if status.log is None or not Path(status.log).is_file():
        return entry
    if Path(status.log).resolve() in earlier_logs:
        return entry
    try:
        measures = log_measures(Path(status.log), calls)
    except Exception as exc:  # an unreadable log: say so, measure nothing
        entry["note"] = f"log unreadable: {type(exc).__name__}"
        return entry
    entry.update(measures, ran=True)
    return entry


# --- the file --------------------------------------------------------------------------------------


def _carry_forward(record: dict[str, Any], earlier: list[dict[str, Any]]) -> None:
    """Reused logs get the numbers of the newest earlier record that measured them (`measured_in`)."""
    measured: dict[str, tuple[str, dict[str, Any]]] = {}
    for run in earlier:
        for t in run.get("tasks") or []:
            if t.get("ran") and t.get("log"):
                measured[t["log"]] = (str(run.get("started")), t)
    for t in record["tasks"]:
        if not t["ran"] and t.get("log") in measured:
            when, old = measured[t["log"]]
            t.update({k: v for k, v in old.items() if k not in t}, measured_in=when)


def append_record(log_dir: Path, record: dict[str, Any]) -> Path:
    """Append `record` to `<log_dir>/run-stats.json`, atomically (a new file replaces the old one).

    An unreadable file is kept beside as `run-stats.json.unreadable` and a new one started; a line
    on stderr says so.
    """
    path = run_stats_path(log_dir)
    try:
        runs = load_runs(path)
    except RunStatsError as exc:
        kept = path.with_name(path.name + ".unreadable")
        os.replace(path, kept)
        click.echo(f"[run-stats] {exc}; kept as {kept}, starting a new file", err=True)
        runs = []
    _carry_forward(record, runs)
    doc = {"format": FORMAT_VERSION, "runs": [*runs, record]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc, indent=1, default=str)
    return path
