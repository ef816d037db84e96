"""`em-persona run` records what it measured in <log_dir>/run-stats.json: wall time per stage, calls and
tokens per task x model (the grader's apart from the evaluated model's), also for interrupted and
failed runs; reused logs carry the numbers of the run that wrote them; the report shows them.

The pipeline runs for real on mockllm models; fine-tuning and serving are replaced by no-ops."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from inspect_ai.model import ModelOutput

import em_persona.app.pipeline as pipeline
import em_persona.app.plan as planning
from em_persona.app import run_stats
from em_persona.app.experiment import Experiment, load_experiment
from em_persona.app.run_status import RunIncomplete
from em_persona.serving.errors import ServeError
from support import mock_model, mock_output

PLATFORM = {
    "name": "CPU: test machine (2 cores)",
    "kind": "cpu",
    "gpus": [],
    "cpu": "test machine",
    "cores": 2,
}
ANSWER = "one two three"  # 3 output tokens (mock usage: words)
VERDICT = '{"score": 2}'  # 2 output tokens
ANSWER_IN, VERDICT_IN = 10, 100  # input tokens per call


def _respond(name: str) -> Any:
    def respond(messages: Any, tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        if config.response_schema is not None:  # the harm judge asks for its JSON schema
            return mock_output(VERDICT, name, input_tokens=VERDICT_IN)
        return mock_output(ANSWER, name, input_tokens=ANSWER_IN)

    return respond


@contextmanager
def _no_server(exp: Any, base: Any, adapters: Any) -> Iterator[str]:
    yield "http://127.0.0.1:9/v1"


@pytest.fixture
def offline_pipeline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No fine-tuning, no server, mockllm models, no report; returns the report calls."""
    reports: list[str] = []
    monkeypatch.setattr(pipeline, "_model", lambda exp, name, base_url: mock_model(_respond(name), name))
    monkeypatch.setattr(pipeline, "serving", _no_server)
    monkeypatch.setattr(pipeline, "resolve_base", lambda exp: Path("unused"))

    def report(exp: Experiment, banner: str | None = None) -> Path:
        reports.append(str(banner))
        return tmp_path / "report.html"

    monkeypatch.setattr(pipeline, "write_report", report)
    monkeypatch.setattr(run_stats, "current_platform", lambda: dict(PLATFORM))
    return reports


def _experiment(tmp_path: Path, **extra: Any) -> Experiment:
    harm = {
        "dataset": "mini",
        "epochs": 1,
        "judge_prompt": "project",
        "judge_max_retries": 0,
        "judge_cache": False,
    }
    doc = {
        "name": "stats",
        "base_model": {"name": "stats-base", "path": "proxy:tiny"},
        "grader": "mockllm/judge",
        "log_dir": str(tmp_path / "logs"),
        "report_dir": str(tmp_path / "report"),
        "adapters_dir": str(tmp_path / "adapters"),
        "serve": {"dtype": "float32"},
        "eval": {"log_level": "error", "display": "none", "max_connections": 4},
        "tasks": [
            {"task": "harmfulness", "args": harm, "limit": 2, "models": ["mockllm/a"]},
            # self-judged: model and grader usage are one entry of the log's model_usage
            {"task": "harmfulness", "args": harm, "limit": 2, "models": ["mockllm/c"], "grader": "mockllm/c"},
        ],
        **extra,
    }
    path = tmp_path / "stats.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_experiment(path)


def _runs(exp: Experiment) -> list[dict[str, Any]]:
    doc = json.loads((exp.log_dir / "run-stats.json").read_text())
    assert doc["format"] == 1
    return doc["runs"]


def _measured(task: dict[str, Any]) -> tuple[Any, ...]:
    keys = (
        "generations",
        "judge_calls",
        "input_tokens",
        "output_tokens",
        "grader_input_tokens",
        "grader_output_tokens",
    )
    return tuple(task[k] for k in keys)


# two samples: 2 answers and 2 verdicts
EXPECTED = (2, 2, 2 * ANSWER_IN, 2 * 3, 2 * VERDICT_IN, 2 * 2)


def test_a_run_records_stages_and_tokens_per_task_and_model(
    offline_pipeline: list[str], tmp_path: Path
) -> None:
    exp = _experiment(tmp_path)
    pipeline.run_experiment(exp)
    [run] = _runs(exp)
    assert run["complete"] is True and run["outcome"] == "done"
    assert run["platform"]["name"] == PLATFORM["name"]
    assert run["base_model"] == {"name": "stats-base", "path": "proxy:tiny"}
    assert (run["served_dtype"], run["max_connections"]) == ("float32", 4)
    assert [(s["stage"], s["name"], s["state"]) for s in run["stages"]] == [
        ("base model", "stats-base", "done"),
        ("server start", "", "done"),
        ("evaluation", "main", "done"),
    ]
    assert all(s["wall_s"] >= 0 for s in run["stages"]) and run["wall_s"] >= run["stages"][-1]["wall_s"]
    by_model = {t["model"]: t for t in run["tasks"]}
    assert set(by_model) == {"mockllm/a", "mockllm/c"}
    for model, t in by_model.items():
        assert t["ran"] is True and t["state"] == "done" and t["folder"] == "main", t
        assert _measured(t) == EXPECTED, model
        assert t["log_wall_s"] is not None and Path(t["log"]).is_file() and t["sample_epochs"] == 2
    # the self-judged model's usage is split by role, not counted twice
    assert by_model["mockllm/c"]["usage"]["models"] == {
        "mockllm/c": {"input_tokens": 220, "output_tokens": 10}
    }
    assert by_model["mockllm/a"]["usage"]["roles"] == {"grader": {"input_tokens": 200, "output_tokens": 4}}
    # the next plan: every log is finished, so the evaluation is estimated at 0 s
    rows = planning.plan(exp)
    assert pipeline.remaining_models(exp, rows) == [(), ()]
    est = planning.plan_estimate(exp, rows, pipeline.remaining_models(exp, rows))
    assert est.source is not None and "recorded run of" in est.source
    assert est.rows == [0.0, 0.0] and est.server_s == run["stages"][1]["wall_s"]


def test_a_resumed_run_copies_the_numbers_of_reused_logs(offline_pipeline: list[str], tmp_path: Path) -> None:
    exp = _experiment(tmp_path)
    pipeline.run_experiment(exp)
    pipeline.run_experiment(exp)  # resume: every log is reused
    first, second = _runs(exp)
    assert second["complete"] is True
    for t in second["tasks"]:
        assert t["ran"] is False and t["measured_in"] == first["started"], t
        assert _measured(t) == EXPECTED


def test_an_interrupted_run_records_what_it_measured(
    offline_pipeline: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline.run_independent_tasks

    def then_ctrl_c(exp: Experiment, base_url: str) -> Any:
        real(exp, base_url)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_independent_tasks", then_ctrl_c)
    exp = _experiment(tmp_path)
    with pytest.raises(RunIncomplete):
        pipeline.run_experiment(exp)
    [run] = _runs(exp)
    assert run["complete"] is False and run["outcome"] == "interrupted while evaluating"
    assert run["stages"][-1]["stage"] == "evaluation" and run["stages"][-1]["state"] == "interrupted"
    assert [_measured(t) for t in run["tasks"]] == [EXPECTED, EXPECTED]


def test_a_failed_run_records_the_failing_stage(
    offline_pipeline: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextmanager
    def broken(exp: Any, base: Any, adapters: Any) -> Iterator[str]:
        raise ServeError("port 8000 on 127.0.0.1 is already in use")
        yield ""

    monkeypatch.setattr(pipeline, "serving", broken)
    exp = _experiment(tmp_path)
    with pytest.raises(ServeError):
        pipeline.run_experiment(exp)
    [run] = _runs(exp)
    assert run["complete"] is False
    assert (
        run["outcome"]
        == "error while starting the server: ServeError: port 8000 on 127.0.0.1 is already in use"
    )
    assert run["stages"][-1]["stage"] == "server start" and run["stages"][-1]["state"] == "error: ServeError"
    assert [t["state"] for t in run["tasks"]] == ["not started", "not started"]
    assert not any(t["ran"] for t in run["tasks"])


def test_fine_tuning_is_recorded_per_adapter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import em_persona.finetune.train as train

    exp = _experiment(
        tmp_path, adapters=[{"name": "stats-a", "config": "finetune/configs/tiny-insecure-code.yaml"}]
    )
    manifest = {
        "device": "cpu",
        "config": {"train": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}},
        "train": {"global_steps": 5, "runtime_s": 12.5, "tokens": 900},
    }

    def fake_finetune(config: Any, out_dir: Any) -> list[Any]:
        return [train.StageResult(s.name, Path(out_dir) / s.name, True, manifest) for s in config.stages]

    monkeypatch.setattr(train, "finetune", fake_finetune)
    monkeypatch.setattr(run_stats, "current_platform", lambda: dict(PLATFORM))
    recorder = run_stats.RunRecorder.for_experiment(exp, 4)
    pipeline.finetune_adapters(exp, recorder)
    assert pipeline.finetune_adapters(exp)  # without a recorder it records nothing, and works
    [stage] = recorder.stages
    assert (stage["stage"], stage["name"], stage["state"]) == ("fine-tune", "stats-a", "trained")
    assert stage["adapter_stages"] == [
        {
            "name": "tiny-insecure-code",
            "trained": True,
            "steps": 5,
            "examples": 40,
            "runtime_s": 12.5,
            "tokens": 900,
            "device": "cpu",
        }
    ]


def test_examples_of_an_adapter_manifest() -> None:
    settings = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}
    manifest = {"config": {"train": settings}, "train": {"global_steps": 5, "processes": 3}}
    assert run_stats.manifest_examples(manifest) == 5 * 2 * 4 * 3
    bare = {"train": {"global_steps": 5}}  # no batch settings recorded
    assert run_stats.manifest_examples(bare) is None
    assert run_stats.manifest_examples(bare, missing_batch=1) == 5
    assert run_stats.manifest_examples({"config": {"train": settings}}, missing_batch=1) is None  # no steps


def test_machine_facts_are_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan and the run's recorder both ask; nvidia-smi (up to 20 s) runs once."""
    calls: list[list[str]] = []

    def fake_smi(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "NVIDIA H200\nNVIDIA H200\n", "")

    monkeypatch.setattr(run_stats.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(run_stats.subprocess, "run", fake_smi)
    run_stats._gpu_names.cache_clear()
    try:
        first = run_stats.current_platform()
        first["gpus"].append("not the machine's")
        second = run_stats.current_platform()
    finally:
        run_stats._gpu_names.cache_clear()
    assert len(calls) == 1 and calls[0][0] == "/usr/bin/nvidia-smi"
    assert second["name"] == "GPU: NVIDIA H200 x2" and second["gpus"] == ["NVIDIA H200", "NVIDIA H200"]


def test_an_unreadable_stats_file_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "run-stats.json"
    path.write_text("{ not json")
    run_stats.append_record(tmp_path, {"started": "x", "tasks": []})
    assert (tmp_path / "run-stats.json.unreadable").read_text() == "{ not json"
    assert json.loads(path.read_text())["runs"] == [{"started": "x", "tasks": []}]


def test_the_report_shows_run_time_and_tokens_per_stage(offline_pipeline: list[str], tmp_path: Path) -> None:
    from em_persona.analysis.report import build, run_stats_tables, write

    exp = _experiment(tmp_path)
    pipeline.run_experiment(exp)
    stats = exp.log_dir / "run-stats.json"
    doc = json.loads(stats.read_text())
    doc["runs"][-1]["stages"][0]["name"] = "<script>alert(1)</script>"  # shown as text, never run
    stats.write_text(json.dumps(doc))
    report = build(exp.log_dir)
    assert report.run_stats is not None
    assert list(report.run_stats.stages["stage"]) == ["base model", "server start", "evaluation"]
    tasks = report.run_stats.tasks.set_index("model")
    assert tuple(tasks.loc["mockllm/c", ["input_tokens", "output_tokens", "grader_input_tokens"]]) == (
        20,
        6,
        200,
    )
    paths = write(report, tmp_path / "out")
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert '<h2 id="run-stats">Run time and tokens per stage</h2>' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert f"on {PLATFORM['name']}" in html and "complete;" in html
    assert "## Run time and tokens per stage" in md and "| server start |" in md
    assert "&lt;script>alert(1)&lt;/script>" in md
    assert (tmp_path / "out" / "tables" / "run_stages.csv").is_file()
    # logs without run statistics: the report says so
    report.run_stats = run_stats_tables(tmp_path / "elsewhere")
    html = write(report, tmp_path / "out2")["html"].read_text()
    assert f"No run statistics: {tmp_path / 'elsewhere' / 'run-stats.json'} is absent" in html
    assert 'id="run-stages"' not in html


def test_the_next_plan_finds_finished_follow_ups_on_disk(offline_pipeline: list[str], tmp_path: Path) -> None:
    """A follow-up task reads the harmfulness logs of an earlier run: once both are finished on disk,
    the next plan has nothing left to run for either (it used to wait for harmfulness logs of the
    run in progress, and so planned every follow-up again)."""
    shown = {"condition": "shown", "max_tokens": 2, "max_retries": 0, "judge_prompt": "project"}
    exp = _experiment(tmp_path)
    path = tmp_path / "stats.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["tasks"] = [doc["tasks"][0], {"task": "score_prediction", "args": shown, "models": ["mockllm/a"]}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    exp = load_experiment(path)
    rows = planning.plan(exp)
    assert pipeline.remaining_models(exp, rows) == [("mockllm/a",), ("mockllm/a",)]
    pipeline.run_experiment(exp)
    assert [s["name"] for s in _runs(exp)[0]["stages"] if s["stage"] == "evaluation"] == ["main", "followup"]
    statuses = pipeline.expected_statuses(exp, [])
    assert [(s.unit.task, s.state) for s in statuses] == [
        ("harmfulness", "done"),
        ("score_prediction", "done"),
    ]
    assert pipeline.remaining_models(exp, rows) == [(), ()]
    assert planning.plan_estimate(exp, rows, pipeline.remaining_models(exp, rows)).rows == [0.0, 0.0]
