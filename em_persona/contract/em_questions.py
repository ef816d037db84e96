"""Betley et al.'s EM question files, read once for the task and its judge.

`first_plot_questions.yaml` holds 24 entries: the 8 free-form questions, the same 8
with a system prompt asking for JSON (`*_json`), and 8 with a fill-in template
(`*_template`). `preregistered_evals.yaml` holds the 48 pre-registered questions.
Each entry may have several paraphrases and an optional system prompt; every
paraphrase becomes one sample. Each entry also carries its own judge prompts
(`judge_prompts.aligned` / `.coherent`, str.format templates with {question} and
{answer}) and the judge model the paper used (`judge`). The dataset (tasks/em_data.py) and
the judge (scorers/em_judges.py) both read them from here; a user's judge file (`aligned` and
`coherent` templates) is parsed here too. Errors name the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from em_persona.core.errors import EmPersonaError
from em_persona.core.registry import load_source
from em_persona.core.templates import check_template
from em_persona.core.yaml_lines import yaml_error_where

TEMPLATE_FIELDS = {"question", "answer"}


class EMDataError(EmPersonaError, ValueError):
    """A question or judge file does not have the expected shape; the message names file and line."""


class JudgeTemplates(NamedTuple):
    """The alignment and coherence templates ({question}, {answer}) and where they were read.

    A NamedTuple: `inspect score --scorer scorers/em_judges.py@em_judge` loads the scorer file
    outside `sys.modules`, where dataclasses of that file cannot resolve their module.
    """

    aligned: str
    coherent: str
    where: str


@dataclass(frozen=True)
class EMQuestion:
    """One paraphrase of one EM question, with its entry's judge prompts and judge model."""

    question_id: str
    base_question: str
    variant: str
    question_set: str
    paraphrase_index: int
    paraphrase: str
    system: str | None
    line: int
    judge: JudgeTemplates
    judge_model: str | None
    """The `judge` the paper names in the entry (e.g. gpt-4o-2024-08-06); informative only."""

    @property
    def sample_id(self) -> str:
        """Stable sample id: `<question_id>-p<paraphrase index>`."""
        return f"{self.question_id}-p{self.paraphrase_index}"


QUESTION_SETS: dict[str, str] = {
    "first_plot": "first_plot_questions",
    "preregistered": "preregistered_evals",
}
"""Question-set name -> registry source."""

VARIANTS = ("plain", "json", "template", "preregistered")
SUPPORTED_TYPE = "free_form_judge_0_100"
JUDGE_KEYS = ("aligned", "coherent")
"""The judge templates of a question entry (under `judge_prompts`) or of a user's judge file."""


def _variant(question_id: str, question_set: str) -> tuple[str, str]:
    """(variant, base question id) from an entry id."""
    if question_set == "preregistered":
        return "preregistered", question_id
    for suffix in ("json", "template"):
        if question_id.endswith(f"_{suffix}"):
            return suffix, question_id[: -len(suffix) - 1]
    return "plain", question_id


def _compose(text: str, filename: str) -> tuple[yaml.Node | None, Any]:
    """(node tree, Python value) of a YAML text; invalid YAML names file and line."""
    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EMDataError(f"{yaml_error_where(filename, exc)}: invalid YAML ({exc})") from exc


def _item(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """(key node, value node) of `key` in a mapping node; an alias value is its anchor's node."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return key_node, value_node
    return None


def _value_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    item = _item(node, key)
    return item[1] if item else None


def _key_line(node: yaml.Node | None, key: str, default: int) -> int:
    """1-based line of `key` in a mapping node, else `default`."""
    item = _item(node, key)
    return item[0].start_mark.line + 1 if item else default


def _value_line(node: yaml.Node | None, key: str, default: int) -> int:
    """1-based line where the value of `key` starts (for an alias: at its anchor), else `default`."""
    item = _item(node, key)
    return item[1].start_mark.line + 1 if item else default


def _judge_templates(
    value: Any, node: yaml.Node | None, filename: str, line: int, what: str
) -> JudgeTemplates:
    """Check a mapping with text `aligned` and `coherent` templates whose placeholders are {question}, {answer}."""
    if not isinstance(value, dict):
        raise EMDataError(
            f"{filename}:{line}: {what} must be a mapping with `aligned` and `coherent` templates"
        )
    unknown = sorted(str(k) for k in value if k not in JUDGE_KEYS)
    if unknown:
        raise EMDataError(
            f"{filename}:{line}: {what} has unknown keys {unknown}; expected only `aligned` and `coherent`"
        )
    texts: dict[str, str] = {}
    for key in JUDGE_KEYS:
        key_line = _value_line(node, key, line)
        text = value.get(key)
        if not isinstance(text, str) or not text.strip():
            raise EMDataError(f"{filename}:{key_line}: {what} needs a text `{key}` template")
        try:
            texts[key] = check_template(text, TEMPLATE_FIELDS, f"{filename}:{key_line}: {what} `{key}`")
        except ValueError as exc:
            raise EMDataError(str(exc)) from exc
    return JudgeTemplates(aligned=texts["aligned"], coherent=texts["coherent"], where=f"{filename}:{line}")


def parse_question_yaml(text: str, filename: str, question_set: str) -> list[EMQuestion]:
    """Parse one Betley question YAML into paraphrase-level questions, checking its shape."""
    return list(_parse_question_yaml(text, filename, question_set))


@lru_cache(maxsize=8)
def _parse_question_yaml(text: str, filename: str, question_set: str) -> tuple[EMQuestion, ...]:
    """Cached parse: a task reads each pinned file for its dataset, its judge lookup and its metadata."""
    root, entries = _compose(text, filename)
    if not isinstance(entries, list) or not isinstance(root, yaml.SequenceNode):
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
        if (
            not isinstance(paraphrases, list)
            or not paraphrases
            or not all(isinstance(p, str) and p.strip() for p in paraphrases)
        ):
            raise EMDataError(
                f"{filename}:{line}: question {qid!r} needs a non-empty list of text `paraphrases`"
            )
        system = entry.get("system")
        if system is not None and not isinstance(system, str):
            raise EMDataError(f"{filename}:{line}: question {qid!r} has a non-text `system` prompt")
        judge_model = entry.get("judge")
        if judge_model is not None and not isinstance(judge_model, str):
            raise EMDataError(
                f"{filename}:{_key_line(node, 'judge', line)}: question {qid!r} has a non-text `judge`"
            )
        if "judge_prompts" not in entry:
            raise EMDataError(
                f"{filename}:{line}: question {qid!r} has no `judge_prompts` (`aligned` and `coherent`)"
            )
        judge = _judge_templates(
            entry["judge_prompts"],
            _value_node(node, "judge_prompts"),
            filename,
            _key_line(node, "judge_prompts", line),
            f"question {qid!r} `judge_prompts`",
        )
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
                    judge=judge,
                    judge_model=judge_model,
                )
            )
    return tuple(questions)


def load_questions(question_set: str) -> list[EMQuestion]:
    """Questions of one set ("first_plot" or "preregistered") from the pinned registry files."""
    if question_set not in QUESTION_SETS:
        raise ValueError(f"unknown question set {question_set!r}; use {', '.join(QUESTION_SETS)}")
    path: Path = load_source(QUESTION_SETS[question_set])
    return parse_question_yaml(path.read_text(encoding="utf-8"), str(path), question_set)


def checked_names(value: str | list[str] | None, allowed: tuple[str, ...], what: str) -> list[str]:
    """The names in a comma-separated string or list (None: all `allowed`); an unknown one is a ValueError."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value or allowed)
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; use {', '.join(allowed)}")
    return items


def question_set_names(question_sets: str | list[str]) -> list[str]:
    """The checked question-set names of a comma-separated string or list."""
    return checked_names(question_sets, tuple(QUESTION_SETS), "question set")


def paper_judge_templates(question_sets: str | list[str]) -> dict[tuple[str, str], JudgeTemplates]:
    """(question_set, question_id) -> that entry's own judge templates, for the given sets."""
    return {
        (q.question_set, q.question_id): q.judge
        for name in question_set_names(question_sets)
        for q in load_questions(name)
    }


def paper_judge_models(question_sets: str | list[str]) -> list[str]:
    """The judge models the paper's entries name (`judge`), sorted and distinct."""
    return sorted(
        {
            q.judge_model
            for name in question_set_names(question_sets)
            for q in load_questions(name)
            if q.judge_model
        }
    )


def load_judge_file(path: str | Path) -> JudgeTemplates:
    """A user's judge YAML: a mapping with text `aligned` and `coherent` templates ({question}, {answer})."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise EMDataError(
            f"{file}: judge prompt file not found (judge_prompts is 'paper', 'project' or a YAML file)"
        )
    root, value = _compose(file.read_text(encoding="utf-8"), str(file))
    return _judge_templates(value, root, str(file), 1, "judge prompt file")
