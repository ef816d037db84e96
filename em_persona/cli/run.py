"""`em-persona run EXPERIMENT.yaml [--dry-run] [--report-anyway]`: an experiment file end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from em_persona.app import pipeline
from em_persona.app.experiment import load_experiment


@click.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True,
              help="Run the preflight (models, credentials, adapters, data) and print the plan; train and "
                   "evaluate nothing. Exits non-zero when the preflight finds a problem.")
@click.option("--report-anyway", is_flag=True,
              help="When some task x model runs did not finish, still write the report, marked INCOMPLETE.")
def run(experiment: Path, dry_run: bool, report_anyway: bool) -> None:
    """Run EXPERIMENT (a YAML in experiments/) end to end: preflight, fine-tunes, serving, tasks, report.

    Interrupted (Ctrl-C) or incomplete runs exit non-zero and name what did not finish; rerun the
    same command to resume.
    """
    # the toolkit's own errors (EmPersonaError) become one line in em_persona.cli
    report = pipeline.run_experiment(load_experiment(experiment), dry_run=dry_run, report_anyway=report_anyway)
    if report is not None:
        click.echo(f"Report: {report}")
    sys.stdout.flush()
