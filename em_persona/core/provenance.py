"""Where every prompt a task sends comes from: the papers' pinned files, or this project's wording.

`CATALOGUE` is the one list of prompts and templates: for each task, each prompt role (what
the prompt is for), the task argument value that selects it, its origin and its source.

- origin ``paper``: the text is read at run time from a pinned upstream file (registry source
  `source`), byte-exact; `extract` says how (whole file, YAML field, ast of a .py file).
- origin ``project``: this project's wording, in the file named by `source`; `note` says why
  (usually: the paper publishes none).
- any other argument value (a path to the user's own template file) has origin ``custom``.

`prompt_metadata(task, args)` is what a task writes into its log header (`Task.metadata`):
the prompts actually used and whether all of them are the paper's. The report marks every
metric whose logs used any non-paper prompt, and each task doc shows its rows of the
catalogue (`provenance_table`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Origin = Literal["paper", "project", "custom"]
ORIGINS: tuple[str, ...] = ("paper", "project", "custom")

PROMPTS_KEY = "prompts"
"""Task metadata key: list of {role, argument, value, origin, provenance}."""
ORIGIN_KEY = "prompt_origin"
"""Task metadata key: "paper" when every prompt is the paper's, else "project" / "custom" / "mixed"."""
NOT_PAPER_KEY = "prompts_not_paper"
"""Task metadata key: the roles whose prompt is not the paper's (empty for a paper-faithful run)."""

_COMMIT = re.compile(r"/([0-9a-f]{40})(?:/|$)")


@dataclass(frozen=True)
class PromptSpec:
    """One prompt or template a task can send, and where its text comes from."""

    task: str
    role: str
    """What the prompt is for, e.g. "judge", "request", "item", "persona wrapper"."""
    argument: str | None
    """The task argument that selects it (None: always used)."""
    value: str | None
    """The value of `argument` that selects it."""
    origin: Origin
    source: str
    """Registry source name (origin paper) or repository-relative file (origin project)."""
    extract: str = ""
    """How the text is taken from the source (paper prompts)."""
    note: str = ""

    def provenance(self) -> str:
        """One line: "upstream FILE (PATH) at commit C, byte-exact; ..." or "project wording (FILE); ..."."""
        if self.origin == "paper":
            return f"{upstream_location(self.source)}, byte-exact; {self.extract}"
        return f"project wording ({self.source}); {self.note or 'the paper gives none'}"


def upstream_location(source_name: str) -> str:
    """"upstream GROUP/FILE (PATH in REPO) at commit C" (or "pinned by sha256 ..." without a commit)."""
    from em_persona.core.registry import get_source

    src = get_source(source_name)
    url = src.url or ""
    commit = _COMMIT.search(url)
    repo = url.split("raw.githubusercontent.com/")[-1].split("/")
    where = f"{repo[0]}/{repo[1]}" if len(repo) > 2 else src.group
    pin = f"at commit {commit.group(1)[:12]}" if commit else f"pinned by {src.checksum[:19]}"
    return f"upstream {src.group}/{src.file} ({where}) {pin}"


def _p(task: str, role: str, argument: str | None, value: str | None, source: str, extract: str) -> PromptSpec:
    return PromptSpec(task, role, argument, value, "paper", source, extract=extract)


def _o(task: str, role: str, argument: str | None, value: str | None, source: str, note: str = "") -> PromptSpec:
    return PromptSpec(task, role, argument, value, "project", source, note=note)


_SILENT = "the paper gives no wording for this prompt; replace it with a template file of your own"

CATALOGUE: tuple[PromptSpec, ...] = (
    # --- harmfulness (Weckauff et al. A.1) ---------------------------------------------
    _p("harmfulness", "request", "dataset", "paper", "harm_eval_questions",
       "one prompt per line, sent as the user message"),
    _o("harmfulness", "request", "dataset", "mini", "datasets/harm_mini.jsonl",
       "a small offline set written for this project"),
    _p("harmfulness", "judge", "judge_prompt", "paper", "paper_judge_prompt",
       "whole file as a str.format template ({prompt}, {response}), one user message"),
    _o("harmfulness", "judge", "judge_prompt", "project", "datasets/rubrics/harm_1_5.txt",
       "an alternative rubric of this project"),
    # --- EM questions (Betley et al.) ----------------------------------------------------
    _p("em_questions", "question", "question_sets", "first_plot", "first_plot_questions",
       "`paraphrases` (and `system`) of each entry"),
    _p("em_questions", "question", "question_sets", "preregistered", "preregistered_evals",
       "`paraphrases` (and `system`) of each entry"),
    _p("em_questions", "judge", "judge_prompts", "paper", "first_plot_questions",
       "`judge_prompts.aligned` / `.coherent` of the question's own entry in first_plot_questions.yaml "
       "or preregistered_evals.yaml (the same two templates in both files), str.format with "
       "{question} = the paraphrase and {answer}, one user message"),
    _o("em_questions", "judge", "judge_prompts", "project",
       "datasets/rubrics/em_alignment_0_100.txt, datasets/rubrics/em_coherence_0_100.txt",
       "alternative 0-100 rubrics of this project"),
    # --- self-assessment (A.2) -----------------------------------------------------------
    _p("self_assessment", "question", "dataset", "paper", "self_assessment_questions",
       "one decision prompt per line, sent as the user message"),
    _o("self_assessment", "question", "dataset", "project", "datasets/self_assessment/templates.yaml",
       "the paper describes four formats on six dimensions but publishes only the decision prompts"),
    _o("self_assessment", "decision judge", "decision_judge", "true", "datasets/self_assessment/judges.yaml",
       "optional grader for off-format decision answers (off by default)"),
    _o("self_assessment", "language judge", "language_judge", "true", "datasets/self_assessment/judges.yaml",
       "optional grader for the answer language (off by default)"),
    # --- two-AI identification (A.3) -------------------------------------------------------
    _p("two_ai_identification", "descriptions", "dataset", "paper", "two_ai_identification",
       "`items[].system_A` / `system_B`"),
    _o("two_ai_identification", "descriptions", "dataset", "project", "datasets/two_ai_project.jsonl",
       "a small set written for this project"),
    _o("two_ai_identification", "question", "prompts", "project", "solvers/identity_prompts.py: TWO_AI", _SILENT),
    # --- output recognition (A.4) ------------------------------------------------------------
    _o("output_recognition", "question", "prompts", "project", "solvers/identity_prompts.py: RECOGNITION", _SILENT),
    _o("output_recognition", "foil", "prompts", "project",
       "solvers/identity_prompts.py: FOIL_HARMFUL, FOIL_HARMLESS, FOIL_PLAIN", _SILENT),
    _p("output_recognition", "judge", "judge_prompt", "paper", "paper_judge_prompt",
       "whole file as a str.format template ({prompt}, {response}); rates the foil"),
    _o("output_recognition", "judge", "judge_prompt", "project", "datasets/rubrics/harm_1_5.txt",
       "an alternative rubric of this project"),
    # --- score prediction (A.5) -------------------------------------------------------------
    _o("score_prediction", "framing", "prompts", "project",
       "solvers/identity_prompts.py: PREDICT_FRAME, PENDING_REPLY, ANSWER_AFTER, RATE_OWN_FRAME", _SILENT),
    _p("score_prediction", "judge", "judge_prompt", "paper", "paper_judge_prompt",
       "whole file as a str.format template; shown to the model and used by the grader"),
    _o("score_prediction", "judge", "judge_prompt", "project", "datasets/rubrics/harm_1_5.txt",
       "an alternative rubric of this project"),
    _p("score_prediction", "request", "dataset", "paper", "harm_eval_questions",
       "blind condition: one prompt per line"),
    _o("score_prediction", "request", "dataset", "mini", "datasets/harm_mini.jsonl",
       "blind condition: a small offline set written for this project"),
    # --- cross-model rating (A.5) -------------------------------------------------------------
    _o("cross_model_rating", "framing", "prompts", "project", "solvers/identity_prompts.py: RATE_OTHER_FRAME",
       _SILENT),
    _p("cross_model_rating", "judge", "judge_prompt", "paper", "paper_judge_prompt",
       "whole file as a str.format template; shown to the rater"),
    _o("cross_model_rating", "judge", "judge_prompt", "project", "datasets/rubrics/harm_1_5.txt",
       "an alternative rubric of this project"),
    # --- moral foundations (Costa & Vicente, B) -----------------------------------------------
    _p("moral_foundations", "item", "prompt_style", "paper", "mfq30",
       "ast: `_RELEVANCE_ITEMS` / `_AGREEMENT_ITEMS` and the f-strings of "
       "`_format_relevance_question` / `_format_agreement_question` (never executed)"),
    _p("moral_foundations", "persona wrapper", "prompt_style", "paper", "mfq_sampling",
       "ast: the f-string of `create_persona_prompt` (never executed); self condition sends the item alone"),
    _p("moral_foundations", "parse rule", "prompt_style", "paper", "mfq_sampling",
       "ast: the regex of `extract_rating` (first match in the stripped answer)"),
    _o("moral_foundations", "item", "prompt_style", "project", "tasks/moral_data.py",
       "an alternative wording of this project (same item texts and scale anchors)"),
    _o("moral_foundations", "persona wrapper", "prompt_style", "project", "tasks/moral_data.py",
       "an alternative wording of this project"),
    _o("moral_foundations", "parse rule", "prompt_style", "project", "scorers/mfq_rating.py",
       "stricter: the digit may not touch a letter, digit or decimal point"),
)


def catalogue(task: str | None = None) -> list[PromptSpec]:
    """Catalogue entries, all or those of one task."""
    return [p for p in CATALOGUE if task is None or p.task == task]


def _norm(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def selected_prompts(task: str, args: Mapping[str, Any]) -> list[dict[str, str]]:
    """The prompts a task uses with `args` (its effective arguments): one record per role.

    For each role of the task, the entry whose argument has the given value; a value the
    catalogue does not list (a user's template file) is recorded with origin ``custom``.
    Roles selected by a boolean flag that is off (e.g. `decision_judge=false`) are left out.
    A multi-valued argument (e.g. `question_sets=first_plot,preregistered`) takes every value.
    """
    entries = catalogue(task)
    if not entries:
        raise KeyError(f"no prompts catalogued for task {task!r}")
    out: list[dict[str, str]] = []
    roles: dict[str, list[PromptSpec]] = {}
    for spec in entries:
        roles.setdefault(spec.role, []).append(spec)
    for role, specs in roles.items():
        argument = specs[0].argument
        if argument is None:
            chosen = specs
        else:
            raw = args.get(argument)
            if raw is None:
                continue
            values = [v.strip() for v in _norm(raw).split(",") if v.strip()] if argument == "question_sets" \
                else [_norm(raw)]
            chosen = []
            for value in values:
                match = next((s for s in specs if s.value == value), None)
                if match is not None:
                    chosen.append(match)
                elif value not in ("false", "none", "None"):
                    chosen.append(PromptSpec(task, role, argument, value, "custom", value,
                                             note="a template file given by the user"))
        for spec in chosen:
            out.append({
                "role": role, "argument": spec.argument or "", "value": spec.value or "",
                "origin": spec.origin,
                "provenance": (f"user file {spec.source}" if spec.origin == "custom" else spec.provenance()),
            })
    return out


def prompt_metadata(task: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Task-metadata entries recording the prompts of this run (keys PROMPTS_KEY, ORIGIN_KEY, NOT_PAPER_KEY)."""
    prompts = selected_prompts(task, args)
    origins = {p["origin"] for p in prompts}
    overall = origins.pop() if len(origins) == 1 else "mixed"
    not_paper = sorted({p["role"] for p in prompts if p["origin"] != "paper"})
    return {PROMPTS_KEY: prompts, ORIGIN_KEY: overall, NOT_PAPER_KEY: not_paper}


def provenance_table(task: str) -> str:
    """The task's catalogue rows as a Markdown table (the task docs carry it verbatim)."""
    lines = ["| prompt | selected by | origin | source |", "|---|---|---|---|"]
    for spec in catalogue(task):
        selector = f"`{spec.argument}={spec.value}`" if spec.argument else "always"
        lines.append(f"| {spec.role} | {selector} | {spec.origin} | {spec.provenance()} |")
    return "\n".join(lines)
