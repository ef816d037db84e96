"""The `em-persona` command line: one group, subcommands loaded on demand.

Every command lives in its own module of this package. The toolkit's own errors
(`em_persona.core.errors.EmPersonaError`) are caught here, once, and shown as one line.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from em_persona.core.errors import EmPersonaError

# name -> ("module:attribute" of a click command, short help, the extra it needs); imported only
# when used, so `em-persona data list` never pays for torch or vLLM imports.
SUBCOMMANDS: dict[str, tuple[str, str, str | None]] = {
    "data": ("em_persona.cli.data:data", "Pinned upstream data: list, fetch, verify, pin-hf.", None),
    "proxy": ("em_persona.cli.proxy:proxy", "Build the tiny and Gemma-270M proxy models.", "proxy"),
    "finetune": (
        "em_persona.cli.finetune:finetune",
        "LoRA fine-tune from a YAML config (stages, resume).",
        "finetune",
    ),
    "serve": (
        "em_persona.cli.serve:serve",
        "Serve a base model and LoRA adapters from one vLLM server.",
        "serve-cpu or gpu",
    ),
    "report": (
        "em_persona.cli.report:report",
        "Inspect logs -> persona taxonomy, statistics, figures, report.",
        None,
    ),
    "probes": ("em_persona.cli.probes:probes", "Activation extraction and linear probes.", "probes"),
    "prompts": (
        "em_persona.cli.prompts:prompts",
        "Every prompt a task sends and where its text comes from.",
        None,
    ),
    "run": ("em_persona.cli.run:run", "Run an experiment file end to end: data to report.", None),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported the first time they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        target, _, extra = entry
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            hint = f"pip install 'em-persona[{extra}]'" if extra else "pip install em-persona"
            raise click.ClickException(
                f"subcommand {cmd_name!r} is unavailable: {exc}. Install what it needs ({hint}), "
                "or run `make setup` in a checkout."
            ) from exc
        return getattr(module, attr)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmPersonaError as exc:
            raise click.ClickException(str(exc)) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above: `--help` imports no subcommand (and no torch).
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="em-persona")
def main() -> None:
    """Reproduce the emergent-misalignment persona studies: data, proxies, fine-tuning,
    serving, Inspect tasks and the persona-taxonomy report."""
