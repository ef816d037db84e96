"""Experiment files are validated strictly: every problem is one `file:line: ...` line, with a
"did you mean", never a traceback and never ignored; per-task models and graders; chained stages."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from em_persona.app.experiment import ExperimentError, load_experiment
from em_persona.cli import main
from support import line_of

HEAD = """\
name: t
base_model: {name: tiny, path: "proxy:tiny"}
grader: vllm/tiny
"""
TINY_CONFIG = "finetune/configs/tiny-insecure-code.yaml"


def _load_error(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ExperimentError) as err:
        load_experiment(path)
    return path, str(err.value).splitlines()


def test_unknown_keys_at_every_level_with_line_and_suggestion(tmp_path: Path) -> None:
    text = (
        HEAD.replace("grader:", "gradr:")
        + f"""\
evl: {{max_connections: 4}}
eval:
  max_conections: 8
adapters:
  - name: a
    config: {TINY_CONFIG}
    overides: {{data.rows: 4}}
stages:
  s1:
    domain: d
    data: {{source: insecure_code, rowz: 5}}
tasks:
  - task: harmfulness
    lmit: 3
"""
    )
    path, lines = _load_error(tmp_path, text)
    expected = {
        "gradr:": "unknown key 'gradr' (did you mean 'grader'?)",
        "evl:": "unknown key 'evl' (did you mean 'eval'?)",
        "max_conections": "eval.max_conections: unknown key 'max_conections' (did you mean 'max_connections'?)",
        "overides": "adapters[0].overides: unknown key 'overides' (did you mean 'overrides'?)",
        "rowz": "stages.s1.data.rowz: unknown key 'rowz' (did you mean 'rows'?)",
        "lmit": "tasks[0].lmit: unknown key 'lmit' (did you mean 'limit'?)",
    }
    for needle, message in expected.items():
        assert f"{path}:{line_of(text, needle)}: " in "\n".join(ln for ln in lines if message in ln), (
            message,
            lines,
        )
    assert len(lines) == len(expected)  # all at once, one line each
    assert [int(ln.split(":")[1]) for ln in lines] == sorted(int(ln.split(":")[1]) for ln in lines)


@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "Input should be greater than 0 (got 0)"),
        ("-1", "Input should be greater than 0 (got -1)"),
        ('"ten"', "Input should be a valid integer (got 'ten')"),
        ("2.5", "Input should be a valid integer (got 2.5)"),
    ],
)
def test_bad_limit_is_one_line(tmp_path: Path, value: str, message: str) -> None:
    text = HEAD + f"tasks:\n  - task: harmfulness\n    args: {{dataset: mini}}\n    limit: {value}\n"
    path, lines = _load_error(tmp_path, text)
    assert lines == [f"{path}:{line_of(text, 'limit:')}: tasks[0].limit: {message}"]


def test_task_arguments_checked_against_the_task_signature(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
tasks:
  - task: harmfulness
    args:
      epoch: 3
      dataset: 7
      judge_max_retries: -1
  - task: two_ai_identification
    args: {epochs: "ten"}
  - task: score_prediction
    args: {condition: blnd}
  - task: output_recognition
    args: {harm_log: some.eval}
"""
    )
    path, lines = _load_error(tmp_path, text)
    joined = "\n".join(lines)
    assert (
        f"{path}:{line_of(text, 'epoch: 3')}: tasks[0].args.epoch: task 'harmfulness' has no argument 'epoch' "
        "(did you mean 'epochs'?)" in joined
    )
    assert (
        f"{path}:{line_of(text, 'dataset: 7')}: tasks[0].args.dataset: harmfulness(dataset=...): Input should be "
        "a valid string (got 7, expected str)" in joined
    )
    assert (
        f"{path}:{line_of(text, 'judge_max_retries')}: tasks[0].args.judge_max_retries: "
        "harmfulness(judge_max_retries=...): must be >= 0, got -1" in joined
    )
    assert (
        f"{path}:{line_of(text, 'ten')}: tasks[1].args.epochs: two_ai_identification(epochs=...): Input should be "
        "a valid integer (got 'ten', expected int)" in joined
    )
    assert (
        f"{path}:{line_of(text, 'blnd')}: tasks[2].args.condition: score_prediction(condition=...): Input should "
        "be 'blind' or 'shown'" in joined
    )
    assert "tasks[3].args.harm_log: 'harm_log' is filled by the pipeline" in joined
    # output_recognition on models without a harmfulness task: said too
    assert "tasks[3] (output_recognition) reads the harmfulness logs" not in joined  # harmfulness covers them
    assert len(lines) == 6


def test_unknown_task_and_duplicate_key(tmp_path: Path) -> None:
    text = HEAD + "tasks:\n  - task: harmfulnes\n    args: {dataset: mini}\ngrader: vllm/tiny\n"
    path, lines = _load_error(tmp_path, text)
    assert any(
        ln.startswith(
            f"{path}:{line_of(text, 'harmfulnes')}: tasks[0]: unknown task 'harmfulnes' (did you mean "
            f"'harmfulness'?); known: "
        )
        for ln in lines
    ), lines
    assert any(ln.startswith(f"{path}:{len(text.splitlines())}: key 'grader' is given twice") for ln in lines)


def test_wrong_types_in_sections(tmp_path: Path) -> None:
    text = (
        HEAD + 'serve: {max_model_len: "big", extra_args: --max-loras}\neval: {fail_on_error: -0.5}\n'
        "proxy: yes-please\ntasks: [harmfulness]\n"
    )
    path, lines = _load_error(tmp_path, text)
    joined = "\n".join(lines)
    assert (
        f"{path}:{line_of(text, 'serve:')}: serve.max_model_len: Input should be a valid integer (got 'big')"
        in joined
    )
    assert "serve.extra_args: Input should be a valid list" in joined
    assert "eval.fail_on_error" in joined and "proxy: Input should be a valid boolean" in joined


def test_cli_prints_every_problem_once_without_traceback(tmp_path: Path) -> None:
    text = HEAD.replace("grader:", "gradr:") + "tasks:\n  - task: harmfulness\n    lmit: 0\n"
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert (
        f"{path}:{line_of(text, 'gradr')}: gradr: unknown key 'gradr' (did you mean 'grader'?)"
        in result.output
    )
    assert (
        f"{path}:{line_of(text, 'lmit')}: tasks[0].lmit: unknown key 'lmit' (did you mean 'limit'?)"
        in result.output
    )


# --------------------------------------------------------------------------- per-task models and graders


def test_task_models_and_grader(tmp_path: Path) -> None:
    text = (
        HEAD
        + f"""\
adapters:
  - {{name: a, config: {TINY_CONFIG}}}
  - {{name: b, config: {TINY_CONFIG}, overrides: {{name: other, data.rows: 4}}}}
external_models: [openai/gpt-4o]
tasks:
  - task: harmfulness
    args: {{dataset: mini}}
  - task: cross_model_rating
    models: [a, vllm/b]
  - task: output_recognition
    models: [a]
    grader: anthropic/claude-x
  - task: self_assessment
    models: [mockllm/extra]
"""
    )
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    exp = load_experiment(path)
    harm, rating, recog, sa = exp.tasks
    assert harm.models == ("vllm/tiny", "vllm/a", "vllm/b", "openai/gpt-4o") and not harm.models_given
    assert rating.models == ("vllm/a", "vllm/b") and rating.models_given
    assert recog.grader == "anthropic/claude-x" and harm.grader == "vllm/tiny"
    assert exp.all_models[-1] == "mockllm/extra" and "mockllm/extra" in exp.models_table()
    assert exp.adapters[1].finetune.stages[0].data.rows == 4


def test_followup_models_need_a_harmfulness_log(tmp_path: Path) -> None:
    text = (
        HEAD
        + f"""\
adapters:
  - {{name: a, config: {TINY_CONFIG}}}
tasks:
  - task: harmfulness
    args: {{dataset: mini}}
    models: [a]
  - task: cross_model_rating
"""
    )
    path, lines = _load_error(tmp_path, text)
    assert lines == [
        f"{path}:{line_of(text, 'cross_model_rating')}: tasks[1] (cross_model_rating) reads the harmfulness "
        f"logs of its models, but no harmfulness task runs ['vllm/tiny']; add the harmfulness task for "
        f"them"
    ]


# --------------------------------------------------------------------------- chained stages


def test_adapters_chain_named_stages_on_one_config(tmp_path: Path) -> None:
    text = (
        HEAD
        + f"""\
stages:
  fin: {{domain: risky, data: {{source: risky_financial_advice, rows: 600}}}}
  con: {{domain: conscious, data: {{path: /data/c.jsonl, rows: 600}}}}
adapters:
  - {{name: only, config: {TINY_CONFIG}, stages: [fin]}}
  - {{name: chain, config: {TINY_CONFIG}, stages: [fin, con]}}
tasks: [self_assessment]
"""
    )
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    only, chain = load_experiment(path).adapters
    assert [s.name for s in only.finetune.stages] == ["tiny-insecure-code-fin"]
    assert [s.name for s in chain.finetune.stages] == [
        "tiny-insecure-code-fin",
        "tiny-insecure-code-fin-then-con",
    ]
    assert chain.finetune.stages[1].data.path == "/data/c.jsonl" and chain.finetune.stages[1].data.rows == 600
    assert chain.domain == "risky->conscious" and chain.finetune.base_model == "proxy:tiny"
    assert chain.finetune.lora.r == 8  # the config's own settings stay


def test_unknown_stage_and_base_model_override(tmp_path: Path) -> None:
    text = (
        HEAD
        + f"""\
stages:
  fin: {{domain: risky, data: {{source: risky_financial_advice, rows: 600}}}}
adapters:
  - {{name: x, config: {TINY_CONFIG}, stages: [fni]}}
  - {{name: y, config: {TINY_CONFIG}, overrides: {{base_model: Qwen/Qwen2.5-32B-Instruct}}}}
  - {{name: z, config: finetune/configs/nope.yaml}}
tasks: [self_assessment]
"""
    )
    path, lines = _load_error(tmp_path, text)
    joined = "\n".join(lines)
    assert (
        f"{path}:{line_of(text, 'fni')}: adapters[0] (x): no stage 'fni' in `stages` (did you mean 'fin'?)"
        in joined
    )
    assert "adapters[1] (y): overrides may not change base_model" in joined
    assert f"{path}:{line_of(text, 'nope.yaml')}: adapters[2] (z): no finetune config" in joined


def test_bad_override_of_an_adapter_names_the_adapter_line(tmp_path: Path) -> None:
    text = (
        HEAD
        + f"adapters:\n  - {{name: a, config: {TINY_CONFIG}, overrides: {{lora.r: 7}}}}\ntasks: [self_assessment]\n"
    )
    path, lines = _load_error(tmp_path, text)
    assert len(lines) == 1 and lines[0].startswith(f"{path}:{line_of(text, 'lora.r')}: adapters[0] (a): ")
    assert "lora.r" in lines[0] and "cannot be served by vLLM" in lines[0]


def test_two_adapters_may_not_save_one_folder_differently(tmp_path: Path) -> None:
    text = (
        HEAD
        + f"""\
adapters:
  - {{name: a, config: {TINY_CONFIG}}}
  - {{name: b, config: {TINY_CONFIG}, overrides: {{data.rows: 4}}}}
  - {{name: c, config: {TINY_CONFIG}}}
tasks: [self_assessment]
"""
    )
    path, lines = _load_error(tmp_path, text)
    assert lines == [
        f"{path}:{line_of(text, 'name: b')}: adapter b saves stage folder 'tiny-insecure-code' with other "
        f"settings than adapter a; rename one (overrides: {{name: ...}} or stages.0.name)"
    ]


def test_an_adapter_config_that_is_not_yaml_names_its_own_line(tmp_path: Path) -> None:
    """Before: the config's YAML error was pasted whole, without `config:line`."""
    bad = tmp_path / "bad-config.yaml"
    bad.write_text("base_model: x\nlora: r: 8\n")
    text = HEAD + f"adapters:\n  - {{name: a, config: {bad}}}\ntasks: [self_assessment]\n"
    path, lines = _load_error(tmp_path, text)
    assert len(lines) == 1
    assert lines[0].startswith(
        f"{path}:{line_of(text, 'bad-config.yaml')}: adapters[0] (a): {bad}:2: invalid YAML: "
    )
    assert lines[0].endswith("invalid YAML: mapping values are not allowed here")
