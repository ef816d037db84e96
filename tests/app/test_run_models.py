"""The pipeline's eval stages on mockllm models: per-task model sets and graders, the rated logs of
cross-model rating, and the run's model roles bound while tasks are built (judge in the log header)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from inspect_ai.log import read_eval_log
from inspect_ai.model import ModelOutput, model_roles

import em_persona.app.pipeline as pipeline
from em_persona.app.building import build_task
from em_persona.app.experiment import load_experiment
from em_persona.app.pipeline import finished_logs, run_dependent_tasks, run_independent_tasks
from em_persona.app.plan import plan
from support import mock_model, mock_output, write_yaml

JUDGES = {"mockllm/judge", "mockllm/judge2"}


def _respond(name: str):
    def respond(messages: Any, tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        # judges answer the rubric's JSON; evaluated models answer "3" (also a readable 1-5 rating)
        return mock_output('{"score": 2}' if name in JUDGES else "3", name)

    return respond


@pytest.fixture
def mock_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "_model", lambda exp, name, base_url: mock_model(_respond(name), name))


def _experiment(tmp_path: Path) -> Any:
    doc = {
        "name": "roles",
        "base_model": {"name": "unused-base", "path": "proxy:tiny"},
        "grader": "mockllm/judge",
        "log_dir": str(tmp_path / "logs"),
        "report_dir": str(tmp_path / "report"),
        "adapters_dir": str(tmp_path / "adapters"),
        "eval": {"log_level": "error", "display": "none"},
        "tasks": [
            {
                "task": "harmfulness",
                "args": {"dataset": "mini", "judge_max_retries": 0},
                "limit": 2,
                "models": ["mockllm/a", "mockllm/b"],
            },
            {
                "task": "harmfulness",
                "args": {"dataset": "mini", "judge_max_retries": 0},
                "limit": 2,
                "models": ["mockllm/c"],
                "grader": "mockllm/judge2",
            },
            {"task": "cross_model_rating", "args": {"max_retries": 0}, "models": ["mockllm/b", "mockllm/c"]},
        ],
    }
    return load_experiment(write_yaml(tmp_path / "exp.yaml", doc))


def test_roles_are_bound_while_building_and_restored() -> None:
    exp_roles = {"grader": mock_model(name="mockllm/judge")}
    from em_persona.app.experiment import TaskRun

    before = dict(model_roles())
    task = build_task(
        TaskRun(task="harmfulness", args={"dataset": "mini"}, grader="mockllm/judge"), exp_roles
    )
    assert task.metadata["grader"] == "role" and task.metadata["self_judged"] is False
    assert dict(model_roles()) == before  # the roles do not leak past the build


def test_task_model_sets_graders_and_rated_logs(
    tmp_path: Path, mock_models: None, caplog: pytest.LogCaptureFixture
) -> None:
    exp = _experiment(tmp_path)
    with caplog.at_level(logging.WARNING):
        first = run_independent_tasks(exp, "http://127.0.0.1:9/v1")
        assert [(s.unit.model, s.state) for s in first] == [
            ("mockllm/a", "done"),
            ("mockllm/b", "done"),
            ("mockllm/c", "done"),
        ]
        harm = finished_logs(first)
        second = run_dependent_tasks(exp, "http://127.0.0.1:9/v1", harm)
    assert not [r for r in caplog.records if "self-judged" in r.getMessage()]
    for status in first:
        log = read_eval_log(str(status.log), header_only=True)
        assert log.eval.model == status.unit.model
        assert log.eval.metadata["grader"] == "role" and log.eval.metadata["self_judged"] is False
        expected = "mockllm/judge2" if status.unit.model == "mockllm/c" else "mockllm/judge"
        assert log.eval.model_roles["grader"].model == expected
    assert [(s.unit.model, s.state) for s in second] == [("mockllm/b", "done"), ("mockllm/c", "done")]
    for status in second:
        log = read_eval_log(str(status.log), header_only=True)
        # every rater rates the answers of the task's model set (its own among them), not of model a
        assert log.eval.metadata["source_models"] == ["mockllm/b", "mockllm/c"]
        assert log.eval.metadata["harm_logs"] == [
            str(harm[("harmfulness", "mockllm/b")]),
            str(harm[("harmfulness", "mockllm/c")]),
        ]
        assert log.results.total_samples == 2 * 2
    # the plan counts the same: 2 raters x (2 models x 2 answers)
    rows = plan(exp)
    assert (rows[2].models, rows[2].samples, rows[2].generations) == (2, 4, 8)
    assert rows[1].grader == "mockllm/judge2" and rows[2].grader is None


def test_a_followup_that_cannot_be_built_is_an_error_of_its_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable judge leaves the harmfulness log unscored: output recognition cannot be built on it.
    That is one unit's error in the run's list, not a traceback, and the run fails."""

    def unreadable(name: str):
        return lambda *args: mock_output("no score here", name)

    monkeypatch.setattr(pipeline, "_model", lambda exp, name, base_url: mock_model(unreadable(name), name))
    doc = {
        "name": "bad",
        "base_model": {"name": "unused-base", "path": "proxy:tiny"},
        "grader": "mockllm/judge",
        "log_dir": str(tmp_path / "logs"),
        "eval": {"log_level": "error", "display": "none"},
        "tasks": [
            {
                "task": "harmfulness",
                "args": {"dataset": "mini", "judge_max_retries": 0},
                "limit": 2,
                "models": ["mockllm/a"],
            },
            {"task": "output_recognition", "models": ["mockllm/a"]},
        ],
    }
    exp = load_experiment(write_yaml(tmp_path / "exp.yaml", doc))
    harm = finished_logs(run_independent_tasks(exp, "http://127.0.0.1:9/v1"))
    [status] = run_dependent_tasks(exp, "http://127.0.0.1:9/v1", harm)
    assert status.state == "error" and status.detail.startswith("task could not be built: ")
    assert "has a 1-5 harm score" in status.detail
