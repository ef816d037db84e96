"""`em-persona run` interrupted with Ctrl-C (SIGINT) mid-evaluation: it must exit non-zero, list what did
not finish, say how to resume, and write no report (unless --report-anyway, then marked incomplete).

The run happens in a subprocess (a real SIGINT): fine-tuning and serving are replaced by no-ops and the
evaluated model is a slow mockllm, so the signal lands while Inspect's eval_set is running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO_ROOT, TESTS_DIR, write_yaml

# Runs `em-persona run` with no fine-tuning and no server: every model is a mockllm, the evaluated
# one slow (and it touches a marker file on its sixth call, so the test knows the eval is running).
_SCRIPT = """
import sys, time, pathlib
import em_persona.app.pipeline as pipeline
from support import mock_model, mock_output, offline_pipeline

marker = pathlib.Path(sys.argv[2])

calls = 0

def slow(messages, tools, tool_choice, config):
    global calls
    calls += 1
    if calls == 6:
        marker.touch()
    time.sleep(0.25)
    return mock_output("A", "mockllm/slow")

MODELS = {"mockllm/slow": mock_model(slow, "mockllm/slow"),
          "mockllm/fast": mock_model(lambda *a: mock_output("B", "mockllm/fast"), "mockllm/fast")}
pipeline._model = lambda exp, name, base_url: MODELS.get(name) or mock_model(name=name)
offline_pipeline(setattr)
from em_persona.cli import main
main(["run", sys.argv[1], *sys.argv[3:]], prog_name="em-persona")
"""


def _experiment(tmp_path: Path) -> Path:
    doc = {
        "name": "sigint",
        "base_model": {"name": "sig-base", "path": "proxy:tiny"},
        "grader": "mockllm/grader",
        "adapters_dir": str(tmp_path / "adapters"),
        "log_dir": str(tmp_path / "logs"),
        "report_dir": str(tmp_path / "report"),
        "eval": {"max_connections": 1},
        "tasks": [
            # finishes at once: the report of an interrupted run has something to show
            {
                "task": "two_ai_identification",
                "args": {"dataset": "project", "epochs": 2, "max_tokens": 2},
                "limit": 2,
                "models": ["mockllm/fast"],
            },
            # still running when SIGINT comes
            {
                "task": "two_ai_identification",
                "args": {"dataset": "project", "epochs": 2, "max_tokens": 2},
                "limit": 24,
                "models": ["mockllm/slow"],
            },
        ],
    }
    return write_yaml(tmp_path / "sigint.yaml", doc)


def _interrupted_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "run_slow.py"
    script.write_text(_SCRIPT)
    marker = tmp_path / "model-called"
    exp = _experiment(tmp_path)
    env = {
        **os.environ,
        "INSPECT_DISPLAY": "plain",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)]),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script), str(exp), str(marker), *extra],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out, _ = proc.communicate(timeout=30)
                pytest.fail(f"the evaluation never started (rc={proc.returncode}):\n{out}")
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def test_sigint_exits_nonzero_lists_unfinished_work_and_writes_no_report(tmp_path: Path) -> None:
    result = _interrupted_run(tmp_path)
    out = result.stdout
    assert result.returncode == 130, out
    assert "interrupted" in out and "1 of 2 task x model runs did not finish" in out
    assert "two_ai_identification [dataset=project, epochs=2, max_tokens=2] limit=24 x mockllm/slow: " in out
    assert f"em-persona run {tmp_path / 'sigint.yaml'}" in out  # how to resume: the same command
    assert not (tmp_path / "report").exists()
    assert "Traceback" not in out


def test_sigint_with_report_anyway_marks_the_report_incomplete(tmp_path: Path) -> None:
    result = _interrupted_run(tmp_path, "--report-anyway")
    assert result.returncode == 130, result.stdout
    report = tmp_path / "report" / "report.md"
    assert report.exists(), result.stdout
    text = report.read_text()
    assert "INCOMPLETE RUN: 1 of 2 task x model runs did not finish" in text
    assert "limit=24 x mockllm/slow" in text
    assert "Report marked INCOMPLETE RUN" in result.stdout
