"""Wall-time estimates for a plan: from a recorded run (run-stats.json) or a short calibration.

Rates come from measurements only, never from a guess:

- a recorded run: the newest record (complete first) of the same base model on the same platform,
  in this experiment's log folder or a sibling one. Each evaluation stage's wall time is shared
  among the task x model runs it ran (by their logs' durations), giving seconds per model call per
  task; server start seconds; fine-tuning seconds per training example (wall time of adapters
  trained in that run, else the training time in adapter manifests of the same base and device);
- a calibration (`--calibrate`): one server start and a burst of concurrent requests with the
  tasks' prompts and max_tokens, giving seconds per call (calls to API models are not timed).

Adapters already trained and task x model runs with a finished log count 0: the pipeline resumes.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from em_persona.app.prices import is_local
from em_persona.app.run_stats import manifest_examples
from em_persona.contract.run_stats import RunStatsError, load_runs, run_stats_path
from em_persona.core.errors import EmPersonaError

NO_ESTIMATE = "no estimate: run with --calibrate, or it will use this run's measurements next time"
CALIBRATION_REQUESTS = 16


class CalibrationError(EmPersonaError, RuntimeError):
    """The calibration requests failed; nothing was estimated."""


@dataclass(frozen=True)
class Rates:
    """Measured rates an estimate is made from, and where they come from."""

    source: str
    overall: float  # seconds per model call, all tasks together
    per_task: dict[str, float] = field(default_factory=dict)  # task -> seconds per model call
    server_s: float | None = None
    per_example: float | None = None  # fine-tuning seconds per training example
    per_example_source: str = ""
    api_timed: bool = True  # whether calls to API models are part of the rates
    caveats: tuple[str, ...] = ()


@dataclass(frozen=True)
class Estimate:
    """Seconds per plan row (0: finished; None: not estimated), fine-tuning, server start, total."""

    source: str | None
    rows: list[float | None] = field(default_factory=list)
    row_notes: list[str] = field(default_factory=list)
    finetune: list[tuple[str, float | None, str]] = field(default_factory=list)
    server_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def parts(self) -> list[float | None]:
        return [*self.rows, *(s for _, s, _ in self.finetune), self.server_s]

    @property
    def evaluation_s(self) -> float | None:
        """Every plan row together, when every row is estimated."""
        return sum_if_known(self.rows)

    @property
    def total_s(self) -> float | None:
        """The whole run, when every part is estimated."""
        return sum_if_known(self.parts)


def sum_if_known(parts: Sequence[float | None]) -> float | None:
    """The sum of `parts`, or None when one of them is not known."""
    return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


def duration(seconds: float | None) -> str:
    """`42 s`, `12 min`, `3 h 05 min`; `?` when unknown."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


# --- rates from a recorded run ---------------------------------------------------------------------


def _calls(t: dict[str, Any]) -> int:
    return int(t.get("generations") or 0) + int(t.get("judge_calls") or 0)


def find_record(
    log_dir: Path, base_path: str, platform: str
) -> tuple[dict[str, Any] | None, Path | None, list[str]]:
    """The newest record (complete ones first) of `base_path` on `platform` with measured evaluation,
    in `log_dir`/run-stats.json or a sibling log folder's; with its file and notes on unreadable files."""
    files = [run_stats_path(log_dir)] + sorted(
        p for p in Path(log_dir).parent.glob("*/run-stats.json") if p.parent != Path(log_dir)
    )
    found: list[tuple[bool, str, dict[str, Any], Path]] = []
    notes = []
    for f in files:
        try:
            runs = load_runs(f)
        except RunStatsError as exc:
            notes.append(f"skipped {exc}")
            continue
        for r in runs:
            if (r.get("base_model") or {}).get("path") != base_path:
                continue
            if (r.get("platform") or {}).get("name") != platform:
                continue
            if any(t.get("ran") and _calls(t) for t in r.get("tasks") or []):
                found.append((bool(r.get("complete")), str(r.get("started")), r, f))
    if not found:
        return None, None, notes
    _, _, record, path = max(found, key=lambda x: (x[0], x[1]))
    return record, path, notes


def rates_from_record(record: dict[str, Any], path: Path, exp: Any, max_connections: int | None) -> Rates:
    """Seconds per call per task, server start and fine-tuning rates of one record."""
    attributed: dict[str, float] = {}
    calls: dict[str, int] = {}
    tasks = [t for t in record.get("tasks") or [] if t.get("ran") and _calls(t)]
    for stage in record.get("stages") or []:
        if stage.get("stage") != "evaluation" or stage.get("wall_s") is None:
            continue
        units = [t for t in tasks if t.get("folder") == stage.get("name")]
        weights = [float(t.get("log_wall_s") or 0) for t in units]
        if not all(weights):
            weights = [float(_calls(t)) for t in units]
        for t, w in zip(units, weights, strict=True):
            task = str(t.get("task"))
            attributed[task] = attributed.get(task, 0.0) + float(stage["wall_s"]) * w / sum(weights)
            calls[task] = calls.get(task, 0) + _calls(t)
    if not calls:
        raise RunStatsError(f"{path}: the record of {record.get('started')} has no timed evaluation stage")
    server = [s.get("wall_s") for s in record.get("stages") or [] if s.get("stage") == "server start"]
    per_example, per_example_source = _finetune_rate(record, exp)
    when = str(record.get("started", "?")).replace("T", " ").replace("+00:00", " UTC")
    caveats = []
    if not record.get("complete"):
        caveats.append(f"the recorded run was incomplete ({record.get('outcome')})")
    if record.get("served_dtype") != exp.serve.get("dtype"):
        caveats.append(
            f"recorded with served dtype {record.get('served_dtype') or 'default'}, "
            f"this run {exp.serve.get('dtype') or 'default'}"
        )
    if record.get("max_connections") != max_connections:
        caveats.append(
            f"recorded at max_connections {record.get('max_connections')}, this run {max_connections}"
        )
    return Rates(
        source=f"recorded run of {when} ({path})",
        overall=sum(attributed.values()) / sum(calls.values()),
        per_task={t: attributed[t] / calls[t] for t in calls},
        server_s=float(server[-1]) if server and server[-1] is not None else None,
        per_example=per_example,
        per_example_source=per_example_source,
        caveats=tuple(caveats),
    )


def _finetune_rate(record: dict[str, Any], exp: Any) -> tuple[float | None, str]:
    """Fine-tuning seconds per training example: wall time of adapters the record trained (every
    stage of them), else training time in the manifests of adapters of this base on this device."""
    wall, examples = 0.0, 0
    for s in record.get("stages") or []:
        done = s.get("adapter_stages") or []
        if (
            s.get("stage") == "fine-tune"
            and done
            and all(d.get("trained") and d.get("examples") for d in done)
        ):
            wall += float(s.get("wall_s") or 0)
            examples += sum(int(d["examples"]) for d in done)
    if examples and wall:
        return wall / examples, "adapters trained in that run"
    device = "cuda" if (record.get("platform") or {}).get("kind") == "gpu" else "cpu"
    return manifest_rate(Path(exp.adapters_dir), exp.base_path, device)


def manifest_rate(adapters_dir: Path, base_path: str, device: str) -> tuple[float | None, str]:
    """Training seconds per example from finished adapters' manifest.json of `base_path` on `device`."""
    runtime, examples, n = 0.0, 0, 0
    for f in sorted(adapters_dir.glob("*/manifest.json")):
        try:
            m = json.loads(f.read_text())
            if (m.get("config") or {}).get("base_model") != base_path or m.get("device") != device:
                continue
            # a manifest without the batch settings is skipped: its examples are not known
            done, seconds = manifest_examples(m, missing_batch=None), float(m["train"]["runtime_s"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if done and seconds:
            runtime, examples, n = runtime + seconds, examples + done, n + 1
    if not examples:
        return None, ""
    return (
        runtime / examples,
        f"training time in {n} adapter manifest(s) of {adapters_dir} (loading not included)",
    )


# --- calibration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A burst of concurrent requests to the served base model, and the server start before it."""

    requests: int
    concurrency: int
    wall_s: float
    output_tokens: int
    server_start_s: float | None = None

    @property
    def seconds_per_call(self) -> float:
        return self.wall_s / self.requests


def _messages(sample_input: Any) -> list[dict[str, str]]:
    if isinstance(sample_input, str):
        return [{"role": "user", "content": sample_input}]
    return [{"role": m.role, "content": m.text} for m in sample_input]


def calibration_requests(
    tasks: Sequence[tuple[Any, int]], n: int = CALIBRATION_REQUESTS
) -> list[tuple[list[dict[str, str]], int]]:
    """`n` requests (messages, max_tokens): the built tasks' samples in turn, each with its task's
    max_tokens. `tasks`: (Inspect Task, max_tokens) of the independent tasks."""
    usable = [(t, m) for t, m in tasks if len(t.dataset)]
    if not usable:
        raise CalibrationError("no task with samples to calibrate with")
    out = []
    for i in range(n):
        task, max_tokens = usable[i % len(usable)]
        sample = task.dataset[(i // len(usable)) % len(task.dataset)]
        out.append((_messages(sample.input), max_tokens))
    return out


def measure_throughput(
    base_url: str,
    api_key: str,
    model: str,
    requests: list[tuple[list[dict[str, str]], int]],
    concurrency: int,
    timeout: float = 600.0,
) -> Calibration:
    """Send `requests` to an OpenAI-compatible chat endpoint, `concurrency` at a time; time the burst.

    Raises CalibrationError naming the server's answer when a request fails.
    """
    url = base_url.rstrip("/") + "/chat/completions"

    def one(req: tuple[list[dict[str, str]], int]) -> int:
        body = json.dumps({"model": model, "messages": req[0], "max_tokens": req[1]}).encode()
        http = urllib.request.Request(
            url,
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        )
        try:
            with urllib.request.urlopen(http, timeout=timeout) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise CalibrationError(
                f"calibration request to {url} failed: HTTP {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CalibrationError(f"calibration request to {url} failed: {exc}") from None
        return int((answer.get("usage") or {}).get("completion_tokens") or 0)

    workers = max(1, min(concurrency, len(requests)))
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        tokens = list(pool.map(one, requests))
    return Calibration(len(requests), workers, time.monotonic() - t0, sum(tokens))


def rates_from_calibration(cal: Calibration, exp: Any, device: str) -> Rates:
    """Rates of a calibration: one per-call rate for every task; fine-tuning from adapter manifests."""
    per_example, per_example_source = manifest_rate(Path(exp.adapters_dir), exp.base_path, device)
    return Rates(
        source=(
            f"calibration: {cal.requests} requests, {cal.concurrency} at a time, "
            f"{cal.wall_s:.1f} s, {cal.output_tokens} tokens out"
        ),
        overall=cal.seconds_per_call,
        server_s=cal.server_start_s,
        per_example=per_example,
        per_example_source=per_example_source,
        api_timed=False,
        caveats=("the calibration served the base model only (no adapters) and timed no API model",),
    )


# --- the estimate ----------------------------------------------------------------------------------


def stage_examples(config: Any, index: int) -> int | None:
    """Training examples (optimiser steps x batch x accumulation) stage `index` of a finetune config
    will process; None when its row count cannot be known."""
    t = config.train
    batch = t.per_device_train_batch_size * t.gradient_accumulation_steps
    if t.max_steps > 0:
        return int(t.max_steps * batch)
    rows = config.stages[index].data.rows
    if rows is None:
        try:
            from em_persona.finetune.data import read_rows, resolve_data_path

            rows = len(read_rows(resolve_data_path(config.stages[index].data)[0]))
        except Exception:  # data not there or unreadable: the preflight says so
            return None
    per_epoch = math.ceil(math.ceil(rows / t.per_device_train_batch_size) / t.gradient_accumulation_steps)
    return int(math.ceil(per_epoch * t.num_train_epochs) * batch)


def _finetune_parts(exp: Any, rates: Rates) -> list[tuple[str, float | None, str]]:
    """Per adapter: seconds to train what is not trained yet (each stage folder once)."""
    out: list[tuple[str, float | None, str]] = []
    seen: set[str] = set()
    for a in exp.adapters:
        todo = []
        for i, stage in enumerate(a.finetune.stages):
            if stage.name in seen or (Path(exp.adapters_dir) / stage.name / "manifest.json").is_file():
                continue
            seen.add(stage.name)
            todo.append(stage_examples(a.finetune, i))
        if not todo:
            out.append((a.name, 0.0, "already trained"))
        elif any(n is None for n in todo):
            out.append((a.name, None, "training rows unknown"))
        elif rates.per_example is None:
            out.append((a.name, None, "no fine-tuning measured on this base model and platform"))
        else:
            examples = sum(n for n in todo if n is not None)
            out.append((a.name, examples * rates.per_example, f"{examples} examples"))
    return out


def estimate(
    exp: Any, rows: Sequence[Any], remaining: Sequence[Sequence[str]], rates: Rates | None
) -> Estimate:
    """The wall time of the plan's `rows` (only the models in `remaining`, per row) under `rates`."""
    if rates is None:
        return Estimate(None, [None] * len(rows), [""] * len(rows), notes=[NO_ESTIMATE])
    seconds: list[float | None] = []
    notes: list[str] = []
    untimed = 0
    for row, models in zip(rows, remaining, strict=True):
        if not models:
            seconds.append(0.0)
            notes.append("finished")
            continue
        per_model = (row.generations + row.judge_calls) / max(row.models, 1)
        if rates.api_timed:
            calls = per_model * len(models)
        else:
            gens = row.generations / max(row.models, 1)
            judges = row.judge_calls / max(row.models, 1)
            served = [m for m in models if is_local(m)]
            judged_here = row.grader is None or is_local(row.grader)
            calls = gens * len(served) + (judges * len(models) if judged_here else 0)
            untimed += round(per_model * len(models) - calls)
        rate = rates.per_task.get(row.task)
        notes.append("" if rate is not None or not rates.per_task else "rate of all tasks of that run")
        seconds.append(calls * (rate if rate is not None else rates.overall))
    extra = list(rates.caveats)
    if untimed:
        extra.append(f"{untimed} calls to API models are not in the estimate")
    if rates.per_example is not None and any(exp.adapters):
        extra.append(
            f"fine-tuning: {rates.per_example:.3g} s per training example ({rates.per_example_source})"
        )
    return Estimate(rates.source, seconds, notes, _finetune_parts(exp, rates), rates.server_s, notes=extra)
