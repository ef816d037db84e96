"""`em-persona run EXPERIMENT.yaml`: preflight -> adapters -> one vLLM server -> Inspect eval sets -> report.

Nothing is trained or served until the preflight passes (em_persona/preflight.py). Every step is
resumable: finished adapters are skipped by the fine-tuner, Inspect's `eval_set` reuses finished
logs, and the report is rebuilt from the logs. A run is done only when every task x model run has
a finished log (em_persona/run_status.py); an interrupted or failed run says what did not finish,
exits non-zero, and writes no report unless asked (`--report-anyway`, marked incomplete).

Each run appends what it measured (wall time per stage, calls and tokens per task x model) to
`<log_dir>/run-stats.json` (em_persona/app/run_stats.py); the plan printed before a run estimates
its wall time from those records or a calibration (estimates.py) and prices its API calls
(prices.py, datasets/prices.yaml).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import yaml

from em_persona.app import run_stats
from em_persona.app.building import build_independent, build_task, echo, eval_kwargs
from em_persona.app.estimates import (
    CALIBRATION_REQUESTS,
    Calibration,
    calibration_requests,
    measure_throughput,
)
from em_persona.app.experiment import (
    Experiment,
    TaskRun,
)
from em_persona.app.plan import PlanRow, answer_tokens, plan, plan_cost, plan_estimate, print_plan
from em_persona.app.prices import PriceError
from em_persona.app.run_status import (
    RunIncomplete,
    Unit,
    UnitStatus,
    incomplete_banner,
    incomplete_message,
    unit_statuses,
)
from em_persona.core.files import write_text_atomic

MAIN, FOLLOWUP = "main", "followup"  # log sub-folders: independent tasks, tasks built on earlier logs


def remaining_models(exp: Experiment, rows: list[PlanRow]) -> list[tuple[str, ...]]:
    """Per plan row (one per task entry), the models whose run of it has no finished log yet; the
    pipeline reuses the others."""
    statuses = iter(expected_statuses(exp, []))
    out = []
    for spec in exp.tasks:
        states = [(model, next(statuses)) for model in spec.models]
        out.append(tuple(m for m, s in states if not s.done))
    if len(out) != len(rows):
        raise ValueError(f"{len(rows)} plan rows for {len(out)} task entries")
    return out


def calibrate(exp: Experiment, built: dict[int, Any], n: int = CALIBRATION_REQUESTS) -> Calibration:
    """Start the server for the base model, send `n` of the tasks' prompts (with their max_tokens) at
    the run's max_connections, time the burst and the start, stop the server."""
    tasks = [(built[spec.index], answer_tokens(spec)) for spec in exp.tasks if spec.index in built]
    requests = calibration_requests(tasks, n)
    concurrency = int(eval_kwargs(exp).get("max_connections") or 1)
    base = resolve_base(exp)
    echo(f"[calibrate] starting the server for {exp.base_name}; then {n} requests, {concurrency} at a time")
    t0 = time.monotonic()
    with serving(exp, base, {}) as base_url:
        started = time.monotonic() - t0
        cal = measure_throughput(
            base_url, os.environ.get("VLLM_API_KEY", ""), exp.base_name, requests, concurrency
        )
    echo(f"[calibrate] server start {started:.1f} s; {cal.requests} requests in {cal.wall_s:.1f} s")
    return replace(cal, server_start_s=round(started, 3))


# --- preflight ----------------------------------------------------------------


class PreflightFailed(click.ClickException):
    """The preflight found problems; nothing was trained or served."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            f"preflight found {len(problems)} problem(s); nothing was fine-tuned, served or "
            f"evaluated:\n" + "\n".join(problems)
        )


def preflight(exp: Experiment) -> tuple[list[str], dict[int, Any]]:
    """Every problem the run would meet before it trains or serves anything, and the built tasks."""
    from em_persona.app.preflight import adapter_problems, data_problems, model_problems, server_problems
    from em_persona.core.registry import load_source

    def fetch(name: str) -> Path:
        path = load_source(name)
        echo(f"[data] {name}: {path}")
        return path

    problems = model_problems(exp) + server_problems(exp) + adapter_problems(exp) + data_problems(exp, fetch)
    built, task_problems = build_independent(exp)
    return problems + task_problems, built


# --- steps ------------------------------------------------------------------


def resolve_base(exp: Experiment) -> Path:
    """The base model: a proxy (`proxy:NAME`, built on first use), a local folder, or a hub id."""
    from em_persona.finetune.proxy import resolve_proxy

    return resolve_proxy(exp.base_path, build=True) or Path(exp.base_path)


def finetune_adapters(exp: Experiment, recorder: run_stats.RunRecorder | None = None) -> dict[str, Path]:
    """Train every adapter (the fine-tuner skips finished stages); served name -> adapter folder.

    Each config was validated at load time on the experiment's base model, so every adapter fits
    the served base. With a `recorder` (a run's), each adapter's wall time and training are recorded.
    """
    from em_persona.finetune.train import finetune

    out: dict[str, Path] = {}
    for a in exp.adapters:
        timer: AbstractContextManager[dict[str, Any]] = (
            recorder.stage("fine-tune", a.name) if recorder else nullcontext({})
        )
        with timer as entry:
            results = finetune(a.finetune, out_dir=exp.adapters_dir)
            entry["adapter_stages"] = [run_stats.adapter_stage(r) for r in results]
            entry["state"] = "trained" if any(r.trained for r in results) else "reused"
        out[a.name] = Path(results[-1].path)
        echo(f"[finetune] {a.name}: {out[a.name]}")
    return out


@contextmanager
def serving(exp: Experiment, base: Path, adapters: dict[str, Path]) -> Iterator[str]:
    """One vLLM server for the base and every adapter; Inspect reaches it through VLLM_BASE_URL."""
    from em_persona.serving.launcher import start_server

    with start_server(base, adapters, served_name=exp.base_name, **exp.serve) as server:
        old = {k: os.environ.get(k) for k in ("VLLM_BASE_URL", "VLLM_API_KEY")}
        os.environ["VLLM_BASE_URL"] = server.base_url
        os.environ["VLLM_API_KEY"] = server.api_key
        try:
            yield server.base_url
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _model(exp: Experiment, name: str, base_url: str) -> Any:
    """The Model for `name`: a served model bound to this run's server; other names (an API model)
    resolved by Inspect.

    Binding the base URL matters: Inspect memoizes models by name and URL, so a bare
    `vllm/<name>` could resolve to a model made for an earlier server in the same process.
    (Inspect's vllm provider also remembers one server per served name per process, so
    use distinct served names when several servers run in one process, as tests do.)
    """
    from inspect_ai.model import get_model

    return get_model(name, base_url=base_url) if name in exp.served_models else get_model(name)


def _roles(exp: Experiment, spec: TaskRun, base_url: str) -> dict[str, Any]:
    """The task's judge (`grader`) and the model of the foil role (default: the judge)."""
    roles = {"grader": spec.grader, "foil": exp.foil_for(spec)}
    return {role: _model(exp, name, base_url) for role, name in roles.items() if name}


def _unit(
    exp: Experiment, spec: TaskRun, model: str, task: Any | None, extra: dict[str, Any] | None, folder: str
) -> Unit:
    args = None if extra is None else {**spec.args, **extra}
    return Unit(
        spec.label,
        spec.task,
        model,
        exp.log_dir / folder,
        args,
        len(task.dataset) if task is not None else None,
        spec.grader,
    )


def _run_eval_set(exp: Experiment, pairs: list[tuple[Unit, Any]], folder: str) -> list[UnitStatus]:
    """One eval_set over the tasks of `pairs`; the state of each unit from the logs, not eval_set's verdict."""
    from inspect_ai import eval_set

    if not pairs:
        return []
    _, logs = eval_set([t for _, t in pairs], log_dir=str(exp.log_dir / folder), **eval_kwargs(exp))
    return unit_statuses([u for u, _ in pairs], logs)


def run_independent_tasks(exp: Experiment, base_url: str) -> list[UnitStatus]:
    """Stage 1: every task that needs no earlier log, on each of its models, as one eval set."""
    return _run_stage(exp, [s for s in exp.tasks if not s.depends_on_earlier_logs], base_url, {}, MAIN)


Earlier = dict[tuple[str, str], Path]
"""(task, model) -> that model's finished log of that task in this run."""


def finished_logs(statuses: list[UnitStatus]) -> Earlier:
    """Each task x model's finished log of this run (the first entry of the task that runs the model)."""
    found: Earlier = {}
    for s in statuses:
        if s.done and s.log is not None:
            found.setdefault((s.unit.task, s.unit.model), s.log)
    return found


def run_dependent_tasks(exp: Experiment, base_url: str, earlier: Earlier) -> list[UnitStatus]:
    """Stage 2: the tasks built on earlier logs of this run (their `reads`), fed with those logs."""
    return _run_stage(exp, [s for s in exp.tasks if s.depends_on_earlier_logs], base_url, earlier, FOLLOWUP)


def _run_stage(
    exp: Experiment, specs: list[TaskRun], base_url: str, earlier: Earlier, folder: str
) -> list[UnitStatus]:
    """Build each spec's task for each of its models (bound to the model and the task's roles) and run
    them as one eval set. A task that cannot be built (e.g. an unusable harmfulness log) is an error
    of its unit; the others still run."""
    from inspect_ai import task_with

    pairs, failed = [], []
    for spec in specs:
        roles = _roles(exp, spec, base_url)
        for model in spec.models:
            extra = _earlier_args(spec, model, earlier)
            try:
                task = build_task(spec, roles, **extra)
            except Exception as exc:  # reported as this unit's error; the run then fails with it listed
                message = " ".join(str(exc).split()) or type(exc).__name__
                failed.append(
                    UnitStatus(
                        _unit(exp, spec, model, None, extra, folder),
                        "error",
                        detail=f"task could not be built: {message}",
                    )
                )
                continue
            task = task_with(task, model=_model(exp, model, base_url), model_roles=roles)
            pairs.append((_unit(exp, spec, model, task, extra, folder), task))
    return _run_eval_set(exp, pairs, folder) + failed


def _earlier_args(spec: TaskRun, model: str, earlier: Earlier) -> dict[str, Any]:
    """The earlier logs a task reads, as its argument: the model's own log (`harm_log`), or those of
    every model of the task, itself included (`harm_logs`); nothing for a task that reads none."""
    reads = spec.reads
    if reads is None:
        return {}
    if reads.scope == "own":
        return {reads.argument: str(earlier[(reads.task, model)])}
    return {reads.argument: [str(earlier[(reads.task, m)]) for m in spec.models]}


def _waits_for(spec: TaskRun, earlier: Earlier) -> str | None:
    """What a task built on earlier logs still waits for (None when they are all there)."""
    reads = spec.reads
    if reads is None or all((reads.task, m) in earlier for m in spec.models):
        return None
    return f"waits for the {reads.task} logs"


def expected_statuses(exp: Experiment, known: list[UnitStatus]) -> list[UnitStatus]:
    """The state of every task x model run of the experiment: from this run's eval sets when they got
    to it, else from the logs on disk; a follow-up whose harmfulness logs are not all done (in this
    run or on disk) is "not started"."""
    by_key = {(s.unit.label, s.unit.model, s.unit.log_dir): s for s in known}
    main = _stage_statuses(exp, MAIN, by_key, {})
    # the follow-ups read the finished logs of the independent tasks, whichever run wrote them
    followups = _stage_statuses(exp, FOLLOWUP, by_key, finished_logs(list(main.values())))
    found = main | followups
    return [found[(spec.index, model)] for spec in exp.tasks for model in spec.models]


def _stage_statuses(
    exp: Experiment, folder: str, by_key: dict[tuple[str, str, Path], UnitStatus], earlier: Earlier
) -> dict[tuple[int, str], UnitStatus]:
    """(task entry, model) -> state, for the runs of one stage (`folder`: MAIN or FOLLOWUP), in the
    experiment's order."""
    out: dict[tuple[int, str], UnitStatus] = {}
    scan: dict[tuple[int, str], Unit] = {}
    order = []
    for spec in exp.tasks:
        if spec.depends_on_earlier_logs != (folder == FOLLOWUP):
            continue
        for model in spec.models:
            order.append((spec.index, model))
            key = (spec.label, model, exp.log_dir / folder)
            if key in by_key:
                out[(spec.index, model)] = by_key[key]
            elif (waiting := _waits_for(spec, earlier)) is not None:
                unit = _unit(exp, spec, model, None, None, folder)
                out[(spec.index, model)] = UnitStatus(unit, "not started", detail=waiting)
            else:
                extra = _earlier_args(spec, model, earlier)
                scan[(spec.index, model)] = _unit(exp, spec, model, None, extra, folder)
    out.update(zip(scan, unit_statuses(list(scan.values())), strict=True))
    return {k: out[k] for k in order}


def write_models_file(exp: Experiment) -> Path:
    """`<log_dir>/models.yaml`: what the report needs to know about each model."""
    exp.log_dir.mkdir(parents=True, exist_ok=True)
    path = exp.log_dir / "models.yaml"
    doc = {"experiment": exp.name, "note": exp.note, "proxy": exp.proxy, "models": exp.models_table()}
    write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def write_report(exp: Experiment, banner: str | None = None) -> Path:
    """Build the report from every log of the experiment; `banner` is added to its top notice."""
    from em_persona.analysis.report import ReportOptions, make_report

    _, paths = make_report(
        exp.log_dir,
        exp.report_dir,
        models_yaml=exp.log_dir / "models.yaml",
        options=ReportOptions(proxy_note=banner),
    )
    return paths["html"]


def run_experiment(
    exp: Experiment, dry_run: bool = False, report_anyway: bool = False, calibrate_plan: bool = False
) -> Path | None:
    """The whole pipeline; returns the report path (None for a dry run).

    `calibrate_plan` (dry runs): estimate the wall time from a short calibration on the served model.
    Raises PreflightFailed before anything runs, and RunIncomplete (exit 130 when interrupted, else
    1) when some task x model run did not finish. What the run measured is appended to
    `<log_dir>/run-stats.json`, also when it is interrupted or fails (marked incomplete).
    """
    started = time.monotonic()
    problems, built = preflight(exp)
    rows = plan(exp, built)
    remaining = remaining_models(exp, rows)
    cost = None
    try:
        cost = plan_cost(exp, rows, remaining)
    except PriceError as exc:
        problems += str(exc).splitlines()
    calibration = calibrate(exp, built) if calibrate_plan and dry_run and not problems else None
    print_plan(exp, rows, plan_estimate(exp, rows, remaining, calibration), cost)
    if problems:
        raise PreflightFailed(problems)
    if dry_run:
        echo("[preflight] ok: models, credentials, adapters and data are ready; nothing was run (--dry-run)")
        return None
    recorder = run_stats.RunRecorder.for_experiment(exp, eval_kwargs(exp).get("max_connections"))
    statuses: list[UnitStatus] = []
    interrupted, phase = False, "fine-tuning"
    try:
        with recorder.stage("base model", exp.base_name):
            base = resolve_base(exp)
        adapters = finetune_adapters(exp, recorder)
        write_models_file(exp)
        phase = "starting the server"
        with ExitStack() as server:
            with recorder.stage("server start"):
                base_url = server.enter_context(serving(exp, base, adapters))
            phase = "evaluating"
            with recorder.stage("evaluation", MAIN):
                statuses = run_independent_tasks(exp, base_url)
            earlier = finished_logs(statuses)
            followups = any(s.depends_on_earlier_logs for s in exp.tasks)
            if (
                followups
                and all(s.done for s in statuses)
                and not any(_waits_for(s, earlier) for s in exp.tasks)
            ):
                with recorder.stage("evaluation", FOLLOWUP):
                    statuses += run_dependent_tasks(exp, base_url, earlier)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException as exc:
        message = (str(exc).strip().splitlines() or [""])[0][:200]
        _save_stats(recorder, exp, statuses, f"error while {phase}: {type(exc).__name__}: {message}")
        raise
    final = expected_statuses(exp, statuses)
    # interrupted: Ctrl-C reached us, or Inspect swallowed it and left this run's logs unfinished
    interrupted = interrupted or any(s.state in ("interrupted", "cancelled") for s in statuses)
    done = not interrupted and all(s.done for s in final)
    _save_stats(
        recorder,
        exp,
        final,
        "done" if done else f"{'interrupted' if interrupted else 'incomplete'} while {phase}",
    )
    if not done:
        report, report_problem = None, ""
        if report_anyway:
            from em_persona.analysis.report import ReportError

            write_models_file(exp)
            try:
                report = write_report(exp, banner=incomplete_banner(final))
            except ReportError as exc:
                report_problem = (
                    f"\n--report-anyway: no report could be written: {' '.join(str(exc).split())}"
                )
        message = incomplete_message(final, exp.source, exp.log_dir, interrupted, report) + report_problem
        if interrupted:
            message = f"interrupted while {phase}\n{message}"
        raise RunIncomplete(message, interrupted)
    report = write_report(exp)
    echo(f"[done] {time.monotonic() - started:.0f} s; report: {report}")
    return report


def _save_stats(
    recorder: run_stats.RunRecorder, exp: Experiment, statuses: list[UnitStatus], outcome: str
) -> None:
    """Append the run's measurements to run-stats.json; a failure to do so is said, never raised
    (it must not hide the run's own result or error)."""
    try:
        if outcome.startswith("error"):
            statuses = expected_statuses(exp, statuses)
        path = recorder.save(statuses, outcome, {spec.label: spec.calls for spec in exp.tasks})
        echo(f"[run-stats] {path}: wall time and tokens per stage ({outcome})")
    except Exception as exc:  # the record is a by-product: report the problem, keep the run's outcome
        click.echo(
            f"[run-stats] could not record this run's measurements: {type(exc).__name__}: {exc}", err=True
        )
