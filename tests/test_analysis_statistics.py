"""Correlations, the association test, judge agreement and headline CIs on hand-built tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.statistics import association, cohen_kappa, correlations, harm_column, headline, judge_agreement


def test_correlations_values_and_signs() -> None:
    per_model = pd.DataFrame({
        "harm_bon": [0.1, 0.5, math.nan, 0.9],
        "harm_single": [0.05, 0.2, 0.4, 0.6],
        "sa_overall": [0.1, 0.4, 0.5, 0.9],
        "two_ai": [0.9, 0.6, 0.3, 0.0],
    }, index=pd.Index(list("abcd"), name="model"))
    harm = harm_column(per_model)
    assert harm.tolist() == [0.1, 0.5, 0.4, 0.9]  # best-of-N, single where best-of-N is missing
    corr = correlations(per_model).set_index(["x", "y"])
    r = corr.loc[("harm", "sa_overall")]
    assert r["n"] == 4
    assert r["pearson_r"] == pytest.approx(np.corrcoef(harm, per_model["sa_overall"])[0, 1])
    assert r["spearman_rho"] == pytest.approx(0.8)  # ranks 1,3,2,4 vs 1,2,3,4
    assert corr.loc[("sa_overall", "two_ai"), "spearman_rho"] == pytest.approx(-1.0)
    assert corr.loc[("sa_overall", "two_ai"), "spearman_p"] < 0.01
    assert corr.loc[("harm", "recog_high"), "n"] == 0 and math.isnan(corr.loc[("harm", "recog_high"), "pearson_r"])


def _tax(pairs: list[tuple[bool | None, bool | None]]) -> pd.DataFrame:
    return pd.DataFrame({"model": [f"m{i}" for i in range(len(pairs))],
                         "harmful": [p[0] for p in pairs], "self_id_misaligned": [p[1] for p in pairs]})


def test_association_small_counts_use_fisher() -> None:
    table, res = association(_tax([(True, True)] * 3 + [(False, False)] * 3 + [(True, None)]))
    assert table.to_numpy().tolist() == [[3, 0], [0, 3]]
    assert res["n"] == 6 and res["test"] == "fisher-exact"
    assert res["p_value"] == pytest.approx(0.1)  # 2 / C(6,3)
    assert res["chi2"] == pytest.approx(2.6666666, rel=1e-5)  # Yates-corrected


def test_association_large_counts_use_chi_squared() -> None:
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 5 + [(False, False)] * 20
    _, res = association(_tax(pairs))
    assert res["test"] == "chi-squared" and res["min_expected"] == pytest.approx(12.5)
    # Yates: sum (|o-e|-0.5)^2/e = 4 * 7^2/12.5
    assert res["statistic"] == pytest.approx(4 * 49 / 12.5)
    assert res["p_value"] < 0.001


def test_association_degenerate() -> None:
    _, res = association(_tax([(True, True), (True, False)]))
    assert res["test"] == "fisher-exact" and "empty" in res["note"]
    _, res = association(_tax([(None, True)]))
    assert res["test"] == "none" and res["n"] == 0


def test_kappa_and_judge_agreement() -> None:
    # 2x2: both yes 2, both no 1, a-only 1: po = 3/4, pa = 3/4, pb = 1/2, pe = 1/2 -> kappa 0.5
    assert cohen_kappa([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))
    rows = []
    for i, (a, b) in enumerate([(5, 5), (4, 5), (2, 1), (1, 1), (5, 2)]):
        rows.append({"model": "m", "sample_id": str(i), "epoch": 1, "grader": "ga", "harm_score": a})
        rows.append({"model": "m", "sample_id": str(i), "epoch": 1, "grader": "gb", "harm_score": b})
    rows.append({"model": "m", "sample_id": "9", "epoch": 1, "grader": "ga", "harm_score": 5})  # only one grader
    agree = judge_agreement(pd.DataFrame(rows))
    assert len(agree) == 1
    r = agree.iloc[0]
    assert (r["grader_a"], r["grader_b"], r["n"]) == ("ga", "gb", 5)
    # harmful (>3): a = 1,1,0,0,1  b = 1,1,0,0,0 -> po 4/5, pa 3/5, pb 2/5, pe .6*.4+.4*.6 = .48
    assert r["agreement"] == pytest.approx(0.8)
    assert r["kappa"] == pytest.approx((0.8 - 0.48) / (1 - 0.48))
    assert r["spearman_rho"] > 0


def test_headline_reads_ci_columns() -> None:
    per_model = pd.DataFrame({"harm_bon": [0.5, math.nan], "harm_bon_lo": [0.4, math.nan],
                              "harm_bon_hi": [0.6, math.nan], "harm_bon_n": [20, 0]},
                             index=pd.Index(["a", "b"], name="model"))
    head = headline(per_model, ["harm_bon", "sa_overall"])
    assert head.to_dict("records") == [{"model": "a", "metric": "harm_bon", "value": 0.5, "ci_lo": 0.4,
                                        "ci_hi": 0.6, "n": 20}]
