"""A run is done only when every task x model run has a finished log: cancelled, errored, interrupted
or missing logs make `em-persona run` exit non-zero with what did not finish, and no report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from inspect_ai.log import EvalError, EvalLog, write_eval_log
from inspect_ai.model import ModelOutput

from em_persona.app.run_status import Unit, unit_statuses
from em_persona.cli import main
from em_persona.tasks.two_ai_identification import two_ai_identification
from support import mock_model, mock_output, offline_pipeline, write_yaml

ARGS = {"dataset": "project", "epochs": 2, "max_tokens": 2}


def _answer_a(messages: Any, tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
    return mock_output("A", "mockllm/m")


def _finished_log(folder: Path) -> EvalLog:
    from inspect_ai import eval

    [log] = eval(
        two_ai_identification(**ARGS),
        model=mock_model(_answer_a, "mockllm/m"),
        limit=2,
        log_dir=str(folder),
        display="none",
        log_level="error",
    )
    assert log.status == "success"
    return log


def _copy(log: EvalLog, folder: Path, name: str, mtime: float, **changes: Any) -> Path:
    path = folder / f"{name}.eval"
    write_eval_log(log.model_copy(update=changes), str(path))
    os.utime(path, (mtime, mtime))
    return path


def _unit(folder: Path, **changes: Any) -> Unit:
    base = {
        "label": "two_ai",
        "task": "two_ai_identification",
        "model": "mockllm/m",
        "log_dir": folder,
        "args": ARGS,
        "samples": len(two_ai_identification(**ARGS).dataset),
    }
    return Unit(**{**base, **changes})


def test_states_come_from_the_newest_matching_log(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    log = _finished_log(tmp_path / "first")
    [status] = unit_statuses([_unit(folder)])
    assert status.state == "not started" and status.log is None
    done = _copy(log, folder, "a-done", 1000.0)
    assert unit_statuses([_unit(folder)])[0].state == "done"
    assert unit_statuses([_unit(folder)])[0].log == done
    for status_name, state, extra in [
        ("cancelled", "cancelled", {}),
        ("started", "interrupted", {}),
        (
            "error",
            "error",
            {"error": EvalError(message="boom: the model failed", traceback="", traceback_ansi="")},
        ),
    ]:
        newest = _copy(
            log, folder, f"b-{status_name}", 2000.0 + len(status_name), status=status_name, **extra
        )
        got = unit_statuses([_unit(folder)])[0]
        assert (got.state, got.log) == (state, newest), status_name
        newest.unlink()
    errored = unit_statuses(
        [_unit(folder)],
        [
            log.model_copy(
                update={
                    "status": "error",
                    "error": EvalError(message="boom", traceback="", traceback_ansi=""),
                }
            )
        ],
    )[0]
    assert (
        errored.state == "error" and errored.detail == "boom"
    )  # what eval_set returned wins over the folder
    # other arguments, another model or another sample count: not this unit's log
    assert unit_statuses([_unit(folder, args={**ARGS, "max_tokens": 4})])[0].state == "not started"
    assert unit_statuses([_unit(folder, model="mockllm/other")])[0].state == "not started"
    assert unit_statuses([_unit(folder, samples=3)])[0].state == "not started"


def _experiment(tmp_path: Path) -> Path:
    doc = {
        "name": "t",
        "base_model": {"name": "unused-base", "path": "proxy:tiny"},
        "adapters_dir": str(tmp_path / "adapters"),
        "log_dir": str(tmp_path / "logs"),
        "report_dir": str(tmp_path / "report"),
        "eval": {"limit": 2},
        "tasks": [{"task": "two_ai_identification", "args": ARGS, "models": ["mockllm/m"]}],
    }
    return write_yaml(tmp_path / "exp.yaml", doc)


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    offline_pipeline(monkeypatch.setattr)


def test_eval_set_raising_keyboard_interrupt_on_cancelled_logs(
    tmp_path: Path, no_serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """eval_set raises KeyboardInterrupt when a log comes back "cancelled": exit 130, no report."""
    import inspect_ai

    def cancelled(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_ai, "eval_set", cancelled)
    path = _experiment(tmp_path)
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 130, result.output
    assert "interrupted while evaluating" in result.output
    assert "run interrupted: 1 of 1 task x model runs did not finish:" in result.output
    assert (
        "two_ai_identification [dataset=project, epochs=2, max_tokens=2] x mockllm/m: not started"
        in result.output
    )
    assert f"Resume with the same command: em-persona run {path}" in result.output
    assert "No report was written" in result.output and not (tmp_path / "report").exists()


def test_eval_set_returning_an_error_log_fails_the_run(
    tmp_path: Path, no_serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inspect_ai

    log = _finished_log(tmp_path / "other")
    failed = log.model_copy(
        update={
            "status": "error",
            "error": EvalError(message="RuntimeError: judge unreachable", traceback="", traceback_ansi=""),
        }
    )
    monkeypatch.setattr(inspect_ai, "eval_set", lambda *a, **k: (False, [failed]))
    made: list[Any] = []
    import em_persona.analysis.report

    monkeypatch.setattr(
        em_persona.analysis.report,
        "make_report",
        lambda logdir, out, models_yaml=None, options=None: made.append(options)
        or (None, {"html": Path(out) / "report.html"}),
    )
    result = CliRunner().invoke(main, ["run", str(_experiment(tmp_path))])
    assert result.exit_code == 1, result.output
    assert "run incomplete: 1 of 1 task x model runs did not finish:" in result.output
    assert "x mockllm/m: error (RuntimeError: judge unreachable)" in result.output
    assert made == []  # no report
    result = CliRunner().invoke(main, ["run", str(_experiment(tmp_path)), "--report-anyway"])
    assert result.exit_code == 1
    [options] = made
    assert options.proxy_note.startswith("INCOMPLETE RUN: 1 of 1 task x model runs did not finish")
    assert "x mockllm/m (error)" in options.proxy_note
    assert "Report marked INCOMPLETE RUN" in result.output
