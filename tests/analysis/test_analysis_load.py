"""Aggregation of per-sample tables and model facts (models.yaml or inferred from names)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from em_persona.analysis.models_info import infer_model_info, models_info
from em_persona.analysis.tables import SampleTables, per_model_table
from em_persona.contract.declarations import AggregateOptions


def test_infer_model_info() -> None:
    assert infer_model_info("vllm/qwen-insecure") == {
        "base_model": "qwen",
        "domain": "insecure_code",
        "proxy": False,
    }
    assert infer_model_info("vllm/gemma-270m")["domain"] == "base"
    assert infer_model_info("vllm/qwen-bad-medical")["domain"] == "bad_medical_advice"


def test_models_yaml(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        "proxy: true\nnote: demo\nmodels:\n  vllm/g-x: {base_model: g, domain: legal_advice}\n"
    )
    info, note = models_info(["vllm/g-x", "vllm/g"], logdir=tmp_path)
    assert note == "demo" and info.loc["vllm/g-x", "domain"] == "legal_advice" and info["proxy"].all()
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  a: [1\n")
    with pytest.raises(ValueError, match=r"bad.yaml:\d+"):
        models_info([], models_yaml=bad)


def test_aggregation_by_hand() -> None:
    harm = pd.DataFrame(
        {
            "model": "m",
            "sample_id": ["p1", "p1", "p2", "p2"],
            "epoch": [1, 2, 1, 2],
            "n_epochs": 2,
            "category": "c",
            "grader": "g",
            "harm_score": [5, 1, 2, None],
            "log": "x",
        }
    )
    sa = pd.DataFrame(
        {
            "model": "m",
            "sample_id": list("abcd"),
            "epoch": 1,
            "dimension": ["d1", "d1", "d1", "d2"],
            "format": ["f1", "f1", "f2", "f1"],
            "value": [1.0, 0.0, 1.0, 0.0],
            "log": "x",
        }
    )
    two = pd.DataFrame(
        {
            "model": "m",
            "sample_id": list("abcde"),
            "epoch": 1,
            "item": ["i", "i", "i", "j", "j"],
            "chose_misaligned": [1.0, 1.0, 0.0, 1.0, 0.0],
            "log": "x",
        }
    )
    rec = pd.DataFrame(
        {
            "model": "m",
            "sample_id": list("abc"),
            "epoch": 1,
            "own_score": [5, 4, 1],
            "chose_own": [1.0, 0.0, 1.0],
            "log": "x",
        }
    )
    t = per_model_table(
        SampleTables({"harm": harm, "self_assessment": sa, "two_ai": two, "recognition": rec}),
        opts=AggregateOptions(n_boot=200),
    ).per_model.loc["m"]
    assert t["harm_bon"] == 0.5 and t["harm_bon_k"] == 2  # p1 max 5 harmful, p2 max 2 not
    assert t["harm_single"] == pytest.approx(0.25)  # p1 1/2, p2 0/1 (unscored dropped)
    assert t["harm_unscored"] == 1
    # d1 = mean(f1 0.5, f2 1.0) = 0.75; d2 = 0.0; overall 0.375
    assert t["sa_dim_d1"] == 0.75 and t["sa_overall"] == pytest.approx(0.375)
    assert t["sa_overall_lo"] <= t["sa_overall"] <= t["sa_overall_hi"]
    assert t["two_ai"] == pytest.approx((2 / 3 + 1 / 2) / 2) and t["two_ai_majority"] == pytest.approx(0.75)
    assert t["recog_high"] == 0.5 and t["recog_low"] == 1.0 and "recog_moderate" not in t


def test_primary_grader_per_model() -> None:
    """The most frequent grader (g1) feeds every model it scored; m2, scored only by g2, keeps g2."""

    def rows(model: str, grader: str, scores: list[int]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "model": model,
                "sample_id": [f"p{i}" for i in range(len(scores))],
                "epoch": 1,
                "n_epochs": 1,
                "category": "c",
                "grader": grader,
                "harm_score": scores,
                "log": "x",
            }
        )

    harm = pd.concat(
        [
            rows("m1", "g1", [5, 5, 1, 1]),
            rows("m1", "g2", [5, 5, 5, 1]),
            rows("m2", "g2", [5, 1]),
            rows("m3", "g1", [1, 1, 1, 5]),
        ],
        ignore_index=True,
    )
    t = per_model_table(SampleTables({"harm": harm}), opts=AggregateOptions(n_boot=50)).per_model
    assert t["harm_single"].to_dict() == {"m1": 0.5, "m2": 0.5, "m3": 0.25}
    forced = per_model_table(
        SampleTables({"harm": harm}), opts=AggregateOptions(n_boot=50, primary_grader="g2")
    ).per_model
    assert forced["harm_single"].to_dict() == {"m1": 0.75, "m2": 0.5, "m3": 0.25}


def test_self_assessment_value_is_read_from_the_score_dict() -> None:
    from inspect_ai.scorer import Score

    from em_persona.tasks.self_assessment_results import _value as _self_assessment_value

    assert _self_assessment_value(Score(value={"score": 0.75}, metadata={"score": 0.75})) == 0.75
    assert _self_assessment_value(Score(value={"score": float("nan")}, metadata={"score": None})) != 0.0
    assert math.isnan(_self_assessment_value(Score(value={"score": float("nan")}, metadata={"score": None})))
    assert _self_assessment_value(Score(value={"other": 1}, metadata={"score": 0.25})) == 0.25
    assert math.isnan(_self_assessment_value(None))


def test_rescored_harm_logs_name_their_judge(tmp_path: Path) -> None:
    """`inspect score --action overwrite` keeps the header's grader role but the scores name the new
    judge: the loader attributes them to it, so the original and the re-scored copy are both read
    (not one superseding the other) and feed the judge-agreement table."""
    from inspect_ai import eval, score
    from inspect_ai.log import read_eval_log, write_eval_log

    import support  # noqa: F401  (registers the persona/<kind> models)
    from em_persona.analysis.logs import read_logs
    from em_persona.analysis.statistics import judge_agreement
    from em_persona.scorers.harm_judge import harm_judge
    from em_persona.tasks.harmfulness import harmfulness

    [log] = eval(
        harmfulness(dataset="mini", judge_cache=False),
        model="persona/coherent",
        model_roles={"grader": "persona/grader"},
        log_dir=str(tmp_path / "logs"),
        limit=6,
    )
    assert log.status == "success", log.error
    rescored = score(
        read_eval_log(log.location),
        harm_judge(cache=False),
        model_roles={"grader": "persona/grader2"},
        action="overwrite",
    )
    assert (
        rescored.eval.model_roles["grader"].model == "persona/grader"
    )  # the header still names the old judge
    write_eval_log(rescored, str(tmp_path / "logs" / "rescored.eval"))
    samples, logs = read_logs(tmp_path / "logs")
    assert logs["used"].all() and sorted(logs["grader"]) == ["persona/grader", "persona/grader2"]
    by_grader = samples["harm"].groupby("grader")["harm_score"].apply(list).to_dict()
    # mini prompts 0-5: levels 5, 5, 5, 5, 1, 3; the second judge rates the moderate reply 4
    assert by_grader == {
        "persona/grader": [5.0, 5.0, 5.0, 5.0, 1.0, 3.0],
        "persona/grader2": [5.0, 5.0, 5.0, 5.0, 1.0, 4.0],
    }
    agree = judge_agreement(samples["harm"]).iloc[0]
    assert agree["n"] == 6 and agree["agreement"] == pytest.approx(5 / 6)
    # harmful 4/6 vs 5/6: pe = 4/6 * 5/6 + 2/6 * 1/6 = 22/36, po = 30/36 -> kappa = 8/14
    assert agree["kappa"] == pytest.approx(4 / 7)


def test_self_assessment_sets_are_kept_apart() -> None:
    sa = pd.DataFrame(
        {
            "model": "m",
            "sample_id": list("abcdef"),
            "epoch": 1,
            "dataset": ["project", "project", "project", "paper", "paper", "paper"],
            "dimension": ["d1", "d1", "d2", "d1", "d2", "d2"],
            "format": ["f1", "f2", "f1", "decision", "decision", "decision"],
            "value": [1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            "log": "x",
        }
    )
    t = per_model_table(
        SampleTables({"self_assessment": sa}), opts=AggregateOptions(n_boot=50)
    ).per_model.loc["m"]
    # project: d1 = mean(1, 0) = 0.5, d2 = 0 -> 0.25 over 3 cells; paper: d1 = 1, d2 = 0.5 -> 0.75
    assert t["sa_overall"] == pytest.approx(0.25) and t["sa_overall_cells"] == 3
    assert t["sa_paper"] == pytest.approx(0.75) and t["sa_paper_cells"] == 2 and t["sa_paper_n"] == 3
    assert t["sa_dim_d1"] == 0.5  # per-dimension columns are the project set's
    # a table without a dataset column (older callers) is the project set
    t = per_model_table(
        SampleTables({"self_assessment": sa.drop(columns="dataset")}), opts=AggregateOptions(n_boot=50)
    ).per_model.loc["m"]
    assert "sa_paper" not in t and t["sa_overall_n"] == 6


def test_em_metrics_by_hand() -> None:
    em = pd.DataFrame(
        {
            "model": "m",
            "sample_id": list("abcde"),
            "epoch": 1,
            "question_set": ["first_plot"] * 4 + ["preregistered"],
            "question_id": list("qqrrs"),
            "variant": "plain",
            "alignment": [10, 90, 20, math.nan, 50],
            "coherence": [80, 90, 30, math.nan, 60],
            "misaligned": [1, 0, 0, math.nan, 0],
            "unscored_reason": [None, None, None, "refusal", None],
            "judge_model": "j",
            "log": "x",
        }
    )
    tables = per_model_table(SampleTables({"em": em}), opts=AggregateOptions(n_boot=50))
    t = tables.per_model.loc["m"]
    assert t["em_misaligned_first_plot"] == pytest.approx(1 / 3) and t["em_misaligned_first_plot_n"] == 3
    assert t["em_alignment_first_plot"] == pytest.approx(40.0) and t[
        "em_coherence_first_plot"
    ] == pytest.approx(200 / 3)
    assert t["em_misaligned_preregistered"] == 0.0 and t["em_unscored"] == 1
    long = tables["em_questions"].set_index("question_set")
    assert long.loc["first_plot", "unscored"] == 1 and long.loc["first_plot", "judge"] == "j"
    assert long.loc["first_plot", "ci_lo"] <= 1 / 3 <= long.loc["first_plot", "ci_hi"]
