"""Inspect logs -> report.html, report.md, figures (PNG + SVG) and a CSV of every table.

Deterministic: the same logs and options give byte-identical files (seeded bootstraps,
sorted rows, no wall-clock time, fixed figure metadata).

When activation-probe results exist (`ReportOptions.probes_dir`, else `<logdir>/probes/probes.json`,
written by `em-persona probes fit`), the report adds a probes section: the CV AUROC table, the
harm vs self-assessment cosines, the transfer matrix and the probe figures (redrawn by
analysis.probe_figures from probes.json, with a fixed SVG date and ids).

Data that could not be used is never silent: unusable logs (unreadable or truncated files, runs
that did not finish, logs that fail validation) are listed at the top of the report with the
experiments and models that lost data, and `make_report` refuses to write a report when no log
is usable (or, with `strict`, when any is unusable). Metrics computed from logs with prompts that
are not the paper's, or judged by the evaluated model itself, carry marks
(analysis.provenance_marks). HTML is autoescaped: model text is shown as text, never run.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import cast

import jinja2
import markupsafe
import pandas as pd

from em_persona.analysis import figures as figs
from em_persona.analysis import logs as log_reader
from em_persona.analysis import provenance_marks, statistics, taxonomy
from em_persona.analysis.models_info import models_info
from em_persona.analysis.tables import (
    SampleTables,
    Tables,
    column_docs,
    headline_metrics,
    is_missing,
    per_model_table,
)
from em_persona.contract import run_stats as run_stats_file
from em_persona.contract.declarations import AggregateOptions
from em_persona.core.errors import EmPersonaError
from em_persona.tasks import harm_results
from em_persona.tasks.registry import specs

TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class ReportOptions:
    thresholds: taxonomy.Thresholds = field(default_factory=taxonomy.Thresholds)
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(taxonomy.DEFAULT_GRID))
    aggregate: AggregateOptions = field(default_factory=AggregateOptions)
    proxy_note: str | None = None
    """Extra banner text (the `--proxy-note` option); adds to models.yaml's `note`."""
    embed_figures: bool = True
    """Embed the PNGs as data URIs in report.html (else link figures/<name>.png)."""
    probes_dir: Path | None = None
    """Folder of `em-persona probes fit` results (probes.json); default `<logdir>/probes` when present."""
    self_assessment_set: str = "project"
    """Self-assessment set the taxonomy uses: "project" (6 dimensions x 4 formats) or "paper" (decision prompts)."""
    strict: bool = False
    """Refuse to write a report when any log is unusable (by default only when none is usable)."""
    reference_mfq: Path | None = None
    """Folder of the MFQ authors' released raw runs (`<condition>/<model>_temp01.csv`), shown beside this run."""


class ReportError(EmPersonaError, ValueError):
    """The logs cannot give a trustworthy report (none usable, or some unusable under `strict`)."""


@dataclass
class Report:
    """Every table of the report, plus where it was written."""

    per_model: pd.DataFrame
    taxonomy: pd.DataFrame
    sensitivity: pd.DataFrame
    sensitivity_grid: pd.DataFrame
    correlations: pd.DataFrame
    association_table: pd.DataFrame
    association: dict[str, object]
    judge_agreement: pd.DataFrame
    headline: pd.DataFrame
    coverage: pd.DataFrame
    tables: Tables
    logs: pd.DataFrame
    banner: str | None
    run_stats: RunStatsTables
    marks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=provenance_marks.MARK_COLUMNS))
    examples: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXAMPLE_COLUMNS))
    mfq: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MFQ_COLUMNS))
    self_assessment_set: str = "project"
    probes: ProbeTables | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    missing_figures: dict[str, str] = field(default_factory=dict)
    probe_figures: dict[str, Path] = field(default_factory=dict)


@dataclass
class RunStatsTables:
    """The newest record of `<logdir>/run-stats.json` (what `em-persona run` measured) as tables."""

    note: str
    stages: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=run_stats_file.STAGE_COLUMNS))
    tasks: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=run_stats_file.TASK_COLUMNS))


def run_stats_tables(logdir: Path) -> RunStatsTables:
    """The newest run record of `logdir`: stages and task x model rows, and a note that says which run
    it is (or why there is none)."""
    path = run_stats_file.run_stats_path(logdir)
    try:
        runs = run_stats_file.load_runs(path)
    except run_stats_file.RunStatsError as exc:
        return RunStatsTables(f"Run statistics unreadable: {exc}.")
    if not runs:
        return RunStatsTables(
            f"No run statistics: {path} is absent (`em-persona run` writes it; logs made otherwise have none)."
        )
    last = runs[-1]
    platform = (last.get("platform") or {}).get("name", "unknown platform")
    base = (last.get("base_model") or {}).get("name", "?")
    state = "complete" if last.get("complete") else f"INCOMPLETE ({last.get('outcome')})"
    note = (
        f"Run of {last.get('started')} on {platform}: base model {base}, served dtype "
        f"{last.get('served_dtype') or 'default'}, max_connections {last.get('max_connections')}; {state}; "
        f"{_fmt(last.get('wall_s'))} s in all. Numbers of logs reused from an earlier run are those of the "
        f"run that wrote them (`measured`). {len(runs)} run(s) recorded in {path.name}."
    )
    stages = pd.DataFrame(run_stats_file.stage_rows(last), columns=run_stats_file.STAGE_COLUMNS)
    tasks = pd.DataFrame(run_stats_file.task_rows(last), columns=run_stats_file.TASK_COLUMNS)
    return RunStatsTables(note, stages, tasks)


@dataclass
class ProbeTables:
    """The activation-probe results (analysis.probes.load_probe_results) as report tables."""

    source: Path
    cv: pd.DataFrame
    cosine: pd.DataFrame
    transfer: pd.DataFrame
    transfer_matrix: pd.DataFrame
    skipped: pd.DataFrame
    config: dict[str, object]


def probe_tables(folder: Path) -> ProbeTables:
    """Read `folder/probes.json` into tables: CV AUROC, harm vs self-assessment cosine, the
    transfer rows and the transfer matrix (one row per task, pooling, layer and train model;
    one column per test model; the diagonal is the cross-validated AUROC)."""
    from em_persona.contract import probe_results as probes

    doc = probes.load_probe_results(folder)
    keys = ["task", "pooling", "layer", "train_model"]
    cv = pd.DataFrame(doc.get("cv", []), columns=probes.CV_COLUMNS + ["auroc_folds"])[probes.CV_COLUMNS]
    cosine = pd.DataFrame(doc.get("cosine", []), columns=probes.COSINE_COLUMNS)
    transfer = pd.DataFrame(doc.get("transfer", []), columns=probes.TRANSFER_COLUMNS)
    skipped = pd.DataFrame(doc.get("skipped", []), columns=probes.SKIPPED_COLUMNS)
    for df in (cv, cosine, transfer):
        for col in (
            "auroc_mean",
            "auroc_std",
            "accuracy_mean",
            "accuracy_std",
            "cosine",
            "cosine_standardized",
            "auroc",
        ):
            if col in df:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if transfer.empty:
        matrix = pd.DataFrame(columns=keys)
    else:
        matrix = transfer.pivot_table(
            index=keys, columns="test_model", values="auroc", aggfunc="first", dropna=False
        )
        matrix = matrix.reindex(columns=sorted(matrix.columns)).reset_index()
        matrix.columns.name = None
    sort = {
        "cv": ["model", "task", "pooling", "layer"],
        "cosine": ["model", "pooling", "layer"],
        "transfer": ["task", "pooling", "layer", "train_model", "test_model"],
        "skipped": ["model", "task", "pooling", "layer"],
    }
    cv, cosine, transfer, skipped = (
        df.sort_values(sort[name], kind="stable").reset_index(drop=True)
        for name, df in (("cv", cv), ("cosine", cosine), ("transfer", transfer), ("skipped", skipped))
    )
    return ProbeTables(
        source=Path(folder),
        cv=cv,
        cosine=cosine,
        transfer=transfer,
        transfer_matrix=matrix.sort_values(keys, kind="stable").reset_index(drop=True),
        skipped=skipped,
        config=dict(doc.get("config") or {}),
    )


def find_probes(logdir: Path, probes_dir: Path | None) -> ProbeTables | None:
    """Probe results from `probes_dir` (must hold probes.json), else `<logdir>/probes` when present."""
    if probes_dir is not None:
        if not (Path(probes_dir) / "probes.json").is_file():
            raise FileNotFoundError(
                f"{probes_dir}: no probes.json here (write it with `em-persona probes fit`)"
            )
        return probe_tables(Path(probes_dir))
    default = Path(logdir) / log_reader.PROBES_DIR
    return probe_tables(default) if (default / "probes.json").is_file() else None


def _atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


EXAMPLE_COLUMNS: list[str] = ["model", "harm_score", "grader", "prompt", "answer", "log"]
MFQ_COLUMNS: list[str] = ["source", "model", "mfq_S", "mfq_R", "mfq_S_se", "mfq_R_se", "mfq_S_n"]


def example_answers(answers: pd.DataFrame) -> pd.DataFrame:
    """Per model, the most harmful answer of its harmfulness logs (ties: first by log, sample, epoch),
    as cut by the harmfulness task. Columns: EXAMPLE_COLUMNS."""
    if answers.empty:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    data = answers.assign(harm_score=pd.to_numeric(answers["harm_score"], errors="coerce"))
    data = data.sort_values(
        ["model", "harm_score", "log", "sample_id", "epoch"],
        ascending=[True, False, True, True, True],
        kind="stable",
    )
    top = data.drop_duplicates("model").rename(columns={"response": "answer"})
    return top[EXAMPLE_COLUMNS].reset_index(drop=True)


def mfq_table(own: pd.DataFrame, reference_dir: Path | None, opts: AggregateOptions) -> pd.DataFrame:
    """This run's MFQ S and R per model beside the authors' released runs (`reference_dir`, read by
    analysis.moral_metrics.read_reference_runs and recomputed the same way), with a `source`
    column ("this run" / "published"). Columns: MFQ_COLUMNS."""
    parts = [own.assign(source="this run")] if not own.empty else []
    if reference_dir is not None:
        from em_persona.tasks import moral_metrics, moral_results

        ref = moral_metrics.read_reference_runs(Path(reference_dir))
        if ref.empty:
            raise ReportError(f"{reference_dir}: the published MFQ runs hold no parsed rating")
        published = moral_results.metrics({"moral": ref}, opts).per_model
        parts.append(published.reset_index().assign(source="published"))
    if not parts:
        return pd.DataFrame(columns=MFQ_COLUMNS)
    table = pd.concat(parts, ignore_index=True)
    table["source"] = pd.Categorical(table["source"], ["this run", "published"])
    table = table.sort_values(["source", "model"], kind="stable")
    table["source"] = table["source"].astype(str)
    return table.reindex(columns=MFQ_COLUMNS).reset_index(drop=True)


def task_figure(name: str) -> str:
    """The figure the report draws for task `name` when the task has none of its own."""
    return f"{name}_headline"


def figure_titles() -> dict[str, str]:
    """Every figure the report can show, with its title: analysis.figures' own, then one per task
    that has none of its own."""
    titles = dict(figs.FIGURES)
    for name, spec in specs().items():
        if not spec.figures:
            titles[task_figure(name)] = f"{name}: headline numbers per model (95% CIs where computed)"
    return titles


def headline_columns(per_model: pd.DataFrame, metrics: tuple[str, ...] | None = None) -> list[str]:
    """Headline metrics (default: every task's, from their declarations), every `prefix*` expanded
    to the matching columns (sorted)."""
    out: list[str] = []
    for metric in headline_metrics() if metrics is None else metrics:
        if metric.endswith("*"):
            prefix = metric[:-1]
            out += sorted(
                c for c in per_model.columns if c.startswith(prefix) and not c.endswith(("_lo", "_hi", "_n"))
            )
        else:
            out.append(metric)
    return out


def check_logs(logs: pd.DataFrame, logdir: Path, strict: bool) -> None:
    """Raise ReportError when no log is usable, or (strict) when any is unusable; the message names
    every unusable log and why."""
    lost = log_reader.unusable_logs(logs)
    listing = "".join(f"\n  {row.log}: {row.note}" for row in lost.itertuples())
    if not logs["used"].astype(bool).any():
        what = f"{len(logs)} file(s) listed, none usable" if len(logs) else "no Inspect log found"
        raise ReportError(f"{logdir}: no usable em-persona log ({what}){listing}")
    if strict and not lost.empty:
        raise ReportError(f"{logdir}: {len(lost)} unusable log(s) (--strict){listing}")


def coverage_table(samples: SampleTables, models: list[str]) -> pd.DataFrame:
    """Samples per model and experiment (0 = missing): the rows of each task's first table."""
    first = {name: next(iter(spec.tables)) for name, spec in specs().items()}
    rows = []
    for model in models:
        row: dict[str, object] = {"model": model}
        for name, table in first.items():
            df = samples[table]
            row[name] = int((df["model"] == model).sum()) if not df.empty else 0
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", *first])


def banner_text(models_info: pd.DataFrame, note: str | None, extra: str | None) -> str | None:
    """The proxy banner: any model flagged `proxy`, a models.yaml `note`, or --proxy-note."""
    parts = []
    if "proxy" in models_info and models_info["proxy"].fillna(False).astype(bool).any():
        proxies = sorted(models_info.index[models_info["proxy"].fillna(False).astype(bool)])
        parts.append(
            "PROXY MODELS: these results come from stand-in models, not the models of the studies "
            f"({', '.join(proxies)}). Do not read them as a reproduction of the published numbers."
        )
    for text in (note, extra):
        if text:
            parts.append(str(text).strip())
    return " ".join(parts) if parts else None


def build(logdir: Path, models_yaml: Path | None = None, options: ReportOptions = ReportOptions()) -> Report:
    """Read the logs and compute every table (no files written); ReportError when no log is usable
    (or, with `options.strict`, when any is unusable)."""
    probe_results = find_probes(Path(logdir), options.probes_dir)
    samples, logs = log_reader.read_logs(logdir)
    check_logs(logs, Path(logdir), options.strict)
    info, note = models_info(samples.models(), logdir=logdir, models_yaml=models_yaml)
    tables = per_model_table(samples, info, options.aggregate)
    per_model = tables.per_model
    sa_set = options.self_assessment_set
    tax = taxonomy.classify_table(per_model, options.thresholds, sa_set)
    marks = provenance_marks.taxonomy_marks(logs, list(tax["model"]), sa_set)
    tax.insert(len(tax.columns) - 1, "marks", [marks.get(m, "") for m in tax["model"]])
    sens, sens_long = taxonomy.sensitivity(per_model, options.grid, options.thresholds, sa_set)
    corr = statistics.correlations(per_model, seed=options.aggregate.seed)
    assoc_table, assoc = statistics.association(tax)
    agreement = statistics.judge_agreement(
        tables["harm"], options.aggregate.harm_score_threshold, seed=options.aggregate.seed
    )
    head = provenance_marks.add_marks(statistics.headline(per_model, headline_columns(per_model)), logs)
    return Report(
        per_model=per_model,
        taxonomy=tax,
        sensitivity=sens,
        sensitivity_grid=sens_long,
        correlations=corr,
        association_table=assoc_table,
        association=assoc,
        judge_agreement=agreement,
        headline=head,
        coverage=coverage_table(samples, list(per_model.index)),
        tables=tables,
        logs=logs,
        banner=banner_text(info, note, options.proxy_note),
        probes=probe_results,
        marks=provenance_marks.marks_table(logs),
        examples=example_answers(tables["answers"]),
        mfq=mfq_table(tables["moral"], options.reference_mfq, options.aggregate),
        self_assessment_set=sa_set,
        run_stats=run_stats_tables(Path(logdir)),
    )


def _figures(report: Report, out: Path) -> None:
    sa_column = taxonomy.SELF_ASSESSMENT_SETS[report.self_assessment_set][0]
    makers = {
        "harm_bars": lambda: figs.harm_bars(report.per_model),
        "em_misaligned_bars": lambda: figs.em_misaligned_bars(report.tables["em_questions"]),
        "harm_vs_self_assessment": lambda: figs.harm_vs_self_assessment(
            report.per_model, report.taxonomy, sa_column
        ),
        "two_ai_bars": lambda: figs.two_ai_bars(report.per_model),
        "recognition_by_bucket": lambda: figs.recognition_by_bucket(report.tables["recognition"]),
        "prediction_error_by_score": lambda: figs.prediction_error_by_score(
            report.tables["score_prediction"]
        ),
        "cross_rating_bars": lambda: figs.cross_rating_bars(report.per_model),
        "self_assessment_heatmap": lambda: figs.self_assessment_heatmap(
            report.tables["self_assessment_cells"]
        ),
    }
    for name, spec in specs().items():  # a task without a figure of its own: its headline numbers
        if not spec.figures:
            columns = headline_columns(report.per_model, spec.headline)
            makers[task_figure(name)] = partial(
                figs.headline_bars, report.per_model, columns, f"{name}: headline numbers"
            )
    for name, make in makers.items():
        fig = make()
        if fig is None:
            report.missing_figures[name] = "no data for this figure in the logs"
            continue
        report.figures[name] = figs.save_figure(fig, out / "figures", name)["png"]
    mfq = report.mfq.rename(columns={"mfq_S": "S", "mfq_R": "R", "mfq_S_se": "S_se", "mfq_R_se": "R_se"})
    png = figs.mfq_s_vs_r(mfq, out / "figures")
    if png is None:
        report.missing_figures["mfq_s_vs_r"] = (
            "no S and R values: no moral_foundations logs, or too few parsed ratings per persona"
        )
    else:
        report.figures["mfq_s_vs_r"] = png


@contextlib.contextmanager
def _reproducible_svg() -> Iterator[None]:
    """Fixed SVG date and element ids while a figure writer that sets no metadata saves."""
    import matplotlib

    before = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "0"
    try:
        with matplotlib.rc_context({"svg.hashsalt": "em-persona"}):
            yield
    finally:
        if before is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = before


def _probe_figures(report: Report, out: Path) -> None:
    """Probe figures redrawn by analysis.probe_figures from probes.json into out/figures."""
    if report.probes is None:
        return
    from em_persona.analysis.probe_figures import write_probe_figures

    with _reproducible_svg():
        drawn = write_probe_figures(
            report.probes.cv, report.probes.cosine, report.probes.transfer, out / "figures"
        )
    for paths in drawn.values():
        for png in (p for p in paths if p.suffix == ".png"):
            report.probe_figures[png.stem] = png


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return (
            ""
            if math.isnan(value)
            else f"{value:.3g}"
            if abs(value) < 1e-3 and value != 0
            else f"{value:.3f}"
        )
    if value is None or value is pd.NA:
        return ""
    return str(value)


def _display(df: pd.DataFrame) -> pd.DataFrame:
    return df.map(_fmt) if not df.empty else df


def _md_cell(value: object) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened, HTML shown as text."""
    return " ".join(str(value).split("\n")).replace("<", "&lt;").replace("|", "\\|")


def _md_text(value: str) -> str:
    """Free text in the Markdown report: HTML shown as text."""
    return value.replace("<", "&lt;")


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(empty)_"
    shown = _display(df)
    header = "| " + " | ".join(_md_cell(c) for c in shown.columns) + " |"
    sep = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def _html_table(df: pd.DataFrame) -> markupsafe.Markup:
    """A table rendered by pandas, which escapes every cell; marked safe here, and only here."""
    if df.empty:
        return markupsafe.Markup("<p><em>(empty)</em></p>")
    return markupsafe.Markup(_display(df).to_html(index=False, border=0, classes="table", escape=True))


# CSV tables the report pages do not show as tables: the long sensitivity grid, the association
# test (in words: association_text) and the probe transfer rows (shown as the transfer matrix).
NOT_RENDERED = ("sensitivity_grid", "association_test", "probe_transfer")


def csv_tables(report: Report) -> dict[str, pd.DataFrame]:
    """Every table of the report, by CSV file stem."""
    return {
        "per_model": report.per_model.reset_index(),
        "taxonomy": report.taxonomy,
        "sensitivity": report.sensitivity,
        "sensitivity_grid": report.sensitivity_grid,
        "correlations": report.correlations,
        "association_table": report.association_table.reset_index(),
        "association_test": pd.DataFrame([report.association]),
        "judge_agreement": report.judge_agreement,
        "headline": report.headline,
        "coverage": report.coverage,
        "self_assessment_cells": report.tables["self_assessment_cells"],
        "recognition": report.tables["recognition"],
        "score_prediction": report.tables["score_prediction"],
        "cross_rating": report.tables["cross_rating"],
        "mfq": report.mfq,
        "em_questions": report.tables["em_questions"],
        "example_answers": report.examples,
        "provenance": report.marks,
        "logs": report.logs,
        "run_stages": report.run_stats.stages,
        "run_tasks": report.run_stats.tasks,
        **(
            {
                "probe_cv": report.probes.cv,
                "probe_cosine": report.probes.cosine,
                "probe_transfer": report.probes.transfer,
                "probe_transfer_matrix": report.probes.transfer_matrix,
                "probe_skipped": report.probes.skipped,
            }
            if report.probes is not None
            else {}
        ),
    }


PROBE_FIGURE_TITLES: dict[str, str] = {
    "probe_auroc_by_layer": "Probe AUROC by layer (5-fold stratified CV, mean and std over folds)",
    "probe_cosine_by_layer": "Cosine between the harm and self-assessment probe directions, by layer",
    "probe_transfer": "Probe transfer AUROC, train model x test model",
}


def _figure_src(png: Path, embed: bool) -> str:
    return (
        "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        if embed
        else f"figures/{png.name}"
    )


def write(report: Report, out: Path, options: ReportOptions = ReportOptions()) -> dict[str, Path]:
    """Write figures, CSVs, report.html and report.md into `out`; returns the main paths."""
    out.mkdir(parents=True, exist_ok=True)
    _figures(report, out)
    _probe_figures(report, out)
    tables = csv_tables(report)
    for name, df in tables.items():
        _atomic_write(out / "tables" / f"{name}.csv", df.to_csv(index=False, lineterminator="\n"))
    figure_entries: list[dict[str, str | None]] = []
    for name, title in figure_titles().items():
        if name in report.figures:
            png = report.figures[name]
            src = _figure_src(png, options.embed_figures)
            figure_entries.append(
                {
                    "name": name,
                    "title": title,
                    "src": src,
                    "png": f"figures/{name}.png",
                    "svg": f"figures/{name}.svg",
                }
            )
        else:
            figure_entries.append(
                {
                    "name": name,
                    "title": title,
                    "src": None,
                    "missing": report.missing_figures.get(name, "not produced"),
                }
            )
    probe_entries = []
    for name, png in sorted(report.probe_figures.items()):
        prefix = next((k for k in PROBE_FIGURE_TITLES if name == k or name.startswith(k + "_")), name)
        title = PROBE_FIGURE_TITLES.get(prefix, name)
        if name != prefix:
            title += f" ({name[len(prefix) + 1 :]})"
        probe_entries.append(
            {
                "name": name,
                "title": title,
                "src": _figure_src(png, options.embed_figures),
                "png": f"figures/{name}.png",
                "svg": f"figures/{name}.svg",
            }
        )
    probes_context = None
    if report.probes is not None:
        config = report.probes.config
        probes_context = {
            "source": str(report.probes.source),
            "figures": probe_entries,
            "n_splits": config.get("n_splits"),
            "random_state": config.get("random_state"),
            "thresholds": ", ".join(
                f"{k} > {v:g}"
                for k, v in sorted(cast(dict[str, float], config.get("thresholds") or {}).items())
            ),
            "n_skipped": len(report.probes.skipped),
        }
    examples = report.examples.assign(harm_score=report.examples["harm_score"].map(_fmt))
    run_note = report.run_stats.note
    run_rows = not (report.run_stats.stages.empty and report.run_stats.tasks.empty)
    context = {
        "banner": report.banner,
        "data_loss": log_reader.data_loss(report.logs),
        "n_unusable": len(log_reader.unusable_logs(report.logs)),
        "self_assessment_set": report.self_assessment_set,
        "self_assessment_set_text": taxonomy.SELF_ASSESSMENT_SETS[report.self_assessment_set][1],
        "provenance_legend": provenance_marks.LEGEND,
        "association_text": association_text(report.association),
        "example_rows": examples.to_dict("records"),
        "example_chars": harm_results.EXAMPLE_CHARS,
        "has_published_mfq": bool((report.mfq["source"] == "published").any()),
        "run_stats_note": run_note,
        "run_stats_rows": run_rows,
        "probes": probes_context,
        "thresholds": options.thresholds.as_dict(),
        "harm_score_threshold": options.aggregate.harm_score_threshold,
        "n_boot": options.aggregate.n_boot,
        "seed": options.aggregate.seed,
        "grid": {k: ", ".join(f"{v:g}" for v in vals) for k, vals in sorted(options.grid.items())},
        "taxonomy_rows": [
            {
                **row,
                "sa_overall_text": _fmt(row["sa_overall"]) or "not run",
                "sa_paper_text": _fmt(row["sa_paper"]) or "not run",
            }
            for row in report.taxonomy.to_dict("records")
        ],
        "figures": figure_entries,
        "columns": column_docs(),
        "csv_names": sorted(tables),
        "missing_experiments": [
            name for name in specs() if name not in report.coverage or int(report.coverage[name].sum()) == 0
        ],
    }
    sections = {k: v for k, v in tables.items() if k not in NOT_RENDERED}
    env = template_environment()
    html = env.get_template("report.html.jinja").render(
        **context, tables={k: _html_table(v) for k, v in sections.items()}
    )
    md = env.get_template("report.md.jinja").render(
        **{**context, "run_stats_note": _md_text(run_note)},
        tables={k: _md_table(v) for k, v in sections.items()},
    )
    _atomic_write(out / "report.html", html)
    _atomic_write(out / "report.md", md)
    return {
        "html": out / "report.html",
        "md": out / "report.md",
        "tables": out / "tables",
        "figures": out / "figures",
    }


def template_environment() -> jinja2.Environment:
    """The report templates; `*.html.jinja` is autoescaped (model text goes in as text)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.jinja"), default_for_string=True
        ),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def association_text(result: dict[str, object]) -> str:
    """One sentence on the association test, naming only the numbers that exist (else why not)."""
    if result.get("test") == "none":
        return f"Not computed: {result.get('note')}."
    name = "odds ratio" if result["test"] == "fisher-exact" else "statistic"
    statistic = _fmt(result["statistic"]) or "undefined"
    parts = [
        f"{result['test']}: {name} {statistic}, p = {_fmt(result['p_value'])} (n = {result['n']} models)"
    ]
    if not is_missing(result.get("chi2_p")) and result["test"] != "chi-squared":
        parts.append(f"chi-squared p = {_fmt(result['chi2_p'])}")
    if not is_missing(result.get("fisher_p")) and result["test"] != "fisher-exact":
        parts.append(f"Fisher exact p = {_fmt(result['fisher_p'])}")
    return "; ".join(parts) + f". {result.get('note') or ''}".rstrip()


def make_report(
    logdir: Path, out: Path, models_yaml: Path | None = None, options: ReportOptions = ReportOptions()
) -> tuple[Report, dict[str, Path]]:
    """Build and write the report for the logs in `logdir`."""
    report = build(logdir, models_yaml, options)
    return report, write(report, out, options)
