"""`em-persona data`: list, fetch and verify the pinned upstream sources."""

from __future__ import annotations

import click

from em_persona import registry


@click.group()
def data() -> None:
    """Pinned upstream data: list, fetch (download or mirror) and verify."""


@data.command("list")
def list_() -> None:
    """List every pinned source with its pin, licence and cache state."""
    for name, src in sorted(registry.sources().items()):
        cached = registry.cache_path(src).exists() if src.kind == "file" else False
        state = "cached" if cached else "-"
        where = src.url if src.kind == "file" else f"hf:{src.hf_id}@{src.revision} ({src.hf_config})"
        redist = "" if src.redistributable else "  [not redistributable]"
        click.echo(f"{name:28s} {state:7s} {src.group}/{src.file}{redist}")
        click.echo(f"{'':28s}         {src.checksum}")
        click.echo(f"{'':28s}         {where}")


@data.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Fetch every file source.")
def fetch(names: tuple[str, ...], all_: bool) -> None:
    """Fetch NAMES into the cache ($EM_PERSONA_DATA_DIR), verifying each checksum."""
    if all_:
        names = tuple(n for n, s in sorted(registry.sources().items()) if s.kind == "file")
    if not names:
        raise click.UsageError("name at least one source (see `em-persona data list`) or pass --all")
    failed = 0
    for name in names:
        try:
            path = registry.load_source(name)
        except registry.SourceError as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
            continue
        click.echo(f"{name}: {path}")
    if failed:
        raise SystemExit(1)


@data.command()
@click.argument("names", nargs=-1)
@click.option("--strict", is_flag=True, help="Also fail when a source is neither cached nor mirrored.")
def verify(names: tuple[str, ...], strict: bool) -> None:
    """Check cached and mirrored files against their pins (no network)."""
    results = registry.verify(list(names) or None)
    bad = 0
    for r in results:
        click.echo(f"{r.status:9s} {r.name:28s} {r.detail}")
        if r.status == "mismatch" or (strict and r.status == "missing"):
            bad += 1
    ok = sum(r.status == "ok" for r in results)
    click.echo(f"{ok} ok, {sum(r.status == 'missing' for r in results)} missing, "
               f"{sum(r.status == 'mismatch' for r in results)} mismatched")
    if bad:
        raise SystemExit(1)
