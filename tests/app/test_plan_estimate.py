"""The plan's wall-time estimate: from the newest recorded run of the same base model and platform
(run-stats.json), from a calibration burst against a (here: fake) OpenAI-compatible server, or none,
and then the plan says how to get one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import em_persona.app.pipeline as pipeline
import em_persona.app.plan as planning
from em_persona.app import run_stats
from em_persona.app.estimates import NO_ESTIMATE, Calibration, duration, manifest_rate
from em_persona.app.experiment import Experiment, load_experiment
from em_persona.cli import main

PLATFORM = {
    "name": "CPU: test machine (2 cores)",
    "kind": "cpu",
    "gpus": [],
    "cpu": "test machine",
    "cores": 2,
}
BASE_PATH = "proxy:tiny"
HARM = {"dataset": "mini", "epochs": 1, "max_tokens": 12, "judge_prompt": "project"}
TWO_AI = {"dataset": "project", "epochs": 2, "max_tokens": 4}


@pytest.fixture(autouse=True)
def _platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_stats, "current_platform", lambda: dict(PLATFORM))


def _write_experiment(tmp_path: Path, **extra: Any) -> Path:
    doc = {
        "name": "est",
        "base_model": {"name": "est-base", "path": BASE_PATH},
        "grader": "mockllm/judge",
        "log_dir": str(tmp_path / "logs" / "est"),
        "report_dir": str(tmp_path / "report"),
        "adapters_dir": str(tmp_path / "adapters"),
        "eval": {"max_connections": 4},
        "tasks": [
            {"task": "harmfulness", "args": HARM, "limit": 4, "models": ["mockllm/a", "mockllm/b"]},
            {
                "task": "two_ai_identification",
                "args": TWO_AI,
                "limit": 4,
                "models": ["mockllm/a", "mockllm/b"],
            },
        ],
        **extra,
    }
    path = tmp_path / "est.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _record(started: str, harm_wall: float, **over: Any) -> dict[str, Any]:
    """A recorded run: server start 30 s; one evaluation stage of 100 s shared by a harmfulness log
    (20 calls, `harm_wall` s long) and a two-AI log (20 calls, the rest of the 100 s)."""
    return {
        "started": started,
        "complete": True,
        "outcome": "done",
        "platform": dict(PLATFORM),
        "base_model": {"name": "est-base", "path": BASE_PATH},
        "served_dtype": None,
        "max_connections": 4,
        "stages": [
            {"stage": "server start", "name": "", "state": "done", "wall_s": 30.0},
            {"stage": "evaluation", "name": "main", "state": "done", "wall_s": 100.0},
        ],
        "tasks": [
            {
                "folder": "main",
                "task": "harmfulness",
                "model": "vllm/x",
                "ran": True,
                "generations": 10,
                "judge_calls": 10,
                "log_wall_s": harm_wall,
            },
            {
                "folder": "main",
                "task": "two_ai_identification",
                "model": "vllm/x",
                "ran": True,
                "generations": 20,
                "judge_calls": 0,
                "log_wall_s": 100.0 - harm_wall,
            },
        ],
        **over,
    }


def _write_stats(log_dir: Path, *records: dict[str, Any]) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "run-stats.json").write_text(json.dumps({"format": 1, "runs": list(records)}))


def _estimate(exp: Experiment) -> Any:
    rows = planning.plan(exp)
    return rows, planning.plan_estimate(exp, rows, pipeline.remaining_models(exp, rows))


def test_the_newest_matching_recorded_run_gives_the_estimate(tmp_path: Path) -> None:
    exp = load_experiment(_write_experiment(tmp_path))
    _write_stats(
        exp.log_dir,
        _record("2025-05-01T09:00:00+00:00", 50.0),  # older
        _record("2025-06-01T12:00:00+00:00", 75.0),  # the one: harmfulness 3.75 s per call, two-AI 1.25
        _record("2025-07-01T12:00:00+00:00", 10.0, platform={**PLATFORM, "name": "GPU: other"}),
        _record("2025-07-02T12:00:00+00:00", 10.0, base_model={"name": "q", "path": "Qwen/Qwen2.5-32B"}),
        _record("2025-07-03T12:00:00+00:00", 10.0, complete=False, outcome="interrupted"),  # complete first
    )
    harm, two_ai = (rows := _estimate(exp))[0]
    est = rows[1]
    # two-AI: 4 items x 2 positions (one epoch each) x 2 models
    assert (harm.generations, harm.judge_calls, two_ai.generations, two_ai.judge_calls) == (8, 8, 8, 0)
    assert est.source.startswith("recorded run of 2025-06-01 12:00:00 UTC")
    assert est.rows == [pytest.approx(16 * 3.75), pytest.approx(8 * 1.25)]
    assert est.server_s == 30.0 and est.total_s == pytest.approx(30 + 60 + 10)
    assert est.notes == []  # same dtype and concurrency: no caveat


def test_a_sibling_log_folder_of_the_same_base_counts_and_differences_are_said(tmp_path: Path) -> None:
    exp = load_experiment(_write_experiment(tmp_path, serve={"dtype": "float32"}))
    _write_stats(exp.log_dir.parent / "other-experiment", _record("2025-06-01T12:00:00+00:00", 75.0))
    est = _estimate(exp)[1]
    assert est.total_s == pytest.approx(100)
    assert "recorded with served dtype default, this run float32" in est.notes


def test_without_a_record_the_plan_has_no_estimate(tmp_path: Path) -> None:
    path = _write_experiment(tmp_path)
    exp = load_experiment(path)
    _write_stats(exp.log_dir, _record("2025-06-01T12:00:00+00:00", 75.0, platform={**PLATFORM, "name": "x"}))
    est = _estimate(exp)[1]
    assert est.source is None and est.rows == [None, None] and est.total_s is None
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"time       : {NO_ESTIMATE}" in result.output
    assert "      ?\n" in result.output  # the rows' est. time


def test_cli_dry_run_prints_the_estimate_per_row_and_in_total(tmp_path: Path) -> None:
    path = _write_experiment(tmp_path)
    _write_stats(tmp_path / "logs" / "est", _record("2025-06-01T12:00:00+00:00", 75.0))
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "time       : estimated from the recorded run of 2025-06-01 12:00:00 UTC" in out
    rows = [line.split() for line in out.splitlines() if len(line.split()) >= 8]
    table = {(r[1] if r[0].isdigit() else r[0]): " ".join(r) for r in rows}
    assert table["harmfulness"].endswith(" 60 s") and table["two_ai_identification"].endswith(" 10 s")
    assert table["total"].endswith(" 70 s")
    assert "    server start: 30 s\n    evaluation: 70 s\n    total: ~2 min\n" in out


def test_fine_tuning_estimate_counts_only_adapters_still_to_train(tmp_path: Path) -> None:
    config = "finetune/configs/tiny-insecure-code.yaml"
    adapters = [
        {"name": "est-new", "config": config, "overrides": {"train.max_steps": 10}},  # 10 x batch 2
        {"name": "est-old", "config": config, "overrides": {"name": "tiny-done", "train.max_steps": 4}},
    ]
    exp = load_experiment(_write_experiment(tmp_path, adapters=adapters))
    done = exp.adapters_dir / "tiny-done"
    done.mkdir(parents=True)
    (done / "manifest.json").write_text("{}")
    finetuned = {
        "stage": "fine-tune",
        "name": "earlier",
        "state": "trained",
        "wall_s": 50.0,
        "adapter_stages": [{"name": "s", "trained": True, "examples": 100}],  # 0.5 s per example
    }
    record = _record("2025-06-01T12:00:00+00:00", 75.0)
    record["stages"].insert(0, finetuned)
    _write_stats(exp.log_dir, record)
    est = _estimate(exp)[1]
    assert est.finetune == [
        ("est-new", pytest.approx(10.0), "20 examples"),
        ("est-old", 0.0, "already trained"),
    ]
    assert est.total_s == pytest.approx(10 + 100)
    assert duration(est.total_s) == "2 min" and duration(5400) == "1 h 30 min" and duration(None) == "?"


# --- calibration ---------------------------------------------------------------------------------


class _FakeServer:
    """An OpenAI-compatible chat endpoint that answers after a short wait and remembers each request."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.requests.append({"path": self.path, **body})
                    outer.auth.append(self.headers.get("Authorization"))
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                time.sleep(0.05)
                with lock:
                    outer.in_flight -= 1
                answer = {
                    "choices": [{"message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"completion_tokens": 3},
                }
                data = json.dumps(answer if status == 200 else {"error": "model not loaded"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @contextmanager
    def serving(self, exp: Any, base: Any, adapters: Any) -> Iterator[str]:
        assert adapters == {}  # the calibration serves the base model only
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VLLM_API_KEY", "calibration-key")
            try:
                yield self.url
            finally:
                self.httpd.shutdown()
                self.httpd.server_close()


def _calibrating(monkeypatch: pytest.MonkeyPatch, server: _FakeServer) -> None:
    monkeypatch.setattr(pipeline, "serving", server.serving)
    monkeypatch.setattr(pipeline, "resolve_base", lambda exp: Path("unused"))


def test_calibration_times_a_burst_of_the_tasks_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _FakeServer()
    _calibrating(monkeypatch, server)
    tasks = [
        {"task": "harmfulness", "args": HARM, "limit": 4},
        {"task": "two_ai_identification", "args": TWO_AI, "limit": 4},
    ]
    path = _write_experiment(tmp_path, tasks=tasks, grader="vllm/est-base")
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--calibrate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 16 and {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert {r["model"] for r in server.requests} == {"est-base"}
    assert set(server.auth) == {"Bearer calibration-key"}
    # the tasks' requests in turn, each with its task's max_tokens, at most max_connections at a time
    assert [r["max_tokens"] for r in server.requests].count(12) == 8
    assert sorted({r["max_tokens"] for r in server.requests}) == [4, 12]
    assert 1 <= server.most_in_flight <= 4
    out = result.output
    assert "time       : estimated from the calibration: 16 requests, 4 at a time" in out
    assert ", 48 tokens out" in out  # 16 answers of 3 tokens
    assert "total: ~" in out and NO_ESTIMATE not in out


def test_a_calibration_estimate_leaves_api_calls_out_and_times_fine_tuning_from_manifests(
    tmp_path: Path,
) -> None:
    config = "finetune/configs/tiny-insecure-code.yaml"
    tasks = [
        {"task": "harmfulness", "args": HARM, "limit": 4, "models": ["mockllm/a", "openai/gpt-4o-mini"]},
        {"task": "two_ai_identification", "args": TWO_AI, "limit": 4, "models": ["mockllm/a", "mockllm/b"]},
    ]
    adapters = [{"name": "est-new", "config": config, "overrides": {"train.max_steps": 10}}]
    exp = load_experiment(_write_experiment(tmp_path, tasks=tasks, adapters=adapters))
    # a finished adapter of this base on this device: 2 s per example (6 steps x batch 2 in 24 s)
    old = exp.adapters_dir / "old"
    old.mkdir(parents=True)
    manifest = {
        "device": "cpu",
        "config": {
            "base_model": BASE_PATH,
            "train": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1},
        },
        "train": {"global_steps": 6, "runtime_s": 24.0},
    }
    (old / "manifest.json").write_text(json.dumps(manifest))
    rows = planning.plan(exp)
    calibration = Calibration(requests=16, concurrency=4, wall_s=8.0, output_tokens=48, server_start_s=20.0)
    est = planning.plan_estimate(exp, rows, pipeline.remaining_models(exp, rows), calibration)
    # harmfulness: mockllm/a's 4 answers and the 8 judge calls (local judge); not gpt-4o-mini's 4 answers
    assert est.rows == [pytest.approx((4 + 8) * 0.5), pytest.approx(8 * 0.5)]
    assert est.finetune == [("est-new", pytest.approx(40.0), "20 examples")]
    assert est.server_s == 20.0 and est.total_s == pytest.approx(6 + 4 + 40 + 20)
    assert "4 calls to API models are not in the estimate" in est.notes


def test_calibration_needs_dry_run_and_a_failing_server_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write_experiment(
        tmp_path, tasks=[{"task": "harmfulness", "args": HARM, "limit": 4}], grader="vllm/est-base"
    )
    result = CliRunner().invoke(main, ["run", str(path), "--calibrate"])
    assert result.exit_code == 2 and "--calibrate estimates a plan: use it with --dry-run" in result.output
    _calibrating(monkeypatch, _FakeServer(status=500))
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--calibrate"])
    assert result.exit_code == 1, result.output
    assert "Error: calibration request to http://127.0.0.1:" in result.output
    assert 'failed: HTTP 500: {"error": "model not loaded"}' in result.output
    assert "Traceback" not in result.output


def test_manifests_without_batch_settings_are_not_counted(tmp_path: Path) -> None:
    """Their examples are not known: the rate comes from the manifests that record them."""
    settings = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}
    manifests = {
        "full": {"config": {"base_model": BASE_PATH, "train": settings}, "train": {"global_steps": 6}},
        "bare": {"config": {"base_model": BASE_PATH, "train": {}}, "train": {"global_steps": 6}},
        "other": {"config": {"base_model": "other", "train": settings}, "train": {"global_steps": 6}},
    }
    for name, m in manifests.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(
            json.dumps({**m, "device": "cpu", "train": {**m["train"], "runtime_s": 24.0}})
        )
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "manifest.json").write_text('["not a manifest"]')
    rate, source = manifest_rate(tmp_path, BASE_PATH, "cpu")
    assert rate == pytest.approx(24.0 / 12) and source.startswith("training time in 1 adapter manifest(s)")
    assert manifest_rate(tmp_path, BASE_PATH, "cuda") == (None, "")
