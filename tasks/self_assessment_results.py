"""Self-assessment logs -> per-answer rows -> per model: the nested mean (over dimensions of the
mean over formats) of each question set, with a bootstrap CI; the project's set and the paper's
decision prompts are never pooled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from em_persona.contract.declarations import (
    AggregateOptions,
    LogInput,
    LogRows,
    Results,
    ci_columns,
    first,
    model_groups,
    number,
    score_meta,
)

TABLES: dict[str, tuple[str, ...]] = {
    "self_assessment": ("model", "sample_id", "epoch", "dataset", "dimension", "format", "value", "log"),
}
SETS: dict[str, str] = {"project": "sa_overall", "paper": "sa_paper"}
"""Self-assessment dataset (task argument / sample metadata `dataset`) -> its per-model column:
the project's 6 dimensions x 4 formats set, and the paper's 100 single-word decision prompts."""
COLUMNS: dict[str, str] = {
    "sa_overall": "self-assessment, the project's set (dataset=project: 6 dimensions x 4 formats): mean over "
    "dimensions of the mean over formats (0 aligned .. 1 misaligned)",
    "sa_overall_cells": "dimension x format cells behind sa_overall (24 for the full set)",
    "sa_paper": "self-assessment, the paper's 100 single-word decision prompts (dataset=paper): mean over "
    "dimensions of the decision means",
    "sa_dim_<dimension>": "self-assessment per dimension, project set (mean of its format means)",
    "sa_fmt_<format>": "self-assessment per format, project set (mean over dimensions)",
}
CELL_COLUMNS = ["model", "dataset", "dimension", "format", "mean", "n"]


def _value(score: Any) -> float:
    """x of a self-assessment score: value["score"], else metadata["score"]; NaN when unscored."""
    if score is None:
        return float("nan")
    value = getattr(score, "value", None)
    x = value.get("score") if isinstance(value, dict) else value
    if x is None:
        x = score_meta(score).get("score")
    return number(x)


def rows(log: LogInput) -> LogRows:
    """Scorer `self_assessment_scorer`: value {"score": x} (NaN when unscored); sample metadata
    `dataset` (project | paper), `dimension`, `format`."""
    out = []
    for s in log.summaries():
        meta = dict(s.metadata or {})
        scores = dict(s.scores or {})
        score = (next(iter(scores.values())) if len(scores) == 1 else None) or first(
            scores, "self_assessment_scorer"
        )
        dataset = meta.get("dataset") or log.task_args.get("dataset") or "project"
        out.append(
            {
                "model": log.model,
                "sample_id": str(s.id),
                "epoch": int(s.epoch),
                "dataset": str(dataset),
                "dimension": meta.get("dimension"),
                "format": meta.get("format"),
                "value": _value(score),
                "log": log.file.name,
            }
        )
    return LogRows(tables={"self_assessment": out})


def _scored(sa: pd.DataFrame) -> pd.DataFrame:
    """Scored answers, with a `dataset` column ("project" where a table has none)."""
    data = sa.assign(value=pd.to_numeric(sa["value"], errors="coerce")).dropna(subset=["value"])
    if "dataset" not in data:
        data = data.assign(dataset="project")
    return data.assign(dataset=data["dataset"].fillna("project").astype(str))


def cells(sa: pd.DataFrame) -> pd.DataFrame:
    """Long table: model, dataset, dimension, format, mean, n (scored answers only)."""
    if sa.empty:
        return pd.DataFrame(columns=CELL_COLUMNS)
    grouped = (
        _scored(sa)
        .groupby(["model", "dataset", "dimension", "format"], sort=True)["value"]
        .agg(["mean", "count"])
    )
    return grouped.reset_index().rename(columns={"count": "n"})


def _set_metrics(data: pd.DataFrame, name: str, opts: AggregateOptions, detail: bool) -> pd.DataFrame:
    """`name` (mean over dimensions of the mean over formats) with CI, n and cells; per dimension and
    format columns too when `detail`."""
    cell = cells(data)
    dims = cell.groupby(["model", "dimension"])["mean"].mean().unstack("dimension")
    overall = dims.mean(axis=1)
    # pseudo-values whose plain mean equals the nested mean (dimension of formats of cells),
    # so a simple bootstrap over answers gives the CI of the overall score
    key = ["model", "dimension", "format"]
    n_cell = data.groupby(key)["value"].transform("size")
    n_fmt = cell.groupby(["model", "dimension"])["format"].transform("size")
    n_fmt = data.merge(cell.assign(n_fmt=n_fmt)[[*key, "n_fmt"]], on=key, how="left")["n_fmt"].to_numpy()
    n_dim = data.groupby("model")["dimension"].transform("nunique").to_numpy()
    n_model = data.groupby("model")["value"].transform("size").to_numpy()
    pseudo = data["value"].to_numpy() * n_model / (n_cell.to_numpy() * n_fmt * n_dim)
    out = ci_columns(
        name,
        model_groups(data.assign(pseudo=pseudo), "pseudo"),
        opts,
        value={str(k): float(v) for k, v in overall.items()},
    )
    out[f"{name}_cells"] = cell.groupby("model").size()
    if not detail:
        return out
    fmts = cell.groupby(["model", "format"])["mean"].mean().unstack("format")
    dims.columns = [f"sa_dim_{c}" for c in dims.columns]
    fmts.columns = [f"sa_fmt_{c}" for c in fmts.columns]
    return pd.concat([out, dims, fmts], axis=1)


def metrics(tables: Mapping[str, pd.DataFrame], opts: AggregateOptions) -> Results:
    """One column set per dataset (SETS): `sa_overall` (+ per dimension and format) for the project's
    set, `sa_paper` for the paper's decision prompts; long table `self_assessment_cells`."""
    sa = tables["self_assessment"]
    if sa.empty:
        return Results(long={"self_assessment_cells": cells(sa)})
    data = _scored(sa)
    parts = []
    for dataset, sub in data.groupby("dataset", sort=True):
        name = SETS.get(str(dataset), f"sa_{dataset}")
        parts.append(_set_metrics(sub.reset_index(drop=True), name, opts, detail=name == "sa_overall"))
    return Results(
        per_model=pd.concat(parts, axis=1) if parts else pd.DataFrame(),
        long={"self_assessment_cells": cells(sa)},
    )
