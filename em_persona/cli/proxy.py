"""`em-persona proxy build tiny|gemma-270m`: the proxy models for tests and the demo."""

from __future__ import annotations

from pathlib import Path

import click

from em_persona.core.proxies import PROXY_NAMES
from em_persona.finetune.proxy import build_proxy


@click.group()
def proxy() -> None:
    """Build small proxy models for tests and the demo pipeline."""


@proxy.command("build")
@click.argument("name", type=click.Choice(PROXY_NAMES))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: $EM_PERSONA_HOME/proxies/NAME).",
)
@click.option("--force", is_flag=True, help="Rebuild even if a finished proxy is already there.")
def build_cmd(name: str, out: Path | None, force: bool) -> None:
    """Build proxy NAME: `tiny` (random weights, seconds) or `gemma-270m` (real Gemma-3-270M)."""
    path = build_proxy(name, out=out, force=force)
    click.echo(str(path))
