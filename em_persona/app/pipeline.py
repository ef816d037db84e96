"""`em-persona run EXPERIMENT.yaml`: preflight -> adapters -> one vLLM server -> Inspect eval sets -> report.

Nothing is trained or served until the preflight passes (em_persona/preflight.py). Every step is
resumable: finished adapters are skipped by the fine-tuner, Inspect's `eval_set` reuses finished
logs, and the report is rebuilt from the logs. A run is done only when every task x model run has
a finished log (em_persona/run_status.py); an interrupted or failed run says what did not finish,
exits non-zero, and writes no report unless asked (`--report-anyway`, marked incomplete).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from em_persona.app.experiment import (
    Experiment,
    ExperimentError,
    TaskRun,
)
from em_persona.app.run_status import (
    RunIncomplete,
    Unit,
    UnitStatus,
    incomplete_banner,
    incomplete_message,
    unit_statuses,
)
from em_persona.app.task_args import task_function
SUBSET_SEED = 0
DEFAULT_MAX_TOKENS = 256  # the plan's answer length for a task without a max_tokens argument
PLAN_ROLE_MODEL = "mockllm/model"
MAIN, FOLLOWUP = "main", "followup"  # log sub-folders: independent tasks, tasks built on earlier logs


def _echo(msg: str = "") -> None:
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
    return task_with(task, dataset=MemoryDataset(samples, name=task.dataset.name, location=task.dataset.location))


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


# --- the plan ---------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    """One task entry's share of the run."""

    task: str
    models: int
    samples: int
    epochs: int
    generations: int
    judge_calls: int
    tokens: int
    # Upper bound of model calls (generations + judge calls) when every parse retry is used.
    max_calls: int
    label: str = ""
    model_names: tuple[str, ...] = ()
    grader: str | None = None


def _arg(spec: TaskRun, name: str) -> Any:
    """The task's effective argument `name` (the file's value, else the task function's default)."""
    return spec.effective_args.get(name)


def _estimate_tokens(text: str) -> int:
    return max(1, int(len(text.split()) * 1.3))


def plan(exp: Experiment, built: dict[int, Any] | None = None) -> list[PlanRow]:
    """Count generations, judge calls, their upper bound with parse retries, and tokens for every
    task entry on its models, without calling a model."""
    if built is None:
        built, problems = build_independent(exp)
        if problems:
            raise ExperimentError("\n".join(problems))
    earlier: dict[tuple[str, str], tuple[int, int]] = {}  # (task, model) -> (samples, epochs) of its first entry
    rows = []
    for spec in exp.tasks:
        n_models = len(spec.models)
        reads = spec.reads
        if reads is not None:
            # one sample per answer of the earlier log (its first epoch unless log_epoch: null)
            per_model = [earlier.get((reads.task, m), (0, 1)) for m in spec.models]
            samples = max((s * (e if _arg(spec, "log_epoch") is None else 1) for s, e in per_model), default=0)
            if spec.limit:
                samples = min(samples, spec.limit)
            if reads.scope == "models":
                samples *= n_models  # every model of the task works on the answers of every other one
            epochs = int(_arg(spec, "epochs") or 1)
            prompt_tokens = 300
        elif spec.index not in built:  # it could not be built: the preflight says why
            samples, epochs, prompt_tokens = 0, 1, 0
        else:
            task = built[spec.index]
            samples = len(task.dataset)
            epochs = task.epochs or 1
            prompt_tokens = sum(_estimate_tokens(str(s.input)) for s in task.dataset) // max(samples, 1)
            for m in spec.models:
                earlier.setdefault((spec.task, m), (samples, epochs))
        calls = spec.calls
        max_tokens = int(_arg(spec, "max_tokens") or DEFAULT_MAX_TOKENS)
        gens = n_models * samples * epochs * calls.generations
        judges = n_models * samples * epochs * calls.judge
        tokens = gens * (prompt_tokens + max_tokens) + judges * (prompt_tokens + max_tokens + 300)
        max_calls = n_models * samples * epochs * calls.max_calls
        rows.append(PlanRow(spec.task, n_models, samples, epochs, gens, judges, tokens, max_calls, spec.label,
                            spec.models, spec.grader if spec.uses_grader else None))
    return rows


def _models_text(exp: Experiment, models: tuple[str, ...]) -> str:
    if list(models) == exp.model_names:
        return f"all {len(models)}"
    short = [m.split("/", 1)[1] if m in exp.served_models else m for m in models]
    return f"{', '.join(short)} ({len(models)})"


def print_plan(exp: Experiment, rows: list[PlanRow]) -> None:
    """Print models, tasks (who runs each, who judges it) and the cost estimate before anything runs."""
    _echo(f"experiment {exp.name} ({exp.source})")
    if exp.note:
        _echo(f"  note: {exp.note}")
    _echo(f"  base model : {exp.base_name} <- {exp.base_path}")
    for a in exp.adapters:
        how = " -> ".join(a.stage_keys) if a.stage_keys else a.config.name
        _echo(f"  adapter    : {a.name} ({a.domain}) <- {a.config.name}"
              + (f" stages {how}" if a.stage_keys else "") + (f" {a.overrides}" if a.overrides else ""))
    _echo(f"  models     : {', '.join(exp.model_names)}")
    _echo(f"  grader     : {exp.grader or '(none)'}")
    _echo(f"  {'#':>2s} {'task':24s} {'models':>6s} {'samples':>7s} {'epochs':>6s} {'generations':>11s} "
          f"{'judge':>7s} {'max calls':>9s} {'~tokens':>9s}")
    for i, r in enumerate(rows):
        _echo(f"  {i:2d} {r.task:24s} {r.models:6d} {r.samples:7d} {r.epochs:6d} {r.generations:11d} "
              f"{r.judge_calls:7d} {r.max_calls:9d} {r.tokens:9d}")
    _echo(f"  {'':2s} {'total':24s} {'':6s} {'':7s} {'':6s} {sum(r.generations for r in rows):11d} "
          f"{sum(r.judge_calls for r in rows):7d} {sum(r.max_calls for r in rows):9d} {sum(r.tokens for r in rows):9d}")
    _echo("  (max calls: generations + judge calls if every unreadable answer is retried up to max_retries / "
          "judge_max_retries)")
    _echo("  who runs what:")
    for i, r in enumerate(rows):
        _echo(f"  {i:2d} {r.label}")
        _echo(f"     models: {_models_text(exp, r.model_names)}; grader: {r.grader or '-'}")
    _echo(f"  logs -> {exp.log_dir}   report -> {exp.report_dir}")


# --- preflight ----------------------------------------------------------------


class PreflightFailed(click.ClickException):
    """The preflight found problems; nothing was trained or served."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"preflight found {len(problems)} problem(s); nothing was fine-tuned, served or "
                         f"evaluated:\n" + "\n".join(problems))


def preflight(exp: Experiment) -> tuple[list[str], dict[int, Any]]:
    """Every problem the run would meet before it trains or serves anything, and the built tasks."""
    from em_persona.app.preflight import adapter_problems, data_problems, model_problems
    from em_persona.core.registry import load_source

    def fetch(name: str) -> Path:
        path = load_source(name)
        _echo(f"[data] {name}: {path}")
        return path

    problems = model_problems(exp) + adapter_problems(exp) + data_problems(exp, fetch)
    built, task_problems = build_independent(exp)
    return problems + task_problems, built


# --- steps ------------------------------------------------------------------


def resolve_base(exp: Experiment) -> Path:
    """The base model: a proxy (`proxy:NAME`, built on first use), a local folder, or a hub id."""
    from em_persona.finetune.proxy import resolve_proxy

    return resolve_proxy(exp.base_path, build=True) or Path(exp.base_path)


def finetune_adapters(exp: Experiment) -> dict[str, Path]:
    """Train every adapter (the fine-tuner skips finished stages); served name -> adapter folder.

    Each config was validated at load time on the experiment's base model, so every adapter fits
    the served base.
    """
    from em_persona.finetune.train import finetune

    out: dict[str, Path] = {}
    for a in exp.adapters:
        results = finetune(a.finetune, out_dir=exp.adapters_dir)
        out[a.name] = Path(results[-1].path)
        _echo(f"[finetune] {a.name}: {out[a.name]}")
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


def _eval_kwargs(exp: Experiment) -> dict[str, Any]:
    # log_dir_allow_dirty: after an edit of the experiment file, logs of the old task settings stay
    # beside the new ones; the report takes the newest log of each task x model (analysis/logs.py).
    kwargs = {"retry_attempts": 3, "max_connections": 32, "fail_on_error": 0.2, "log_level": "warning",
              "log_dir_allow_dirty": True}
    kwargs.update({k: v for k, v in exp.eval.items() if k != "foil"})
    return kwargs


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
    if spec.grader is None:
        return {"foil": _model(exp, exp.foil, base_url)} if exp.foil else {}
    roles = {"grader": spec.grader, "foil": exp.foil or spec.grader}
    return {role: _model(exp, name, base_url) for role, name in roles.items()}


def _unit(exp: Experiment, spec: TaskRun, model: str, task: Any | None, extra: dict[str, Any] | None,
          folder: str) -> Unit:
    args = None if extra is None else {**spec.args, **extra}
    return Unit(spec.label, spec.task, model, exp.log_dir / folder, args,
                len(task.dataset) if task is not None else None, spec.grader)


def _run_eval_set(exp: Experiment, pairs: list[tuple[Unit, Any]], folder: str) -> list[UnitStatus]:
    """One eval_set over the tasks of `pairs`; the state of each unit from the logs, not eval_set's verdict."""
    from inspect_ai import eval_set

    if not pairs:
        return []
    _, logs = eval_set([t for _, t in pairs], log_dir=str(exp.log_dir / folder), **_eval_kwargs(exp))
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


def _run_stage(exp: Experiment, specs: list[TaskRun], base_url: str, earlier: Earlier,
               folder: str) -> list[UnitStatus]:
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
                failed.append(UnitStatus(_unit(exp, spec, model, None, extra, folder), "error",
                                         detail=f"task could not be built: {message}"))
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
    to it, else from the logs on disk; a follow-up whose harmfulness logs are not all done is "not started"."""
    by_key = {(s.unit.label, s.unit.model, s.unit.log_dir): s for s in known}
    earlier = finished_logs(known)
    out, scan = [], []
    for spec in exp.tasks:
        for model in spec.models:
            folder = FOLLOWUP if spec.depends_on_earlier_logs else MAIN
            key = (spec.label, model, exp.log_dir / folder)
            if key in by_key:
                out.append(by_key[key])
            elif (waiting := _waits_for(spec, earlier)) is not None:
                out.append(UnitStatus(_unit(exp, spec, model, None, None, folder), "not started", detail=waiting))
            else:
                extra = _earlier_args(spec, model, earlier)
                scan.append(len(out))
                out.append(UnitStatus(_unit(exp, spec, model, None, extra, folder), "not started"))
    for i, status in zip(scan, unit_statuses([out[i].unit for i in scan])):
        out[i] = status
    return out


def write_models_file(exp: Experiment) -> Path:
    """`<log_dir>/models.yaml`: what the report needs to know about each model."""
    exp.log_dir.mkdir(parents=True, exist_ok=True)
    path = exp.log_dir / "models.yaml"
    doc = {"experiment": exp.name, "note": exp.note, "proxy": exp.proxy, "models": exp.models_table()}
    tmp = path.with_suffix(".yaml.part")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
    return path


def write_report(exp: Experiment, banner: str | None = None) -> Path:
    """Build the report from every log of the experiment; `banner` is added to its top notice."""
    from em_persona.analysis.report import ReportOptions, make_report

    _, paths = make_report(exp.log_dir, exp.report_dir, models_yaml=exp.log_dir / "models.yaml",
                           options=ReportOptions(proxy_note=banner))
    return paths["html"]


def run_experiment(exp: Experiment, dry_run: bool = False, report_anyway: bool = False) -> Path | None:
    """The whole pipeline; returns the report path (None for a dry run).

    Raises PreflightFailed before anything runs, and RunIncomplete (exit 130 when interrupted, else
    1) when some task x model run did not finish.
    """
    started = time.monotonic()
    problems, built = preflight(exp)
    print_plan(exp, plan(exp, built))
    if problems:
        raise PreflightFailed(problems)
    if dry_run:
        _echo("[preflight] ok: models, credentials, adapters and data are ready; nothing was run (--dry-run)")
        return None
    statuses: list[UnitStatus] = []
    interrupted, phase = False, "fine-tuning"
    try:
        base = resolve_base(exp)
        adapters = finetune_adapters(exp)
        write_models_file(exp)
        phase = "starting the server"
        with serving(exp, base, adapters) as base_url:
            phase = "evaluating"
            statuses = run_independent_tasks(exp, base_url)
            earlier = finished_logs(statuses)
            if all(s.done for s in statuses) and not any(_waits_for(s, earlier) for s in exp.tasks):
                statuses += run_dependent_tasks(exp, base_url, earlier)
    except KeyboardInterrupt:
        interrupted = True
    final = expected_statuses(exp, statuses)
    # interrupted: Ctrl-C reached us, or Inspect swallowed it and left this run's logs unfinished
    interrupted = interrupted or any(s.state in ("interrupted", "cancelled") for s in statuses)
    if interrupted or not all(s.done for s in final):
        report, report_problem = None, ""
        if report_anyway:
            from em_persona.analysis.report import ReportError

            write_models_file(exp)
            try:
                report = write_report(exp, banner=incomplete_banner(final))
            except ReportError as exc:
                report_problem = f"\n--report-anyway: no report could be written: {' '.join(str(exc).split())}"
        message = incomplete_message(final, exp.source, exp.log_dir, interrupted, report) + report_problem
        if interrupted:
            message = f"interrupted while {phase}\n{message}"
        raise RunIncomplete(message, interrupted)
    report = write_report(exp)
    _echo(f"[done] {time.monotonic() - started:.0f} s; report: {report}")
    return report
