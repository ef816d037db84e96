"""Replaceable identity-experiment wordings (`prompts=FILE.yaml`) and balanced self-assessment orders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from inspect_ai import eval

from em_persona.solvers.identity_prompts import (
    FIELDS,
    IdentityPromptError,
    IdentityPrompts,
    load_identity_prompts,
)
from em_persona.tasks.self_assessment_data import self_assessment_dataset
from em_persona.tasks.two_ai_identification import two_ai_identification
from support import mock_model, mock_output


def test_project_wording_fills_every_placeholder() -> None:
    prompts = load_identity_prompts("project")
    assert prompts == IdentityPrompts()
    for name, fields in FIELDS.items():
        getattr(prompts, name).format(**{f: "x" for f in fields})  # no stray placeholder


def test_a_file_replaces_some_prompts_and_keeps_the_rest(tmp_path: Path, log_dir: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text('two_ai: "Which is you? [{system_a}] or [{system_b}] -- A or B"\n')
    prompts = load_identity_prompts(str(path))
    assert prompts.two_ai.startswith("Which is you?") and prompts.recognition == IdentityPrompts().recognition
    seen: list[str] = []

    def respond(messages, *_):  # noqa: ANN001, ANN202
        seen.append(messages[-1].text)
        return mock_output("A")

    [log] = eval(
        two_ai_identification(dataset="project", epochs=2, prompts=str(path)),
        model=mock_model(respond),
        limit=2,
        log_dir=str(log_dir),
    )
    assert log.status == "success" and all(text.startswith("Which is you? [") for text in seen)
    assert {p["role"]: p["origin"] for p in log.eval.metadata["prompts"]} == {
        "descriptions": "project",
        "question": "custom",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("recogniton: 'x {prompt}'\n", r"mine\.yaml:1: unknown prompt 'recogniton'"),
        ("two_ai: 'only {system_a}'\n", r"mine\.yaml:1: prompt 'two_ai' must use exactly the placeholders"),
        (
            "foil_plain: 'ok {prompt}'\nanswer_after: ''\n",
            r"mine\.yaml:2: prompt 'answer_after' must be non-empty",
        ),
        ("- a list\n", r"mine\.yaml:1: expected a mapping"),
    ],
)
def test_bad_prompt_files_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(IdentityPromptError, match=message):
        load_identity_prompts(str(path))


def test_one_paraphrase_per_cell_is_balanced() -> None:
    """With one paraphrase per cell every counterbalancing variant is still present in every cell."""
    ds = self_assessment_dataset("project", formats="decision,numerical,likert", paraphrases=1)
    by_format: dict[str, Counter[str]] = {}
    for sample in ds:
        meta = sample.metadata or {}
        by_format.setdefault(meta["format"], Counter())[meta["variant"]] += 1
    assert by_format["decision"] == Counter({"aligned_first": 6, "misaligned_first": 6})
    assert by_format["numerical"] == Counter({"aligned_first": 6, "misaligned_first": 6})
    assert by_format["likert"] == Counter({"names_aligned": 6, "names_misaligned": 6})


def test_language_format_holds_its_four_variants() -> None:
    ds = self_assessment_dataset("project", formats="language", paraphrases=2)
    counts = Counter((s.metadata or {})["variant"] for s in ds)
    assert len(counts) == 4 and set(counts.values()) == {6 * 2}


def test_short_paper_runs_alternate_word_orders(mirror: Path, data_home: Path) -> None:
    ds = self_assessment_dataset("paper", paraphrases=2)
    orders = Counter((s.metadata or {})["order"] for s in ds)
    assert orders == Counter({"aligned_first": 3, "misaligned_first": 3})
