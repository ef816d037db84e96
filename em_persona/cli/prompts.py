"""`em-persona prompts [TASK]`: every prompt a task can send and where its text comes from."""

from __future__ import annotations

import re
from pathlib import Path

import click

from em_persona.core.paths import TASKS_DIR
from em_persona.core.provenance import CATALOGUE, catalogue, provenance_table

DOC_START = "<!-- provenance: generated from em_persona/provenance.py -->"
DOC_END = "<!-- /provenance -->"


def doc_section(task: str) -> str:
    """The task doc's provenance section (between DOC_START and DOC_END)."""
    return (f"{DOC_START}\n## Prompts and provenance\n\nEvery prompt this task can send, and where its text "
            f"comes from (`em-persona prompts {task}` prints the same table; the log header records the ones "
            f"a run used, and the report marks metrics whose prompts are not the paper's).\n\n"
            f"{provenance_table(task)}\n{DOC_END}")


def update_doc(path: Path, task: str) -> bool:
    """Refresh (or insert, before "## Parameters") the provenance section of a task doc; True if changed."""
    text = path.read_text(encoding="utf-8")
    block = doc_section(task)
    if DOC_START in text:
        new = re.sub(re.escape(DOC_START) + ".*?" + re.escape(DOC_END), lambda _: block, text, flags=re.S)
    else:
        heading = re.search(r"^## Parameters", text, flags=re.M)
        new = (text[:heading.start()] + block + "\n\n" + text[heading.start():] if heading
               else text.rstrip("\n") + "\n\n" + block + "\n")
    if new != text:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
    return new != text


@click.command("prompts")
@click.argument("task", required=False)
@click.option("--update-docs", is_flag=True, help="Rewrite the provenance section of every tasks/<task>.md.")
def prompts(task: str | None, update_docs: bool) -> None:
    """List the prompts of TASK (default: every task): origin (paper / project) and source."""
    tasks = sorted({p.task for p in CATALOGUE})
    if task is not None and task not in tasks:
        raise click.ClickException(f"unknown task {task!r}; tasks with prompts: {', '.join(tasks)}")
    if update_docs:
        for name in tasks:
            path = TASKS_DIR / f"{name}.md"
            if update_doc(path, name):
                click.echo(f"updated {path}")
        return
    for name in [task] if task else tasks:
        click.echo(f"{name} ({len(catalogue(name))} prompts)")
        click.echo(provenance_table(name))
        click.echo()
