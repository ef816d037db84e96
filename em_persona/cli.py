"""The `em-persona` command line: one group, subcommands loaded on demand."""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command; imported only when used,
# so `em-persona data list` never pays for torch or vLLM imports.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "data": ("em_persona.data_cli:data", "Pinned upstream data: list, fetch, verify."),
    "proxy": ("finetune.proxy:proxy", "Build the tiny and Gemma-270M proxy models."),
    "finetune": ("finetune.cli:finetune", "LoRA fine-tune from a YAML config (stages, resume)."),
    "serve": ("finetune.serve:serve", "Serve a base model and LoRA adapters from one vLLM server."),
    "report": ("analysis.cli:report", "Inspect logs -> persona taxonomy, statistics, figures, report."),
    "probes": ("analysis.probes_cli:probes", "Activation extraction and linear probes."),
    "prompts": ("em_persona.prompts_cli:prompts", "Every prompt a task sends and where its text comes from."),
    "run": ("em_persona.pipeline:run", "Run an experiment file end to end: data to report."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported the first time they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise click.ClickException(
                f"subcommand {cmd_name!r} is unavailable: {exc}. Run `make setup`."
            ) from exc
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above: `--help` imports no subcommand (and no torch).
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="em-persona")
def main() -> None:
    """Reproduce the emergent-misalignment persona studies: data, proxies, fine-tuning,
    serving, Inspect tasks and the persona-taxonomy report."""
