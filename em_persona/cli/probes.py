"""`em-persona probes`: extract residual activations, then fit linear probes on them."""

from __future__ import annotations

from pathlib import Path

import click

from em_persona.probes.activations import POOLINGS


@click.group()
def probes() -> None:
    """Activation probes: are harmful behaviour and misaligned self-assessment linearly
    decodable from the residual stream, and how aligned are the two directions?

    \b
    1. `probes extract` once per model (base, or base + LoRA adapter)
    2. `probes fit` on all the activation files together
    """


@probes.command("extract")
@click.option(
    "--base",
    required=True,
    help="Base model folder (Hugging Face format) or a proxy: proxy:tiny, proxy:gemma-270m "
    "(the bare name works too).",
)
@click.option(
    "--adapter",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="LoRA adapter folder applied on top of --base (omit for the base model).",
)
@click.option(
    "--harm-log",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="This model's harmfulness log (.eval/.json), or a JSONL records file.",
)
@click.option(
    "--sa-log",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="This model's self-assessment log (.eval/.json), or a JSONL records file.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output activations file (.safetensors).",
)
@click.option(
    "--layers",
    default=None,
    help="Comma-separated layer indices (0 = embeddings, negative from the end); "
    "default: 4 evenly spaced layers.",
)
@click.option(
    "--pooling",
    "poolings",
    multiple=True,
    type=click.Choice(POOLINGS),
    help="Pooling (repeatable); default: all of " + ", ".join(POOLINGS) + ".",
)
@click.option(
    "--name", default=None, help="Model name in the results (default: the adapter's or base's folder name)."
)
@click.option(
    "--max-samples", type=int, default=None, help="Use at most N samples per log (seeded subsample)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subsample.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option(
    "--max-length", type=int, default=1024, show_default=True, help="Token cap; longer responses are cut."
)
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")
@click.option(
    "--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True
)
def extract_cmd(
    base: str,
    adapter: Path | None,
    harm_log: Path | None,
    sa_log: Path | None,
    out: Path,
    layers: str | None,
    poolings: tuple[str, ...],
    name: str | None,
    max_samples: int | None,
    seed: int,
    batch_size: int,
    max_length: int,
    device: str,
    dtype: str,
) -> None:
    """Save pooled residual activations of one model on its harmfulness and self-assessment answers."""
    from em_persona.probes.activations import (
        ActivationInputError,
        extract_model,
        save_activations,
        tasks_from_paths,
    )

    if harm_log is None and sa_log is None:
        raise click.UsageError("give --harm-log and/or --sa-log")
    base_path = _base_folder(base)
    try:
        tasks = tasks_from_paths(
            {"harm": harm_log, "self_assessment": sa_log}, max_samples=max_samples, seed=seed
        )
        aset = extract_model(
            base_path,
            tasks,
            adapter=adapter,
            layers=layers,
            poolings=poolings or POOLINGS,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            dtype=dtype,
            name=name,
        )
    except (ActivationInputError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    path = save_activations(aset, out)
    counts = ", ".join(f"{t}: {len(aset.ids[t])}" for t in aset.tasks)
    click.echo(f"{path} ({aset.model}; layers {aset.layers}; {counts})")


def _base_folder(base: str) -> Path:
    """--base as a model folder: a proxy spec resolves to its built folder; a folder must exist."""
    from em_persona.core.proxies import ProxyError, proxy_folder

    try:
        folder = proxy_folder(base)
    except ProxyError as exc:
        raise click.BadParameter(str(exc), param_hint="--base") from None
    if folder is None:
        folder = Path(base).expanduser()
        if not folder.is_dir():
            raise click.BadParameter(
                f"{folder} is not a model folder (nor a proxy: proxy:tiny, proxy:gemma-270m)",
                param_hint="--base",
            )
    return folder


@probes.command("fit")
@click.argument("acts", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder for probes.json, probe_*.csv and figures/.",
)
@click.option("--folds", type=int, default=5, show_default=True, help="Stratified CV folds.")
@click.option("--random-state", type=int, default=42, show_default=True, help="Seed of the fold shuffle.")
@click.option(
    "--C",
    "c",
    type=float,
    default=1.0,
    show_default=True,
    help="Inverse L2 strength of the logistic regression.",
)
@click.option("--no-figures", is_flag=True, help="Skip the PNG/SVG figures.")
def fit_cmd(
    acts: tuple[Path, ...], out: Path, folds: int, random_state: int, c: float, no_figures: bool
) -> None:
    """Fit harm and self-assessment probes on ACTS files (one per model): CV AUROC/accuracy per
    layer, harm-vs-self-assessment direction cosines, and the cross-model transfer matrix."""
    from em_persona.analysis.probe_figures import write_probe_figures
    from em_persona.probes.activations import ActivationInputError
    from em_persona.probes.fit import ProbeConfig, run_probes

    try:
        doc = run_probes(
            list(acts),
            out,
            ProbeConfig(n_splits=folds, random_state=random_state, C=c),
            figure_writer=None if no_figures else write_probe_figures,
        )
    except (ActivationInputError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{out / 'probes.json'}: {len(doc['cv'])} probes, {len(doc['cosine'])} cosines, "
        f"{len(doc['transfer'])} transfer cells, {len(doc['skipped'])} skipped"
    )
