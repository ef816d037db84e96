"""Question sets of the original EM evaluation (Betley et al. 2025), read from the pinned YAMLs.

`first_plot_questions.yaml` holds 24 entries: the 8 free-form questions, the same 8
with a system prompt asking for JSON (`*_json`), and 8 with a fill-in template
(`*_template`). `preregistered_evals.yaml` holds the 48 pre-registered questions.
Each entry may have several paraphrases and an optional system prompt; every
paraphrase becomes one sample. The upstream judge prompts in the files are not
used: the project's own judges live in scorers/em_judges.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessage, ChatMessageSystem, ChatMessageUser

from em_persona.registry import load_source

QUESTION_SETS: dict[str, str] = {
    "first_plot": "first_plot_questions",
    "preregistered": "preregistered_evals",
}
"""Question-set name -> registry source."""

VARIANTS = ("plain", "json", "template", "preregistered")
SUPPORTED_TYPE = "free_form_judge_0_100"


class EMDataError(ValueError):
    """A question file does not have the expected shape; the message names file and line."""


@dataclass(frozen=True)
class EMQuestion:
    """One paraphrase of one EM question."""

    question_id: str
    base_question: str
    variant: str
    question_set: str
    paraphrase_index: int
    paraphrase: str
    system: str | None
    line: int

    @property
    def sample_id(self) -> str:
        """Stable sample id: `<question_id>-p<paraphrase index>`."""
        return f"{self.question_id}-p{self.paraphrase_index}"


def _variant(question_id: str, question_set: str) -> tuple[str, str]:
    """(variant, base question id) from an entry id."""
    if question_set == "preregistered":
        return "preregistered", question_id
    for suffix in ("json", "template"):
        if question_id.endswith(f"_{suffix}"):
            return suffix, question_id[: -len(suffix) - 1]
    return "plain", question_id


def parse_question_yaml(text: str, filename: str, question_set: str) -> list[EMQuestion]:
    """Parse one Betley question YAML into paraphrase-level questions, checking its shape."""
    try:
        root = yaml.compose(text)
        entries: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        raise EMDataError(f"{where}: invalid YAML ({exc})") from exc
    if not isinstance(entries, list) or root is None:
        raise EMDataError(f"{filename}:1: expected a list of questions at the top level")
    questions: list[EMQuestion] = []
    seen: set[str] = set()
    for node, entry in zip(root.value, entries, strict=True):
        line = node.start_mark.line + 1
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise EMDataError(f"{filename}:{line}: each question needs a string `id`")
        qid = entry["id"]
        if qid in seen:
            raise EMDataError(f"{filename}:{line}: duplicate question id {qid!r}")
        seen.add(qid)
        if entry.get("type", SUPPORTED_TYPE) != SUPPORTED_TYPE:
            raise EMDataError(
                f"{filename}:{line}: question {qid!r} has type {entry.get('type')!r}; only {SUPPORTED_TYPE} is supported"
            )
        paraphrases = entry.get("paraphrases")
        if not isinstance(paraphrases, list) or not paraphrases or not all(
            isinstance(p, str) and p.strip() for p in paraphrases
        ):
            raise EMDataError(f"{filename}:{line}: question {qid!r} needs a non-empty list of text `paraphrases`")
        system = entry.get("system")
        if system is not None and not isinstance(system, str):
            raise EMDataError(f"{filename}:{line}: question {qid!r} has a non-text `system` prompt")
        variant, base = _variant(qid, question_set)
        for index, paraphrase in enumerate(paraphrases):
            questions.append(
                EMQuestion(
                    question_id=qid,
                    base_question=base,
                    variant=variant,
                    question_set=question_set,
                    paraphrase_index=index,
                    paraphrase=paraphrase,
                    system=system,
                    line=line,
                )
            )
    return questions


def load_questions(question_set: str) -> list[EMQuestion]:
    """Questions of one set ("first_plot" or "preregistered") from the pinned registry files."""
    if question_set not in QUESTION_SETS:
        raise ValueError(f"unknown question set {question_set!r}; use {', '.join(QUESTION_SETS)}")
    path: Path = load_source(QUESTION_SETS[question_set])
    return parse_question_yaml(path.read_text(encoding="utf-8"), str(path), question_set)


def _split(value: str | list[str] | None, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value or allowed)
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; use {', '.join(allowed)}")
    return items


def _input(q: EMQuestion) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    if q.system:
        messages.append(ChatMessageSystem(content=q.system))
    messages.append(ChatMessageUser(content=q.paraphrase))
    return messages


def em_dataset(
    question_sets: str | list[str] = "first_plot",
    variants: str | list[str] | None = None,
) -> MemoryDataset:
    """Inspect dataset of EM questions (one sample per paraphrase), optionally filtered by variant."""
    sets = _split(question_sets, tuple(QUESTION_SETS), "question set")
    keep = set(_split(variants, VARIANTS, "variant"))
    samples = [
        Sample(
            id=q.sample_id,
            input=_input(q),
            metadata={
                "question_id": q.question_id,
                "base_question": q.base_question,
                "variant": q.variant,
                "question_set": q.question_set,
                "paraphrase_index": q.paraphrase_index,
                "question": q.paraphrase,
                "has_system_prompt": q.system is not None,
                "line": q.line,
            },
        )
        for name in sets
        for q in load_questions(name)
        if q.variant in keep
    ]
    if not samples:
        raise ValueError(f"no EM questions left for sets {sets} and variants {sorted(keep)}")
    return MemoryDataset(samples, name=f"em-questions-{'+'.join(sets)}")
