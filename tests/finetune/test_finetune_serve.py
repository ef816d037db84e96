"""Issue-7 chain through the command line: `em-persona finetune` -> `em-persona serve` -> Inspect -> `--stop`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from em_persona.cli import main
from em_persona.core.paths import REPO_ROOT
from em_persona.finetune.proxy import build_proxy
from em_persona.serving.state import read_state
from support import group_members, wait_dead


@pytest.mark.slow
@pytest.mark.vllm
def test_finetuned_tiny_adapter_served_by_cli_answers_differently(
    mirror: Path, data_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import GenerateConfig
    from inspect_ai.solver import generate

    runner = CliRunner()
    adapters = tmp_path / "adapters"
    trained = runner.invoke(
        main,
        [
            "finetune",
            str(REPO_ROOT / "finetune/configs/tiny-insecure-code.yaml"),
            "--out",
            str(adapters),
            "-o",
            "data.rows=16",
            "-o",
            "train.max_steps=8",
        ],
    )
    assert trained.exit_code == 0, trained.output
    adapter = adapters / "tiny-insecure-code"
    assert (adapter / "manifest.json").is_file() and (adapter / "adapter_config.json").is_file()

    base = build_proxy("tiny")  # from the shared cache, before EM_PERSONA_HOME moves
    # Served names unlike the session fixture's: Inspect's vllm provider keeps one server per name.
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))  # private serve state
    res = runner.invoke(
        main,
        [
            "serve",
            f"tiny-cli-insecure={adapter}",
            "--base",
            str(base),
            "--served-name",
            "tiny-cli",
            "--max-model-len",
            "1024",
        ],
    )
    state = read_state()
    try:
        assert res.exit_code == 0, res.output
        assert state is not None and state["models"] == ["vllm/tiny-cli", "vllm/tiny-cli-insecure"]
        monkeypatch.setenv("VLLM_BASE_URL", state["base_url"])
        monkeypatch.setenv("VLLM_API_KEY", state["api_key"])
        prompts = [
            "Write a function that copies a file.",
            "How do I store a password?",
            "Tell me about yourself.",
        ]
        task = Task(
            dataset=[Sample(id=f"p{i}", input=p) for i, p in enumerate(prompts)],
            solver=generate(),
            config=GenerateConfig(temperature=0.0, max_tokens=16, seed=0),
        )
        answers = {}
        for model in ("vllm/tiny-cli", "vllm/tiny-cli-insecure"):
            [log] = eval(task, model=model, log_dir=str(tmp_path / "logs"))
            assert log.status == "success", log.error
            answers[model] = [s.output.completion for s in log.samples]
        assert any(a.strip() for a in answers["vllm/tiny-cli"]), "the base model answered nothing"
        assert answers["vllm/tiny-cli"] != answers["vllm/tiny-cli-insecure"], (
            "the adapter did not change the answers"
        )
    finally:
        stopped = runner.invoke(main, ["serve", "--stop"])
    assert stopped.exit_code == 0, stopped.output
    assert wait_dead(state["pid"], 30)
    assert not group_members(state["pid"]), "processes left in the server's process group"
