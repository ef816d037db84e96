"""Correlations, the association test, judge agreement and headline CIs on hand-built tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from em_persona.analysis.statistics import (
    association,
    cohen_kappa,
    correlations,
    harm_column,
    headline,
    judge_agreement,
    permutation_method,
)


def exact_p(x: list[float], y: list[float], ranks: bool = False) -> float:
    """Two-sided permutation p-value of Pearson's r (of the ranks when `ranks`), every pairing
    enumerated: twice the smaller one-sided p-value, capped at 1 (scipy's convention)."""
    from scipy.stats import rankdata

    a, b = (rankdata(x), rankdata(y)) if ranks else (np.asarray(x), np.asarray(y))
    observed = np.corrcoef(a, b)[0, 1]
    rs = np.array([np.corrcoef(a, np.asarray(perm))[0, 1] for perm in itertools.permutations(b)])
    less, greater = np.mean(rs <= observed + 1e-12), np.mean(rs >= observed - 1e-12)
    return float(min(1.0, 2 * min(less, greater)))


def bh(p: list[float]) -> list[float]:
    """Benjamini-Hochberg by hand: p_(i) * m / i, made monotone from the largest down, capped at 1."""
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adjusted[i] = running
    return adjusted.tolist()


def test_correlations_values_and_signs() -> None:
    per_model = pd.DataFrame(
        {
            "harm_bon": [0.1, 0.5, math.nan, 0.9],
            "harm_single": [0.05, 0.2, 0.4, 0.6],
            "sa_overall": [0.1, 0.4, 0.5, 0.9],
            "two_ai": [0.9, 0.6, 0.3, 0.0],
        },
        index=pd.Index(list("abcd"), name="model"),
    )
    harm = harm_column(per_model)
    assert harm.tolist() == [0.1, 0.5, 0.4, 0.9]  # best-of-N, single where best-of-N is missing
    corr = correlations(per_model).set_index(["x", "y"])
    r = corr.loc[("harm", "sa_overall")]
    assert r["n"] == 4
    assert r["pearson_r"] == pytest.approx(np.corrcoef(harm, per_model["sa_overall"])[0, 1])
    assert r["spearman_rho"] == pytest.approx(0.8)  # ranks 1,3,2,4 vs 1,2,3,4
    assert corr.loc[("sa_overall", "two_ai"), "spearman_rho"] == pytest.approx(-1.0)
    assert corr.loc[("harm", "recog_high"), "n"] == 0 and math.isnan(
        corr.loc[("harm", "recog_high"), "pearson_r"]
    )


def test_small_n_p_values_are_exact_permutation_tests() -> None:
    """4 models: a perfect rank correlation is 2 of the 24 pairings, p = 1/12, not the
    asymptotic p < 0.01 a t-approximation reports."""
    per_model = pd.DataFrame(
        {
            "harm_single": [0.05, 0.2, 0.4, 0.6],
            "sa_overall": [0.1, 0.4, 0.5, 0.9],
            "two_ai": [0.9, 0.6, 0.3, 0.0],
            "recog_high": [0.2, 0.9, 0.4, 0.5],
        },
        index=pd.Index(list("abcd"), name="model"),
    )
    corr = correlations(per_model).set_index(["x", "y"])
    row = corr.loc[("sa_overall", "two_ai")]
    assert row["spearman_p"] == pytest.approx(2 / 24)
    assert row["p_method"] == "exact permutation test (all 24 pairings)"
    cols = ["harm_single", "sa_overall", "two_ai", "recog_high"]
    names = {"harm_single": "harm"}
    for x, y in itertools.combinations(cols, 2):
        r = corr.loc[(names.get(x, x), names.get(y, y))]
        assert r["pearson_p"] == pytest.approx(exact_p(per_model[x].tolist(), per_model[y].tolist()))
        assert r["spearman_p"] == pytest.approx(
            exact_p(per_model[x].tolist(), per_model[y].tolist(), ranks=True)
        )
    # Benjamini-Hochberg over the 6 computed pairs (the sa_paper pairs are not measured)
    done = corr.dropna(subset=["pearson_p"])
    assert len(done) == 6
    assert done["pearson_p_bh"].tolist() == pytest.approx(bh(done["pearson_p"].tolist()))
    assert done["spearman_p_bh"].tolist() == pytest.approx(bh(done["spearman_p"].tolist()))


def test_many_models_use_seeded_permutations() -> None:
    rng = np.random.default_rng(3)
    per_model = pd.DataFrame(
        {"harm_single": rng.random(9), "sa_overall": rng.random(9)},
        index=pd.Index([f"m{i}" for i in range(9)], name="model"),
    )
    a = correlations(per_model).set_index(["x", "y"]).loc[("harm", "sa_overall")]
    b = correlations(per_model).set_index(["x", "y"]).loc[("harm", "sa_overall")]
    assert a["p_method"] == "permutation test (9999 random pairings, seed 0)"
    assert a["pearson_p"] == b["pearson_p"] and 0 < a["pearson_p"] <= 1  # deterministic
    assert permutation_method(7)[1] == "exact permutation test (all 5040 pairings)"


def test_every_uncomputed_cell_says_why() -> None:
    per_model = pd.DataFrame(
        {
            "harm_single": [0.1, 0.9, 0.5],
            "sa_overall": [0.5, 0.5, 0.5],
            "two_ai": [0.0, 1.0, math.nan],
            "recog_high": [math.nan] * 3,
        },
        index=pd.Index(list("abc"), name="model"),
    )
    corr = correlations(per_model).set_index(["x", "y"])
    assert corr.loc[("harm", "sa_overall"), "note"] == "sa_overall is constant"
    assert corr.loc[("harm", "two_ai"), "note"] == "n = 2 < 3 models with both values"
    assert corr.loc[("harm", "recog_high"), "note"] == "recog_high not measured"
    assert corr.loc[("sa_paper", "recog_high"), "note"] == "sa_paper not measured; recog_high not measured"
    blank = corr[corr["pearson_r"].isna()]
    assert len(blank) == len(corr) and (blank["note"].str.len() > 0).all()


def _tax(pairs: list[tuple[bool | None, bool | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": [f"m{i}" for i in range(len(pairs))],
            "harmful": [p[0] for p in pairs],
            "self_id_misaligned": [p[1] for p in pairs],
        }
    )


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
    from em_persona.analysis.report import association_text

    assert association_text(res) == (
        "Not computed: no model has both a harmfulness and a self-identification decision."
    )
    assert ", ," not in association_text(association(_tax([(True, True), (True, False)]))[1])


def test_kappa_comes_from_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.metrics
    from sklearn.metrics import cohen_kappa_score

    calls = []

    def spy(*args: object, **kwargs: object) -> float:
        calls.append(args)
        return cohen_kappa_score(*args, **kwargs)

    monkeypatch.setattr(sklearn.metrics, "cohen_kappa_score", spy)
    a, b = [True, True, False, False, True], [True, False, False, False, True]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b)) and len(calls) == 1


def test_undefined_agreement_says_why() -> None:
    rows = [
        {"model": "m", "sample_id": str(i), "epoch": 1, "grader": g, "harm_score": 5}
        for i in range(2)
        for g in ("ga", "gb")
    ]
    r = judge_agreement(pd.DataFrame(rows)).iloc[0]
    assert math.isnan(r["kappa"]) and math.isnan(r["spearman_rho"])
    assert r["note"] == (
        "kappa undefined: both judges call every answer harmful; "
        "Spearman not computed: n = 2 < 3 answers with both values"
    )


def test_kappa_and_judge_agreement() -> None:
    # 2x2: both yes 2, both no 1, a-only 1: po = 3/4, pa = 3/4, pb = 1/2, pe = 1/2 -> kappa 0.5
    assert cohen_kappa([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))
    rows = []
    for i, (a, b) in enumerate([(5, 5), (4, 5), (2, 1), (1, 1), (5, 2)]):
        rows.append({"model": "m", "sample_id": str(i), "epoch": 1, "grader": "ga", "harm_score": a})
        rows.append({"model": "m", "sample_id": str(i), "epoch": 1, "grader": "gb", "harm_score": b})
    rows.append(
        {"model": "m", "sample_id": "9", "epoch": 1, "grader": "ga", "harm_score": 5}
    )  # only one grader
    agree = judge_agreement(pd.DataFrame(rows))
    assert len(agree) == 1
    r = agree.iloc[0]
    assert (r["grader_a"], r["grader_b"], r["n"]) == ("ga", "gb", 5)
    # harmful (>3): a = 1,1,0,0,1  b = 1,1,0,0,0 -> po 4/5, pa 3/5, pb 2/5, pe .6*.4+.4*.6 = .48
    assert r["agreement"] == pytest.approx(0.8)
    assert r["kappa"] == pytest.approx((0.8 - 0.48) / (1 - 0.48))
    assert r["spearman_rho"] > 0


def test_headline_reads_ci_columns() -> None:
    per_model = pd.DataFrame(
        {
            "harm_bon": [0.5, math.nan],
            "harm_bon_lo": [0.4, math.nan],
            "harm_bon_hi": [0.6, math.nan],
            "harm_bon_n": [20, 0],
        },
        index=pd.Index(["a", "b"], name="model"),
    )
    head = headline(per_model, ["harm_bon", "sa_overall"])
    assert head.to_dict("records") == [
        {"model": "a", "metric": "harm_bon", "value": 0.5, "ci_lo": 0.4, "ci_hi": 0.6, "n": 20}
    ]
