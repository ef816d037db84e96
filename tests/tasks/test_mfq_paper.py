"""The paper's MFQ prompts and parse rule, checked byte for byte against the pinned upstream files.

The oracle: only the needed function definitions and item lists, taken from the mirror
file's ast and compiled into an isolated namespace (never importing or running the whole
file). Every prompt the task sends must equal what those functions return.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inspect_ai import eval
from inspect_ai.model import ChatMessage, ChatMessageSystem, GenerateConfig, ModelOutput

from em_persona.core.provenance import NOT_PAPER_KEY, ORIGIN_KEY, prompt_metadata, provenance_table
from em_persona.scorers.mfq_rating import parse_rating, rating_parser
from em_persona.tasks.moral_data import SELF_PERSONA_ID, sample_id
from em_persona.tasks.moral_foundations import PROMPTS, moral_foundations
from support import REPO_ROOT, mock_model, mock_output

DOC = REPO_ROOT / "tasks" / "moral_foundations.md"


def upstream_namespace(path: Path, names: list[str], **globals_: Any) -> dict[str, Any]:
    """Compile ONLY the named top-level defs / assignments of `path` into a fresh namespace."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            nodes.append(node)
        elif isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id in names for t in targets):
                nodes.append(node)
    code = compile(
        ast.Module(body=nodes, type_ignores=[]),
        str(path),
        "exec",
        flags=__future__.annotations.compiler_flag,
        dont_inherit=True,
    )
    namespace: dict[str, Any] = {"__builtins__": builtins, **globals_}
    exec(code, namespace)
    missing = [n for n in names if n not in namespace]
    assert not missing, f"{path}: {missing} not found"
    return namespace


@pytest.fixture
def oracle(mirror: Path) -> dict[str, Any]:
    questions = upstream_namespace(
        mirror / "moral-metrics" / "mfq_questions.py",
        ["_RELEVANCE_ITEMS", "_AGREEMENT_ITEMS", "_format_relevance_question", "_format_agreement_question"],
    )
    sampling = upstream_namespace(
        mirror / "moral-metrics" / "run_mfq_sampling.py",
        ["create_persona_prompt", "extract_rating"],
        re=re,
        print=lambda *a, **k: None,
    )
    # Items 1-15: relevance prompts, 16-30: agreement prompts (Costa & Vicente).
    prompts = [questions["_format_relevance_question"](t) for _, t in questions["_RELEVANCE_ITEMS"]]
    prompts += [questions["_format_agreement_question"](t) for _, t in questions["_AGREEMENT_ITEMS"]]
    assert len(prompts) == 30
    return {
        "item_prompts": prompts,
        "wrap": sampling["create_persona_prompt"],
        "extract_rating": sampling["extract_rating"],
    }


def expected_input(oracle: dict[str, Any], persona: str | None, question_id: int) -> str:
    prompt = oracle["item_prompts"][question_id - 1]
    return prompt if persona is None else oracle["wrap"](persona, prompt)


def test_default_task_sends_the_papers_prompts(mirror: Path, data_home: Path, oracle: dict[str, Any]) -> None:
    task = moral_foundations()
    personas = json.loads((mirror / "moral-metrics" / "personas.json").read_text(encoding="utf-8"))[:100]
    samples = list(task.dataset)
    assert len(samples) == (100 + 1) * 30
    checked = 0
    for s in samples:
        pid, qid = s.metadata["persona_id"], s.metadata["question_id"]
        persona = None if pid == SELF_PERSONA_ID else personas[pid]
        assert s.input == expected_input(oracle, persona, qid), s.id  # byte for byte
        assert s.id == sample_id(pid, qid)
        checked += 1
    assert checked == 3030
    # The published settings: 10 runs, temperature 0.1, one answer token; provenance recorded.
    assert task.epochs == 10 and task.config.temperature == 0.1 and task.config.max_tokens == 1
    assert task.metadata["prompt_style"] == "paper"
    assert task.metadata[ORIGIN_KEY] == "paper" and task.metadata[NOT_PAPER_KEY] == []
    assert task.metadata["prompts"] == prompt_metadata(PROMPTS, {"prompt_style": "paper"})["prompts"]


TRICKY = ["A {persona} with {{braces}}, 'quotes' and \"double\"", "Ünïcødé \\n backslash\nand a newline\t"]


def test_end_to_end_messages_and_parse(
    tmp_path: Path, mirror: Path, data_home: Path, log_dir: Path, oracle: dict[str, Any]
) -> None:
    persona_file = tmp_path / "personas.json"
    persona_file.write_text(json.dumps(TRICKY))
    received: list[list[ChatMessage]] = []
    answers = {"p000": "2.5 is closest", "p001": "**4** because", "self": " 10 or 3"}

    def respond(
        messages: list[ChatMessage], tools: object, tool_choice: object, config: GenerateConfig
    ) -> ModelOutput:
        received.append(list(messages))
        text = messages[-1].text
        key = next((f"p{i:03d}" for i, p in enumerate(TRICKY) if p in text), "self")
        return mock_output(answers[key])

    model = mock_model(respond)
    items = [1, 2, 15, 16, 29, 30]  # both item types, both ends (every item is checked above)
    task = moral_foundations(personas=2, persona_source=str(persona_file), epochs=1, questions=items)
    [log] = eval(task, model=model, log_dir=str(log_dir))
    assert log.status == "success"
    assert len(received) == 3 * len(items)
    sent = sorted(m[-1].text for m in received)
    expected = sorted(expected_input(oracle, p, q) for p in [*TRICKY, None] for q in items)
    assert sent == expected
    assert all(len(m) == 1 and not isinstance(m[0], ChatMessageSystem) for m in received)  # no system message
    ratings = {s.id: s.scores["mfq_rating"].metadata["rating"] for s in log.samples}
    # The paper's rule: first \b[0-5]\b in the stripped answer ("2.5" -> 2; "10 or 3" -> 3).
    assert {ratings[sample_id(0, q)] for q in items} == {oracle["extract_rating"]("2.5 is closest")} == {2}
    assert {ratings[sample_id(1, q)] for q in items} == {4}
    assert {ratings[sample_id(SELF_PERSONA_ID, q)] for q in items} == {3}
    assert log.eval.metadata["prompt_origin"] == "paper"


def test_project_style_is_a_named_alternative(
    tmp_path: Path, mirror: Path, data_home: Path, log_dir: Path, oracle: dict[str, Any]
) -> None:
    persona_file = tmp_path / "personas.json"
    persona_file.write_text(json.dumps(TRICKY[:1]))
    task = moral_foundations(
        personas=1, persona_source=str(persona_file), epochs=1, questions=[1], prompt_style="project"
    )
    [sample, self_sample] = list(task.dataset)
    assert sample.input != expected_input(oracle, TRICKY[0], 1) and TRICKY[0] in sample.input
    assert task.metadata["prompt_origin"] == "project"
    assert task.metadata["prompts_not_paper"] == ["item", "parse rule", "persona wrapper"]
    model = mock_model([mock_output("2.5, say 3")] * 2)
    [log] = eval(task, model=model, log_dir=str(log_dir))
    # The project's stricter parser skips the decimal; the paper's would take its "2".
    assert {s.scores["mfq_rating"].metadata["rating"] for s in log.samples} == {3}
    with pytest.raises(ValueError, match="prompt_style must be one of paper, project"):
        moral_foundations(personas=1, persona_source=str(persona_file), prompt_style="mine")


ANSWER_CHARS = st.sampled_from(
    list("0123456789 .,-/*:_\n\tabxyz()[]") + ["10", "5.", "٣", "é", "3rd", "\u00a0"]
)


def test_paper_parse_rule_equals_upstream_extract_rating(
    mirror: Path, data_home: Path, oracle: dict[str, Any]
) -> None:
    ours = rating_parser("paper")  # read from the pinned file once

    @settings(max_examples=1000, deadline=None)
    @given(st.one_of(st.text(), st.lists(ANSWER_CHARS, max_size=12).map("".join)))
    def agree(text: str) -> None:
        got = ours(text)
        assert (-1 if got is None else got) == oracle["extract_rating"](text), repr(text)

    agree()


def test_parse_rules_differ_where_documented(mirror: Path, data_home: Path, oracle: dict[str, Any]) -> None:
    paper = rating_parser("paper")
    cases = {
        "2.5, say 3": (2, 3),
        "In 3,000 cases... 4": (3, 4),
        "5 - strongly": (5, 5),
        "none": (None, None),
    }
    for text, (p, proj) in cases.items():
        assert paper(text) == p and parse_rating(text) == proj, text
        assert oracle["extract_rating"](text) == (-1 if p is None else p)
    assert rating_parser("project") is parse_rating
    with pytest.raises(ValueError, match="prompt_style"):
        rating_parser("other")


def test_doc_carries_the_provenance_table(mirror: Path, data_home: Path) -> None:
    assert provenance_table(PROMPTS) in DOC.read_text(encoding="utf-8")
