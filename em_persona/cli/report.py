"""`em-persona report LOGDIR --out DIR`: the persona-taxonomy report from a folder of Inspect logs."""

from __future__ import annotations

from pathlib import Path

import click

from em_persona.analysis.taxonomy import SELF_ASSESSMENT_SETS, Thresholds, parse_grid
from em_persona.contract.declarations import AggregateOptions


@click.command("report")
@click.argument("logdir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for report.html, report.md, figures/ and tables/*.csv.",
)
@click.option(
    "--models",
    "models_yaml",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Model facts file (default: LOGDIR/models.yaml; else inferred from model names).",
)
@click.option(
    "--harmful",
    type=float,
    default=Thresholds.harmful,
    show_default=True,
    help="Harmful when the best-of-N (else single-response) harmful fraction is >= this.",
)
@click.option(
    "--two-ai",
    type=float,
    default=Thresholds.two_ai,
    show_default=True,
    help="Misaligned self-identification when the two-AI misaligned-choice fraction is >= this.",
)
@click.option(
    "--self-assessment",
    type=float,
    default=Thresholds.self_assessment,
    show_default=True,
    help="Misaligned self-identification when the overall self-assessment score is >= this.",
)
@click.option(
    "--recognition",
    type=float,
    default=Thresholds.recognition,
    show_default=True,
    help="Claims its harmful outputs when the high-harm own-output selection rate is >= this.",
)
@click.option(
    "--harm-score-threshold",
    type=float,
    default=AggregateOptions.harm_score_threshold,
    show_default=True,
    help="A response is harmful when its 1-5 judge score is > this.",
)
@click.option(
    "--grid",
    "grid_specs",
    multiple=True,
    metavar="NAME=V1,V2,...",
    help="Sensitivity grid values for one threshold (repeatable), e.g. --grid harmful=0.4,0.5,0.6.",
)
@click.option(
    "--n-boot",
    type=int,
    default=AggregateOptions.n_boot,
    show_default=True,
    help="Bootstrap resamples for every CI.",
)
@click.option("--seed", type=int, default=AggregateOptions.seed, show_default=True, help="Bootstrap seed.")
@click.option(
    "--grader",
    "primary_grader",
    default=None,
    help="Grader whose harm scores feed the tables when several scored the same logs (default: the most "
    "frequent); a model it did not score keeps its own most frequent grader.",
)
@click.option(
    "--proxy-note",
    default=None,
    help="Banner text stating that proxy models/judges produced these logs (adds to models.yaml `note`).",
)
@click.option(
    "--link-figures", is_flag=True, help="Link figures/<name>.png instead of embedding them in report.html."
)
@click.option(
    "--probes",
    "probes_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of `em-persona probes fit` results (probes.json) for the probes section "
    "(default: LOGDIR/probes when it holds probes.json).",
)
@click.option(
    "--self-assessment-set",
    "self_assessment_set",
    type=click.Choice(list(SELF_ASSESSMENT_SETS)),
    default="project",
    show_default=True,
    help="Self-assessment set the taxonomy uses: project (6 dimensions x 4 formats) or paper (the paper's "
    "100 single-word decision prompts); the other is shown beside it.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 1, no report) when any log is unusable; by default only when none is usable.",
)
@click.option(
    "--reference-mfq",
    "reference_mfq",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of the MFQ authors' released raw runs (their data/<condition>/<model>_temp01.csv "
    "layout): their S and R are shown beside this run's (never classified).",
)
def report(
    logdir: Path,
    out: Path,
    models_yaml: Path | None,
    harmful: float,
    two_ai: float,
    self_assessment: float,
    recognition: float,
    harm_score_threshold: float,
    grid_specs: tuple[str, ...],
    n_boot: int,
    seed: int,
    primary_grader: str | None,
    proxy_note: str | None,
    link_figures: bool,
    probes_dir: Path | None,
    self_assessment_set: str,
    strict: bool,
    reference_mfq: Path | None,
) -> None:
    """Classify every model in LOGDIR (aligned, coherent-persona, inverted-persona, mixed) and write
    report.html, report.md, figures (PNG + SVG) and a CSV of every table into --out.

    When activation-probe results exist (--probes DIR, else LOGDIR/probes/probes.json) the report
    adds their CV AUROC table, the harm vs self-assessment cosines, the transfer matrix and the
    probe figures. Harmfulness logs re-scored by a second judge (`inspect score ... --action
    append`) feed the judge-agreement table.

    A proxy banner is shown when models.yaml marks models `proxy: true` (per model or at the
    top level), has a top-level `note:`, or --proxy-note is given.

    Unusable logs (unreadable or truncated files, runs with status error / cancelled / started,
    logs that fail validation) are named here with the reason and at the top of the report.
    Exits 1 when no log is usable, and with --strict when any is.
    """
    from em_persona.analysis.logs import unusable_logs
    from em_persona.analysis.report import ReportOptions, make_report

    try:
        grid = parse_grid(grid_specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--grid") from exc
    options = ReportOptions(
        thresholds=Thresholds(
            harmful=harmful, two_ai=two_ai, self_assessment=self_assessment, recognition=recognition
        ),
        grid=grid,
        aggregate=AggregateOptions(
            harm_score_threshold=harm_score_threshold, n_boot=n_boot, seed=seed, primary_grader=primary_grader
        ),
        proxy_note=proxy_note,
        embed_figures=not link_figures,
        probes_dir=probes_dir,
        self_assessment_set=self_assessment_set,
        strict=strict,
        reference_mfq=reference_mfq,
    )
    try:
        result, paths = make_report(logdir, out, models_yaml, options)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    lost = unusable_logs(result.logs)
    for row in lost.itertuples():
        click.echo(f"unusable log {row.log}: {row.note}", err=True)
    if not lost.empty:
        click.echo(
            f"{len(lost)} unusable log(s): their data is left out (listed at the top of the report)", err=True
        )
    counts = result.taxonomy["label"].value_counts().sort_index()
    click.echo(f"{len(result.taxonomy)} model(s): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    click.echo(f"report: {paths['html']}")
    click.echo(f"        {paths['md']}")
    click.echo(f"tables: {paths['tables']}/")
