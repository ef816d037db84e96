"""Statistics across models: inter-task correlations, the harm x self-identification
association test, judge agreement and bootstrap CIs of headline numbers.

A study compares few models (a handful to a few dozen), so every p-value here is exact or
from a permutation test (Fisher's exact test, permutation correlations), correlations over
many pairs carry Benjamini-Hochberg adjusted p-values, and every value that cannot be
computed says why in a `note`."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from em_persona.core.stats import bootstrap_ci

# Per-model columns compared across models, in display order.
CORRELATION_COLUMNS: tuple[str, ...] = ("harm", "sa_overall", "sa_paper", "two_ai", "recog_high")

# Fisher's exact test replaces chi-squared when any expected count is below this.
MIN_EXPECTED = 5.0

N_PERMUTATIONS = 9999
"""Permutations behind a correlation p-value; with n! <= this every pairing is enumerated (exact)."""

MIN_PAIRS = 3
"""Fewest models (or answers) a correlation is computed on."""

CORRELATION_TABLE = [
    "x",
    "y",
    "n",
    "pearson_r",
    "pearson_p",
    "pearson_p_bh",
    "spearman_rho",
    "spearman_p",
    "spearman_p_bh",
    "p_method",
    "note",
]


def harm_column(per_model: pd.DataFrame) -> pd.Series:
    """Best-of-N harmful fraction, falling back to the single-response fraction per model."""
    bon = per_model["harm_bon"] if "harm_bon" in per_model else pd.Series(np.nan, index=per_model.index)
    single = (
        per_model["harm_single"] if "harm_single" in per_model else pd.Series(np.nan, index=per_model.index)
    )
    return bon.astype(float).fillna(single.astype(float))


def permutation_method(n: int, seed: int = 0) -> tuple[stats.PermutationMethod, str]:
    """The scipy permutation method for n pairs and how to describe it: exact (every pairing) when
    n! <= N_PERMUTATIONS, else N_PERMUTATIONS seeded random pairings."""
    method = stats.PermutationMethod(n_resamples=N_PERMUTATIONS, rng=np.random.default_rng(seed))
    if math.factorial(n) <= N_PERMUTATIONS:
        return method, f"exact permutation test (all {math.factorial(n)} pairings)"
    return method, f"permutation test ({N_PERMUTATIONS} random pairings, seed {seed})"


def correlation_test(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, object]:
    """Pearson r and Spearman rho with two-sided permutation p-values (twice the smaller one-sided
    p-value, scipy's convention; Spearman: Pearson on ranks, so both use the same exact / seeded
    permutation distribution). The caller checks n and constancy (`why_not`)."""
    method, described = permutation_method(len(x), seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr = stats.pearsonr(x, y, method=method)
        method, _ = permutation_method(len(x), seed)
        sr = stats.pearsonr(stats.rankdata(x), stats.rankdata(y), method=method)
    return {
        "pearson_r": float(pr.statistic),
        "pearson_p": min(1.0, float(pr.pvalue)),
        "spearman_rho": float(sr.statistic),
        "spearman_p": min(1.0, float(sr.pvalue)),
        "p_method": described,
    }


def why_not(x: pd.Series, y: pd.Series, names: tuple[str, str], unit: str = "models") -> str:
    """Why a correlation of x and y cannot be computed ("" when it can)."""
    if len(x) < MIN_PAIRS:
        return f"n = {len(x)} < {MIN_PAIRS} {unit} with both values"
    constant = [name for name, s in zip(names, (x, y), strict=False) if s.nunique() <= 1]
    return "; ".join(f"{name} is constant" for name in constant)


def bh_adjust(p: pd.Series) -> pd.Series:
    """Benjamini-Hochberg adjusted p-values over the non-missing entries (scipy false_discovery_control)."""
    out = pd.Series(np.nan, index=p.index, dtype=float)
    present = p.dropna()
    if not present.empty:
        out[present.index] = stats.false_discovery_control(present.to_numpy(dtype=float), method="bh")
    return out


def correlations(
    per_model: pd.DataFrame, columns: Sequence[str] = CORRELATION_COLUMNS, seed: int = 0
) -> pd.DataFrame:
    """Pearson and Spearman correlation for every pair of columns, across models.

    `harm` is derived with `harm_column`. Models missing either value are dropped pairwise.
    With few models the usual asymptotic p-values are wrong, so p-values come from a permutation
    test (exact when every pairing can be enumerated, else seeded). `*_p_bh` are the
    Benjamini-Hochberg adjusted p-values over all the pairs computed (many pairs are tested).
    A pair that cannot be computed has NaN statistics and says why in `note`.
    Columns: CORRELATION_TABLE.
    """
    data = per_model.copy()
    data["harm"] = harm_column(per_model)
    rows = []
    for x, y in itertools.combinations(columns, 2):
        row: dict[str, object] = {
            "x": x,
            "y": y,
            "n": 0,
            "pearson_r": math.nan,
            "pearson_p": math.nan,
            "spearman_rho": math.nan,
            "spearman_p": math.nan,
            "p_method": "",
            "note": "",
        }
        absent = [c for c in (x, y) if c not in data or data[c].isna().all()]
        if absent:
            row["note"] = "; ".join(f"{c} not measured" for c in absent)
            rows.append(row)
            continue
        pair = data[[x, y]].astype(float).dropna()
        row["n"] = len(pair)
        row["note"] = why_not(pair[x], pair[y], (x, y))
        if not row["note"]:
            row.update(correlation_test(pair[x].to_numpy(), pair[y].to_numpy(), seed))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["pearson_p_bh"] = bh_adjust(table["pearson_p"])
    table["spearman_p_bh"] = bh_adjust(table["spearman_p"])
    return table[CORRELATION_TABLE]


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
        [
            [int((harmful & self_id).sum()), int((harmful & ~self_id).sum())],
            [int((~harmful & self_id).sum()), int((~harmful & ~self_id).sum())],
        ],
        index=pd.Index(["harmful", "not harmful"], name="behaviour"),
        columns=pd.Index(["self-id misaligned", "self-id aligned"], name="self_identification"),
    )
    counts = table.to_numpy()
    result: dict[str, object] = {
        "n": int(counts.sum()),
        "test": "none",
        "statistic": math.nan,
        "p_value": math.nan,
        "odds_ratio": math.nan,
        "chi2": math.nan,
        "chi2_p": math.nan,
        "fisher_p": math.nan,
        "min_expected": math.nan,
        "note": "",
    }
    if counts.sum() == 0:
        result["note"] = "no model has both a harmfulness and a self-identification decision"
        return table, result
    fisher = stats.fisher_exact(counts)
    result["fisher_p"] = float(fisher.pvalue)
    result["odds_ratio"] = float(fisher.statistic)
    if (counts.sum(axis=0) == 0).any() or (counts.sum(axis=1) == 0).any():
        result.update(
            test="fisher-exact",
            statistic=float(fisher.statistic),
            p_value=float(fisher.pvalue),
            min_expected=0.0,
            note="a row or column of the table is empty: chi-squared undefined, Fisher exact reported",
        )
        return table, result
    chi = stats.chi2_contingency(counts, correction=True)
    min_expected = float(np.min(chi.expected_freq))
    result.update(chi2=float(chi.statistic), chi2_p=float(chi.pvalue), min_expected=min_expected)
    if min_expected < MIN_EXPECTED:
        result.update(
            test="fisher-exact",
            statistic=float(fisher.statistic),
            p_value=float(fisher.pvalue),
            note=f"smallest expected count {min_expected:.2f} < {MIN_EXPECTED:g}: Fisher exact reported",
        )
    else:
        result.update(
            test="chi-squared",
            statistic=float(chi.statistic),
            p_value=float(chi.pvalue),
            note="chi-squared with Yates' continuity correction",
        )
    return table, result


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Cohen's kappa of two binary raters (sklearn.metrics.cohen_kappa_score); NaN when undefined
    (no answers, or both raters used a single class)."""
    from sklearn.metrics import cohen_kappa_score

    x = np.asarray(a, dtype=bool)
    y = np.asarray(b, dtype=bool)
    if x.size == 0 or (len(set(x.tolist()) | set(y.tolist())) < 2):
        return math.nan
    return float(cohen_kappa_score(x, y, labels=[False, True]))


def _kappa_note(a: pd.Series, b: pd.Series) -> str:
    if a.nunique() <= 1 and b.nunique() <= 1 and bool(a.iloc[0]) == bool(b.iloc[0]):
        return f"kappa undefined: both judges call every answer {'harmful' if a.iloc[0] else 'not harmful'}"
    return ""


AGREEMENT_TABLE = [
    "grader_a",
    "grader_b",
    "n",
    "agreement",
    "kappa",
    "spearman_rho",
    "spearman_p",
    "p_method",
    "note",
]


def judge_agreement(
    harm_samples: pd.DataFrame, harm_score_threshold: float = 3.0, seed: int = 0
) -> pd.DataFrame:
    """Agreement between every pair of graders that scored the same responses.

    `harm_samples` has columns model, sample_id, epoch, grader, harm_score. Pairs are
    joined on (model, sample_id, epoch); unscored responses are dropped.
    Columns: AGREEMENT_TABLE: agreement and Cohen's kappa on harmful (score > threshold),
    Spearman rho of the scores with a permutation p-value; `note` says why a cell is empty.
    """
    if harm_samples is None or harm_samples.empty or "grader" not in harm_samples:
        return pd.DataFrame(columns=AGREEMENT_TABLE)
    data = harm_samples.dropna(subset=["harm_score"])
    key = ["model", "sample_id", "epoch"]
    graders = sorted(data["grader"].dropna().unique())
    rows = []
    for ga, gb in itertools.combinations(graders, 2):
        a = data[data["grader"] == ga].drop_duplicates(key).set_index(key)["harm_score"]
        b = data[data["grader"] == gb].drop_duplicates(key).set_index(key)["harm_score"]
        joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").astype(float)
        if joined.empty:
            continue
        ha = joined["a"] > harm_score_threshold
        hb = joined["b"] > harm_score_threshold
        row: dict[str, object] = {
            "grader_a": ga,
            "grader_b": gb,
            "n": len(joined),
            "agreement": float((ha == hb).mean()),
            "kappa": cohen_kappa(ha, hb),
            "spearman_rho": math.nan,
            "spearman_p": math.nan,
            "p_method": "",
        }
        notes = [_kappa_note(ha, hb)]
        reason = why_not(joined["a"], joined["b"], (f"{ga} score", f"{gb} score"), unit="answers")
        if reason:
            notes.append(f"Spearman not computed: {reason}")
        else:
            test = correlation_test(joined["a"].to_numpy(), joined["b"].to_numpy(), seed)
            row.update(
                spearman_rho=test["spearman_rho"], spearman_p=test["spearman_p"], p_method=test["p_method"]
            )
        row["note"] = "; ".join(n for n in notes if n)
        rows.append(row)
    return pd.DataFrame(rows, columns=AGREEMENT_TABLE)


def ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float, int]:
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
            rows.append(
                {
                    "model": rec["model"],
                    "metric": m,
                    "value": float(value),
                    "ci_lo": float(rec.get(f"{m}_lo", math.nan)),
                    "ci_hi": float(rec.get(f"{m}_hi", math.nan)),
                    "n": rec.get(f"{m}_n", math.nan),
                }
            )
    return pd.DataFrame(rows, columns=["model", "metric", "value", "ci_lo", "ci_hi", "n"])
