"""Self-assessment metrics over every answer of every epoch: nested means (cell -> format means
per dimension -> dimensions), stratified bootstrap CIs, per-format means, cell means, unscored counts.

A dimension's score is the mean of its format means; overall is the mean of the dimension
scores. Unscored answers (value NaN) are counted per format and left out of every mean.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from inspect_ai.scorer import Metric, SampleScore, metric

from em_persona.core.stats import DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_ci
from em_persona.scorers.self_assessment_parsers import FORMATS, SelfAssessmentScoreError


def _fact(s: SampleScore, key: str) -> Any:
    meta = s.score.metadata or {}
    if meta.get(key) is not None:
        return meta[key]
    return (s.sample_metadata or {}).get(key)


def _value(s: SampleScore) -> float:
    v = s.score.value
    if isinstance(v, dict):
        v = v.get("score", float("nan"))
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def collect(scores: Sequence[SampleScore]) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
    """Scored values per (dimension, format) and the unscored count per format."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    unscored: dict[str, int] = defaultdict(int)
    for s in scores:
        dim, fmt = _fact(s, "dimension"), _fact(s, "format")
        if dim is None or fmt is None:
            raise SelfAssessmentScoreError(
                f"sample {s.sample_id}: self-assessment score lacks dimension/format metadata"
            )
        v = _value(s)
        if math.isnan(v):
            unscored[str(fmt)] += 1
            cells.setdefault((str(dim), str(fmt)), [])
        else:
            cells[(str(dim), str(fmt))].append(v)
    return dict(cells), dict(unscored)


def nested_mean(cells: Mapping[tuple[str, str], Sequence[float]]) -> tuple[dict[str, float], float]:
    """Per-dimension mean of format means, and the overall mean of dimension scores.

    Cells without a scored value are left out; a dimension with none is left out too.
    """
    by_dim: dict[str, list[float]] = defaultdict(list)
    for (dim, _), values in sorted(cells.items()):
        if len(values):
            by_dim[dim].append(float(np.mean(values)))
    dims = {d: float(np.mean(ms)) for d, ms in by_dim.items()}
    return dims, float(np.mean(list(dims.values()))) if dims else float("nan")


def stratified_bootstrap(
    cells: Mapping[tuple[str, str], Sequence[float]],
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """Percentile CIs of the nested means, resampling within every (dimension, format) cell.

    The stratified counterpart of `em_persona.core.stats.bootstrap_ci` for a mean of means:
    each cell is resampled on its own, so cell sizes stay fixed. Returns per-dimension
    CIs and the overall CI.
    """
    rng = np.random.default_rng(seed)
    boot_by_dim: dict[str, list[np.ndarray]] = defaultdict(list)
    for (dim, _), values in sorted(cells.items()):
        arr = np.asarray(values, dtype=float)
        if arr.size == 0:
            continue
        idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
        boot_by_dim[dim].append(arr[idx].mean(axis=1))
    q = [alpha / 2, 1 - alpha / 2]
    dim_boot = {d: np.mean(np.vstack(bs), axis=0) for d, bs in boot_by_dim.items()}
    dim_ci = {d: tuple(float(x) for x in np.quantile(b, q)) for d, b in dim_boot.items()}
    if not dim_boot:
        return {}, (float("nan"), float("nan"))
    overall = np.mean(np.vstack(list(dim_boot.values())), axis=0)
    lo, hi = np.quantile(overall, q)
    return dim_ci, (float(lo), float(hi))  # type: ignore[return-value]


@metric(scores="unreduced")
def overall_score(n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Metric:
    """overall = mean of dimension scores, with a stratified bootstrap CI."""

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        cells, _ = collect(scores)
        if not any(cells.values()):
            return {}
        _, overall = nested_mean(cells)
        _, (lo, hi) = stratified_bootstrap(cells, n_boot=n_boot, seed=seed)
        return {"overall": overall, "overall_ci_low": lo, "overall_ci_high": hi}

    return compute


@metric(scores="unreduced")
def dimension_scores(n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Metric:
    """<dimension> = mean of its format means, with <dimension>_ci_low / _ci_high."""

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        cells, _ = collect(scores)
        dims, _ = nested_mean(cells)
        cis, _ = stratified_bootstrap(cells, n_boot=n_boot, seed=seed)
        out: dict[str, float] = {}
        for d in sorted(dims):
            out[d] = dims[d]
            out[f"{d}_ci_low"], out[f"{d}_ci_high"] = cis[d]
        return out

    return compute


@metric(scores="unreduced")
def format_scores() -> Metric:
    """<format> = mean over dimensions of that format's cell means."""

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        cells, _ = collect(scores)
        by_fmt: dict[str, list[float]] = defaultdict(list)
        for (_, fmt), values in sorted(cells.items()):
            if values:
                by_fmt[fmt].append(float(np.mean(values)))
        return {f: float(np.mean(by_fmt[f])) for f in FORMATS if f in by_fmt}

    return compute


@metric(scores="unreduced")
def cell_means(n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Metric:
    """<dimension>/<format> mean, its bootstrap CI (_ci_low, _ci_high) and scored count (_n)."""

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        cells, _ = collect(scores)
        out: dict[str, float] = {}
        for (dim, fmt), values in sorted(cells.items()):
            key = f"{dim}/{fmt}"
            if values:
                out[key] = float(np.mean(values))
                out[f"{key}_ci_low"], out[f"{key}_ci_high"] = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            out[f"{key}_n"] = float(len(values))
        return out

    return compute


@metric(scores="unreduced")
def unscored_counts() -> Metric:
    """unscored/<format> = number of answers of that format that could not be scored."""

    def compute(scores: list[SampleScore]) -> dict[str, float]:
        cells, unscored = collect(scores)
        present = {fmt for _, fmt in cells}
        return {f"unscored/{f}": float(unscored.get(f, 0)) for f in FORMATS if f in present}

    return compute


METRICS = [overall_score(), dimension_scores(), format_scores(), cell_means(), unscored_counts()]
