"""`em-persona prompts [TASK]`: every prompt a task can send and where its text comes from."""

from __future__ import annotations

import re
from pathlib import Path

import click

from em_persona.core.paths import TASKS_DIR
from em_persona.core.provenance import PromptSpec, provenance_table
from em_persona.tasks.registry import specs

DOC_START = "<!-- provenance: generated from the task's PROMPTS (em-persona prompts --update-docs) -->"
OLD_STARTS = ("<!-- provenance: generated from em_persona/provenance.py -->",)
DOC_END = "<!-- /provenance -->"


def declared_prompts() -> dict[str, tuple[PromptSpec, ...]]:
    """Every declared task's prompts (its SPEC), by task name; tasks that send none are left out."""
    return {name: spec.prompts for name, spec in specs().items() if spec.prompts}


def doc_section(task: str) -> str:
    """The task doc's provenance section (between DOC_START and DOC_END)."""
    return (
        f"{DOC_START}\n## Prompts and provenance\n\nEvery prompt this task can send, and where its text "
        f"comes from (`em-persona prompts {task}` prints the same table; the log header records the ones "
        f"a run used, and the report marks metrics whose prompts are not the paper's).\n\n"
        f"{provenance_table(declared_prompts()[task])}\n{DOC_END}"
    )


def update_doc(path: Path, task: str) -> bool:
    """Refresh (or insert, before "## Parameters") the provenance section of a task doc; True if changed."""
    original = path.read_text(encoding="utf-8")
    text = original
    for old in OLD_STARTS:
        text = text.replace(old, DOC_START)
    block = doc_section(task)
    if DOC_START in text:
        new = re.sub(re.escape(DOC_START) + ".*?" + re.escape(DOC_END), lambda _: block, text, flags=re.S)
    else:
        heading = re.search(r"^## Parameters", text, flags=re.M)
        new = (
            text[: heading.start()] + block + "\n\n" + text[heading.start() :]
            if heading
            else text.rstrip("\n") + "\n\n" + block + "\n"
        )
    if new != original:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
    return new != original


@click.command("prompts")
@click.argument("task", required=False)
@click.option("--update-docs", is_flag=True, help="Rewrite the provenance section of every tasks/<task>.md.")
def prompts(task: str | None, update_docs: bool) -> None:
    """List the prompts of TASK (default: every task): origin (paper / project) and source."""
    prompts_of = declared_prompts()
    tasks = sorted(prompts_of)
    if task is not None and task not in tasks:
        raise click.ClickException(f"unknown task {task!r}; tasks with prompts: {', '.join(tasks)}")
    if update_docs:
        for name in tasks:
            path = TASKS_DIR / f"{name}.md"
            if update_doc(path, name):
                click.echo(f"updated {path}")
        return
    for name in [task] if task else tasks:
        click.echo(f"{name} ({len(prompts_of[name])} prompts)")
        click.echo(provenance_table(prompts_of[name]))
        click.echo()
