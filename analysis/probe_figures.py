"""Figures for the activation probes (PNG and SVG), one function per figure.

Inputs are the tables of :mod:`analysis.probes` (``probe_cv``, ``probe_cosine``,
``probe_transfer`` as DataFrames).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

TASK_TITLES = {
    "harm": "harmful response (score > 3)",
    "self_assessment": "misaligned self-assessment (> 0.5)",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically; close the figure."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        target = stem.with_suffix(f".{ext}")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{ext}", dir=target.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(target)
    _plt().close(fig)
    return paths


def auroc_by_layer(cv: pd.DataFrame, stem: Path) -> list[Path]:
    """Cross-validated AUROC (mean +- std over folds) by layer; one panel per task."""
    plt = _plt()
    tasks = [t for t in TASK_TITLES if t in set(cv["task"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False, sharey=True)
    styles = {"last_prompt": "-", "mean_response": "--"}
    models = sorted(cv["model"].unique())
    colours = dict(zip(models, _palette(len(models)), strict=False))
    for ax, task in zip(axes[0], tasks, strict=False):
        sub = cv[cv["task"] == task]
        for (model, pooling), g in sub.groupby(["model", "pooling"], sort=True):
            g = g.sort_values("layer")
            ax.errorbar(
                g["layer"],
                g["auroc_mean"],
                yerr=g["auroc_std"],
                label=f"{model} ({pooling})",
                color=colours[model],
                linestyle=styles.get(pooling, ":"),
                marker="o",
                capsize=3,
            )
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(TASK_TITLES[task])
        ax.set_xlabel("layer")
        ax.set_xticks(sorted(cv["layer"].unique()))
        ax.set_ylim(0.3, 1.02)
    axes[0][0].set_ylabel("probe AUROC (5-fold CV)")
    handles: dict[str, object] = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=False):
            handles.setdefault(label, h)
    fig.legend(
        list(handles.values()), list(handles), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5)
    )
    return _save(fig, stem)


def cosine_by_layer(cos: pd.DataFrame, stem: Path) -> list[Path]:
    """Cosine between the harm and self-assessment probe directions by layer, per model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"last_prompt": "-", "mean_response": "--"}
    models = sorted(cos["model"].unique())
    colours = dict(zip(models, _palette(len(models)), strict=False))
    for (model, pooling), g in cos.groupby(["model", "pooling"], sort=True):
        g = g.sort_values("layer")
        ax.plot(
            g["layer"],
            g["cosine"],
            label=f"{model} ({pooling})",
            color=colours[model],
            linestyle=styles.get(pooling, ":"),
            marker="o",
        )
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(sorted(cos["layer"].unique()))
    ax.set_ylim(-1.02, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine(harm direction, self-assessment direction)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, stem)


def transfer_heatmaps(transfer: pd.DataFrame, stem: Path, pooling: str) -> list[Path]:
    """Train-model x test-model AUROC, one panel per (task, layer), for one pooling."""
    import seaborn as sns

    plt = _plt()
    sub = transfer[transfer["pooling"] == pooling]
    tasks = [t for t in TASK_TITLES if t in set(sub["task"])]
    layers = sorted(sub["layer"].unique())
    models = sorted(set(sub["train_model"]) | set(sub["test_model"]))
    size = 1.0 + 0.6 * len(models)
    fig, axes = plt.subplots(
        len(tasks),
        len(layers),
        figsize=(size * len(layers) + 1, size * len(tasks) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for r, task in enumerate(tasks):
        for c, layer in enumerate(layers):
            g = sub[(sub["task"] == task) & (sub["layer"] == layer)]
            grid = g.pivot(index="train_model", columns="test_model", values="auroc").reindex(
                index=models, columns=models
            )
            sns.heatmap(
                grid.astype(float),
                ax=axes[r][c],
                vmin=0.0,
                vmax=1.0,
                cmap="RdBu_r",
                center=0.5,
                annot=len(models) <= 8,
                fmt=".2f",
                cbar=c == len(layers) - 1,
                square=True,
                mask=np.isnan(grid.to_numpy(dtype=float)),
            )
            axes[r][c].set_title(f"{task}, layer {layer}", fontsize=9)
            axes[r][c].set_xlabel("test model" if r == len(tasks) - 1 else "")
            axes[r][c].set_ylabel("train model" if c == 0 else "")
    fig.suptitle(f"probe transfer AUROC ({pooling}; diagonal = 5-fold CV)")
    return _save(fig, stem)


def _palette(n: int) -> list:
    import seaborn as sns

    return sns.color_palette("tab10" if n <= 10 else "husl", n)


def write_probe_figures(
    cv: pd.DataFrame, cos: pd.DataFrame, transfer: pd.DataFrame, folder: Path
) -> dict[str, list[Path]]:
    """Every probe figure whose table has rows; returns ``{figure: [png, svg, ...]}``."""
    folder = Path(folder)
    out: dict[str, list[Path]] = {}
    if not cv.empty:
        out["auroc_by_layer"] = auroc_by_layer(cv, folder / "probe_auroc_by_layer")
    if not cos.empty:
        out["cosine_by_layer"] = cosine_by_layer(cos, folder / "probe_cosine_by_layer")
    if not transfer.empty:
        paths: list[Path] = []
        for pooling in sorted(transfer["pooling"].unique()):
            paths += transfer_heatmaps(transfer, folder / f"probe_transfer_{pooling}", pooling)
        out["transfer"] = paths
    return out
