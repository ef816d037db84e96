"""`em-persona finetune CONFIG.yaml`: LoRA fine-tuning from a YAML config."""

from __future__ import annotations

from pathlib import Path

import click

from em_persona.finetune.config import load_config


@click.command("finetune")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--override", "-o", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config field, dotted and repeatable: -o train.learning_rate=2e-5 -o lora.r=16 "
    "-o stages.1.data.rows=600. Values are parsed as YAML.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for adapters (default: $EM_PERSONA_HOME/adapters); each stage saves <out>/<name>.")
@click.option("--max-rows", type=click.IntRange(min=1), default=None,
              help="Train every stage on at most N rows (seeded subsample; for smoke runs).")
@click.option("--force", is_flag=True, help="Retrain adapters that are already finished.")
@click.option("--dry-run", is_flag=True, help="Validate the config and all training data, then stop.")
def finetune(
    config_path: Path, overrides: tuple[str, ...], out: Path | None, max_rows: int | None,
    force: bool, dry_run: bool,
) -> None:
    """LoRA-fine-tune a model on the stages of CONFIG.yaml (defaults: the paper recipe).

    Data of every stage is validated before training; checkpoints allow resuming an
    interrupted run by re-running the same command; each finished adapter is a plain peft
    folder with manifest.json, servable by `em-persona serve`.
    """
    from em_persona.finetune.data import load_training_data
    from em_persona.finetune.train import finetune as run_finetune

    config = load_config(config_path, list(overrides)).with_max_rows(max_rows)
    if dry_run:
        for stage in config.stages:
            data = load_training_data(stage.data)
            click.echo(f"{stage.name}: {len(data.rows)} of {data.total_rows} rows OK ({data.source})")
        return
    results = run_finetune(config, out, force=force)
    for r in results:
        state = "trained" if r.trained else "already finished"
        click.echo(f"{r.name}\t{r.path}\t{state}\tdomain={r.manifest['domain']}")
