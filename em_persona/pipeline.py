"""`em-persona run EXPERIMENT.yaml`: data -> adapters -> one vLLM server -> Inspect eval sets -> report.

Every step is resumable: finished adapters are skipped by the fine-tuner, Inspect's
`eval_set` reuses finished logs and retries failed ones, and the report is rebuilt
from whatever logs exist. A crash at any point loses no finished work.
"""

from __future__ import annotations

import importlib
import inspect
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from em_persona.experiment import (
    NEEDS_ALL_HARM_LOGS,
    Experiment,
    ExperimentError,
    TaskSpec,
    load_experiment,
    needs_own_harm_log,
)

# Model calls per sample, beyond the evaluated model's one answer: (extra generations, judge calls).
# Taken from each task's design (see tasks/<task>.md).
CALLS_PER_SAMPLE: dict[str, tuple[int, int]] = {
    "harmfulness": (0, 1),
    "em_questions": (0, 2),
    "self_assessment": (0, 0),
    "two_ai_identification": (0, 0),
    "output_recognition": (1, 1),  # foil response + its judge score
    "score_prediction": (1, 1),  # blind condition; the shown condition is (0, 0)
    "cross_model_rating": (0, 0),
    "moral_foundations": (0, 0),
}

# Generations per sample that a task asks again (up to its `max_retries` argument more times)
# while the answer holds no readable rating; see solvers/retry_parse.py and solvers/identity.py.
RETRIED_GENERATIONS: dict[str, int] = {
    "moral_foundations": 1,  # each MFQ rating
    "score_prediction": 1,  # blind: the prediction (the answer after it is asked once); shown: the rating
    "cross_model_rating": 1,  # the rating
}
# Every judge call of a task with a `judge_max_retries` argument is asked up to that many more
# times after an unreadable answer (scorers/judge_parsing.py: ask_judge).


def _echo(msg: str = "") -> None:
    click.echo(msg, err=False)


def load_task_function(name: str) -> Any:
    """The @task function `name` from tasks/<name>.py."""
    module = importlib.import_module(f"tasks.{name}")
    return getattr(module, name)


SUBSET_SEED = 0


def build_task(spec: TaskSpec, **extra: Any) -> Any:
    """The Inspect Task of `spec` (with `extra` arguments), cut to a seeded subset when it has a limit."""
    from inspect_ai import task_with
    from inspect_ai.dataset import MemoryDataset

    task = load_task_function(spec.task)(**spec.args, **extra)
    if spec.limit is None or spec.limit >= len(task.dataset):
        return task
    keep = sorted(random.Random(SUBSET_SEED).sample(range(len(task.dataset)), spec.limit))
    samples = [task.dataset[i] for i in keep]
    return task_with(task, dataset=MemoryDataset(samples, name=task.dataset.name, location=task.dataset.location))


@dataclass(frozen=True)
class PlanRow:
    """One task's share of the run."""

    task: str
    models: int
    samples: int
    epochs: int
    generations: int
    judge_calls: int
    tokens: int
    # Upper bound of model calls (generations + judge calls) when every parse retry is used.
    max_calls: int


def _task_arg(spec: TaskSpec, name: str) -> Any:
    """`spec.args[name]`, else the task function's default; None when the task has no such argument."""
    if name in spec.args:
        return spec.args[name]
    param = inspect.signature(load_task_function(spec.task)).parameters.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def _max_calls_per_sample(spec: TaskSpec, extra: int, judge: int) -> int:
    """Most model calls one sample x epoch can make: every retried generation and judge call at its limit."""
    retried = RETRIED_GENERATIONS.get(spec.task, 0)
    retries = max(0, int(_task_arg(spec, "max_retries") or 0)) if retried else 0
    judge_retries = max(0, int(_task_arg(spec, "judge_max_retries") or 0)) if judge else 0
    optional = 0
    if spec.task == "self_assessment" and (_task_arg(spec, "decision_judge") or _task_arg(spec, "language_judge")):
        optional = 1  # one grader call for an off-format decision answer or a language answer
    return (1 + extra) + retried * retries + judge * (1 + judge_retries) + optional


def _estimate_tokens(text: str) -> int:
    return max(1, int(len(text.split()) * 1.3))


def plan(exp: Experiment, harm_samples: int | None = None) -> list[PlanRow]:
    """Count generations, judge calls, their upper bound with parse retries, and tokens for every
    task x model, without calling a model."""
    rows = []
    n_models = len(exp.model_names)
    for spec in exp.tasks:
        if spec.depends_on_harm_logs:
            # These tasks take one sample per scored harmfulness sample of the model(s).
            samples = min(harm_samples or 0, spec.limit or harm_samples or 0)
            epochs = int(spec.args.get("epochs", 1))
            prompt_tokens = 300
            if spec.task in NEEDS_ALL_HARM_LOGS:
                samples *= n_models
        else:
            task = build_task(spec)
            samples = len(task.dataset)
            epochs = task.epochs or 1
            prompt_tokens = sum(_estimate_tokens(str(s.input)) for s in task.dataset) // max(samples, 1)
            if spec.task == "harmfulness":
                harm_samples = samples
        extra, judge = CALLS_PER_SAMPLE[spec.task]
        if spec.task == "score_prediction":  # blind: predict, then answer, then the judge; shown: rate only
            extra, judge = (0, 0) if needs_own_harm_log(spec) else (1, 1)
        max_tokens = int(spec.args.get("max_tokens", exp.eval.get("max_tokens", 256)))
        gens = n_models * samples * epochs * (1 + extra)
        judges = n_models * samples * epochs * judge
        tokens = gens * (prompt_tokens + max_tokens) + judges * (prompt_tokens + max_tokens + 300)
        max_calls = n_models * samples * epochs * _max_calls_per_sample(spec, extra, judge)
        rows.append(PlanRow(spec.task, n_models, samples, epochs, gens, judges, tokens, max_calls))
    return rows


def print_plan(exp: Experiment, rows: list[PlanRow]) -> None:
    """Print models, tasks and the cost estimate before anything runs."""
    _echo(f"experiment {exp.name} ({exp.source})")
    if exp.note:
        _echo(f"  note: {exp.note}")
    _echo(f"  base model : {exp.base_name} <- {exp.base_path}")
    for a in exp.adapters:
        _echo(f"  adapter    : {a.name} ({a.domain}) <- {a.config.name} {a.overrides or ''}")
    _echo(f"  models     : {', '.join(exp.model_names)}")
    _echo(f"  grader     : {exp.grader}")
    _echo(f"  {'task':24s} {'models':>6s} {'samples':>7s} {'epochs':>6s} {'generations':>11s} {'judge':>7s} "
          f"{'max calls':>9s} {'~tokens':>9s}")
    for r in rows:
        _echo(f"  {r.task:24s} {r.models:6d} {r.samples:7d} {r.epochs:6d} {r.generations:11d} {r.judge_calls:7d} "
              f"{r.max_calls:9d} {r.tokens:9d}")
    _echo(f"  {'total':24s} {'':6s} {'':7s} {'':6s} {sum(r.generations for r in rows):11d} "
          f"{sum(r.judge_calls for r in rows):7d} {sum(r.max_calls for r in rows):9d} {sum(r.tokens for r in rows):9d}")
    _echo("  (max calls: generations + judge calls if every unreadable answer is retried up to max_retries / "
          "judge_max_retries)")
    _echo(f"  logs -> {exp.log_dir}   report -> {exp.report_dir}")


# --- steps ------------------------------------------------------------------


def fetch_data(exp: Experiment) -> None:
    """Fetch (and verify) every registry source the experiment names."""
    from em_persona.registry import load_source

    for name in exp.data:
        path = load_source(name)
        _echo(f"[data] {name}: {path}")


def resolve_base(exp: Experiment) -> Path:
    """The base model folder: `proxy:NAME` builds a proxy; anything else is a local folder or hub id."""
    if exp.base_path.startswith("proxy:"):
        from finetune.proxy import build_proxy

        return build_proxy(exp.base_path.split(":", 1)[1])
    return Path(exp.base_path)


def finetune_adapters(exp: Experiment) -> dict[str, Path]:
    """Train every configured adapter (the fine-tuner skips finished ones); served name -> adapter folder.

    The experiment's base model replaces the config's, so every adapter fits the served base.
    """
    from finetune.config import load_config
    from finetune.train import finetune

    out: dict[str, Path] = {}
    for a in exp.adapters:
        overrides = [f"base_model={exp.base_path}"]
        overrides += [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                      for k, v in a.overrides.items()]
        results = finetune(load_config(a.config, overrides), out_dir=exp.adapters_dir)
        out[a.name] = Path(results[-1].path)
        _echo(f"[finetune] {a.name}: {out[a.name]}")
    return out


@contextmanager
def serving(exp: Experiment, base: Path, adapters: dict[str, Path]) -> Iterator[str]:
    """One vLLM server for the base and every adapter; Inspect reaches it through VLLM_BASE_URL."""
    from finetune.serve import start_server

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
    # beside the new ones; the report takes the newest log of each task x model (analysis/load.py).
    kwargs = {"retry_attempts": 3, "max_connections": 32, "fail_on_error": 0.2, "log_level": "warning",
              "log_dir_allow_dirty": True}
    kwargs.update({k: v for k, v in exp.eval.items() if k != "max_tokens"})
    return kwargs


def _model(exp: Experiment, name: str, base_url: str) -> Any:
    """A served model bound to this run's server; other names (e.g. an API judge) pass through.

    Binding the base URL matters: Inspect memoizes models by name and URL, so a bare
    `vllm/<name>` could resolve to a model made for an earlier server in the same process.
    (Inspect's vllm provider also remembers one server per served name per process, so
    use distinct served names when several servers run in one process, as tests do.)
    """
    from inspect_ai.model import get_model

    served = [f"vllm/{exp.base_name}"] + [f"vllm/{a.name}" for a in exp.adapters]
    return get_model(name, base_url=base_url) if name in served else name


def _roles(exp: Experiment, base_url: str) -> dict[str, Any]:
    roles = {"grader": exp.grader, "foil": exp.eval.get("foil", exp.grader)}
    return {role: _model(exp, name, base_url) for role, name in roles.items()}


def run_independent_tasks(exp: Experiment, base_url: str) -> bool:
    """Stage 1: every task that needs no earlier log, for every model, as one eval set."""
    from inspect_ai import eval_set

    tasks = [build_task(s) for s in exp.tasks if not s.depends_on_harm_logs]
    if not tasks:
        return True
    success, _ = eval_set(
        tasks, model=[_model(exp, m, base_url) for m in exp.model_names], model_roles=_roles(exp, base_url),
        log_dir=str(exp.log_dir / "main"), **_eval_kwargs(exp),
    )
    return bool(success)


def harm_logs_by_model(log_dir: Path) -> dict[str, Path]:
    """The newest successful harmfulness log of each model under log_dir."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    found: dict[str, tuple[float, Path]] = {}
    for info in list_eval_logs(str(log_dir)):
        log = read_eval_log(info, header_only=True)
        if log.eval.task.split("/")[-1] != "harmfulness" or log.status != "success":
            continue
        path = Path(info.name.removeprefix("file://"))
        mtime = info.mtime or 0.0
        if log.eval.model not in found or found[log.eval.model][0] < mtime:
            found[log.eval.model] = (mtime, path)
    return {m: p for m, (_, p) in found.items()}


def run_dependent_tasks(exp: Experiment, base_url: str) -> bool:
    """Stage 2: recognition, prediction and cross-rating, fed with each model's harmfulness log."""
    from inspect_ai import eval_set, task_with

    specs = [s for s in exp.tasks if s.depends_on_harm_logs]
    if not specs:
        return True
    harm = harm_logs_by_model(exp.log_dir / "main")
    missing = [m for m in exp.model_names if m not in harm]
    if missing:
        raise ExperimentError(f"no successful harmfulness log for {missing} under {exp.log_dir / 'main'}")
    tasks = []
    for spec in specs:
        for model in exp.model_names:
            if needs_own_harm_log(spec):
                task = build_task(spec, harm_log=str(harm[model]))
            else:
                task = build_task(spec, harm_logs=[str(p) for _, p in sorted(harm.items())])
            tasks.append(task_with(task, model=_model(exp, model, base_url), model_roles=_roles(exp, base_url)))
    success, _ = eval_set(tasks, log_dir=str(exp.log_dir / "followup"), **_eval_kwargs(exp))
    return bool(success)


def write_models_file(exp: Experiment) -> Path:
    """`<log_dir>/models.yaml`: what the report needs to know about each model."""
    exp.log_dir.mkdir(parents=True, exist_ok=True)
    path = exp.log_dir / "models.yaml"
    doc = {"experiment": exp.name, "note": exp.note, "proxy": exp.proxy, "models": exp.models_table()}
    tmp = path.with_suffix(".yaml.part")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)
    return path


def write_report(exp: Experiment) -> Path:
    """Build the report from every log of the experiment."""
    from analysis.report import make_report

    _, paths = make_report(exp.log_dir, exp.report_dir, models_yaml=exp.log_dir / "models.yaml")
    return paths["html"]


def run_experiment(exp: Experiment, dry_run: bool = False) -> Path | None:
    """The whole pipeline; returns the report path (None for a dry run)."""
    started = time.monotonic()
    fetch_data(exp)
    print_plan(exp, plan(exp))
    if dry_run:
        return None
    base = resolve_base(exp)
    adapters = finetune_adapters(exp)
    write_models_file(exp)
    with serving(exp, base, adapters) as base_url:
        ok = run_independent_tasks(exp, base_url)
        if not ok:
            raise click.ClickException(
                f"some tasks did not finish; rerun `em-persona run {exp.source}` to retry them "
                f"(finished logs in {exp.log_dir} are kept)")
        if not run_dependent_tasks(exp, base_url):
            raise click.ClickException(f"follow-up tasks did not finish; rerun `em-persona run {exp.source}`")
    report = write_report(exp)
    _echo(f"[done] {time.monotonic() - started:.0f} s; report: {report}")
    return report


@click.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Fetch data and print the plan; train and evaluate nothing.")
def run(experiment: Path, dry_run: bool) -> None:
    """Run EXPERIMENT (a YAML in experiments/) end to end: data, fine-tunes, serving, tasks, report."""
    try:
        exp = load_experiment(experiment)
    except ExperimentError as exc:
        raise click.ClickException(str(exc)) from exc
    # The project's own errors carry a message meant for the user; show it as one line, not a traceback.
    # Imported here, not at the top, so `em-persona --help` stays light.
    from em_persona.registry import SourceError
    from finetune.config import ConfigError
    from finetune.data import DataError
    from finetune.proxy import ProxyError
    from finetune.serve import ServeError
    from finetune.train import TrainError

    known = (SourceError, ConfigError, DataError, ProxyError, ServeError, TrainError, ExperimentError)
    try:
        report = run_experiment(exp, dry_run=dry_run)
    except known as exc:
        raise click.ClickException(str(exc)) from exc
    if report is not None:
        click.echo(f"Report: {report}")
    sys.stdout.flush()
