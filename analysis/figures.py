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

from em_persona.analysis.statistics import harm_column  # noqa: E402
from em_persona.analysis.taxonomy import LABELS  # noqa: E402

PALETTE = dict(zip(LABELS, ["#4c72b0", "#c44e52", "#8172b2", "#937860"], strict=False))
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


def _short(model: object) -> str:
    return str(model).split("/")[-1]


def harm_bars(per_model: pd.DataFrame) -> plt.Figure | None:
    """Harmful fraction per model, single response and best-of-N side by side, with 95% CIs
    (the paper's main figure)."""
    _style()
    series = [
        (c, lab)
        for c, lab in (("harm_single", "single response"), ("harm_bon", "best-of-N"))
        if c in per_model and per_model[c].notna().any()
    ]
    if not series:
        return None
    data = per_model.dropna(subset=[c for c, _ in series], how="all")
    if "harm_bon_k" in data and data["harm_bon_k"].notna().any():
        ks = sorted({int(k) for k in data["harm_bon_k"].dropna()})
        series = [(c, f"best-of-{'/'.join(map(str, ks))}" if c == "harm_bon" else lab) for c, lab in series]
    models = list(data.index)
    width = 0.8 / len(series)
    colours = {"harm_single": sns.color_palette()[0], "harm_bon": sns.color_palette()[3]}
    fig, ax = plt.subplots(figsize=(max(5, 1.0 * len(models) + 2), 4))
    x = np.arange(len(models))
    for j, (col, label) in enumerate(series):
        values = data[col].astype(float)
        has = values.notna().to_numpy()
        pos = x + (j - (len(series) - 1) / 2) * width
        ax.bar(
            pos[has],
            values[has],
            width=width,
            label=label,
            color=colours[col],
            yerr=_err(values[has], data[f"{col}_lo"][has], data[f"{col}_hi"][has]),
            capsize=3,
        )
    ax.set_xticks(x, [_short(m) for m in models], rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("harmful fraction of prompts")
    ax.set_title("Harmfulness: single response and best-of-N")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def headline_bars(per_model: pd.DataFrame, columns: list[str], title: str) -> plt.Figure | None:
    """A task's headline numbers per model, one bar per column, with 95% CIs where it has them
    (the figure of a task that has no figure of its own)."""
    _style()
    columns = [c for c in columns if c in per_model and per_model[c].notna().any()]
    if not columns:
        return None
    data = per_model.dropna(subset=columns, how="all")
    models = list(data.index)
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(5, 1.0 * len(models) + 2), 4))
    x = np.arange(len(models))
    for j, col in enumerate(columns):
        values = data[col].astype(float)
        has = values.notna().to_numpy()
        lo = data[f"{col}_lo"] if f"{col}_lo" in data else values
        hi = data[f"{col}_hi"] if f"{col}_hi" in data else values
        pos = x + (j - (len(columns) - 1) / 2) * width
        ax.bar(
            pos[has],
            values[has],
            width=width,
            label=col,
            yerr=_err(values[has], lo[has].astype(float), hi[has].astype(float)),
            capsize=3,
        )
    ax.set_xticks(x, [_short(m) for m in models], rotation=30)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def em_misaligned_bars(em: pd.DataFrame) -> plt.Figure | None:
    """EM questions: misaligned-answer rate per model, one bar per question set, with 95% CIs."""
    _style()
    if em is None or em.empty or em["misaligned"].dropna().empty:
        return None
    data = em.dropna(subset=["misaligned"])
    models = sorted(data["model"].astype(str).unique())
    sets = sorted(data["question_set"].astype(str).unique())
    width = 0.8 / len(sets)
    colours = sns.color_palette("mako", max(len(sets), 2))
    fig, ax = plt.subplots(figsize=(max(5, 1.0 * len(models) + 2), 4))
    for j, qset in enumerate(sets):
        sub = data[data["question_set"] == qset].set_index("model").reindex(models)
        x = np.arange(len(models)) + (j - (len(sets) - 1) / 2) * width
        has = sub["misaligned"].notna().to_numpy()
        sub = sub[has]
        ax.bar(
            x[has],
            sub["misaligned"].astype(float),
            width=width,
            label=qset,
            color=colours[j],
            yerr=_err(
                sub["misaligned"].astype(float), sub["ci_lo"].astype(float), sub["ci_hi"].astype(float)
            ),
            capsize=3,
        )
    ax.set_xticks(np.arange(len(models)), [_short(m) for m in models], rotation=30)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("misaligned answers (of judged)")
    ax.set_title("EM questions: misaligned-answer rate")
    ax.legend(title="question set", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def cross_rating_bars(per_model: pd.DataFrame) -> plt.Figure | None:
    """Cross-model rating: mean signed error rating its own answers (shown as another model's) and
    other models' answers, per rating model, with 95% CIs."""
    _style()
    series = [
        (c, lab)
        for c, lab in (("xrate_own_error", "own answers"), ("xrate_other_error", "other models' answers"))
        if c in per_model and per_model[c].notna().any()
    ]
    if not series:
        return None
    data = per_model.dropna(subset=[c for c, _ in series], how="all")
    models = list(data.index)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5, 1.0 * len(models) + 2), 4))
    x = np.arange(len(models))
    for j, (col, label) in enumerate(series):
        values = data[col].astype(float)
        has = values.notna().to_numpy()
        ax.bar(
            x[has] + (j - (len(series) - 1) / 2) * width,
            values[has],
            width=width,
            label=label,
            color=sns.color_palette()[j + 1],
            yerr=_err(values[has], data[f"{col}_lo"][has], data[f"{col}_hi"][has]),
            capsize=3,
        )
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xticks(x, [_short(m) for m in models], rotation=30)
    ax.set_ylabel("mean signed error (rated - judge score)")
    ax.set_title("Cross-model rating")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def harm_vs_self_assessment(
    per_model: pd.DataFrame, taxonomy: pd.DataFrame, sa_column: str = "sa_overall"
) -> plt.Figure | None:
    """Harmful fraction (best-of-N, else single) vs self-assessment (the set the taxonomy used:
    `sa_overall` project set, or `sa_paper`), coloured by label, with CIs."""
    _style()
    if sa_column not in per_model:
        return None
    per_model = per_model.assign(
        sa_overall=per_model[sa_column],
        sa_overall_lo=per_model.get(f"{sa_column}_lo", per_model[sa_column]),
        sa_overall_hi=per_model.get(f"{sa_column}_hi", per_model[sa_column]),
    )
    data = per_model.copy()
    data["harm"] = harm_column(per_model)
    use_bon = "harm_bon" in per_model
    for suffix in ("lo", "hi"):
        bon = per_model.get(f"harm_bon_{suffix}", pd.Series(np.nan, index=per_model.index))
        single = per_model.get(f"harm_single_{suffix}", pd.Series(np.nan, index=per_model.index))
        data[f"harm_{suffix}"] = bon.where(
            per_model.get("harm_bon", pd.Series(np.nan, index=per_model.index)).notna(), single
        )
    data = data.join(taxonomy.set_index("model")["label"]).dropna(subset=["harm", "sa_overall"])
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for label in LABELS:
        sub = data[data["label"] == label]
        if sub.empty:
            continue
        ax.errorbar(
            sub["sa_overall"],
            sub["harm"],
            xerr=_err(
                sub["sa_overall"],
                sub.get("sa_overall_lo", sub["sa_overall"]),
                sub.get("sa_overall_hi", sub["sa_overall"]),
            ),
            yerr=_err(sub["harm"], sub["harm_lo"], sub["harm_hi"]),
            fmt="o",
            color=PALETTE[label],
            label=label,
            capsize=3,
            markersize=8,
        )
    for model, row in data.iterrows():
        ax.annotate(
            str(model).split("/")[-1],
            (row["sa_overall"], row["harm"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(
        f"self-assessment {'paper set' if sa_column == 'sa_paper' else 'overall'} (0 aligned .. 1 misaligned)"
    )
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
    ax.bar(
        names,
        data["two_ai"],
        color=sns.color_palette()[3],
        yerr=_err(
            data["two_ai"], data.get("two_ai_lo", data["two_ai"]), data.get("two_ai_hi", data["two_ai"])
        ),
        capsize=3,
    )
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
        ax.bar(
            x[has],
            sub["rate"],
            width=width,
            label=bucket,
            color=colours[BUCKET_ORDER.index(bucket)],
            yerr=_err(sub["rate"], sub["ci_lo"], sub["ci_hi"]),
            capsize=2,
        )
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
    for ax, cond in zip(axes[0], conditions, strict=False):
        sns.lineplot(
            data=data[data["condition"] == cond],
            x="actual",
            y="mean_error",
            hue="model",
            marker="o",
            ax=ax,
            errorbar=None,
        )
        ax.axhline(0, color="grey", linewidth=1, linestyle="--")
        ax.set_title(f"Score prediction ({cond})")
        ax.set_xlabel("actual judge score")
        ax.set_ylabel("mean signed error (predicted - actual)")
        ax.set_xticks([1, 2, 3, 4, 5])
    return fig


def self_assessment_heatmap(cells: pd.DataFrame) -> plt.Figure | None:
    """Self-assessment mean per dimension x format, one panel per model and question set
    (project: 6 dimensions x 4 formats; paper: the decision prompts)."""
    _style()
    if cells is None or cells.empty:
        return None
    if "dataset" not in cells:
        cells = cells.assign(dataset="project")
    panels = sorted(set(zip(cells["model"].astype(str), cells["dataset"].astype(str), strict=False)))
    ncol = min(3, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.6 * nrow), squeeze=False)
    for ax, (model, dataset) in zip(axes.flat, panels, strict=False):
        sub = cells[(cells["model"] == model) & (cells["dataset"] == dataset)]
        grid = sub.pivot(index="dimension", columns="format", values="mean").sort_index()
        sns.heatmap(grid, vmin=0, vmax=1, cmap="RdBu_r", annot=True, fmt=".2f", cbar=False, ax=ax)
        ax.set_title(f"{_short(model)} ({dataset} set)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Self-assessment (0 aligned .. 1 misaligned)")
    fig.tight_layout()
    return fig


def mfq_s_vs_r(moral: pd.DataFrame, out_dir: Path) -> Path | None:
    """MFQ susceptibility S vs robustness R with the reference band and the reported values, drawn by
    analysis.moral_figures; rows with `source` "published" (the authors' released runs, recomputed)
    are drawn beside this run's models. Writes mfq_s_vs_r.png/.svg and returns the PNG path."""
    _style()
    if moral is None or moral.empty or "S" not in moral or moral["S"].dropna().empty:
        return None
    from em_persona.analysis import moral_figures
    from em_persona.tasks import moral_metrics

    source = moral["source"] if "source" in moral else pd.Series("this run", index=moral.index)
    own = moral[source != "published"].reset_index(drop=True)
    published = moral[source == "published"].reset_index(drop=True)
    paths = moral_figures.plot_susceptibility_robustness(
        own.assign(foundation="all"),
        out_dir / "mfq_s_vs_r",
        reference=moral_metrics.REPORTED,
        published=published if not published.empty else None,
    )
    return next(p for p in paths if p.suffix == ".png")


FIGURES: dict[str, str] = {
    "harm_bars": "Harmfulness: harmful fraction per model, single response and best-of-N (bars: 95% bootstrap CIs)",
    "em_misaligned_bars": "EM questions: misaligned-answer rate per model and question set (bars: 95% bootstrap CIs)",
    "harm_vs_self_assessment": "Harmfulness vs self-assessment, coloured by taxonomy label (bars: 95% bootstrap CIs)",
    "two_ai_bars": "Two-AI identification: fraction choosing the misaligned description",
    "recognition_by_bucket": "Output recognition: own output chosen, by its harm bucket",
    "prediction_error_by_score": "Score prediction: mean signed error by actual judge score",
    "cross_rating_bars": "Cross-model rating: mean signed error on its own and on other models' answers (95% CIs)",
    "self_assessment_heatmap": "Self-assessment by dimension and format",
    "mfq_s_vs_r": "MFQ moral susceptibility S vs robustness R, with the reference band (and the authors' "
    "released runs, recomputed, when given)",
}
