"""The plan printed before a run: generations, judge calls, tokens, the server command, the
estimated wall time (from recorded runs or a calibration) and the cost of API models."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from em_persona.app import run_stats
from em_persona.app.building import build_independent, echo, eval_kwargs
from em_persona.app.estimates import (
    Calibration,
    Estimate,
    duration,
    estimate,
    find_record,
    rates_from_calibration,
    rates_from_record,
    sum_if_known,
)
from em_persona.app.experiment import (
    Experiment,
    ExperimentError,
    TaskRun,
)
from em_persona.app.prices import ModelCost, PriceError, PriceTable, Usage, costs, load_prices, prices_path
from em_persona.contract.run_stats import RunStatsError

DEFAULT_MAX_TOKENS = 256  # the plan's answer length for a task without a max_tokens argument
JUDGE_PROMPT_TOKENS = 300  # the plan's judge rubric length, beside the prompt and answer it quotes
JUDGE_MAX_TOKENS = 64  # the plan's judge answer length (the harm judge's limit; the others ask fewer)
FOIL_PROMPT_TOKENS = 100  # the longest foil wording (72 words) around the prompt it quotes


# --- the plan ---------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    """One task entry's share of the run; tokens are upper bounds (answers at max_tokens)."""

    task: str
    models: int
    samples: int
    epochs: int
    generations: int
    judge_calls: int
    # Upper bound of model calls (generations + judge calls) when every parse retry is used.
    max_calls: int
    label: str = ""
    model_names: tuple[str, ...] = ()
    grader: str | None = None
    gen_input_tokens: int = 0
    gen_output_tokens: int = 0
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    # Of the generations, those of the foil role: its model and tokens (gen_* are the evaluated model's).
    foil: str | None = None
    foil_calls: int = 0
    foil_input_tokens: int = 0
    foil_output_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        """Every token in: the evaluated model's, the foil's and the judge's."""
        return self.gen_input_tokens + self.foil_input_tokens + self.judge_input_tokens

    @property
    def output_tokens(self) -> int:
        """Every token out: the evaluated model's, the foil's and the judge's."""
        return self.gen_output_tokens + self.foil_output_tokens + self.judge_output_tokens

    @property
    def tokens(self) -> int:
        """Every token in and out, generations, foils and judge calls together."""
        return self.input_tokens + self.output_tokens


def _arg(spec: TaskRun, name: str) -> Any:
    """The task's effective argument `name` (the file's value, else the task function's default)."""
    return spec.effective_args.get(name)


def answer_tokens(spec: TaskRun) -> int:
    """The most tokens an answer of the task may have: its max_tokens, else DEFAULT_MAX_TOKENS."""
    return int(_arg(spec, "max_tokens") or DEFAULT_MAX_TOKENS)


def _estimate_tokens(text: str) -> int:
    return max(1, int(len(text.split()) * 1.3))


def plan(exp: Experiment, built: dict[int, Any] | None = None) -> list[PlanRow]:
    """Count generations, judge calls, their upper bound with parse retries, and tokens for every
    task entry on its models, without calling a model."""
    if built is None:
        built, problems = build_independent(exp)
        if problems:
            raise ExperimentError("\n".join(problems))
    earlier: dict[
        tuple[str, str], tuple[int, int]
    ] = {}  # (task, model) -> (samples, epochs) of its first entry
    rows = []
    for spec in exp.tasks:
        n_models = len(spec.models)
        reads = spec.reads
        if reads is not None:
            # one sample per answer of the earlier log (its first epoch unless log_epoch: null)
            per_model = [earlier.get((reads.task, m), (0, 1)) for m in spec.models]
            samples = max(
                (s * (e if _arg(spec, "log_epoch") is None else 1) for s, e in per_model), default=0
            )
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
        max_tokens = answer_tokens(spec)
        gens = n_models * samples * epochs * calls.generations
        judges = n_models * samples * epochs * calls.judge
        foils = n_models * samples * epochs * calls.foil
        foil_max_tokens = calls.foil_max_tokens or max_tokens
        rows.append(
            PlanRow(
                task=spec.task,
                models=n_models,
                samples=samples,
                epochs=epochs,
                generations=gens,
                judge_calls=judges,
                max_calls=n_models * samples * epochs * calls.max_calls,
                label=spec.label,
                model_names=spec.models,
                grader=spec.grader if spec.uses_grader else None,
                gen_input_tokens=(gens - foils) * prompt_tokens,
                gen_output_tokens=(gens - foils) * max_tokens,
                foil=exp.foil_for(spec) if foils else None,
                foil_calls=foils,
                foil_input_tokens=foils * (prompt_tokens + FOIL_PROMPT_TOKENS),
                foil_output_tokens=foils * foil_max_tokens,
                judge_input_tokens=judges * (prompt_tokens + max_tokens + JUDGE_PROMPT_TOKENS),
                judge_output_tokens=judges * JUDGE_MAX_TOKENS,
            )
        )
    return rows


def _models_text(exp: Experiment, models: tuple[str, ...]) -> str:
    if list(models) == exp.model_names:
        return f"all {len(models)}"
    short = [m.split("/", 1)[1] if m in exp.served_models else m for m in models]
    return f"{', '.join(short)} ({len(models)})"


def server_preview(exp: Experiment) -> str:
    """The server command this run will start (no key in it) and the dtype chosen, as one line."""
    from em_persona.serving.errors import ServeError
    from em_persona.serving.launcher import preview_command

    adapters = {
        a.name: (exp.adapters_dir / a.finetune.stages[-1].name, a.finetune.lora.r) for a in exp.adapters
    }
    try:
        preview = preview_command(exp.base_path, adapters, served_name=exp.base_name, **exp.serve)
    except ServeError as exc:
        return f"cannot be planned: {' '.join(str(exc).split())}"
    return f"{shlex.join(preview.command)}\n               {preview.dtype.describe()}"


def print_plan(
    exp: Experiment,
    rows: list[PlanRow],
    estimate: Estimate | None = None,
    cost: PlanCost | None = None,
) -> None:
    """Print models, tasks (who runs each, who judges it), the wall-time estimate and the cost of API
    models before anything runs."""
    times = estimate.rows if estimate is not None else [None] * len(rows)
    echo(f"experiment {exp.name} ({exp.source})")
    if exp.note:
        echo(f"  note: {exp.note}")
    echo(f"  base model : {exp.base_name} <- {exp.base_path}")
    for a in exp.adapters:
        how = " -> ".join(a.stage_keys) if a.stage_keys else a.config.name
        echo(
            f"  adapter    : {a.name} ({a.domain}) <- {a.config.name}"
            + (f" stages {how}" if a.stage_keys else "")
            + (f" {a.overrides}" if a.overrides else "")
        )
    echo(f"  models     : {', '.join(exp.model_names)}")
    echo(f"  grader     : {exp.grader or '(none)'}")
    echo(f"  server     : {server_preview(exp)}")
    echo(
        f"  {'#':>2s} {'task':24s} {'models':>6s} {'samples':>7s} {'epochs':>6s} {'generations':>11s} "
        f"{'judge':>7s} {'max calls':>9s} {'~tokens in':>11s} {'~tokens out':>11s} {'est. time':>10s}"
    )
    for i, (r, t) in enumerate(zip(rows, times, strict=True)):
        echo(
            f"  {i:2d} {r.task:24s} {r.models:6d} {r.samples:7d} {r.epochs:6d} {r.generations:11d} "
            f"{r.judge_calls:7d} {r.max_calls:9d} {r.input_tokens:11d} "
            f"{r.output_tokens:11d} {duration(t):>10s}"
        )
    echo(
        f"  {'':2s} {'total':24s} {'':6s} {'':7s} {'':6s} {sum(r.generations for r in rows):11d} "
        f"{sum(r.judge_calls for r in rows):7d} {sum(r.max_calls for r in rows):9d} "
        f"{sum(r.input_tokens for r in rows):11d} "
        f"{sum(r.output_tokens for r in rows):11d} "
        f"{duration(sum_if_known(times)):>10s}"
    )
    echo(
        "  (max calls: generations + judge calls if every unreadable answer is retried up to max_retries / "
        "judge_max_retries; ~tokens: upper bounds, answers at max_tokens, judge answers at "
        f"{JUDGE_MAX_TOKENS}; est. time: evaluation only, 0 s for runs whose logs are finished)"
    )
    echo("  who runs what:")
    for i, r in enumerate(rows):
        echo(f"  {i:2d} {r.label}")
        foil = f"; foil: {r.foil} ({r.foil_calls} of the generations)" if r.foil else ""
        echo(f"     models: {_models_text(exp, r.model_names)}; grader: {r.grader or '-'}{foil}")
    if estimate is not None:
        print_estimate(estimate)
    if cost is not None:
        print_cost(cost)
    echo(f"  logs -> {exp.log_dir}   report -> {exp.report_dir}")


def print_estimate(est: Estimate) -> None:
    """The wall-time estimate: where it comes from, each part, the total (or why there is none)."""
    if est.source is None:
        for note in est.notes:
            echo(f"  time       : {note}")
        return
    echo(f"  time       : estimated from the {est.source}")
    for name, seconds, note in est.finetune:
        echo(f"    fine-tuning {name}: {duration(seconds)} ({note})")
    echo(f"    server start: {duration(est.server_s)}")
    echo(f"    evaluation: {duration(est.evaluation_s)}")
    total = est.total_s
    if total is None:
        echo("    total: no estimate (a part above is '?': nothing measured for it)")
    else:
        echo(f"    total: ~{duration(total)}")
    for i, note in enumerate(est.row_notes):
        if note and note != "finished":
            echo(f"    row {i}: {note}")
    for note in est.notes:
        echo(f"    note: {note}")


def print_cost(cost: PlanCost) -> None:
    """What the API models of the plan cost at the prices of the price file."""
    if not cost.models:
        echo("  cost       : no API model has calls to make in this plan (served models cost nothing here)")
        return
    echo(f"  cost       : API models, prices from {cost.table.path} (prices change: check each source)")
    total = 0.0
    for c in cost.models:
        roles = ", ".join(c.roles)
        if c.price is None:
            echo(f"    price unknown for {c.model} ({roles}): add it to {cost.table.path}")
            continue
        usd = c.usd or 0.0
        total += usd
        echo(
            f"    {c.model} ({roles}): {c.input_tokens:,} tokens in x ${c.price.input_usd_per_mtok:.2f}/M + "
            f"{c.output_tokens:,} out x ${c.price.output_usd_per_mtok:.2f}/M = ${usd:.2f} "
            f"(as of {c.price.as_of}, {c.price.source})"
        )
    unknown = [c.model for c in cost.models if c.price is None]
    if unknown:
        echo(f"    total: at least ${total:.2f}, upper bound (no price for {', '.join(unknown)})")
    else:
        echo(f"    total: ${total:.2f}, upper bound (answers at max_tokens)")


# --- time and cost of a plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanCost:
    """The API models of a plan with their tokens and prices, and the price table used."""

    table: PriceTable
    models: list[ModelCost]


def plan_cost(exp: Experiment, rows: list[PlanRow], remaining: list[tuple[str, ...]]) -> PlanCost:
    """Tokens each API model gets in the runs still to do, priced from the price file.

    Raises PriceError (file:line) for a malformed price file; a missing one named by the experiment
    file is reported at the experiment's `prices:` line.
    """
    key = exp.prices
    path = prices_path(key)
    if key and not path.is_file():
        raise PriceError(f"{exp.where('prices')}: prices: no such price file {path}")
    usages = []
    for row, models in zip(rows, remaining, strict=True):
        n = max(row.models, 1)
        for m in models:
            usages.append(Usage(m, "evaluated", row.gen_input_tokens // n, row.gen_output_tokens // n))
            if row.grader is not None:
                usages.append(
                    Usage(row.grader, "grader", row.judge_input_tokens // n, row.judge_output_tokens // n)
                )
            if row.foil is not None:
                usages.append(
                    Usage(row.foil, "foil", row.foil_input_tokens // n, row.foil_output_tokens // n)
                )
    table = load_prices(path)
    return PlanCost(table, costs(usages, table))


def plan_estimate(
    exp: Experiment,
    rows: list[PlanRow],
    remaining: list[tuple[str, ...]],
    calibration: Calibration | None = None,
) -> Estimate:
    """The plan's wall time: from the calibration when given, else from the newest recorded run of
    this base model on this platform, else none (and the plan says how to get one)."""
    platform = run_stats.current_platform()
    max_connections = eval_kwargs(exp).get("max_connections")
    notes: list[str] = []
    rates = None
    if calibration is not None:
        rates = rates_from_calibration(calibration, exp, "cuda" if platform["kind"] == "gpu" else "cpu")
    else:
        record, path, notes = find_record(exp.log_dir, exp.base_path, platform["name"])
        if record is not None and path is not None:
            try:
                rates = rates_from_record(record, path, exp, max_connections)
            except RunStatsError as exc:
                notes.append(f"skipped {exc}")
    est = estimate(exp, rows, remaining, rates)
    est.notes.extend(notes)
    return est
