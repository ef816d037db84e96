"""`em-persona finetune CONFIG.yaml`: LoRA fine-tuning from a YAML config, in this process or, with
`--launcher accelerate`, under `accelerate launch` (em_persona.finetune.launch)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import click

from em_persona.finetune.config import load_config
from em_persona.finetune.launch import (
    NAMED_CONFIGS,
    LaunchError,
    accelerate_command,
    check_accelerate_config,
    check_launch_host,
)


@click.command("finetune")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--override",
    "-o",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field, dotted and repeatable: -o train.learning_rate=2e-5 -o lora.r=16 "
    "-o stages.1.data.rows=600. Values are parsed as YAML.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for adapters (default: $EM_PERSONA_HOME/adapters); each stage saves <out>/<name>.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Train every stage on at most N rows (seeded subsample; for smoke runs).",
)
@click.option("--force", is_flag=True, help="Retrain adapters that are already finished.")
@click.option("--dry-run", is_flag=True, help="Validate the config and all training data, then stop.")
@click.option(
    "--launcher",
    type=click.Choice(["direct", "accelerate"]),
    default="direct",
    show_default=True,
    help="direct: train in this process; accelerate: `accelerate launch` one process per GPU.",
)
@click.option(
    "--accelerate-config",
    default=None,
    metavar="|".join(NAMED_CONFIGS) + "|PATH",
    help="With --launcher accelerate: a shipped config (finetune/configs/accelerate/) or a file "
    "(default: fsdp).",
)
@click.option(
    "--num-processes",
    type=click.IntRange(min=1),
    default=None,
    help="With --launcher accelerate: training processes, all machines together (default: the "
    "accelerate config's num_processes).",
)
@click.option(
    "--print-command",
    is_flag=True,
    help="With --launcher accelerate: check everything, print the launch command, run nothing.",
)
def finetune(
    config_path: Path,
    overrides: tuple[str, ...],
    out: Path | None,
    max_rows: int | None,
    force: bool,
    dry_run: bool,
    launcher: str,
    accelerate_config: str | None,
    num_processes: int | None,
    print_command: bool,
) -> None:
    """LoRA-fine-tune a model on the stages of CONFIG.yaml (defaults: the paper recipe).

    Data of every stage is validated before training; checkpoints allow resuming an
    interrupted run by re-running the same command; each finished adapter is a plain peft
    folder with manifest.json, servable by `em-persona serve`.
    """
    from em_persona.finetune.data import load_training_data
    from em_persona.finetune.train import finetune as run_finetune

    if launcher != "accelerate":
        given = [
            name
            for name, value in (
                ("--accelerate-config", accelerate_config),
                ("--num-processes", num_processes),
                ("--print-command", print_command or None),
            )
            if value is not None
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} only with --launcher accelerate")
    config = load_config(config_path, list(overrides)).with_max_rows(max_rows)
    if launcher == "accelerate":
        settings = check_accelerate_config(accelerate_config or "fsdp", num_processes)
        command = accelerate_command(
            config_path, config, settings, overrides=overrides, out=out, max_rows=max_rows, force=force
        )
        if print_command:
            click.echo(shlex.join(command))
            return
    if dry_run:
        for stage in config.stages:
            data = load_training_data(stage.data)
            click.echo(f"{stage.name}: {len(data.rows)} of {data.total_rows} rows OK ({data.source})")
        if launcher == "accelerate":
            click.echo(f"would run: {shlex.join(command)}")
        return
    if launcher == "accelerate":
        check_launch_host(settings)
        click.echo(f"$ {shlex.join(command)}", err=True)
        status = subprocess.run(command, check=False).returncode
        if status != 0:
            raise LaunchError(f"accelerate launch exited with status {status} (its output is above)")
        return
    results = run_finetune(config, out, force=force)
    for r in results:
        state = "trained" if r.trained else "already finished"
        click.echo(f"{r.name}\t{r.path}\t{state}\tdomain={r.manifest['domain']}")
