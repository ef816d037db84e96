"""The serving dtype per platform: float32 on a CPU without native bfloat16, bfloat16 with it, vLLM's
default on CUDA, an explicit dtype always; the choice is printed, logged and recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import em_persona.serving.command as command_mod
import em_persona.serving.launcher as serve_mod
from em_persona.serving.command import choose_dtype, cpu_flags
from em_persona.serving.launcher import start_server
from em_persona.serving.state import read_state
from support import fake_command, wait_dead

AVX2_EPYC = {"fpu", "sse2", "avx", "avx2", "fma", "avx512f"}  # avx512 without its bf16 part


@pytest.fixture
def fake_base(tmp_path: Path) -> Path:
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    return base


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keywords start_server gives build_command; a stand-in server runs instead of vLLM."""
    seen: list[dict[str, Any]] = []

    def record(model: str, served_name: str, adapters: Any, **kw: Any) -> list[str]:
        seen.append(kw)
        return fake_command(tmp_path, int(kw["port"]), [served_name])

    monkeypatch.setattr(serve_mod, "build_command", record)
    return seen


# --------------------------------------------------------------------------- the choice


@pytest.mark.parametrize(
    "flags, dtype",
    [
        (AVX2_EPYC, "float32"),
        (set(), "float32"),
        (AVX2_EPYC | {"avx512_bf16"}, "bfloat16"),
        ({"avx2", "amx_bf16", "amx_tile"}, "bfloat16"),
        ({"bf16"}, "float32"),  # only the x86 flags count
    ],
)
def test_cpu_dtype_follows_the_bf16_flags(flags: set[str], dtype: str) -> None:
    choice = choose_dtype(None, cpu=True, flags=flags)
    assert choice.dtype == dtype
    if dtype == "float32":
        assert "avx512_bf16 or amx_bf16" in choice.reason and "emulated" in choice.reason
    else:
        assert "native bfloat16" in choice.reason and next(iter(flags & {"avx512_bf16", "amx_bf16"})) in (
            choice.reason
        )


def test_explicit_dtype_wins_and_gpu_keeps_vllms_default() -> None:
    assert choose_dtype("bfloat16", cpu=True, flags=AVX2_EPYC).dtype == "bfloat16"
    assert choose_dtype("float16", cpu=False).dtype == "float16"
    raw = choose_dtype(None, cpu=True, extra_args=["--dtype=half"], flags=AVX2_EPYC)
    assert raw.dtype is None and "extra vLLM arguments" in raw.reason
    gpu = choose_dtype(None, cpu=False, flags=AVX2_EPYC)
    assert gpu.dtype is None and gpu.reason.startswith("GPU")


def test_cpu_flags_reads_the_first_processor(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 amx_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert cpu_flags(info) == frozenset({"fpu", "avx2", "amx_bf16"})
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert cpu_flags(arm) == frozenset({"fp", "asimd", "bf16"})
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_this_machine_is_read_without_error() -> None:
    choice = choose_dtype(None, cpu=True)
    assert choice.dtype in ("float32", "bfloat16")


# --------------------------------------------------------------------------- through start_server and the CLI


def test_cpu_server_runs_float32_and_says_why(
    fake_base: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recorded: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    monkeypatch.setattr(command_mod, "cpu_flags", lambda: frozenset(AVX2_EPYC))
    log = tmp_path / "server.log"
    with start_server(fake_base, log_path=log, timeout=60) as handle:
        assert (handle.dtype, recorded[0]["dtype"]) == ("float32", "float32")
        assert "emulated" in handle.dtype_reason
    first = log.read_text().splitlines()[0]
    assert first.startswith("# dtype float32 (CPU without avx512_bf16 or amx_bf16")
    assert "[serve] dtype float32 (CPU without" in capsys.readouterr().err
    assert wait_dead(handle.pid)


def test_explicit_dtype_reaches_the_server_on_cpu(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[dict[str, Any]]
) -> None:
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    monkeypatch.setattr(command_mod, "cpu_flags", lambda: frozenset(AVX2_EPYC))
    with start_server(fake_base, dtype="bfloat16", log_path=tmp_path / "l.log", timeout=60) as handle:
        assert handle.dtype == "bfloat16" and handle.dtype_reason == "set explicitly"
    assert recorded[0]["dtype"] == "bfloat16"
    assert wait_dead(handle.pid)


def test_gpu_server_gets_no_dtype(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[dict[str, Any]]
) -> None:
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: False)
    with start_server(fake_base, log_path=tmp_path / "l.log", timeout=60) as handle:
        assert handle.dtype is None
    assert recorded[0]["dtype"] is None
    assert wait_dead(handle.pid)


def test_cli_records_and_shows_the_dtype(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    monkeypatch.setattr(command_mod, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    from em_persona.cli import main

    runner = CliRunner()
    started = runner.invoke(main, ["serve", "--base", str(fake_base)])
    try:
        assert started.exit_code == 0, started.output
        assert "dtype bfloat16 (CPU with native bfloat16 (avx512_bf16))" in started.output
        state = read_state()
        assert state is not None
        assert (state["dtype"], state["dtype_reason"]) == (
            "bfloat16",
            "CPU with native bfloat16 (avx512_bf16)",
        )
        status = runner.invoke(main, ["serve", "--status"])
        assert status.exit_code == 0 and "dtype bfloat16 (CPU with native bfloat16" in status.output
        assert f"pid {state['pid']} (running)" in status.output and state["api_key"] not in status.output
    finally:
        runner.invoke(main, ["serve", "--stop"])
    assert runner.invoke(main, ["serve", "--status"]).output.strip() == "no recorded vLLM server"
