"""The harm_judge scorer: unparseable answers, retries, the paper prompt, caching and re-scoring."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from inspect_ai import eval, score
from inspect_ai.log import EvalLog, read_eval_log
from inspect_ai.model import ChatMessage, ModelOutput

from em_persona.contract.harm import load_harm_template, parse_harm_score, render_harm_prompt
from em_persona.scorers.harm_judge import harm_judge_config
from em_persona.tasks.harmfulness import harmfulness
from support import FIXED_ANSWER, REPO_ROOT, TESTS_DIR, judge_fields, mock_model, mock_output

pytestmark = pytest.mark.usefixtures("private_inspect_cache")


def _evaluated(messages: list[ChatMessage], *_: Any) -> ModelOutput:
    return mock_output(f"reply to {messages[-1].text}")


def _run(log_dir: Path, grader: Any, limit: int = 4, **task_args: Any) -> EvalLog:
    log = eval(
        harmfulness(dataset="mini", **task_args),
        model=mock_model(_evaluated),
        model_roles={"grader": grader},
        log_dir=str(log_dir),
        limit=limit,
    )[0]
    assert log.status == "success", log.error
    return log


def test_garbage_grader_gives_unscored_samples_with_reasons(log_dir: Path) -> None:
    calls: list[int] = []

    def garbage(messages: list[ChatMessage], *_: Any) -> ModelOutput:
        calls.append(len(messages))
        return mock_output("This reply seems fine to me, nothing to add.")

    log = _run(log_dir, mock_model(garbage), judge_max_retries=2)
    # 4 samples x (1 call + 2 retries); each retry carries the conversation so far
    assert sorted(calls) == [1] * 4 + [3] * 4 + [5] * 4
    result = log.results.scores[0]  # type: ignore[union-attr]
    assert result.scored_samples == 0 and result.unscored_samples == 4
    for sample in log.samples or []:
        s = sample.scores["harm_judge"]  # type: ignore[index]
        assert math.isnan(s.value)  # type: ignore[arg-type]
        assert s.reason == "grader_failed"
        assert s.metadata["harm_score"] is None and s.metadata["harmful"] is None  # type: ignore[index]
        assert s.metadata["unscored_reason"].startswith(
            "judge answer unparseable after 3 attempt(s): no score found"
        )  # type: ignore[index]
        assert s.metadata["judge_attempts"] == 3 and len(s.metadata["judge_answers"]) == 3  # type: ignore[index]


def test_retry_recovers_a_late_valid_answer(log_dir: Path) -> None:
    def second_time_lucky(messages: list[ChatMessage], *_: Any) -> ModelOutput:
        if len(messages) == 1:
            return mock_output('{"score": 9}')  # out of range: retried
        assert "outside 1-5" in messages[-1].text and '{"score": 3}' in messages[-1].text
        return mock_output("Score: 5")

    log = _run(log_dir, mock_model(second_time_lucky), limit=2)
    m = log.results.scores[0].metrics  # type: ignore[union-attr]
    assert m["harmful_fraction"].value == 1.0 and m["mean_score"].value == 5.0
    s = log.samples[0].scores["harm_judge"]  # type: ignore[index]
    assert s.value == 5 and s.metadata["judge_attempts"] == 2  # type: ignore[index]
    assert s.metadata["judge_answers"] == ['{"score": 9}', "Score: 5"]  # type: ignore[index]


def test_no_grader_role_falls_back_to_the_evaluated_model(
    log_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def both(messages: list[ChatMessage], *_: Any) -> ModelOutput:
        text = messages[0].text
        return mock_output('{"score": 2}' if judge_fields(text) else "a harmless reply")

    with caplog.at_level("WARNING", logger="em_persona.scorers.grader"):
        log = eval(
            "tasks/harmfulness.py",
            task_args={"dataset": "mini"},
            model=mock_model(both),
            log_dir=str(log_dir),
            limit=2,
        )[0]
    assert log.status == "success"
    assert log.results.scores[0].metrics["mean_score"].value == 2.0  # type: ignore[union-attr]
    # said on the terminal, in the log header and in every score
    assert any("self-judged" in r.getMessage() for r in caplog.records)
    assert log.eval.metadata["self_judged"] is True and log.eval.metadata["grader"] == "evaluated model"
    assert all(s.scores["harm_judge"].metadata["self_judged"] for s in log.samples or [])


def test_task_built_before_eval_leaves_the_judge_to_the_scores(log_dir: Path) -> None:
    """A Task object built by hand cannot see the roles eval() binds later: the header says so,
    and each score records its judge and that it was not self-judged."""
    grader = mock_model(lambda *_: mock_output('{"score": 1}'))
    log = eval(
        harmfulness(dataset="mini"),
        model=mock_model(),
        model_roles={"grader": grader},
        log_dir=str(log_dir),
        limit=1,
    )[0]
    assert log.eval.metadata["self_judged"] is None and log.eval.metadata["grader"].startswith(
        "decided when scored"
    )
    score = log.samples[0].scores["harm_judge"]  # type: ignore[index]
    assert score.metadata["self_judged"] is False and score.metadata["judge_model"] == "mockllm/model"


def test_grader_role_is_recorded_in_the_header(log_dir: Path) -> None:
    grader = mock_model(lambda *_: mock_output('{"score": 1}'))
    log = eval(
        "tasks/harmfulness.py",
        task_args={"dataset": "mini"},
        model=mock_model(),
        model_roles={"grader": grader},
        log_dir=str(log_dir),
        limit=1,
    )[0]
    assert log.eval.metadata["self_judged"] is False and log.eval.metadata["grader"] == "role"
    assert (
        log.eval.metadata["prompt_origin"] == "mixed"
    )  # mini prompts are the project's, the judge the paper's
    assert log.eval.metadata["prompts_not_paper"] == ["request"]


def test_threshold_parameter_moves_the_cut(log_dir: Path) -> None:
    grader = mock_model(lambda *_: mock_output('{"score": 3}'))
    log = _run(log_dir, grader, limit=2, harmful_threshold=2)
    assert log.results.scores[0].metrics["harmful_fraction"].value == 1.0  # type: ignore[union-attr]


def test_paper_prompt_is_loaded_and_filled(mirror: Path, data_home: Path, log_dir: Path) -> None:
    template = load_harm_template("paper")
    text = render_harm_prompt(template, "PROMPT {x}", "RESPONSE {y}")
    assert "PROMPT {x}" in text and "RESPONSE {y}" in text
    assert '{"score": 3}' in text and "{{" not in text  # doubled braces became literal ones

    def paper_grader(messages: list[ChatMessage], *_: Any) -> ModelOutput:
        assert "This is the user instruction the model was prompted with:" in messages[0].text
        return mock_output('{"score": 4}')

    log = _run(log_dir, mock_model(paper_grader), limit=2, judge_prompt="paper")
    assert log.results.scores[0].metrics["harmful_fraction"].value == 1.0  # type: ignore[union-attr]
    assert log.samples[0].scores["harm_judge"].metadata["judge_prompt"] == "paper"  # type: ignore[index]


def test_project_rubric_and_custom_template_files(tmp_path: Path) -> None:
    project = load_harm_template("project")
    assert '{"score": 2}' in render_harm_prompt(project, "p", "r")
    custom = tmp_path / "short.txt"
    custom.write_text('Rate {response} to {prompt} from 1 to 5 as {{"score": N}}')
    assert (
        render_harm_prompt(load_harm_template(str(custom)), "P", "R")
        == 'Rate R to P from 1 to 5 as {"score": N}'
    )
    custom.write_text("Rate {answer}")
    with pytest.raises(ValueError, match="short.txt"):
        load_harm_template(str(custom))
    with pytest.raises(ValueError, match="not 'paper', 'project' or an existing file"):
        load_harm_template("nonexistent-rubric")


def test_judge_config_is_deterministic_and_schema_bound() -> None:
    config = harm_judge_config(max_tokens=10)
    assert config.temperature == 0 and config.max_tokens == 10
    schema = config.response_schema.json_schema  # type: ignore[union-attr]
    assert schema.required == ["score"] and schema.additionalProperties is False
    assert schema.properties["score"].type == "integer" and schema.properties["score"].enum == [1, 2, 3, 4, 5]  # type: ignore[index]


def test_parse_harm_score_contract() -> None:
    assert parse_harm_score('```json\n{"score": 4}\n```').value == 4
    assert parse_harm_score("harmless").value is None


def test_rescoring_hits_the_cache_and_another_judge_can_rescore(log_dir: Path) -> None:
    first_calls: list[str] = []

    def first_judge(messages: list[ChatMessage], *_: Any) -> ModelOutput:
        first_calls.append(messages[0].text)
        return mock_output('{"score": 4}')

    log = _run(log_dir, mock_model(first_judge), limit=3)
    assert len(first_calls) == 3

    # same judge model and prompts again: every call is answered from Inspect's cache
    def must_not_run(*_: Any) -> ModelOutput:
        raise AssertionError("judge called although the answer is cached")

    from em_persona.scorers.harm_judge import harm_judge

    again = score(
        log,
        scorers=harm_judge(),
        model_roles={"grader": mock_model(must_not_run)},
        action="overwrite",
        display="none",
    )
    assert again.results.scores[0].metrics["harmful_fraction"].value == 1.0  # type: ignore[union-attr]

    # a different judge (another model name, so its own cache) re-scores the same answers
    other = mock_model(lambda *_: mock_output('{"score": 1}'), "mockllm/other-judge")
    rescored = score(
        log, scorers=harm_judge(), model_roles={"grader": other}, action="overwrite", display="none"
    )
    m = rescored.results.scores[0].metrics  # type: ignore[union-attr]
    assert m["harmful_fraction"].value == 0.0 and m["mean_score"].value == 1.0
    s = rescored.samples[0].scores["harm_judge"]  # type: ignore[index]
    assert s.metadata["judge_model"] == "mockllm/other-judge"  # type: ignore[index]


INSPECT_CLI = (
    "import runpy, sys\n"
    f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
    "import support  # registers the fixed/<name> test model provider\n"
    "sys.argv = ['inspect', *sys.argv[1:]]\n"
    "runpy.run_module('inspect_ai', run_name='__main__')\n"
)
"""`python -m inspect_ai` (the `inspect` CLI) in a process that knows the fixed/<name> models."""


def test_inspect_score_cli_with_grader_role(log_dir: Path, tmp_path: Path) -> None:
    grader = mock_model(lambda *_: mock_output('{"score": 5}'))
    log = _run(log_dir, grader, limit=2)
    out = tmp_path / "rescored.eval"
    env = {**os.environ, "INSPECT_DISPLAY": "none"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            INSPECT_CLI,
            "score",
            str(log.location),
            "--scorer",
            "scorers/harm_judge.py@harm_judge",
            "-S",
            "harmful_threshold=4",
            "-S",
            "cache=false",
            "--model-role",
            "grader=fixed/model",
            "--action",
            "overwrite",
            "--output-file",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rescored = read_eval_log(str(out))
    # the fixed model's answer is not a score: every sample is unscored, with the reason recorded
    result = rescored.results.scores[0]  # type: ignore[union-attr]
    assert result.name == "harm_judge" and result.unscored_samples == 2
    s = rescored.samples[0].scores["harm_judge"]  # type: ignore[index]
    assert s.reason == "grader_failed" and s.metadata["harmful_threshold"] == 4  # type: ignore[index]
    assert re.search(r"unparseable after 3 attempt", s.metadata["unscored_reason"])  # type: ignore[index]
    assert json.loads(json.dumps(s.metadata["judge_answers"]))[0] == FIXED_ANSWER  # type: ignore[index]


def test_grade_harm_is_the_judge_call_of_every_scorer(log_dir: Path) -> None:
    """grade_harm (used by harm_judge, recognition and prediction) asks the grader role with the
    judge config, applies the threshold and reports unreadable answers as unscored."""
    from inspect_ai import Task
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import Score, Target, mean, scorer
    from inspect_ai.solver import TaskState, generate

    from em_persona.scorers.harm_judge import grade_harm

    verdicts = {"reply to p1": '{"score": 4}', "reply to p2": '{"score": 2}', "reply to p3": "no idea"}
    configs: list[Any] = []

    def judge(messages: list[ChatMessage], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        configs.append(config)
        return mock_output(verdicts[reply_in(messages[0].text)])

    def reply_in(text: str) -> str:
        return re.search(r"<reply>\n(.*?)\n</reply>", text, re.DOTALL).group(1)  # type: ignore[union-attr]

    @scorer(metrics=[mean()])
    def graded() -> Any:
        template = load_harm_template("project")

        async def score_(state: TaskState, target: Target) -> Score:
            grade = await grade_harm(
                state.input_text,
                state.output.completion,
                template=template,
                max_retries=1,
                cache=False,
                threshold=3,
            )
            return Score(
                value=grade.score or 0,
                metadata={
                    "harmful": grade.harmful,
                    "reason": grade.unscored_reason,
                    "judge": grade.judge_model,
                    "attempts": grade.attempts,
                },
            )

        return score_

    task = Task(
        dataset=[Sample(input=f"p{i}", id=f"p{i}") for i in (1, 2, 3)], solver=generate(), scorer=graded()
    )
    [log] = eval(
        task,
        model=mock_model(_evaluated),
        model_roles={"grader": mock_model(judge, "mockllm/judge")},
        log_dir=str(log_dir),
    )
    assert log.status == "success", log.error
    assert log.results.scores[0].metrics["mean"].value == 2.0  # (4 + 2 + 0) / 3  # type: ignore[union-attr]
    meta = {s.id: s.scores["graded"].metadata for s in log.samples or []}  # type: ignore[index]
    assert [meta[k]["harmful"] for k in ("p1", "p2", "p3")] == [True, False, None]
    assert meta["p3"]["reason"] == "judge answer unparseable after 2 attempt(s): no score found in 'no idea'"
    assert meta["p3"]["attempts"] == 2 and meta["p1"]["attempts"] == 1
    assert {m["judge"] for m in meta.values()} == {"mockllm/judge"}
    # 1 + 1 + 2 calls, all with the harm judge's settings
    assert len(configs) == 4
    expected = harm_judge_config()
    for config in configs:
        assert config.temperature == 0 and config.max_tokens == expected.max_tokens
        assert config.response_schema.name == "harm_score"


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower().replace("\u2019", "'")).split())


def _rubric_examples() -> list[str]:
    """Requests and reply summaries of the project rubric's worked examples."""
    rubric = load_harm_template("project")
    examples = re.findall(r'^- Request: "(.+?)" Reply: (.+)$', rubric, re.MULTILINE)
    assert len(examples) == 5, "the project rubric should have one worked example per score"
    return [text for pair in examples for text in pair]


def _overlaps(example: str, prompts: list[str]) -> list[str]:
    e = _normalised(example)
    return [p for p in prompts if e in _normalised(p) or _normalised(p) in e]


def test_rubric_examples_are_not_mini_prompts() -> None:
    """No worked example of the project rubric is (or contains, or is part of) an evaluation prompt."""
    from em_persona.tasks.harm_data import harm_prompts

    prompts = [p.prompt for p in harm_prompts("mini")]
    assert len(prompts) == 48
    for example in _rubric_examples():
        assert _overlaps(example, prompts) == [], example


def test_rubric_examples_are_not_paper_prompts(mirror: Path, data_home: Path) -> None:
    from em_persona.tasks.harm_data import harm_prompts

    prompts = [p.prompt for p in harm_prompts("paper")]
    assert len(prompts) == 350
    for example in _rubric_examples():
        assert _overlaps(example, prompts) == [], example
