"""`em-persona run EXPERIMENT.yaml [--dry-run [--calibrate]] [--report-anyway]`: an experiment file end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from em_persona.app import pipeline
from em_persona.app.experiment import load_experiment


@click.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--dry-run",
    is_flag=True,
    help="Run the preflight (models, credentials, adapters, data) and print the plan: calls, tokens, "
    "estimated wall time (from this base model's recorded runs on this machine) and the cost of API "
    "models; train and evaluate nothing. Exits non-zero when the preflight finds a problem.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="With --dry-run: start the server, time a short burst of the tasks' requests, stop it, and "
    "estimate the wall time from that.",
)
@click.option(
    "--report-anyway",
    is_flag=True,
    help="When some task x model runs did not finish, still write the report, marked INCOMPLETE.",
)
def run(experiment: Path, dry_run: bool, calibrate: bool, report_anyway: bool) -> None:
    """Run EXPERIMENT (a YAML in experiments/) end to end: preflight, fine-tunes, serving, tasks, report.

    Interrupted (Ctrl-C) or incomplete runs exit non-zero and name what did not finish; rerun the
    same command to resume. Each run appends its wall time and tokens per stage to
    <log_dir>/run-stats.json, which the next plan's time estimate uses.
    """
    if calibrate and not dry_run:
        raise click.UsageError("--calibrate estimates a plan: use it with --dry-run")
    # the toolkit's own errors (EmPersonaError) become one line in em_persona.cli
    report = pipeline.run_experiment(
        load_experiment(experiment),
        dry_run=dry_run,
        report_anyway=report_anyway,
        calibrate_plan=calibrate,
    )
    if report is not None:
        click.echo(f"Report: {report}")
    sys.stdout.flush()
