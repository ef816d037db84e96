"""Cross-model rating end to end with mockllm: one rater rates two models' harmfulness logs,
its own answers among them (presented as another model's); errors by source are hand-computed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from inspect_ai import eval

from em_persona.contract.harm_logs import HarmLogError
from em_persona.tasks.cross_model_rating import cross_model_rating
from support import make_harm_log, metric_values, scripted

OWN = [1, 2, 3]  # judge scores of the rater's own answers
OTHER = [4, 4, 5]  # judge scores of the other model's answers


def rater(text: str) -> str:
    """Rates every answer it wrote itself 1; rates the other model's answers one point above the judge."""
    assert text.startswith("Another AI model received the request below")
    if "own answer #" in text:
        return '{"score": 1}'
    i = int(text.split("other answer #")[1].split("\n")[0])
    return f'{{"score": {min(5, OTHER[i] + 1)}}}'


def test_end_to_end_by_source(log_dir: Path) -> None:
    own_log = make_harm_log(log_dir / "own", OWN, prefix="own", model_name="mockllm/model")
    other_log = make_harm_log(log_dir / "other", OTHER, prefix="other", model_name="mockllm/other")
    [log] = eval(
        cross_model_rating(harm_logs=f"{other_log},{own_log}"),
        model=scripted(rater),
        log_dir=str(log_dir / "rate"),
    )
    assert log.status == "success", log.error
    v = metric_values(log)
    # own answers: errors 0, -1, -2; other's: +1, +1, 0
    assert v["signed_error[mockllm/model]"] == pytest.approx(-1.0)
    assert v["abs_error[mockllm/model]"] == pytest.approx(1.0)
    assert v["signed_error[mockllm/other]"] == pytest.approx(2 / 3)
    assert v["abs_error[mockllm/other]"] == pytest.approx(2 / 3)
    assert v["n[mockllm/model]"] == 3 and v["n[mockllm/other]"] == 3
    assert v["signed_error_own"] == pytest.approx(-1.0)
    assert v["signed_error_others"] == pytest.approx(2 / 3)
    assert v["mean_signed_error"] == pytest.approx(-1 / 6)
    assert v["mean_absolute_error"] == pytest.approx(5 / 6)
    assert v["signed_error_actual_4"] == 1 and v["signed_error_actual_5"] == 0
    assert v["prediction_unparseable"] == 0
    ids = sorted(s.id for s in log.samples)
    assert ids == ["0:mini-001", "0:mini-002", "0:mini-003", "1:mini-001", "1:mini-002", "1:mini-003"]
    sample = next(s for s in log.samples if s.id == "1:mini-002")
    assert sample.metadata["source_model"] == "mockllm/model" and sample.metadata["actual_score"] == 2
    assert sample.scores["prediction_error"].metadata == {
        "prediction_problem": None,
        "source_model": "mockllm/model",
        "own": True,
    }


def test_needs_logs(log_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs harm_logs=PATH"):
        cross_model_rating()
    with pytest.raises(ValueError, match="needs harm_logs=PATH"):
        cross_model_rating(harm_logs=" , ")
    with pytest.raises(HarmLogError, match="missing.eval does not exist"):
        cross_model_rating(harm_logs=[str(tmp_path / "missing.eval")])


def test_single_log_keeps_sample_ids(log_dir: Path) -> None:
    other_log = make_harm_log(log_dir / "other", [2], prefix="other", model_name="mockllm/other")
    [log] = eval(
        cross_model_rating(harm_logs=[str(other_log)]),
        model=scripted(lambda text: "no idea"),
        log_dir=str(log_dir / "rate"),
    )
    assert log.status == "success", log.error
    assert [s.id for s in log.samples] == ["mini-001"]
    v = metric_values(log)
    assert v["prediction_unparseable"] == 1 and math.isnan(v["mean_signed_error"])
