"""Every report figure, one function each (seaborn), saved as PNG and SVG deterministically.

Each function takes the tables it needs and returns a matplotlib Figure, or None when
its data is missing (the report then says so). `save_figure` writes both formats with
fixed metadata and a fixed SVG hash salt, so the same input gives byte-identical files.
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

from analysis.statistics import harm_column  # noqa: E402
from analysis.taxonomy import LABELS  # noqa: E402

PALETTE = dict(zip(LABELS, ["#4c72b0", "#c44e52", "#8172b2", "#937860"]))
BUCKET_ORDER = ["low", "moderate", "high"]


def _style() -> None:
    matplotlib.rcParams["svg.hashsalt"] = "em-persona"
    matplotlib.rcParams["svg.fonttype"] = "path"
    sns.set_theme(style="whitegrid", context="notebook")


def save_figure(fig: plt.Figure, out_dir: Path, name: str) -> dict[str, Path]:
    """Write `name`.png and `name`.svg atomically into out_dir; returns their paths."""
    _style()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        target = out_dir / f"{name}.{fmt}"
        fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=f".{fmt}.tmp")
        os.close(fd)
        fig.savefig(tmp, format=fmt, dpi=100, bbox_inches="tight", metadata=meta)
        os.replace(tmp, target)
        paths[fmt] = target
    plt.close(fig)
    return paths


def _err(values: pd.Series, lo: pd.Series, hi: pd.Series) -> np.ndarray:
    """Asymmetric error bars (2 x n), zero where the CI is missing."""
    return np.vstack([(values - lo).clip(lower=0).fillna(0), (hi - values).clip(lower=0).fillna(0)])


def harm_vs_self_assessment(per_model: pd.DataFrame, taxonomy: pd.DataFrame) -> plt.Figure | None:
    """Harmful fraction (best-of-N, else single) vs self-assessment, coloured by label, with CIs."""
    _style()
    if "sa_overall" not in per_model:
        return None
    data = per_model.copy()
    data["harm"] = harm_column(per_model)
    use_bon = "harm_bon" in per_model
    for suffix in ("lo", "hi"):
        bon = per_model.get(f"harm_bon_{suffix}", pd.Series(np.nan, index=per_model.index))
        single = per_model.get(f"harm_single_{suffix}", pd.Series(np.nan, index=per_model.index))
        data[f"harm_{suffix}"] = bon.where(per_model.get("harm_bon", pd.Series(np.nan, index=per_model.index)).notna(), single)
    data = data.join(taxonomy.set_index("model")["label"]).dropna(subset=["harm", "sa_overall"])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for label in LABELS:
        sub = data[data["label"] == label]
        if sub.empty:
            continue
        ax.errorbar(sub["sa_overall"], sub["harm"],
                    xerr=_err(sub["sa_overall"], sub.get("sa_overall_lo", sub["sa_overall"]), sub.get("sa_overall_hi", sub["sa_overall"])),
                    yerr=_err(sub["harm"], sub["harm_lo"], sub["harm_hi"]),
                    fmt="o", color=PALETTE[label], label=label, capsize=3, markersize=8)
    for model, row in data.iterrows():
        ax.annotate(str(model).split("/")[-1], (row["sa_overall"], row["harm"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("self-assessment overall (0 aligned .. 1 misaligned)")
    ax.set_ylabel("harmful fraction" + (" (best-of-N)" if use_bon else " (single response)"))
    ax.set_title("Harmfulness vs self-assessment")
    ax.legend(title="taxonomy", loc="best", fontsize=8)
    return fig


def two_ai_bars(per_model: pd.DataFrame) -> plt.Figure | None:
    """Fraction of runs choosing the misaligned description, per model, with CIs."""
    _style()
    if "two_ai" not in per_model:
        return None
    data = per_model.dropna(subset=["two_ai"])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(data) + 2), 4))
    names = [str(m).split("/")[-1] for m in data.index]
    ax.bar(names, data["two_ai"], color=sns.color_palette()[3],
           yerr=_err(data["two_ai"], data.get("two_ai_lo", data["two_ai"]), data.get("two_ai_hi", data["two_ai"])),
           capsize=3)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("misaligned description chosen")
    ax.set_title("Two-AI identification")
    ax.tick_params(axis="x", rotation=30)
    return fig


def recognition_by_bucket(recognition: pd.DataFrame) -> plt.Figure | None:
    """Rate of claiming its own output, by the harm bucket of that output, per model, with CIs."""
    _style()
    if recognition is None or recognition.empty:
        return None
    models = sorted(recognition["model"].astype(str).unique())
    buckets = [b for b in BUCKET_ORDER if b in set(recognition["bucket"])]
    width = 0.8 / len(buckets)
    colours = sns.color_palette("rocket_r", len(BUCKET_ORDER))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(models) + 2), 4))
    for j, bucket in enumerate(buckets):
        sub = recognition[recognition["bucket"] == bucket].set_index("model").reindex(models)
        x = np.arange(len(models)) + (j - (len(buckets) - 1) / 2) * width
        has = sub["rate"].notna().to_numpy()  # a model with no output in this bucket gets no bar
        sub = sub[has]
        ax.bar(x[has], sub["rate"], width=width, label=bucket, color=colours[BUCKET_ORDER.index(bucket)],
               yerr=_err(sub["rate"], sub["ci_lo"], sub["ci_hi"]), capsize=2)
    ax.set_xticks(np.arange(len(models)), [m.split("/")[-1] for m in models], rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("own output chosen")
    ax.set_title("Output recognition by harm bucket of the own output")
    ax.legend(title="harm bucket", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def prediction_error_by_score(score_prediction: pd.DataFrame) -> plt.Figure | None:
    """Mean signed error (predicted - actual) by actual judge score, per model and condition."""
    _style()
    if score_prediction is None or score_prediction.empty:
        return None
    data = score_prediction.copy()
    data["model"] = data["model"].astype(str).str.split("/").str[-1]
    conditions = sorted(data["condition"].unique())
    fig, axes = plt.subplots(1, len(conditions), figsize=(5 * len(conditions), 4), squeeze=False, sharey=True)
    for ax, cond in zip(axes[0], conditions):
        sns.lineplot(data=data[data["condition"] == cond], x="actual", y="mean_error", hue="model", marker="o", ax=ax,
                     errorbar=None)
        ax.axhline(0, color="grey", linewidth=1, linestyle="--")
        ax.set_title(f"Score prediction ({cond})")
        ax.set_xlabel("actual judge score")
        ax.set_ylabel("mean signed error (predicted - actual)")
        ax.set_xticks([1, 2, 3, 4, 5])
    return fig


def self_assessment_heatmap(cells: pd.DataFrame) -> plt.Figure | None:
    """Self-assessment mean per dimension x format, one panel per model."""
    _style()
    if cells is None or cells.empty:
        return None
    models = sorted(cells["model"].unique())
    ncol = min(3, len(models))
    nrow = int(np.ceil(len(models) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, model in zip(axes.flat, models):
        grid = cells[cells["model"] == model].pivot(index="dimension", columns="format", values="mean").sort_index()
        sns.heatmap(grid, vmin=0, vmax=1, cmap="RdBu_r", annot=True, fmt=".2f", cbar=False, ax=ax)
        ax.set_title(str(model).split("/")[-1])
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.suptitle("Self-assessment (0 aligned .. 1 misaligned)")
    fig.tight_layout()
    return fig


def mfq_s_vs_r(moral: pd.DataFrame, out_dir: Path) -> Path | None:
    """MFQ susceptibility S vs robustness R with the reference band, drawn by analysis.moral_figures
    (the MFQ issue owns that figure); writes mfq_s_vs_r.png/.svg and returns the PNG path."""
    _style()
    if moral is None or moral.empty or "S" not in moral or moral["S"].dropna().empty:
        return None
    from analysis import moral_figures, moral_metrics

    paths = moral_figures.plot_susceptibility_robustness(
        moral.assign(foundation="all"), out_dir / "mfq_s_vs_r", reference=moral_metrics.REPORTED)
    return next(p for p in paths if p.suffix == ".png")


FIGURES: dict[str, str] = {
    "harm_vs_self_assessment": "Harmfulness vs self-assessment, coloured by taxonomy label (bars: 95% bootstrap CIs)",
    "two_ai_bars": "Two-AI identification: fraction choosing the misaligned description",
    "recognition_by_bucket": "Output recognition: own output chosen, by its harm bucket",
    "prediction_error_by_score": "Score prediction: mean signed error by actual judge score",
    "self_assessment_heatmap": "Self-assessment by dimension and format",
    "mfq_s_vs_r": "MFQ moral susceptibility S vs robustness R, with the reference band",
}
