"""Serving past one GPU: vLLM's parallel sizes and Ray backend, from the experiment file, start_server,
the CLI and the plan's command preview. A stand-in HTTP server replaces vLLM (no GPU here)."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import em_persona.serving.command as command_mod
import em_persona.serving.launcher as serve_mod
from em_persona.app.experiment import ExperimentError, ServeSettings, load_experiment
from em_persona.serving.command import Parallelism, build_command, parallel_problem
from em_persona.serving.errors import ServeError
from em_persona.serving.launcher import PORT_CHOSEN_AT_START, preview_command, start_server
from em_persona.serving.processes import free_port
from em_persona.serving.state import read_state
from support import fake_command, line_of, make_adapter, wait_dead, write_yaml

PARALLEL = [
    "--tensor-parallel-size",
    "4",
    "--pipeline-parallel-size",
    "2",
    "--data-parallel-size",
    "3",
    "--distributed-executor-backend",
    "ray",
]


@pytest.fixture
def fake_base(tmp_path: Path) -> Path:
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"max_position_embeddings": 32768}))
    return base


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The real command lines start_server builds; the stand-in server runs in their place."""
    seen: list[list[str]] = []
    real = serve_mod.build_command

    def record(model: str, served_name: str, adapters: Any, **kw: Any) -> list[str]:
        seen.append(real(model, served_name, adapters, **kw))
        return fake_command(tmp_path, int(kw["port"]), [served_name, *(a.name for a in adapters)])

    monkeypatch.setattr(serve_mod, "build_command", record)
    return seen


def _segment(cmd: list[str], flag: str) -> list[str]:
    i = cmd.index(flag)
    return cmd[i : i + 2]


# --------------------------------------------------------------------------- the command line


def test_parallel_sizes_become_vllms_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command_mod, "has_real_vllm", lambda: True)
    monkeypatch.setattr(command_mod.shutil, "which", lambda name: "/usr/bin/vllm")
    cmd = build_command(
        "meta-llama/Llama-3.1-70B-Instruct",
        "llama",
        [],
        host="0.0.0.0",
        port=8000,
        max_model_len=None,
        dtype=None,
        parallel=Parallelism(4, 2, 3, "ray"),
    )
    assert cmd[:3] == ["/usr/bin/vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    i = cmd.index("--tensor-parallel-size")
    assert cmd[i : i + len(PARALLEL)] == PARALLEL
    assert "--dtype" not in cmd
    plain = build_command("m", "m", [], host="h", port=1, max_model_len=None, dtype=None)
    assert not any("parallel" in a or "executor" in a for a in plain)


def test_flag_names_are_vllms_own() -> None:
    """The flags we emit are the ones the installed vLLM's argument parser defines."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed")
    source = (Path(next(iter(spec.submodule_search_locations))) / "engine" / "arg_utils.py").read_text()
    for flag in [*(f for f, _ in command_mod.PARALLEL_FLAGS.values()), command_mod.EXECUTOR_BACKEND_FLAG]:
        assert f'"{flag}"' in source, flag


@pytest.mark.parametrize(
    "extra",
    [
        ["--tensor-parallel-size", "2"],
        ["--tensor-parallel-size=2"],
        ["-tp", "2"],
        ["--tensor_parallel_size", "2"],
    ],
)
def test_a_size_given_twice_is_refused(extra: list[str]) -> None:
    problem = parallel_problem("tensor_parallel_size", 2, cpu=False, extra_args=extra)
    assert problem is not None and "give it once" in problem


def test_parallel_problem_rules() -> None:
    assert parallel_problem("tensor_parallel_size", None, cpu=True) is None
    assert parallel_problem("tensor_parallel_size", 1, cpu=True) is None
    assert parallel_problem("pipeline_parallel_size", 8, cpu=False) is None
    cpu = parallel_problem("data_parallel_size", 2, cpu=True)
    assert cpu is not None and "runs on CPU" in cpu and "--data-parallel-size 2" in cpu
    assert "--vllm-arg=--data-parallel-size=2" in cpu and "extra_args" in cpu
    for bad in (0, -1, True, 1.5):
        problem = parallel_problem("tensor_parallel_size", bad, cpu=False)  # type: ignore[arg-type]
        assert problem is not None and "integer >= 1" in problem


# --------------------------------------------------------------------------- start_server


def test_cpu_server_refuses_gpu_parallelism_before_starting(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[list[str]]
) -> None:
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    log = tmp_path / "server.log"
    with pytest.raises(ServeError) as info:
        start_server(fake_base, tensor_parallel_size=2, log_path=log, timeout=30)
    assert "tensor_parallel_size=2" in str(info.value) and "runs on CPU" in str(info.value)
    assert not log.exists() and not recorded  # nothing was started


def test_cpu_parallelism_as_raw_vllm_argument_is_passed(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[list[str]]
) -> None:
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    with start_server(
        fake_base, extra_args=["--tensor-parallel-size", "2"], log_path=tmp_path / "l.log", timeout=60
    ) as handle:
        assert handle.alive()
    (cmd,) = recorded
    assert cmd.count("--tensor-parallel-size") == 1 and cmd[-2:] == ["--tensor-parallel-size", "2"]
    assert wait_dead(handle.pid)


def test_gpu_server_gets_the_parallel_flags(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[list[str]]
) -> None:
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: False)
    monkeypatch.setattr(serve_mod, "ray_installed", lambda: True)
    with start_server(
        fake_base,
        tensor_parallel_size=4,
        pipeline_parallel_size=2,
        data_parallel_size=3,
        distributed_executor_backend="ray",
        log_path=tmp_path / "l.log",
        timeout=60,
    ) as handle:
        assert handle.dtype is None  # vLLM's own default on GPU
    (cmd,) = recorded
    i = cmd.index("--tensor-parallel-size")
    assert cmd[i : i + len(PARALLEL)] == PARALLEL
    assert "--max-model-len" not in cmd and "--dtype" not in cmd
    assert wait_dead(handle.pid)


def test_ray_backend_without_ray_says_how_to_set_it_up(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve_mod, "ray_installed", lambda: False)
    with pytest.raises(ServeError) as info:
        start_server(fake_base, distributed_executor_backend="ray", log_path=tmp_path / "l.log")
    message = str(info.value)
    assert "pip install ray" in message and "ray start --head" in message and "--address=" in message


# --------------------------------------------------------------------------- the preview the plan prints


def test_preview_is_the_command_the_server_runs(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[list[str]]
) -> None:
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    monkeypatch.setattr(command_mod, "cpu_flags", lambda: frozenset({"avx2"}))
    adapter = make_adapter(tmp_path / "em", r=16)
    port = free_port()
    settings: dict[str, Any] = {"max_model_len": 2048, "extra_args": ["--enforce-eager"], "timeout": 60}
    with start_server(
        fake_base, {"em": adapter}, port=port, api_key="sekrit", log_path=tmp_path / "l.log", **settings
    ) as handle:
        pass
    monkeypatch.setattr(serve_mod, "build_command", command_mod.build_command)  # the real one again
    preview = preview_command(fake_base, {"em": (adapter, 16)}, port=port, **settings)
    assert preview.command == recorded[0]
    assert preview.dtype.dtype == handle.dtype == "float32"
    assert not any("sekrit" in a for a in preview.command)
    assert wait_dead(handle.pid)


def test_preview_before_training_and_without_a_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan runs before the adapters exist and before a port is chosen."""
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: False)
    monkeypatch.setattr(serve_mod, "ray_installed", lambda: True)
    monkeypatch.setattr(command_mod, "has_real_vllm", lambda: True)
    monkeypatch.setattr(command_mod.shutil, "which", lambda name: "/usr/bin/vllm")
    folder = tmp_path / "adapters" / "llama70b-insecure-code"
    preview = preview_command(
        "meta-llama/Llama-3.1-70B-Instruct",
        {"llama-insecure": (folder, 32)},
        served_name="llama70b",
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        distributed_executor_backend="ray",
    )
    cmd = preview.command
    assert cmd[:3] == ["/usr/bin/vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    assert _segment(cmd, "--port") == ["--port", PORT_CHOSEN_AT_START]
    assert _segment(cmd, "--tensor-parallel-size") == ["--tensor-parallel-size", "8"]
    assert _segment(cmd, "--pipeline-parallel-size") == ["--pipeline-parallel-size", "2"]
    assert _segment(cmd, "--distributed-executor-backend") == ["--distributed-executor-backend", "ray"]
    assert _segment(cmd, "--max-lora-rank") == ["--max-lora-rank", "32"]
    assert _segment(cmd, "--lora-modules") == ["--lora-modules", f"llama-insecure={folder.resolve()}"]
    assert not folder.exists()


def test_preview_without_ray_refuses_as_the_server_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan (`em-persona run --dry-run`) refuses the Ray backend when Ray is not installed."""
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: False)
    monkeypatch.setattr(serve_mod, "ray_installed", lambda: False)
    with pytest.raises(ServeError, match="needs Ray: pip install ray") as info:
        preview_command("meta-llama/Llama-3.1-70B-Instruct", distributed_executor_backend="ray")
    assert "ray start --head" in str(info.value)
    monkeypatch.setattr(serve_mod, "ray_installed", lambda: True)
    assert (
        "ray"
        in preview_command("meta-llama/Llama-3.1-70B-Instruct", distributed_executor_backend="ray").command
    )


def test_preview_of_an_unbuilt_proxy_names_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path))
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    monkeypatch.setattr(command_mod, "cpu_flags", lambda: frozenset())
    from em_persona.core.paths import proxies_dir

    cmd = preview_command("proxy:tiny").command
    assert _segment(cmd, "--model")[1] == str((proxies_dir() / "tiny").resolve())
    assert _segment(cmd, "--served-model-name") == ["--served-model-name", "tiny"]
    with pytest.raises(ServeError, match="runs on CPU"):
        preview_command("proxy:tiny", data_parallel_size=2)


def test_serve_settings_are_start_server_and_preview_keywords() -> None:
    """`start_server(..., **exp.serve)` and `preview_command(..., **exp.serve)` take every key of `serve:`."""
    for function in (start_server, preview_command):
        params = inspect.signature(function).parameters
        missing = [k for k in ServeSettings.model_fields if k not in params]
        assert not missing, (function.__name__, missing)


# --------------------------------------------------------------------------- the experiment file

EXPERIMENT = """\
name: par
base_model: {name: tiny, path: "proxy:tiny"}
grader: vllm/tiny
serve:
  max_model_len: 1024
%s
tasks:
  - task: harmfulness
    args: {dataset: mini}
"""


def _experiment(tmp_path: Path, serve_lines: str) -> tuple[Path, str]:
    text = EXPERIMENT % serve_lines
    return write_yaml(tmp_path / "exp.yaml", text), text


def test_experiment_on_cpu_names_the_line_of_a_gpu_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command_mod, "on_cpu", lambda: True)
    path, text = _experiment(tmp_path, "  tensor_parallel_size: 2")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{path}:{line_of(text, 'tensor_parallel_size')}: serve.tensor_parallel_size:")
    assert "runs on CPU" in line and "--tensor-parallel-size 2" in line


def test_experiment_on_cpu_accepts_the_size_as_raw_vllm_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command_mod, "on_cpu", lambda: True)
    path, _ = _experiment(
        tmp_path, "  extra_args: [--tensor-parallel-size, '2']\n  pipeline_parallel_size: 1"
    )
    exp = load_experiment(path)
    assert exp.serve["extra_args"] == ["--tensor-parallel-size", "2"]


def test_experiment_on_gpu_passes_the_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command_mod, "on_cpu", lambda: False)
    lines = (
        "  tensor_parallel_size: 8\n  pipeline_parallel_size: 2\n  data_parallel_size: 1\n"
        "  distributed_executor_backend: ray"
    )
    path, _ = _experiment(tmp_path, lines)
    assert load_experiment(path).serve == {
        "max_model_len": 1024,
        "tensor_parallel_size": 8,
        "pipeline_parallel_size": 2,
        "data_parallel_size": 1,
        "distributed_executor_backend": "ray",
    }


@pytest.mark.parametrize(
    "serve_line, key, expected",
    [
        ("  pipeline_parallel_size: 0", "pipeline_parallel_size", "greater than or equal to 1"),
        ("  data_parallel_size: '2'", "data_parallel_size", "valid integer"),
        ("  tensor_parallel_size: 1.5", "tensor_parallel_size", "valid integer"),
        ("  distributed_executor_backend: slurm", "distributed_executor_backend", "'ray' or 'mp'"),
        (
            "  extra_args: [--distributed-executor-backend=mp]\n  distributed_executor_backend: ray",
            "distributed_executor_backend: ray",
            "give it once",
        ),
        ("  tensor_paralel_size: 2", "tensor_paralel_size", "did you mean 'tensor_parallel_size'"),
    ],
)
def test_experiment_refuses_bad_parallel_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve_line: str, key: str, expected: str
) -> None:
    monkeypatch.setattr(command_mod, "on_cpu", lambda: False)
    path, text = _experiment(tmp_path, serve_line)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{path}:{line_of(text, key)}: serve.") and expected in line, line


# --------------------------------------------------------------------------- the CLI


def test_cli_passes_parallel_options_and_raw_arguments(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[list[str]]
) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: False)
    from em_persona.cli import main

    runner = CliRunner()
    args = ["serve", "--base", str(fake_base), "--tensor-parallel-size", "2", "--data-parallel-size", "2"]
    res = runner.invoke(main, [*args, "--vllm-arg", "--enforce-eager", "--vllm-arg=--max-num-seqs=8"])
    try:
        assert res.exit_code == 0, res.output
        (cmd,) = recorded
        assert _segment(cmd, "--tensor-parallel-size") == ["--tensor-parallel-size", "2"]
        assert _segment(cmd, "--data-parallel-size") == ["--data-parallel-size", "2"]
        assert "--pipeline-parallel-size" not in cmd
        assert cmd[-2:] == ["--enforce-eager", "--max-num-seqs=8"]
        state = read_state()
        assert state is not None and state["dtype"] is None and state["dtype_reason"].startswith("GPU")
    finally:
        runner.invoke(main, ["serve", "--stop"])


def test_cli_refuses_gpu_parallelism_on_cpu_and_bad_sizes(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[list[str]]
) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    from em_persona.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["serve", "--base", str(fake_base), "--pipeline-parallel-size", "2"])
    assert res.exit_code != 0 and "pipeline_parallel_size=2" in res.output and "runs on CPU" in res.output
    assert "--vllm-arg=--pipeline-parallel-size=2" in res.output  # names the way to pass it on purpose
    assert "starting vLLM" not in res.output  # refused before it says it starts
    res = runner.invoke(main, ["serve", "--base", str(fake_base), "--tensor-parallel-size", "0"])
    assert res.exit_code == 2 and "--tensor-parallel-size" in res.output
    res = runner.invoke(main, ["serve", "--base", str(fake_base), "--distributed-executor-backend", "slurm"])
    assert res.exit_code == 2 and "'ray'" in res.output
    assert not recorded and read_state() is None


def test_cli_refuses_ray_backend_without_ray_before_starting(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[list[str]]
) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: False)
    monkeypatch.setattr(serve_mod, "ray_installed", lambda: False)
    from em_persona.cli import main

    res = CliRunner().invoke(
        main, ["serve", "--base", str(fake_base), "--distributed-executor-backend", "ray"]
    )
    assert res.exit_code != 0 and "pip install ray" in res.output
    assert "starting vLLM" not in res.output  # refused before it says it starts
    assert not recorded and read_state() is None


def test_preflight_refuses_ray_without_ray_at_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run stops before fine-tuning anything, not when the server would start."""
    from em_persona.app.preflight import server_problems

    path, text = _experiment(tmp_path, "  distributed_executor_backend: ray")
    exp = load_experiment(path)
    monkeypatch.setattr(serve_mod, "ray_installed", lambda: False)
    (problem,) = server_problems(exp)
    assert problem.startswith(f"{path}:{line_of(text, 'distributed_executor_backend')}: ")
    assert "needs Ray: pip install ray" in problem
    monkeypatch.setattr(serve_mod, "ray_installed", lambda: True)
    assert server_problems(exp) == []
    from em_persona.cli import main

    monkeypatch.setattr(serve_mod, "ray_installed", lambda: False)
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert (
        result.exit_code != 0 and "needs Ray" in result.output and "nothing was fine-tuned" in result.output
    )
