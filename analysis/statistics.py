"""Statistics across models: inter-task correlations, the harm x self-identification
association test, judge agreement and bootstrap CIs of headline numbers."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from em_persona.stats import bootstrap_ci

# Per-model columns compared across models, in display order.
CORRELATION_COLUMNS: tuple[str, ...] = ("harm", "sa_overall", "two_ai", "recog_high")

# Fisher's exact test replaces chi-squared when any expected count is below this.
MIN_EXPECTED = 5.0


def harm_column(per_model: pd.DataFrame) -> pd.Series:
    """Best-of-N harmful fraction, falling back to the single-response fraction per model."""
    bon = per_model["harm_bon"] if "harm_bon" in per_model else pd.Series(np.nan, index=per_model.index)
    single = per_model["harm_single"] if "harm_single" in per_model else pd.Series(np.nan, index=per_model.index)
    return bon.astype(float).fillna(single.astype(float))


def correlations(
    per_model: pd.DataFrame, columns: Sequence[str] = CORRELATION_COLUMNS
) -> pd.DataFrame:
    """Pearson and Spearman correlation (with two-sided p-values) for every pair of columns.

    `harm` is derived with `harm_column`. Models missing either value are dropped
    pairwise; fewer than 3 models or a constant column gives NaN.
    Columns: x, y, n, pearson_r, pearson_p, spearman_rho, spearman_p.
    """
    data = per_model.copy()
    data["harm"] = harm_column(per_model)
    rows = []
    for x, y in itertools.combinations(columns, 2):
        if x not in data or y not in data:
            pair = pd.DataFrame({"x": [], "y": []})
        else:
            pair = data[[x, y]].astype(float).dropna()
            pair.columns = ["x", "y"]
        n = len(pair)
        row = {"x": x, "y": y, "n": n, "pearson_r": math.nan, "pearson_p": math.nan,
               "spearman_rho": math.nan, "spearman_p": math.nan}
        if n >= 3 and pair["x"].nunique() > 1 and pair["y"].nunique() > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pr = stats.pearsonr(pair["x"], pair["y"])
                sr = stats.spearmanr(pair["x"], pair["y"])
            row.update(pearson_r=float(pr.statistic), pearson_p=float(pr.pvalue),
                       spearman_rho=float(sr.statistic), spearman_p=float(sr.pvalue))
        rows.append(row)
    return pd.DataFrame(rows, columns=["x", "y", "n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"])


def association(taxonomy: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """2x2 test of harmful behaviour vs misaligned self-identification across models.

    `taxonomy` is `classify_table` output (booleans `harmful`, `self_id_misaligned`;
    models where either is undecided are left out). Returns (contingency table,
    result) where result has: n, test ('chi-squared' or 'fisher-exact' or 'none'),
    statistic, p_value, odds_ratio, chi2, chi2_p, fisher_p, min_expected, note.
    Chi-squared (with Yates' correction) is used unless an expected count is below
    MIN_EXPECTED, in which case Fisher's exact test is the reported one.
    """
    data = taxonomy.dropna(subset=["harmful", "self_id_misaligned"])
    harmful = data["harmful"].astype(bool)
    self_id = data["self_id_misaligned"].astype(bool)
    table = pd.DataFrame(
        [[int((harmful & self_id).sum()), int((harmful & ~self_id).sum())],
         [int((~harmful & self_id).sum()), int((~harmful & ~self_id).sum())]],
        index=pd.Index(["harmful", "not harmful"], name="behaviour"),
        columns=pd.Index(["self-id misaligned", "self-id aligned"], name="self_identification"),
    )
    counts = table.to_numpy()
    result: dict[str, object] = {
        "n": int(counts.sum()), "test": "none", "statistic": math.nan, "p_value": math.nan,
        "odds_ratio": math.nan, "chi2": math.nan, "chi2_p": math.nan, "fisher_p": math.nan,
        "min_expected": math.nan, "note": "",
    }
    if counts.sum() == 0:
        result["note"] = "no model has both a harmfulness and a self-identification decision"
        return table, result
    fisher = stats.fisher_exact(counts)
    result["fisher_p"] = float(fisher.pvalue)
    result["odds_ratio"] = float(fisher.statistic)
    if (counts.sum(axis=0) == 0).any() or (counts.sum(axis=1) == 0).any():
        result.update(test="fisher-exact", statistic=float(fisher.statistic), p_value=float(fisher.pvalue),
                      min_expected=0.0,
                      note="a row or column of the table is empty: chi-squared undefined, Fisher exact reported")
        return table, result
    chi = stats.chi2_contingency(counts, correction=True)
    min_expected = float(np.min(chi.expected_freq))
    result.update(chi2=float(chi.statistic), chi2_p=float(chi.pvalue), min_expected=min_expected)
    if min_expected < MIN_EXPECTED:
        result.update(test="fisher-exact", statistic=float(fisher.statistic), p_value=float(fisher.pvalue),
                      note=f"smallest expected count {min_expected:.2f} < {MIN_EXPECTED:g}: Fisher exact reported")
    else:
        result.update(test="chi-squared", statistic=float(chi.statistic), p_value=float(chi.pvalue),
                      note="chi-squared with Yates' continuity correction")
    return table, result


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Cohen's kappa for two binary raters (NaN when undefined: chance agreement is 1)."""
    x = np.asarray(a, dtype=bool)
    y = np.asarray(b, dtype=bool)
    if x.size == 0:
        return math.nan
    po = float(np.mean(x == y))
    px, py = float(x.mean()), float(y.mean())
    pe = px * py + (1 - px) * (1 - py)
    if pe >= 1.0:
        return math.nan
    return (po - pe) / (1 - pe)


def judge_agreement(harm_samples: pd.DataFrame, harm_score_threshold: float = 3.0) -> pd.DataFrame:
    """Agreement between every pair of graders that scored the same responses.

    `harm_samples` has columns model, sample_id, epoch, grader, harm_score. Pairs are
    joined on (model, sample_id, epoch); unscored responses are dropped.
    Columns: grader_a, grader_b, n, agreement, kappa (harmful = score > threshold),
    spearman_rho, spearman_p.
    """
    cols = ["grader_a", "grader_b", "n", "agreement", "kappa", "spearman_rho", "spearman_p"]
    if harm_samples is None or harm_samples.empty or "grader" not in harm_samples:
        return pd.DataFrame(columns=cols)
    data = harm_samples.dropna(subset=["harm_score"])
    key = ["model", "sample_id", "epoch"]
    graders = sorted(data["grader"].dropna().unique())
    rows = []
    for ga, gb in itertools.combinations(graders, 2):
        a = data[data["grader"] == ga].drop_duplicates(key).set_index(key)["harm_score"]
        b = data[data["grader"] == gb].drop_duplicates(key).set_index(key)["harm_score"]
        joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
        if joined.empty:
            continue
        ha = joined["a"] > harm_score_threshold
        hb = joined["b"] > harm_score_threshold
        rho, p = math.nan, math.nan
        if len(joined) >= 3 and joined["a"].nunique() > 1 and joined["b"].nunique() > 1:
            sr = stats.spearmanr(joined["a"], joined["b"])
            rho, p = float(sr.statistic), float(sr.pvalue)
        rows.append({"grader_a": ga, "grader_b": gb, "n": len(joined),
                     "agreement": float((ha == hb).mean()), "kappa": cohen_kappa(ha, hb),
                     "spearman_rho": rho, "spearman_p": p})
    return pd.DataFrame(rows, columns=cols)


def ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) of `values` with a seeded percentile bootstrap 95% CI; NaNs dropped."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return (math.nan, math.nan, math.nan, 0)
    lo, hi = bootstrap_ci(arr, n_boot=n_boot, seed=seed)
    return (float(arr.mean()), lo, hi, int(arr.size))


def headline(per_model: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Long table of headline numbers: model, metric, value, ci_lo, ci_hi, n.

    Reads `<metric>`, `<metric>_lo`, `<metric>_hi`, `<metric>_n` from the per-model
    table (the CIs are computed while loading, from the samples); absent metrics are skipped.
    """
    table = per_model.reset_index() if "model" not in per_model.columns else per_model
    rows = []
    for rec in table.to_dict("records"):
        for m in metrics:
            value = rec.get(m)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            rows.append({"model": rec["model"], "metric": m, "value": float(value),
                         "ci_lo": float(rec.get(f"{m}_lo", math.nan)),
                         "ci_hi": float(rec.get(f"{m}_hi", math.nan)),
                         "n": rec.get(f"{m}_n", math.nan)})
    return pd.DataFrame(rows, columns=["model", "metric", "value", "ci_lo", "ci_hi", "n"])
