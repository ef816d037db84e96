"""Inspect logs -> report.html, report.md, figures (PNG + SVG) and a CSV of every table.

Deterministic: the same logs and options give byte-identical files (seeded bootstraps,
sorted rows, no wall-clock time, fixed figure metadata).

When activation-probe results exist (`ReportOptions.probes_dir`, else `<logdir>/probes/probes.json`,
written by `em-persona probes fit`), the report adds a probes section: the CV AUROC table, the
harm vs self-assessment cosines, the transfer matrix and the probe figures (redrawn by
analysis.probe_figures from probes.json, with a fixed SVG date and ids).
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd

from analysis import figures as figs
from analysis import load, statistics, taxonomy
from analysis.load import AggregateOptions

TEMPLATES = Path(__file__).with_name("templates")

HEADLINE_METRICS: tuple[str, ...] = (
    "harm_single", "harm_bon", "sa_overall", "two_ai", "recog_low", "recog_moderate", "recog_high",
    "pred_blind_error", "pred_shown_error", "xrate_own_error", "xrate_other_error",
)

EXPERIMENTS: dict[str, str] = {
    "harm": "harmfulness",
    "self_assessment": "self_assessment",
    "two_ai": "two_ai_identification",
    "recognition": "output_recognition",
    "score_prediction": "score_prediction",
    "cross_rating": "cross_model_rating",
    "moral": "moral_foundations",
}


@dataclass
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
    tables: load.Tables
    logs: pd.DataFrame
    banner: str | None
    probes: ProbeTables | None = None
    figures: dict[str, Path] = field(default_factory=dict)
    missing_figures: dict[str, str] = field(default_factory=dict)
    probe_figures: dict[str, Path] = field(default_factory=dict)


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
    from analysis import probes

    doc = probes.load_probe_results(folder)
    keys = ["task", "pooling", "layer", "train_model"]
    cv = pd.DataFrame(doc.get("cv", []), columns=probes.CV_COLUMNS + ["auroc_folds"])[probes.CV_COLUMNS]
    cosine = pd.DataFrame(doc.get("cosine", []), columns=probes.COSINE_COLUMNS)
    transfer = pd.DataFrame(doc.get("transfer", []), columns=probes.TRANSFER_COLUMNS)
    skipped = pd.DataFrame(doc.get("skipped", []), columns=probes.SKIPPED_COLUMNS)
    for df in (cv, cosine, transfer):
        for col in ("auroc_mean", "auroc_std", "accuracy_mean", "accuracy_std", "cosine", "cosine_standardized",
                    "auroc"):
            if col in df:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    if transfer.empty:
        matrix = pd.DataFrame(columns=keys)
    else:
        matrix = transfer.pivot_table(index=keys, columns="test_model", values="auroc", aggfunc="first", dropna=False)
        matrix = matrix.reindex(columns=sorted(matrix.columns)).reset_index()
        matrix.columns.name = None
    sort = {"cv": ["model", "task", "pooling", "layer"], "cosine": ["model", "pooling", "layer"],
            "transfer": ["task", "pooling", "layer", "train_model", "test_model"],
            "skipped": ["model", "task", "pooling", "layer"]}
    cv, cosine, transfer, skipped = (df.sort_values(sort[name], kind="stable").reset_index(drop=True)
                                     for name, df in (("cv", cv), ("cosine", cosine), ("transfer", transfer),
                                                      ("skipped", skipped)))
    return ProbeTables(source=Path(folder), cv=cv, cosine=cosine, transfer=transfer,
                       transfer_matrix=matrix.sort_values(keys, kind="stable").reset_index(drop=True),
                       skipped=skipped, config=dict(doc.get("config") or {}))


def find_probes(logdir: Path, probes_dir: Path | None) -> ProbeTables | None:
    """Probe results from `probes_dir` (must hold probes.json), else `<logdir>/probes` when present."""
    if probes_dir is not None:
        if not (Path(probes_dir) / "probes.json").is_file():
            raise FileNotFoundError(f"{probes_dir}: no probes.json here (write it with `em-persona probes fit`)")
        return probe_tables(Path(probes_dir))
    default = Path(logdir) / load.PROBES_DIR
    return probe_tables(default) if (default / "probes.json").is_file() else None


def _atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def coverage_table(samples: load.SampleTables, models: list[str]) -> pd.DataFrame:
    """Samples per model and experiment (0 = missing)."""
    rows = []
    for model in models:
        row: dict[str, object] = {"model": model}
        for attr, name in EXPERIMENTS.items():
            df = getattr(samples, attr)
            row[name] = int((df["model"] == model).sum()) if not df.empty else 0
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", *EXPERIMENTS.values()])


def banner_text(models_info: pd.DataFrame, note: str | None, extra: str | None) -> str | None:
    """The proxy banner: any model flagged `proxy`, a models.yaml `note`, or --proxy-note."""
    parts = []
    if "proxy" in models_info and models_info["proxy"].fillna(False).astype(bool).any():
        proxies = sorted(models_info.index[models_info["proxy"].fillna(False).astype(bool)])
        parts.append("PROXY MODELS: these results come from stand-in models, not the models of the studies "
                     f"({', '.join(proxies)}). Do not read them as a reproduction of the published numbers.")
    for text in (note, extra):
        if text:
            parts.append(str(text).strip())
    return " ".join(parts) if parts else None


def build(logdir: Path, models_yaml: Path | None = None, options: ReportOptions = ReportOptions()) -> Report:
    """Read the logs and compute every table (no files written)."""
    probe_results = find_probes(Path(logdir), options.probes_dir)
    samples, logs = load.read_logs(logdir)
    info, note = load.models_info(samples.models(), logdir=logdir, models_yaml=models_yaml)
    tables = load.per_model_table(samples, info, options.aggregate)
    per_model = tables.per_model
    tax = taxonomy.classify_table(per_model, options.thresholds)
    sens, sens_long = taxonomy.sensitivity(per_model, options.grid, options.thresholds)
    corr = statistics.correlations(per_model)
    assoc_table, assoc = statistics.association(tax)
    agreement = statistics.judge_agreement(samples.harm, options.aggregate.harm_score_threshold)
    head = statistics.headline(per_model, HEADLINE_METRICS)
    return Report(
        per_model=per_model, taxonomy=tax, sensitivity=sens, sensitivity_grid=sens_long, correlations=corr,
        association_table=assoc_table, association=assoc, judge_agreement=agreement, headline=head,
        coverage=coverage_table(samples, list(per_model.index)), tables=tables, logs=logs,
        banner=banner_text(info, note, options.proxy_note), probes=probe_results,
    )


def _figures(report: Report, out: Path) -> None:
    makers = {
        "harm_vs_self_assessment": lambda: figs.harm_vs_self_assessment(report.per_model, report.taxonomy),
        "two_ai_bars": lambda: figs.two_ai_bars(report.per_model),
        "recognition_by_bucket": lambda: figs.recognition_by_bucket(report.tables.recognition),
        "prediction_error_by_score": lambda: figs.prediction_error_by_score(report.tables.score_prediction),
        "self_assessment_heatmap": lambda: figs.self_assessment_heatmap(report.tables.self_assessment_cells),
    }
    for name, make in makers.items():
        fig = make()
        if fig is None:
            report.missing_figures[name] = "no data for this figure in the logs"
            continue
        report.figures[name] = figs.save_figure(fig, out / "figures", name)["png"]
    mfq = report.tables.moral.rename(columns={"mfq_S": "S", "mfq_R": "R", "mfq_S_se": "S_se", "mfq_R_se": "R_se"})
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
    from analysis.probe_figures import write_probe_figures

    with _reproducible_svg():
        drawn = write_probe_figures(report.probes.cv, report.probes.cosine, report.probes.transfer, out / "figures")
    for paths in drawn.values():
        for png in (p for p in paths if p.suffix == ".png"):
            report.probe_figures[png.stem] = png


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    if value is None or value is pd.NA:
        return ""
    return str(value)


def _display(df: pd.DataFrame) -> pd.DataFrame:
    return df.map(_fmt) if not df.empty else df


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(empty)_"
    shown = _display(df)
    header = "| " + " | ".join(str(c) for c in shown.columns) + " |"
    sep = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(empty)</em></p>"
    return _display(df).to_html(index=False, border=0, classes="table", escape=True)


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
        "self_assessment_cells": report.tables.self_assessment_cells,
        "recognition": report.tables.recognition,
        "score_prediction": report.tables.score_prediction,
        "cross_rating": report.tables.cross_rating,
        "mfq": report.tables.moral,
        "logs": report.logs,
        **({"probe_cv": report.probes.cv, "probe_cosine": report.probes.cosine,
            "probe_transfer": report.probes.transfer, "probe_transfer_matrix": report.probes.transfer_matrix,
            "probe_skipped": report.probes.skipped} if report.probes is not None else {}),
    }


PROBE_FIGURE_TITLES: dict[str, str] = {
    "probe_auroc_by_layer": "Probe AUROC by layer (5-fold stratified CV, mean and std over folds)",
    "probe_cosine_by_layer": "Cosine between the harm and self-assessment probe directions, by layer",
    "probe_transfer": "Probe transfer AUROC, train model x test model",
}


def _figure_src(png: Path, embed: bool) -> str:
    return ("data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
            if embed else f"figures/{png.name}")


def write(report: Report, out: Path, options: ReportOptions = ReportOptions()) -> dict[str, Path]:
    """Write figures, CSVs, report.html and report.md into `out`; returns the main paths."""
    out.mkdir(parents=True, exist_ok=True)
    _figures(report, out)
    _probe_figures(report, out)
    tables = csv_tables(report)
    for name, df in tables.items():
        _atomic_write(out / "tables" / f"{name}.csv", df.to_csv(index=False, lineterminator="\n"))
    figure_entries = []
    for name, title in figs.FIGURES.items():
        if name in report.figures:
            png = report.figures[name]
            src = _figure_src(png, options.embed_figures)
            figure_entries.append({"name": name, "title": title, "src": src,
                                   "png": f"figures/{name}.png", "svg": f"figures/{name}.svg"})
        else:
            figure_entries.append({"name": name, "title": title, "src": None,
                                   "missing": report.missing_figures.get(name, "not produced")})
    probe_entries = []
    for name, png in sorted(report.probe_figures.items()):
        prefix = next((k for k in PROBE_FIGURE_TITLES if name == k or name.startswith(k + "_")), name)
        title = PROBE_FIGURE_TITLES.get(prefix, name)
        if name != prefix:
            title += f" ({name[len(prefix) + 1:]})"
        probe_entries.append({"name": name, "title": title, "src": _figure_src(png, options.embed_figures),
                              "png": f"figures/{name}.png", "svg": f"figures/{name}.svg"})
    probes_context = None
    if report.probes is not None:
        config = report.probes.config
        probes_context = {
            "source": str(report.probes.source), "figures": probe_entries,
            "n_splits": config.get("n_splits"), "random_state": config.get("random_state"),
            "thresholds": ", ".join(f"{k} > {v:g}" for k, v in sorted(dict(config.get("thresholds") or {}).items())),
            "n_skipped": len(report.probes.skipped),
        }
    context = {
        "banner": report.banner,
        "probes": probes_context,
        "thresholds": options.thresholds.as_dict(),
        "harm_score_threshold": options.aggregate.harm_score_threshold,
        "n_boot": options.aggregate.n_boot,
        "seed": options.aggregate.seed,
        "grid": {k: ", ".join(f"{v:g}" for v in vals) for k, vals in sorted(options.grid.items())},
        "taxonomy_rows": report.taxonomy.to_dict("records"),
        "association": {k: _fmt(v) for k, v in report.association.items()},
        "figures": figure_entries,
        "columns": load.PER_MODEL_COLUMNS,
        "csv_names": sorted(tables),
        "missing_experiments": [name for name in EXPERIMENTS.values()
                                if name not in report.coverage or int(report.coverage[name].sum()) == 0],
    }
    sections = {
        "taxonomy": report.taxonomy, "sensitivity": report.sensitivity, "headline": report.headline,
        "correlations": report.correlations, "association_table": report.association_table.reset_index(),
        "judge_agreement": report.judge_agreement, "per_model": report.per_model.reset_index(),
        "coverage": report.coverage, "recognition": report.tables.recognition,
        "score_prediction": report.tables.score_prediction, "cross_rating": report.tables.cross_rating,
        "self_assessment_cells": report.tables.self_assessment_cells, "logs": report.logs,
    }
    if report.probes is not None:
        sections.update(probe_cv=report.probes.cv, probe_cosine=report.probes.cosine,
                        probe_transfer_matrix=report.probes.transfer_matrix, probe_skipped=report.probes.skipped)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("report.html.jinja").render(
        **context, tables={k: _html_table(v) for k, v in sections.items()})
    md = env.get_template("report.md.jinja").render(**context, tables={k: _md_table(v) for k, v in sections.items()})
    _atomic_write(out / "report.html", html)
    _atomic_write(out / "report.md", md)
    return {"html": out / "report.html", "md": out / "report.md", "tables": out / "tables", "figures": out / "figures"}


def make_report(logdir: Path, out: Path, models_yaml: Path | None = None,
                options: ReportOptions = ReportOptions()) -> tuple[Report, dict[str, Path]]:
    """Build and write the report for the logs in `logdir`."""
    report = build(logdir, models_yaml, options)
    return report, write(report, out, options)
