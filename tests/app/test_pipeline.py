"""`em-persona run`: experiment files, the plan, and one end-to-end run on the tiny proxy."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from em_persona.app.experiment import ExperimentError, load_experiment
from em_persona.app.pipeline import write_models_file
from em_persona.app.plan import plan
from em_persona.cli import main
from em_persona.core.paths import REPO_ROOT
from em_persona.core.registry import SourceError
from support import line_of, mock_model, mock_output, write_yaml


def _write(tmp_path: Path, doc: dict | str) -> Path:
    return write_yaml(tmp_path / "exp.yaml", doc)


BASE = {
    "name": "t",
    "base_model": {"name": "tiny", "path": "proxy:tiny"},
    "grader": "vllm/tiny",
    "tasks": [{"task": "harmfulness", "args": {"dataset": "mini"}}],
}


def test_shipped_experiments_parse() -> None:
    for f in sorted((REPO_ROOT / "experiments").glob("*.yaml")):
        exp = load_experiment(f)
        assert exp.tasks and exp.model_names[0] == f"vllm/{exp.base_name}"
    demo = load_experiment(REPO_ROOT / "experiments" / "demo.yaml")
    assert demo.proxy and len(demo.adapters) == 2
    assert {t.task for t in demo.tasks} >= {
        "harmfulness",
        "self_assessment",
        "two_ai_identification",
        "output_recognition",
        "score_prediction",
        "moral_foundations",
    }


def test_unknown_task_names_file_and_line(tmp_path: Path) -> None:
    text = yaml.safe_dump({**BASE, "tasks": [{"task": "harmfulness"}, {"task": "nonsense"}]}, sort_keys=False)
    path = _write(tmp_path, text)
    with pytest.raises(ExperimentError) as err:
        load_experiment(path)
    line = line_of(text, "nonsense")
    assert f"{path}:{line}" in str(err.value) and "nonsense" in str(err.value)


def test_missing_field_and_bad_yaml(tmp_path: Path) -> None:
    doc = {k: v for k, v in BASE.items() if k != "base_model"}
    with pytest.raises(ExperimentError, match="missing required key 'base_model'"):
        load_experiment(_write(tmp_path, doc))
    doc = {k: v for k, v in BASE.items() if k != "grader"}  # harmfulness is judged: it needs a grader
    with pytest.raises(ExperimentError, match=r"exp.yaml:\d+: tasks\[0\] \(harmfulness\): .*names a grader"):
        load_experiment(_write(tmp_path, doc))
    with pytest.raises(ExperimentError, match=r"exp.yaml:\d+: invalid YAML"):
        load_experiment(_write(tmp_path, "name: [unclosed\n"))


def test_followup_tasks_need_harmfulness(tmp_path: Path) -> None:
    doc = {**BASE, "tasks": [{"task": "output_recognition"}]}
    with pytest.raises(ExperimentError, match="no harmfulness task runs"):
        load_experiment(_write(tmp_path, doc))


def test_missing_finetune_config(tmp_path: Path) -> None:
    doc = {**BASE, "adapters": [{"name": "a", "config": "finetune/configs/nope.yaml"}]}
    with pytest.raises(ExperimentError, match="no finetune config"):
        load_experiment(_write(tmp_path, doc))


def test_plan_counts_generations_and_judge_calls(tmp_path: Path) -> None:
    doc = {
        **BASE,
        "adapters": [
            {
                "name": "tiny-a",
                "domain": "insecure_code",
                "config": "finetune/configs/tiny-insecure-code.yaml",
            }
        ],
        "tasks": [
            {"task": "harmfulness", "args": {"dataset": "mini", "epochs": 3}},
            {"task": "output_recognition"},
        ],
    }
    exp = load_experiment(_write(tmp_path, doc))
    from em_persona.tasks.harmfulness import harmfulness

    n = len(harmfulness(dataset="mini").dataset)
    harm, recog = plan(exp)
    assert (harm.models, harm.samples, harm.epochs) == (2, n, 3)
    assert harm.generations == 2 * n * 3 and harm.judge_calls == 2 * n * 3
    # recognition: a foil generation and the choice per harmfulness sample, plus the foil's judge call
    assert recog.samples == n and recog.generations == 2 * n * 2 and recog.judge_calls == 2 * n
    # upper bound: every judge call (default judge_max_retries=2) may be asked 3 times
    assert harm.max_calls == harm.generations + harm.judge_calls * 3
    assert recog.max_calls == recog.generations + recog.judge_calls * 3


def test_plan_max_calls_include_parse_retries(tmp_path: Path, mirror: Path, data_home: Path) -> None:
    from em_persona.tasks.moral_foundations import moral_foundations

    mfq = {"personas": 2, "epochs": 2, "questions": [1, 2, 3]}
    doc = {
        **BASE,
        "adapters": [
            {
                "name": "tiny-a",
                "domain": "insecure_code",
                "config": "finetune/configs/tiny-insecure-code.yaml",
            }
        ],
        "tasks": [
            {"task": "moral_foundations", "args": {**mfq, "max_retries": 3}},
            {"task": "moral_foundations", "args": mfq},
            {"task": "two_ai_identification", "args": {"dataset": "project", "epochs": 2}},
            {"task": "harmfulness", "args": {"dataset": "mini", "judge_max_retries": 0}},
        ],
    }
    given, default, two_ai, harm = plan(load_experiment(_write(tmp_path, doc)))
    runs = 2 * 3 * 3 * 2  # models x (2 personas + self) x 3 items x 2 samples
    assert given.generations == runs and given.judge_calls == 0
    assert given.max_calls == runs * (1 + 3)
    default_retries = inspect.signature(moral_foundations).parameters["max_retries"].default
    assert default_retries > 0 and default.max_calls == runs * (1 + default_retries)
    # no retried generation and no judge: the bound is the plain count
    assert two_ai.judge_calls == 0 and two_ai.max_calls == two_ai.generations + two_ai.judge_calls
    # judge_max_retries=0: one call per judgement
    assert harm.max_calls == harm.generations + harm.judge_calls


def test_models_file_marks_proxies(tmp_path: Path) -> None:
    doc = {
        **BASE,
        "proxy": True,
        "note": "proxy run",
        "log_dir": str(tmp_path / "logs"),
        "adapters": [
            {
                "name": "tiny-a",
                "domain": "insecure_code",
                "config": "finetune/configs/tiny-insecure-code.yaml",
            }
        ],
    }
    exp = load_experiment(_write(tmp_path, doc))
    data = yaml.safe_load(write_models_file(exp).read_text())
    assert data["proxy"] is True and data["note"] == "proxy run"
    assert data["models"]["vllm/tiny-a"] == {"base_model": "tiny", "domain": "insecure_code", "proxy": True}
    assert data["models"]["vllm/tiny"]["domain"] == "base"


def test_cli_dry_run_prints_plan(tmp_path: Path) -> None:
    exp = _write(tmp_path, BASE)
    result = CliRunner().invoke(main, ["run", str(exp), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "harmfulness" in result.output and "generations" in result.output and "total" in result.output
    assert "max calls" in result.output and "~tokens" in result.output


def test_cli_dry_run_shows_each_tasks_models_and_grader(tmp_path: Path) -> None:
    doc = {
        **BASE,
        "adapters": [{"name": "tiny-a", "config": "finetune/configs/tiny-insecure-code.yaml"}],
        "tasks": [
            {
                "task": "harmfulness",
                "args": {"dataset": "mini"},
                "models": ["tiny-a"],
                "grader": "vllm/tiny-a",
            },
            {"task": "self_assessment", "args": {"paraphrases": 1, "epochs": 1}},
        ],
    }
    result = CliRunner().invoke(main, ["run", str(_write(tmp_path, doc)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "   0 harmfulness [dataset=mini]\n     models: tiny-a (1); grader: vllm/tiny-a\n" in result.output
    assert "   1 self_assessment [paraphrases=1, epochs=1]\n     models: all 2; grader: -\n" in result.output


def test_cli_run_reports_source_error_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import em_persona.app.pipeline as pipeline

    def offline(*args: object, **kwargs: object) -> None:
        raise SourceError("cannot download source 'mfq30' (offline). Set EM_PERSONA_MIRROR.")

    monkeypatch.setattr(pipeline, "run_experiment", offline)
    result = CliRunner().invoke(main, ["run", str(_write(tmp_path, BASE))], catch_exceptions=False)
    assert result.exit_code == 1
    assert "Error: cannot download source 'mfq30' (offline). Set EM_PERSONA_MIRROR." in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
@pytest.mark.vllm
def test_tiny_experiment_end_to_end_and_resume(tmp_path: Path) -> None:
    """Fine-tune, serve, run every task, report; a second run reuses every finished piece.

    The served names differ from the session `vllm_server` fixture's ("tiny"): Inspect's vllm
    provider remembers one server per model name for the whole process.
    """
    doc = {
        "name": "tiny-e2e",
        "proxy": True,
        "note": "tiny random proxy",
        "base_model": {"name": "tiny-e2e", "path": "proxy:tiny"},
        "adapters": [
            {
                "name": "tiny-e2e-insecure",
                "domain": "insecure_code",
                "config": "finetune/configs/tiny-insecure-code.yaml",
                "overrides": {"data.rows": 4, "train.max_steps": 2},
            }
        ],
        "grader": "vllm/tiny-e2e",
        "data": ["insecure_code", "mfq30", "personas"],
        "serve": {"max_model_len": 2048},
        "eval": {"max_connections": 16, "limit": 4},
        "adapters_dir": str(tmp_path / "adapters"),
        "log_dir": str(tmp_path / "logs"),
        "report_dir": str(tmp_path / "report"),
        "tasks": [
            # the project's short rubric: the paper's judge prompt does not fit the tiny proxy's context
            {
                "task": "harmfulness",
                "args": {"dataset": "mini", "epochs": 2, "max_tokens": 12, "judge_prompt": "project"},
            },
            {"task": "self_assessment", "args": {"paraphrases": 1, "epochs": 1, "max_tokens": 8}},
            {"task": "two_ai_identification", "args": {"dataset": "project", "epochs": 2, "max_tokens": 6}},
            {"task": "moral_foundations", "args": {"personas": 1, "epochs": 2, "max_tokens": 4}},
            {
                "task": "output_recognition",
                "args": {"max_tokens": 6, "foil_max_tokens": 12, "judge_prompt": "project"},
            },
            {
                "task": "score_prediction",
                "args": {"condition": "shown", "max_tokens": 6, "judge_prompt": "project"},
            },
        ],
    }
    path = _write(tmp_path, doc)
    result = CliRunner().invoke(main, ["run", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = tmp_path / "report" / "report.html"
    assert report.exists() and "tiny random proxy" in report.read_text()
    from inspect_ai.log import list_eval_logs, read_eval_log

    harm = {
        read_eval_log(i, header_only=True).eval.model
        for i in list_eval_logs(str(tmp_path / "logs" / "main"))
        if "harmfulness" in i.name
    }
    assert harm == {"vllm/tiny-e2e", "vllm/tiny-e2e-insecure"}
    logs_before = sorted(p.name for p in (tmp_path / "logs").rglob("*.eval"))
    assert len(logs_before) == 2 * 4 + 2 * 2  # 4 independent + 2 follow-up tasks, 2 models each
    adapter = tmp_path / "adapters" / "tiny-insecure-code"
    stamp = (adapter / "manifest.json").stat().st_mtime
    # resume: nothing is retrained or re-evaluated
    result = CliRunner().invoke(main, ["run", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (adapter / "manifest.json").stat().st_mtime == stamp
    assert sorted(p.name for p in (tmp_path / "logs").rglob("*.eval")) == logs_before


def test_rerun_after_editing_task_args_reuses_the_log_dir(tmp_path: Path) -> None:
    """Editing a task's arguments and re-running must not stop at eval_set's dirty-folder check:
    the new settings run, the untouched task is reused, and the old log stays beside the new one."""
    from inspect_ai import eval_set

    from em_persona.app.building import eval_kwargs as _eval_kwargs
    from em_persona.tasks.two_ai_identification import two_ai_identification

    def respond(messages, tools, tool_choice, config):
        return mock_output("A")

    exp = load_experiment(REPO_ROOT / "experiments" / "demo.yaml")
    kwargs = {**_eval_kwargs(exp), "log_level": "error", "display": "none", "limit": 2}
    model = mock_model(respond)
    logs = tmp_path / "logs"
    ok, _ = eval_set(
        [two_ai_identification(dataset="project", epochs=2, max_tokens=4)],
        model=model,
        log_dir=str(logs),
        **kwargs,
    )
    assert ok
    first = sorted(p.name for p in logs.glob("*.eval"))
    ok, _ = eval_set(
        [two_ai_identification(dataset="project", epochs=2, max_tokens=2)],
        model=model,
        log_dir=str(logs),
        **kwargs,
    )
    assert ok
    second = sorted(p.name for p in logs.glob("*.eval"))
    assert len(first) == 1 and len(second) == 2 and set(first) < set(second)
