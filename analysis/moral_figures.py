"""Figures for the MFQ persona experiment: S vs R with the reference band, per-foundation bars.

Each function takes a metrics frame (from `analysis.moral_metrics.metrics_by_model`)
and an output path; it writes `<stem>.png` and `<stem>.svg` and returns both paths.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from em_persona.tasks.moral_metrics import FOUNDATIONS, REFERENCE_S_BAND  # noqa: E402


def _save(fig: plt.Figure, out: str | Path) -> list[Path]:
    """Write PNG and SVG beside each other, each through a temp file renamed into place."""
    stem = Path(out)
    if stem.suffix.lower() in {".png", ".svg"}:
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        target = stem.parent / f"{stem.name}.{ext}"
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{ext}", dir=target.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=_fixed_metadata(ext))
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        paths.append(target)
    plt.close(fig)
    return paths


def _fixed_metadata(ext: str) -> dict[str, str | None]:
    """No timestamps in the files, so the same data gives the same bytes."""
    return {"Date": None} if ext == "svg" else {"Software": "em-persona"}


def _overall(metrics: pd.DataFrame) -> pd.DataFrame:
    if "foundation" in metrics.columns:
        metrics = metrics[metrics["foundation"] == "all"]
    missing = {"model", "S", "R"} - set(metrics.columns)
    if missing:
        raise ValueError(f"metrics frame lacks column(s) {sorted(missing)}")
    return metrics.reset_index(drop=True)


def plot_susceptibility_robustness(
    metrics: pd.DataFrame,
    out: str | Path,
    band: tuple[float, float] = REFERENCE_S_BAND,
    reference: pd.DataFrame | None = None,
    published: pd.DataFrame | None = None,
) -> list[Path]:
    """Scatter of S (x) against R (y), one point per model with SE bars, the reference S band shaded.

    `reference` (e.g. moral_metrics.REPORTED, columns model/condition/S/R) is drawn in grey.
    `published` (S and R recomputed from the authors' released runs, columns model/S/R and
    optional S_se/R_se; models labelled "<condition>/<model>") is drawn as open black diamonds,
    each labelled, so the user's models and the published runs sit in one picture.
    """
    data = _overall(metrics)
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.axvspan(*band, color="tab:green", alpha=0.15, label=f"reference band S {band[0]:.2f}-{band[1]:.2f}")
    if reference is not None and not reference.empty:
        ax.scatter(reference["S"], reference["R"], color="0.6", marker="x", s=30, label="reported")
    if published is not None and not published.empty:
        pub = _overall(published)
        pub_r = pub["R"].replace([np.inf, -np.inf], np.nan)
        labelled = False
        for i, row in pub.iterrows():
            if np.isnan(pub_r.iloc[i]) or np.isnan(row["S"]):
                continue
            ax.errorbar(
                row["S"],
                pub_r.iloc[i],
                xerr=row.get("S_se") if pd.notna(row.get("S_se")) else None,
                yerr=row.get("R_se") if pd.notna(row.get("R_se")) else None,
                fmt="D",
                mfc="none",
                color="black",
                capsize=2,
                markersize=6,
                label=None if labelled else "published runs (recomputed)",
            )
            labelled = True
            ax.annotate(
                str(row["model"]),
                (row["S"], pub_r.iloc[i]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=6,
                color="0.25",
            )
    palette = sns.color_palette("deep", n_colors=max(len(data), 1))
    finite_r = data["R"].replace([np.inf, -np.inf], np.nan)
    for i, row in data.iterrows():
        r = finite_r.iloc[i]
        if np.isnan(r) or np.isnan(row["S"]):
            continue
        ax.errorbar(
            row["S"],
            r,
            xerr=row.get("S_se") if pd.notna(row.get("S_se")) else None,
            yerr=row.get("R_se") if pd.notna(row.get("R_se")) else None,
            fmt="o",
            color=palette[i],
            capsize=3,
            label=str(row["model"]),
        )
    ax.set_xlabel("moral susceptibility S")
    ax.set_ylabel("moral robustness R")
    ax.set_title("MFQ-30 under personas: susceptibility vs robustness")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, out)


def plot_foundation_bars(
    metrics: pd.DataFrame,
    out: str | Path,
    base_model: str | None = None,
) -> list[Path]:
    """Per-foundation S and R, bars grouped by foundation, base model first, then the fine-tunes."""
    if "foundation" not in metrics.columns or "model" not in metrics.columns:
        raise ValueError("need a per-foundation metrics frame (metrics_by_model(..., by_foundation=True))")
    data = metrics[metrics["foundation"] != "all"].copy()
    if data.empty:
        raise ValueError("metrics frame has no per-foundation rows")
    models = sorted(data["model"].unique())
    if base_model is not None:
        if base_model not in models:
            raise ValueError(f"base model {base_model!r} not among {models}")
        models = [base_model] + [m for m in models if m != base_model]
    order = [f for f in FOUNDATIONS if f in set(data["foundation"])]
    data["R"] = data["R"].replace([np.inf, -np.inf], np.nan)
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("S", "R"), strict=False):
        sns.barplot(
            data=data,
            x="foundation",
            y=metric,
            hue="model",
            order=order,
            hue_order=models,
            ax=ax,
            errorbar=None,
        )
        se = f"{metric}_se"
        if se in data.columns and data[se].notna().any():
            _bar_errors(ax, data, metric, se, order, models)
        ax.set_xlabel("")
        ax.set_ylabel({"S": "susceptibility S", "R": "robustness R"}[metric])
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Per-foundation susceptibility and robustness: base vs fine-tunes")
    return _save(fig, out)


def _bar_errors(
    ax: plt.Axes, data: pd.DataFrame, metric: str, se: str, order: list[str], models: list[str]
) -> None:
    """SE whiskers on a seaborn grouped bar chart (containers follow hue order)."""
    for container, model in zip(ax.containers, models, strict=False):
        for bar, foundation in zip(container, order, strict=False):
            row = data[(data["model"] == model) & (data["foundation"] == foundation)]
            if row.empty or pd.isna(row[se].iloc[0]):
                continue
            x = bar.get_x() + bar.get_width() / 2
            ax.errorbar(x, row[metric].iloc[0], yerr=row[se].iloc[0], color="black", capsize=2, lw=1)
