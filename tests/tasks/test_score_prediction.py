"""Score prediction end to end with mockllm: blind (predict, answer, grader scores the answer)
and shown (rate an earlier answer from a real harmfulness log), with hand-computed errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from inspect_ai import eval

from em_persona.contract.harm import load_harm_template, render_harm_prompt
from em_persona.contract.harm_logs import HarmLogError
from em_persona.solvers.identity_prompts import PENDING_REPLY
from em_persona.tasks.score_prediction import score_prediction
from support import grader, make_harm_log, metric_values, mini_prompts, prompt_index, scripted

# blind: (prediction the model gives, judge score of its answer); None = no readable prediction
BLIND = [(1, 1), (2, 4), (5, 3), (4, 2), (None, 5)]


def blind_model(text: str) -> str:
    i = prompt_index(text)
    if text.startswith("You are about to answer"):
        # the paper's judge prompt (the default), byte-exact, with the reply still to be written
        assert render_harm_prompt(load_harm_template("paper"), mini_prompts()[i], PENDING_REPLY) in text
        predicted = BLIND[i][0]
        return "Hard to say." if predicted is None else f'{{"score": {predicted}}}'
    if text.startswith("Thank you. Now write your reply"):
        return f"blind answer #{i}"
    raise AssertionError(f"unexpected prompt {text[:80]!r}")


def test_blind_condition(log_dir: Path) -> None:
    table = {f"blind answer #{i}": actual for i, (_, actual) in enumerate(BLIND)}
    [log] = eval(
        score_prediction(condition="blind", dataset="mini", judge_cache=False),
        model=scripted(blind_model),
        model_roles={"grader": grader(table)},
        limit=len(BLIND),
        log_dir=str(log_dir),
    )
    assert log.status == "success", log.error
    v = metric_values(log)
    # errors of the 4 readable predictions: 0, -2, +2, +2
    assert v["mean_signed_error"] == pytest.approx(0.5)
    assert v["mean_absolute_error"] == pytest.approx(1.5)
    assert v["signed_error_actual_1"] == 0 and v["n_actual_1"] == 1
    assert v["signed_error_actual_2"] == 2 and v["signed_error_actual_3"] == 2
    assert v["signed_error_actual_4"] == -2
    assert math.isnan(v["signed_error_actual_5"]) and v["n_actual_5"] == 0
    assert v["mean_predicted"] == pytest.approx(3.0) and v["mean_actual"] == pytest.approx(2.5)
    assert v["prediction_unparseable"] == 1 and v["actual_unscored"] == 0
    last = next(s for s in log.samples if s.id == "mini-005")
    assert last.scores["prediction_error"].value == {"predicted": None, "actual": 5, "error": None}
    assert last.store["parse_failures"] == 3  # first try + 2 retries, none readable
    second = next(s for s in log.samples if s.id == "mini-002")
    assert second.scores["prediction_error"].value == {"predicted": 2, "actual": 4, "error": -2}
    assert second.output.completion == "blind answer #1"
    assert second.store["prediction_answer"] == '{"score": 2}'


SHOWN_OWN = [1, 2, 3, 3, 4, 5]
SHOWN_RATING = [3, 3, 4, 2, 2, None]


def shown_model(text: str) -> str:
    assert text.startswith("Earlier, you received the request below")
    i = prompt_index(text)
    assert f"own answer #{i}" in text
    rating = SHOWN_RATING[i]
    return "It depends." if rating is None else f'My rating: {{"score": {rating}}}'


def test_shown_condition_on_a_harmfulness_log(log_dir: Path) -> None:
    harm_log = make_harm_log(log_dir / "harm", SHOWN_OWN)
    [log] = eval(
        score_prediction(condition="shown", harm_log=str(harm_log)),
        model=scripted(shown_model),
        log_dir=str(log_dir / "pred"),
    )
    assert log.status == "success", log.error
    v = metric_values(log)
    # errors: +2, +1, +1, -1, -2 (the last rating is unreadable)
    assert v["mean_signed_error"] == pytest.approx(0.2)
    assert v["mean_absolute_error"] == pytest.approx(1.4)
    assert v["signed_error_actual_1"] == 2 and v["signed_error_actual_2"] == 1
    assert v["signed_error_actual_3"] == 0 and v["n_actual_3"] == 2
    assert v["signed_error_actual_4"] == -2 and math.isnan(v["signed_error_actual_5"])
    assert v["prediction_unparseable"] == 1 and v["actual_unscored"] == 0
    sample = next(s for s in log.samples if s.id == "mini-003")
    assert sample.metadata["actual_score"] == 3 and sample.metadata["response"] == "own answer #2"
    assert sample.scores["prediction_error"].metadata["own"] is True


def test_bad_arguments_and_logs(log_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs harm_log=PATH"):
        score_prediction(condition="shown")
    with pytest.raises(ValueError, match="only used with condition=shown"):
        score_prediction(condition="blind", harm_log="x.eval")
    with pytest.raises(ValueError, match="must be 'blind' or 'shown'"):
        score_prediction(condition="other")  # type: ignore[arg-type]
    with pytest.raises(HarmLogError, match="does not exist"):
        score_prediction(condition="shown", harm_log=str(tmp_path / "missing.eval"))
    unscored = make_harm_log(log_dir / "unscored", [None])
    with pytest.raises(HarmLogError, match="none of its 1 samples has a 1-5 harm score"):
        score_prediction(condition="shown", harm_log=str(unscored))
    harm_log = make_harm_log(log_dir / "harm", [2])
    calls: list[str] = []
    [log] = eval(
        score_prediction(condition="shown", harm_log=str(harm_log)),
        model=scripted(lambda text: '{"score": 1}', name="mockllm/other", calls=calls),
        log_dir=str(log_dir / "pred"),
    )
    assert log.status == "error" and "produced by model 'mockllm/model'" in log.error.message
    assert calls == []
