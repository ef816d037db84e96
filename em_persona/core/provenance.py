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
from collections.abc import Mapping, Sequence
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
    multi_valued: bool = False
    """The argument takes several comma-separated values at once (each selects its own prompt)."""

    def provenance(self) -> str:
        """One line: "upstream FILE (PATH) at commit C, byte-exact; ..." or "project wording (FILE); ..."."""
        if self.origin == "paper":
            return f"{upstream_location(self.source)}, byte-exact; {self.extract}"
        return f"project wording ({self.source}); {self.note or 'the paper gives none'}"


def upstream_location(source_name: str) -> str:
    """ "upstream GROUP/FILE (PATH in REPO) at commit C" (or "pinned by sha256 ..." without a commit)."""
    from em_persona.core.registry import get_source

    src = get_source(source_name)
    url = src.url or ""
    commit = _COMMIT.search(url)
    repo = url.split("raw.githubusercontent.com/")[-1].split("/")
    where = f"{repo[0]}/{repo[1]}" if len(repo) > 2 else src.group
    pin = f"at commit {commit.group(1)[:12]}" if commit else f"pinned by {src.checksum[:19]}"
    return f"upstream {src.group}/{src.file} ({where}) {pin}"


def paper_prompt(
    task: str,
    role: str,
    argument: str | None,
    value: str | None,
    source: str,
    extract: str,
    multi_valued: bool = False,
) -> PromptSpec:
    """A prompt read byte-exact from the pinned upstream file of registry source `source`."""
    return PromptSpec(
        task, role, argument, value, "paper", source, extract=extract, multi_valued=multi_valued
    )


def project_prompt(
    task: str, role: str, argument: str | None, value: str | None, source: str, note: str = ""
) -> PromptSpec:
    """A prompt in this project's wording, kept in the repository file `source`."""
    return PromptSpec(task, role, argument, value, "project", source, note=note)


SILENT = "the paper gives no wording for this prompt; replace it with a template file of your own"


Prompts = Sequence[PromptSpec]
"""A task's prompts (its `PROMPTS`, also its declaration's `prompts`)."""


def _entries(prompts: Prompts) -> list[PromptSpec]:
    return list(prompts)


def _norm(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def selected_prompts(prompts: Prompts, args: Mapping[str, Any]) -> list[dict[str, str]]:
    """The prompts a task uses with `args` (its effective arguments): one record per role.

    For each role of the task, the entry whose argument has the given value; a value the
    catalogue does not list (a user's template file) is recorded with origin ``custom``.
    Roles selected by a boolean flag that is off (e.g. `decision_judge=false`) are left out.
    A multi-valued argument (e.g. `question_sets=first_plot,preregistered`) takes every value.
    """
    entries = _entries(prompts)
    if not entries:
        raise KeyError(f"no prompts declared for {prompts!r}")
    task = entries[0].task
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
            values = (
                [v.strip() for v in _norm(raw).split(",") if v.strip()]
                if specs[0].multi_valued
                else [_norm(raw)]
            )
            chosen = []
            for value in values:
                match = next((s for s in specs if s.value == value), None)
                if match is not None:
                    chosen.append(match)
                elif value not in ("false", "none", "None"):
                    chosen.append(
                        PromptSpec(
                            task,
                            role,
                            argument,
                            value,
                            "custom",
                            value,
                            note="a template file given by the user",
                        )
                    )
        for spec in chosen:
            out.append(
                {
                    "role": role,
                    "argument": spec.argument or "",
                    "value": spec.value or "",
                    "origin": spec.origin,
                    "provenance": (
                        f"user file {spec.source}" if spec.origin == "custom" else spec.provenance()
                    ),
                }
            )
    return out


def prompt_metadata(prompts: Prompts, args: Mapping[str, Any]) -> dict[str, Any]:
    """Task-metadata entries recording the prompts of this run (keys PROMPTS_KEY, ORIGIN_KEY, NOT_PAPER_KEY)."""
    used = selected_prompts(prompts, args)
    origins = {p["origin"] for p in used}
    overall = origins.pop() if len(origins) == 1 else "mixed"
    not_paper = sorted({p["role"] for p in used if p["origin"] != "paper"})
    return {PROMPTS_KEY: used, ORIGIN_KEY: overall, NOT_PAPER_KEY: not_paper}


def provenance_table(prompts: Prompts) -> str:
    """A task's prompts as a Markdown table (the task docs carry it verbatim)."""
    lines = ["| prompt | selected by | origin | source |", "|---|---|---|---|"]
    for spec in _entries(prompts):
        selector = f"`{spec.argument}={spec.value}`" if spec.argument else "always"
        lines.append(f"| {spec.role} | {selector} | {spec.origin} | {spec.provenance()} |")
    return "\n".join(lines)
