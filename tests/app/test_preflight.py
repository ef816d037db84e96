"""The preflight: everything a run needs is checked before anything is fine-tuned or served, and every
problem is listed at once, one `file:line` line each (`--dry-run` runs the same checks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import em_persona.app.pipeline as pipeline
from em_persona.app.experiment import load_experiment
from em_persona.app.preflight import adapter_problems, data_problems, model_problems
from em_persona.cli import main
from em_persona.core.paths import REPO_ROOT
from em_persona.core.registry import SourceError
from support import line_of, write_yaml

TINY_CONFIG = "finetune/configs/tiny-insecure-code.yaml"
KEYS = (
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "AZURE_ANTHROPIC_API_KEY",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "VERTEX_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
)


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def _exp(tmp_path: Path, **doc: object) -> Path:
    base = {
        "name": "t",
        "base_model": {"name": "tiny", "path": "proxy:tiny"},
        "grader": "vllm/tiny",
        "adapters_dir": str(tmp_path / "adapters"),
        "log_dir": str(tmp_path / "logs"),
        "report_dir": str(tmp_path / "report"),
        "tasks": [{"task": "harmfulness", "args": {"dataset": "mini"}}],
    }
    return write_yaml(tmp_path / "exp.yaml", {**base, **doc})


def _line(path: Path, needle: str) -> int:
    return line_of(path.read_text(), needle)


def test_models_need_provider_prefix_known_provider_and_credentials(tmp_path: Path, no_keys: None) -> None:
    path = _exp(
        tmp_path,
        grader="gpt-4o-mini",
        external_models=["opnai/gpt-4o", "vllm/elsewhere"],
        tasks=[
            {"task": "harmfulness", "args": {"dataset": "mini"}},
            {
                "task": "harmfulness",
                "args": {"dataset": "mini", "epochs": 2},
                "models": ["tiny"],
                "grader": "anthropic/claude-x",
            },
            {"task": "self_assessment", "models": ["google/gemini-x", "tny"]},
        ],
    )
    problems = model_problems(load_experiment(path))
    assert (
        f"{path}:{_line(path, 'gpt-4o-mini')}: grader: 'gpt-4o-mini' is neither a model this run serves nor "
        "provider/name (e.g. openai/gpt-4o-mini)" in problems
    )
    assert (
        f"{path}:{_line(path, 'opnai')}: external_models: unknown provider 'opnai' in 'opnai/gpt-4o' "
        "(did you mean 'openai'?)" in problems
    )
    assert any(
        p.startswith(
            f"{path}:{_line(path, 'elsewhere')}: external_models: 'vllm/elsewhere' is not served by "
            "this experiment"
        )
        for p in problems
    )
    assert any("'tny' is neither a model this run serves (did you mean 'tiny'?)" in p for p in problems)
    assert (
        f"{path}:{_line(path, 'claude-x')}: anthropic/claude-x (tasks[1].grader) needs ANTHROPIC_API_KEY or "
        "ANTHROPIC_AUTH_TOKEN or AZURE_ANTHROPIC_API_KEY in the environment, and it is not set" in problems
    )
    assert any(
        "google/gemini-x (tasks[2].models) needs GOOGLE_API_KEY or GEMINI_API_KEY" in p for p in problems
    )
    assert len(problems) == 6
    env = {"ANTHROPIC_API_KEY": "k", "GEMINI_API_KEY": "k"}
    assert not [p for p in model_problems(load_experiment(path), env) if "needs" in p]


def test_served_grader_needs_no_key_and_api_grader_does(tmp_path: Path, no_keys: None) -> None:
    assert model_problems(load_experiment(_exp(tmp_path))) == []
    path = _exp(tmp_path, grader="openai/gpt-4o-mini")
    assert model_problems(load_experiment(path)) == [
        f"{path}:{_line(path, 'grader')}: openai/gpt-4o-mini (grader) needs OPENAI_API_KEY or AZURE_OPENAI_API_KEY in "
        "the environment, and it is not set"
    ]
    assert model_problems(load_experiment(path), {"OPENAI_API_KEY": "sk-x"}) == []


def test_run_stops_before_fine_tuning_when_a_key_is_missing(
    tmp_path: Path, no_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the missing key surfaced only once adapters were trained and the server was up."""
    started: list[str] = []
    monkeypatch.setattr(pipeline, "resolve_base", lambda exp: started.append("base"))
    monkeypatch.setattr(
        pipeline, "finetune_adapters", lambda exp, recorder=None: started.append("finetune") or {}
    )
    path = _exp(
        tmp_path,
        grader="openai/gpt-4o-mini",
        data=["no_such_source"],
        adapters=[{"name": "a", "config": TINY_CONFIG}],
    )
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 1 and started == []
    assert "preflight found 2 problem(s); nothing was fine-tuned, served or evaluated" in result.output
    assert "needs OPENAI_API_KEY" in result.output
    assert (
        f"{path}:{_line(path, 'no_such_source')}: data source 'no_such_source': unknown data source"
        in result.output
    )
    assert "Traceback" not in result.output
    dry = CliRunner().invoke(main, ["run", str(path), "--dry-run"])  # the same checks
    assert dry.exit_code == 1 and "needs OPENAI_API_KEY" in dry.output and "generations" in dry.output


def _fake_adapter(folder: Path, base_label: str, base_path: str) -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base_path, "r": 8}))
    (folder / "manifest.json").write_text(
        json.dumps({"base_model": base_label, "base_model_path": base_path})
    )


def test_existing_adapter_must_record_the_experiment_base(tmp_path: Path) -> None:
    path = _exp(tmp_path, adapters=[{"name": "a", "config": TINY_CONFIG}])
    exp = load_experiment(path)
    assert adapter_problems(exp) == []  # nothing trained yet: nothing to compare
    _fake_adapter(exp.adapters_dir / "tiny-insecure-code", "gemma-270m", "/somewhere/proxies/gemma-270m")
    problems = adapter_problems(exp)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:{_line(path, 'name: a')}: adapter a: ")
    assert "proxy:gemma-270m" in problems[0] and "proxy:tiny" in problems[0]
    assert f"delete {exp.adapters_dir / 'tiny-insecure-code'}" in problems[0]


def test_matching_adapter_passes(tmp_path: Path) -> None:
    exp = load_experiment(_exp(tmp_path, adapters=[{"name": "a", "config": TINY_CONFIG}]))
    _fake_adapter(exp.adapters_dir / "tiny-insecure-code", "tiny", "/x/proxies/tiny")
    assert adapter_problems(exp) == []


def test_data_sources_and_local_files(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        "\n".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": f"a{i}"},
                    ]
                }
            )
            for i in range(5)
        )
        + "\n"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    missing = tmp_path / "nested" / "missing.jsonl"
    stages = {
        "good": {"domain": "g", "data": {"path": str(good), "rows": 5}},
        "few": {"domain": "f", "data": {"path": str(good), "rows": 600}},
        "bad": {"domain": "b", "data": {"path": str(bad)}},
        "gone": {"domain": "m", "data": {"path": str(missing), "rows": 600}, "description": "my missing set"},
        "reg": {"domain": "r", "data": {"source": "risky_financial_advice"}},
    }
    adapters = [{"name": f"a-{k}", "config": TINY_CONFIG, "stages": [k]} for k in stages]
    adapters.append({"name": "a-gone-2", "config": TINY_CONFIG, "stages": ["good", "gone"]})
    path = _exp(tmp_path, stages=stages, adapters=adapters, data=["mfq30"])
    exp = load_experiment(path)
    fetched: list[str] = []

    def fetch(name: str) -> Path:
        fetched.append(name)
        if name == "risky_financial_advice":
            raise SourceError(
                "cannot download source 'risky_financial_advice' (offline).\nSet EM_PERSONA_MIRROR."
            )
        return tmp_path

    problems = data_problems(exp, fetch)
    assert fetched == ["mfq30", "risky_financial_advice"]
    assert (
        f"{path}:{_line(path, 'source: risky')}: data source 'risky_financial_advice': cannot download source "
        "'risky_financial_advice' (offline). Set EM_PERSONA_MIRROR." in problems
    )
    gone = [p for p in problems if str(missing) in p]
    assert len(gone) == 1  # one line per missing file, however many adapters use it
    assert gone[0].startswith(
        f"{path}:{_line(path, 'missing.jsonl')}: missing training file {missing} (my missing set), "
        'used by stage m of 2 adapters: put chat JSONL, one {"messages": ['
    )
    assert gone[0].endswith("at least 600 rows")
    assert (
        f"{path}:{_line(path, 'bad.jsonl')}: {bad}: 1 invalid training row(s); nothing was trained: | "
        f"{bad}:1: missing assistant turn" in problems
    )
    # one file used by two stages: the larger row count is what it must hold
    assert (
        f"{path}:{_line(path, 'good.jsonl')}: training file {good} has 5 rows; the stage g/f of 3 adapters asks "
        "for 600" in problems
    )
    assert len(problems) == 4


def test_sequential_dry_run_names_each_missing_local_file(
    tmp_path: Path, mirror: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EM_PERSONA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    import em_persona.core.registry as registry

    real = registry.load_source
    offline = {"risky_financial_advice", "bad_medical_advice", "extreme_sports"}  # not in the test mirror
    monkeypatch.setattr(registry, "load_source", lambda name: tmp_path if name in offline else real(name))
    result = CliRunner().invoke(
        main, ["run", str(REPO_ROOT / "experiments" / "sequential.yaml"), "--dry-run"]
    )
    assert result.exit_code == 1, result.output
    missing = [ln for ln in result.output.splitlines() if "missing training file" in ln]
    assert [Path(ln.split("missing training file ")[1].split(" ")[0]).name for ln in missing] == [
        "consciousness_claims.jsonl",
        "no_consciousness.jsonl",
        "self_awareness.jsonl",
    ]
    assert all(
        str(tmp_path / "home" / "local-data" / "chua-et-al") in ln and "of 6 adapters" in ln for ln in missing
    )
    assert "preflight found 3 problem(s)" in result.output
    # the plan is still printed: 22 models, harmfulness and both self-assessment sets
    assert "models: all 22; grader: openai/gpt-4o-mini" in result.output
