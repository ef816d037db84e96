"""S and R on hand-built rating frames, checked against numbers worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.moral_metrics import (
    FOUNDATIONS,
    REPORTED,
    REPORTED_MEAN_CHANGE_INSECURE,
    band_position,
    compare_to_reference,
    foundation_of,
    load_raw_samples_csv,
    metrics_by_model,
    relative_change,
    susceptibility_robustness,
)

# Three personas x items 1 (Harm/Care) and 2 (Fairness/Reciprocity).
CELLS = {
    (0, 1): [1, 3],      # mu 2,   sigma sqrt(2)
    (1, 1): [2, 2],      # mu 2,   sigma 0
    (2, 1): [4, 5],      # mu 4.5, sigma sqrt(1/2)
    (0, 2): [0, 0, 3],   # mu 1,   sigma sqrt(3)   (ss 6 / 2)
    (1, 2): [5, 5],      # mu 5,   sigma 0
    (2, 2): [3, 4],      # mu 3.5, sigma sqrt(1/2)
}
# Item 1: mus 2, 2, 4.5 -> ss 25/6, var 25/12 -> std 5/sqrt(12)
# Item 2: mus 1, 5, 3.5 -> ss 49/6, var 49/12 -> std 7/sqrt(12)
S_Q1 = 5 / math.sqrt(12)
S_Q2 = 7 / math.sqrt(12)
SIGMAS_Q1 = [math.sqrt(2), 0.0, math.sqrt(0.5)]
SIGMAS_Q2 = [math.sqrt(3), 0.0, math.sqrt(0.5)]


def frame(cells: dict[tuple[int, int], list[float]], **extra: object) -> pd.DataFrame:
    rows = [
        {"persona_id": p, "question_id": q, "run_index": r, "rating": x, **extra}
        for (p, q), values in cells.items()
        for r, x in enumerate(values, start=1)
    ]
    return pd.DataFrame(rows)


def test_overall_s_and_r_match_hand_computation() -> None:
    res = susceptibility_robustness(frame(CELLS))
    assert list(res.index) == ["all"]
    row = res.loc["all"]
    assert row["S"] == pytest.approx((S_Q1 + S_Q2) / 2)  # = sqrt(3)
    assert row["S"] == pytest.approx(math.sqrt(3))
    sigma_mean = (sum(SIGMAS_Q1) + sum(SIGMAS_Q2)) / 6
    assert row["sigma_mean"] == pytest.approx(sigma_mean)
    assert row["R"] == pytest.approx(6 / (2 * math.sqrt(2) + math.sqrt(3)))
    assert (row["n_personas"], row["n_items"], row["n_cells"], row["n_cells_sigma"]) == (3, 2, 6, 6)
    assert row["n_ratings"] == 13
    assert np.isnan(row["S_se"]) and np.isnan(row["R_se"])  # no bootstrap asked


def test_ddof_one_at_both_levels() -> None:
    row = susceptibility_robustness(frame(CELLS)).loc["all"]
    # With ddof=0 the item stds would be 5/6 and 7/6 and cell sigmas 1, 0, 0.5, sqrt(2), 0, 0.5.
    ddof0_s = (5 / 6 + 7 / 6) / 2
    ddof0_r = 1 / ((1 + 0 + 0.5 + math.sqrt(2) + 0 + 0.5) / 6)
    assert row["S"] != pytest.approx(ddof0_s)
    assert row["R"] != pytest.approx(ddof0_r)


def test_per_foundation_rows() -> None:
    res = susceptibility_robustness(frame(CELLS), by_foundation=True)
    assert list(res.index) == ["all", "Harm/Care", "Fairness/Reciprocity"]
    assert res.loc["Harm/Care", "S"] == pytest.approx(S_Q1)
    assert res.loc["Harm/Care", "R"] == pytest.approx(3 / sum(SIGMAS_Q1))
    assert res.loc["Fairness/Reciprocity", "S"] == pytest.approx(S_Q2)
    assert res.loc["Fairness/Reciprocity", "R"] == pytest.approx(3 / sum(SIGMAS_Q2))
    assert res.loc["Harm/Care", "n_items"] == 1


def test_foundation_column_wins_over_derivation() -> None:
    df = frame(CELLS, foundation="Purity/Sanctity")
    res = susceptibility_robustness(df, by_foundation=True)
    assert list(res.index) == ["all", "Purity/Sanctity"]
    assert res.loc["Purity/Sanctity", "S"] == pytest.approx(math.sqrt(3))


def test_missing_cells_nan_ratings_and_self_rows() -> None:
    cells = dict(CELLS)
    cells[(3, 1)] = [5]  # one run only: has a mu, no sigma
    df = frame(cells)
    extra = pd.DataFrame(
        [
            {"persona_id": 3, "question_id": 2, "run_index": 1, "rating": np.nan},  # unparsed
            {"persona_id": -1, "question_id": 1, "run_index": 1, "rating": 0},  # self condition
            {"persona_id": -1, "question_id": 1, "run_index": 2, "rating": 5},
        ]
    )
    row = susceptibility_robustness(pd.concat([df, extra], ignore_index=True)).loc["all"]
    # Item 1 now has mus 2, 2, 4.5, 5: mean 3.375, ss 7.6875, var 2.5625 -> std 1.6007810...
    s_q1 = math.sqrt(7.6875 / 3)
    assert row["S"] == pytest.approx((s_q1 + S_Q2) / 2)
    # Persona 3 has no item-2 rating: dropped from item 2's std only. Its one-run cell has no sigma.
    assert row["R"] == pytest.approx(6 / (2 * math.sqrt(2) + math.sqrt(3)))
    assert (row["n_personas"], row["n_cells"], row["n_cells_sigma"]) == (4, 7, 6)


def test_item_rated_by_one_persona_is_left_out_of_s() -> None:
    cells = dict(CELLS)
    cells[(0, 3)] = [1, 2]  # item 3: a single persona, std undefined
    row = susceptibility_robustness(frame(cells)).loc["all"]
    assert row["S"] == pytest.approx(math.sqrt(3))
    assert row["sigma_mean"] == pytest.approx((sum(SIGMAS_Q1) + sum(SIGMAS_Q2) + math.sqrt(0.5)) / 7)


def test_all_runs_identical_gives_infinite_robustness() -> None:
    row = susceptibility_robustness(frame({(0, 1): [2, 2], (1, 1): [4, 4]})).loc["all"]
    assert row["S"] == pytest.approx(math.sqrt(2))
    assert row["R"] == math.inf


def test_bootstrap_reproducible_and_seed_sensitive() -> None:
    df = frame(CELLS)
    a = susceptibility_robustness(df, by_foundation=True, n_boot=300, seed=7)
    b = susceptibility_robustness(df, by_foundation=True, n_boot=300, seed=7)
    c = susceptibility_robustness(df, by_foundation=True, n_boot=300, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert a.loc["all", "S_se"] != c.loc["all", "S_se"]
    row = a.loc["all"]
    assert row["S_se"] == pytest.approx(math.hypot(row["S_se_personas"], row["S_se_runs"]))
    assert row["R_se"] == pytest.approx(row["sigma_se"] / row["sigma_mean"] ** 2)
    assert 0 < row["S_se_personas"] < 3 and 0 < row["S_se_runs"] < 3
    # point estimates do not depend on the bootstrap
    assert row["S"] == pytest.approx(math.sqrt(3))


def test_bootstrap_se_shrinks_with_more_personas() -> None:
    rng = np.random.default_rng(0)
    def synthetic(n_personas: int) -> pd.DataFrame:
        cells = {(p, q): list(rng.integers(0, 6, size=5)) for p in range(n_personas) for q in (1, 2, 3)}
        return frame(cells)
    small = susceptibility_robustness(synthetic(5), n_boot=400).loc["all", "S_se_personas"]
    large = susceptibility_robustness(synthetic(80), n_boot=400).loc["all", "S_se_personas"]
    assert large < small


def test_bad_input_is_reported() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        susceptibility_robustness(pd.DataFrame({"persona_id": [0], "rating": [1]}))
    dup = pd.concat([frame(CELLS), frame({(0, 1): [1]})], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate"):
        susceptibility_robustness(dup)
    with pytest.raises(ValueError, match="0-5"):
        susceptibility_robustness(frame({(0, 1): [7, 1], (1, 1): [1, 1]}))
    with pytest.raises(ValueError, match="metrics_by_model"):
        susceptibility_robustness(pd.concat([frame(CELLS, model="a"), frame(CELLS, model="b")]))


def test_metrics_by_model_and_reference_comparison() -> None:
    base = frame(CELLS, model="base")
    # Fine-tune: every item-1 mean moved apart -> larger S.
    tuned = frame({**CELLS, (2, 1): [5, 5], (1, 1): [0, 0]}, model="tuned")
    table = metrics_by_model(pd.concat([base, tuned], ignore_index=True), by_foundation=True)
    assert set(table["model"]) == {"base", "tuned"}
    assert len(table) == 2 * 3
    cmp = compare_to_reference(table, base_model="base").set_index("model")
    assert cmp.loc["base", "S_change"] == 0
    s_tuned = table[(table.model == "tuned") & (table.foundation == "all")]["S"].iloc[0]
    assert cmp.loc["tuned", "S_change"] == pytest.approx((s_tuned - math.sqrt(3)) / math.sqrt(3))
    assert cmp.loc["base", "S_band"] == "above"
    with pytest.raises(ValueError, match="not among"):
        compare_to_reference(table, base_model="missing")


def test_relative_change_and_band() -> None:
    assert relative_change(1.5, 1.0) == pytest.approx(0.5)
    assert relative_change(2.0, 4.0) == pytest.approx(-0.5)
    np.testing.assert_allclose(relative_change(np.array([2.0, 3.0]), np.array([1.0, 2.0])), [1.0, 0.5])
    assert relative_change(1.0, 0.0) == math.inf
    s = relative_change(pd.Series([1.1, 0.9]), 1.0)
    assert list(s.round(6)) == [0.1, -0.1]
    assert band_position(0.65) == "below"
    assert band_position(0.66) == "within"
    assert band_position(0.83) == "within"
    assert band_position(0.84) == "above"
    assert band_position(float("nan")) == "unknown"


def test_reported_table_matches_protocol() -> None:
    assert len(REPORTED) == 12
    gpt4o = REPORTED.set_index(["model", "condition"])
    assert gpt4o.loc[("GPT-4o", "insecure"), "S"] == 1.68
    assert gpt4o.loc[("Qwen3-235B", "base"), "R"] == 20.75
    # The reported mean insecure-vs-base changes follow from the table (to rounding).
    base = REPORTED[REPORTED.condition == "base"].set_index("model")
    insecure = REPORTED[REPORTED.condition == "insecure"].set_index("model")
    s_change = relative_change(insecure["S"], base["S"]).mean()
    r_change = relative_change(insecure["R"], base["R"]).mean()
    assert s_change == pytest.approx(REPORTED_MEAN_CHANGE_INSECURE["S"], abs=0.01)
    assert r_change == pytest.approx(REPORTED_MEAN_CHANGE_INSECURE["R"], abs=0.01)


def test_foundation_rotation_matches_pinned_items(mirror: Path, data_home: Path) -> None:
    from em_persona.registry import load_mfq_items

    items = load_mfq_items()
    assert [foundation_of(i["id"]) for i in items] == [i["foundation"] for i in items]
    assert set(FOUNDATIONS) == {i["foundation"] for i in items}
    with pytest.raises(ValueError, match="1-30"):
        foundation_of(31)


RAW_CSV = """persona_id,question_id,run_index,rating,failures,response,collected_at
0,1,1,3,0,3,2025-10-28T11:20:15
0,1,2,1,0,"1 - not very relevant, because
it spans lines",2025-10-28T11:20:16
1,1,1,4,0,4,2025-10-28T11:20:17
1,1,2,-1,2,no idea,2025-10-28T11:20:18
1,1,3,5,1,5,2025-10-28T11:20:19
100,1,1,0,0,0,2025-10-28T11:20:20
"""


def test_load_raw_samples_csv(tmp_path: Path) -> None:
    path = tmp_path / "gpt-4o_temp01.csv"
    path.write_text(RAW_CSV)
    df = load_raw_samples_csv(path)
    assert list(df.columns) == ["persona_id", "question_id", "run_index", "rating", "failures", "foundation"]
    # persona 100 dropped (papers use 0-99), the -1 failure dropped
    assert sorted(zip(df.persona_id, df.run_index)) == [(0, 1), (0, 2), (1, 1), (1, 3)]
    assert df.loc[df.run_index == 3, "failures"].item() == 1
    row = susceptibility_robustness(df).loc["all"]
    # mus 2 and 4.5 -> std = 2.5/sqrt(2); sigmas sqrt(2) and sqrt(1/2)
    assert row["S"] == pytest.approx(2.5 / math.sqrt(2))
    assert row["R"] == pytest.approx(2 / (math.sqrt(2) + math.sqrt(0.5)))

    self_path = tmp_path / "gpt-4o_temp01_self.csv"
    self_path.write_text("question_id,run_index,rating,failures,response,collected_at\n1,1,5,0,5,x\n")
    assert load_raw_samples_csv(self_path)["persona_id"].tolist() == [-1]

    bad = tmp_path / "bad.csv"
    bad.write_text("persona_id,question_id,run_index,rating\n0,1,1,3\nzero,1,2,3\n")
    with pytest.raises(ValueError, match=r"bad.csv:3"):
        load_raw_samples_csv(bad)
    with pytest.raises(ValueError, match="missing column"):
        (tmp_path / "short.csv").write_text("question_id,rating\n1,2\n")
        load_raw_samples_csv(tmp_path / "short.csv")
