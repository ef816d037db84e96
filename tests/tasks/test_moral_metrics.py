"""S and R on hand-built rating frames, checked against numbers worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from em_persona.tasks.moral_metrics import (
    FOUNDATIONS,
    REPORTED,
    REPORTED_MEAN_CHANGE_INSECURE,
    SAMPLE_COLUMNS,
    band_position,
    compare_to_reference,
    foundation_of,
    metrics_by_model,
    read_reference_runs,
    relative_change,
    susceptibility_robustness,
)

# Three personas x items 1 (Harm/Care) and 2 (Fairness/Reciprocity).
CELLS = {
    (0, 1): [1, 3],  # mu 2,   sigma sqrt(2)
    (1, 1): [2, 2],  # mu 2,   sigma 0
    (2, 1): [4, 5],  # mu 4.5, sigma sqrt(1/2)
    (0, 2): [0, 0, 3],  # mu 1,   sigma sqrt(3)   (ss 6 / 2)
    (1, 2): [5, 5],  # mu 5,   sigma 0
    (2, 2): [3, 4],  # mu 3.5, sigma sqrt(1/2)
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
    from em_persona.tasks.moral_data import load_mfq_items

    items = load_mfq_items()
    assert [foundation_of(i["id"]) for i in items] == [i["foundation"] for i in items]
    assert set(FOUNDATIONS) == {i["foundation"] for i in items}
    with pytest.raises(ValueError, match="1-30"):
        foundation_of(31)


# --- the authors' published runs (synthetic CSVs in their layout) ----------------

HEADER = "persona_id,question_id,run_index,rating,failures,response,collected_at\n"
SELF_HEADER = "question_id,run_index,rating,failures,response,collected_at\n"


def _persona_csv(cells: dict[tuple[int, int], list[int]], extra: str = "") -> str:
    lines = [HEADER]
    for (p, q), values in cells.items():
        for r, x in enumerate(values, start=1):
            lines.append(f'{p},{q},{r},{x},0,"{x} - because,\nsaid over two lines",2025-10-28T11:20:15\n')
    return "".join(lines) + extra


def test_read_reference_runs_matches_hand_computation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "base").mkdir(parents=True)
    (data / "insecure-code").mkdir()
    # base/m: the CELLS of the tests above, plus an unparsed run (-1), a persona beyond the first 100
    # and a retried-then-parsed run (failures 2).
    base = dict(CELLS)
    (data / "base" / "m_temp01.csv").write_text(
        _persona_csv(base, extra="1,1,3,-1,3,no idea,x\n100,1,1,0,0,0,x\n2,2,3,4,2,4,x\n")
    )
    (data / "base" / "m_temp01_self.csv").write_text(
        SELF_HEADER + "1,1,5,0,5,x\n1,2,-1,4,nope,x\n2,1,0,1,0,x\n"
    )
    # insecure-code/m-misaligned: item 1 only, mus 0.5 and 5 -> S = 4.5/sqrt(2); sigmas 1/sqrt(3), 0 -> R = 2*sqrt(3)
    (data / "insecure-code" / "m-misaligned_temp01.csv").write_text(
        _persona_csv({(0, 1): [0, 1, 0, 1], (1, 1): [5, 5]})
    )
    (data / "insecure-code" / "m-misaligned_self.csv").write_text(SELF_HEADER + "1,1,2,0,2,x\n")
    (data / "base" / "m_temp01 2.csv").write_text("not,the,layout\n")  # a stray copy
    (data / "base" / "m_temp05.csv").write_text(HEADER)  # another temperature

    with pytest.warns(UserWarning, match=r"skipped 2 CSV file\(s\)"):
        df = read_reference_runs(data)
    assert list(df.columns) == [*SAMPLE_COLUMNS, "source"]
    assert set(df["source"]) == {"published"}
    assert set(df["model"]) == {"base/m", "insecure-code/m-misaligned"}
    assert df.attrs["unparseable"] == {"base/m": 2, "insecure-code/m-misaligned": 0}
    assert sorted(df.attrs["skipped_files"]) == ["base/m_temp01 2.csv", "base/m_temp05.csv"]
    selfs = df[df.persona_id == -1]
    assert set(selfs["condition"]) == {"self"} and set(df[df.persona_id >= 0]["condition"]) == {"persona"}
    assert sorted(zip(selfs.model, selfs.question_id, selfs.rating, strict=False)) == [
        ("base/m", 1, 5.0),
        ("base/m", 2, 0.0),
        ("insecure-code/m-misaligned", 1, 2.0),
    ]
    assert 100 not in set(df.persona_id)
    base_rows = df[(df.model == "base/m") & (df.persona_id >= 0)]
    assert len(base_rows) == 13 + 1  # CELLS plus the extra (2, 2, run 3) rating 4
    assert base_rows.loc[(base_rows.persona_id == 2) & (base_rows.run_index == 3), "failures"].item() == 2
    assert df["log"].iloc[0].startswith("base/m_temp01")

    table = metrics_by_model(df, by_foundation=True).set_index(["model", "foundation"])
    # base/m: item 2 of persona 2 is now {3, 4, 4}: mu 11/3, sigma 1/sqrt(3).
    mus_q2 = [1, 5, 11 / 3]
    s_q2 = float(np.std(mus_q2, ddof=1))
    assert table.loc[("base/m", "all"), "S"] == pytest.approx((S_Q1 + s_q2) / 2)
    sigmas = [*SIGMAS_Q1, math.sqrt(3), 0.0, 1 / math.sqrt(3)]
    assert table.loc[("base/m", "all"), "R"] == pytest.approx(6 / sum(sigmas))
    assert table.loc[("base/m", "Harm/Care"), "S"] == pytest.approx(S_Q1)
    assert table.loc[("insecure-code/m-misaligned", "all"), "S"] == pytest.approx(4.5 / math.sqrt(2))
    assert table.loc[("insecure-code/m-misaligned", "all"), "R"] == pytest.approx(2 * math.sqrt(3))
    # beside this project's own samples (samples_from_log's columns) in one table
    ours = frame(CELLS, model="vllm/ours").assign(foundation=lambda d: d.question_id.map(foundation_of))
    both = metrics_by_model(pd.concat([ours, df], ignore_index=True))
    assert set(both["model"]) == {"vllm/ours", "base/m", "insecure-code/m-misaligned"}
    cmp = compare_to_reference(both, base_model="base/m").set_index("model")
    assert cmp.loc["insecure-code/m-misaligned", "S_change"] == pytest.approx(
        (4.5 / math.sqrt(2)) / ((S_Q1 + s_q2) / 2) - 1
    )


def test_read_reference_runs_of_one_condition_folder(tmp_path: Path) -> None:
    folder = tmp_path / "secure-code"
    folder.mkdir()
    (folder / "m-secure_temp01.csv").write_text(_persona_csv({(0, 1): [1, 2], (1, 1): [3, 3]}))
    df = read_reference_runs(folder)
    assert set(df["model"]) == {"secure-code/m-secure"}
    assert susceptibility_robustness(df).loc["all", "S"] == pytest.approx(float(np.std([1.5, 3], ddof=1)))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("question_id,run_index,rating\n", r"m_temp01.csv:1: missing column\(s\) \['persona_id'\]"),
        ("", r"m_temp01.csv:1: empty file"),
        (
            HEADER + '0,1,1,3,0,"a\nb",x\nzero,1,2,3,0,3,x\n',
            r"m_temp01.csv:4: persona_id 'zero' is not an integer",
        ),
        (HEADER + "0,1,1,7,0,7,x\n", r"m_temp01.csv:2: rating 7 is out of range \(-1..5\)"),
        (HEADER + "0,31,1,3,0,3,x\n", r"m_temp01.csv:2: question_id 31 is out of range \(1..30\)"),
        (HEADER + "0,1,1,3,0\n", r"m_temp01.csv:2: 5 fields, the header has 7"),
        (
            HEADER + "0,1,1,3,0,3,x\n0,1,1,4,0,4,x\n",
            r"m_temp01.csv:3: duplicate run \(persona 0, item 1, run 1\); first at line 2",
        ),
        (HEADER + "0,1,1,3,x,3,x\n", r"m_temp01.csv:2: failures 'x' is not an integer"),
    ],
)
def test_read_reference_runs_reports_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "m_temp01.csv").write_text(body)
    with pytest.raises(ValueError, match=message):
        read_reference_runs(tmp_path)


def test_read_reference_runs_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_reference_runs(tmp_path / "absent")
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match=r"no <model>_temp01.csv"):
        read_reference_runs(tmp_path)
    (tmp_path / "c" / "m_temp01_self.csv").write_text(SELF_HEADER)
    (tmp_path / "c" / "m_self.csv").write_text(SELF_HEADER)
    with pytest.raises(ValueError, match=r"a second self file for c/m"):
        read_reference_runs(tmp_path)
