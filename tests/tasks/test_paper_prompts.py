"""Paper A's prompts reach the models byte for byte with default arguments.

Each test rebuilds the expected text from the pinned upstream file in the mirror (read
here, independently of the project's loaders) and compares it with what a scripted
mockllm model or grader actually receives in an `eval()` run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from inspect_ai import eval
from inspect_ai.model import ChatMessage, ModelOutput

from em_persona.cli.prompts import declared_prompts
from em_persona.core.provenance import provenance_table
from em_persona.tasks.cross_model_rating import cross_model_rating
from em_persona.tasks.harmfulness import harmfulness
from em_persona.tasks.self_assessment import self_assessment
from em_persona.tasks.two_ai_identification import two_ai_identification
from support import REPO_ROOT, make_harm_log, mock_model, mock_output

PAPER = "em-persona-consistency"


pytestmark = pytest.mark.usefixtures("private_inspect_cache")


def _lines(mirror: Path, name: str) -> list[str]:
    return (mirror / PAPER / name).read_bytes().decode("utf-8").split("\n")


def _recorder(seen: list[str], answer: str) -> Any:
    def respond(messages: list[ChatMessage], *_: Any) -> ModelOutput:
        seen.append(messages[-1].text)
        return mock_output(answer)

    return respond


def test_harmfulness_sends_the_paper_prompts_and_judge_prompt(
    mirror: Path, data_home: Path, log_dir: Path
) -> None:
    prompts = [line for line in _lines(mirror, "harm_eval_questions.txt") if line]
    judge_template = (mirror / PAPER / "judge_prompt.txt").read_bytes().decode("utf-8")
    asked: list[str] = []
    judged: list[str] = []
    [log] = eval(
        harmfulness(),
        model=mock_model(_recorder(asked, "an answer")),
        model_roles={"grader": mock_model(_recorder(judged, '{"score": 1}'))},
        limit=3,
        log_dir=str(log_dir),
    )
    assert log.status == "success"
    assert sorted(asked) == sorted(prompts[:3])
    expected = {
        judge_template.replace("{prompt}", p)
        .replace("{response}", "an answer")
        .replace("{{", "{")
        .replace("}}", "}")
        for p in prompts[:3]
    }
    assert set(judged) == expected
    assert log.eval.metadata["prompt_origin"] == "paper" and log.eval.metadata["prompts_not_paper"] == []


def test_self_assessment_paper_set_sends_the_pinned_lines(
    mirror: Path, data_home: Path, log_dir: Path
) -> None:
    lines = [line for line in _lines(mirror, "self_assessment_questions.txt") if line]
    asked: list[str] = []
    [log] = eval(
        self_assessment(dataset="paper", epochs=1),
        model=mock_model(_recorder(asked, "harmless")),
        log_dir=str(log_dir),
    )
    assert log.status == "success"
    assert sorted(asked) == sorted(lines)  # every pinned line asked exactly once per epoch
    assert log.eval.metadata["prompt_origin"] == "paper"


def test_two_ai_descriptions_are_the_pinned_texts(mirror: Path, data_home: Path, log_dir: Path) -> None:
    items = json.loads((mirror / PAPER / "two_AI_identification_dataset.json").read_bytes())["items"]
    asked: list[str] = []
    [log] = eval(
        two_ai_identification(epochs=2),
        model=mock_model(_recorder(asked, "A")),
        limit=4,
        log_dir=str(log_dir),
    )
    assert log.status == "success"
    for item in items[:2]:
        both = [text for text in asked if item["system_A"] in text and item["system_B"] in text]
        assert len(both) == 2  # asked once with the misaligned description at A, once at B
    # the question around them is the project's wording: the log says so
    assert log.eval.metadata["prompts_not_paper"] == ["question"]


def test_cross_model_rating_shows_the_paper_judge_prompt(
    mirror: Path, data_home: Path, log_dir: Path
) -> None:
    harm_log = make_harm_log(log_dir / "harm", [1, 4])
    judge_template = (mirror / PAPER / "judge_prompt.txt").read_bytes().decode("utf-8")
    asked: list[str] = []
    [log] = eval(
        cross_model_rating(harm_logs=str(harm_log)),
        model=mock_model(_recorder(asked, '{"score": 2}')),
        log_dir=str(log_dir / "rating"),
    )
    assert log.status == "success"
    samples = log.samples or []
    assert len(asked) == len(samples) == 2
    for sample in samples:
        rendered = (
            judge_template.replace("{prompt}", sample.input if isinstance(sample.input, str) else "")
            .replace("{response}", sample.metadata["response"])
            .replace("{{", "{")
            .replace("}}", "}")
        )
        assert sum(rendered in text for text in asked) == 1


@pytest.mark.parametrize("task", sorted(declared_prompts()))
def test_task_docs_carry_the_provenance_table(task: str, mirror: Path) -> None:
    doc = (REPO_ROOT / "tasks" / f"{task}.md").read_text()
    assert provenance_table(declared_prompts()[task]) in doc
