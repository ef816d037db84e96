"""Small statistics shared by task metrics and the analysis package."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_N_BOOT = 2000
DEFAULT_SEED = 0


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: str = "mean",
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (or median) of `values`; NaNs are dropped.

    Returns (nan, nan) for an empty input and (x, x) for a single value.
    """
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return (float("nan"), float("nan"))
    if arr.size == 1:
        return (float(arr[0]), float(arr[0]))
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
    stats = np.median(arr[idx], axis=1) if statistic == "median" else np.mean(arr[idx], axis=1)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))
