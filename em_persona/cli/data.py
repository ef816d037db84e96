"""`em-persona data`: list, fetch and verify the pinned upstream sources; pin a Hugging Face source."""

from __future__ import annotations

import click

from em_persona.core import registry


@click.group()
def data() -> None:
    """Pinned upstream data: list, fetch (download or mirror), verify, pin-hf."""


@data.command("list")
def list_() -> None:
    """List every pinned source with its pin, licence and cache state."""
    for name, src in sorted(registry.sources().items()):
        cached = registry.cache_path(src).exists() if src.kind == "file" else False
        state = "cached" if cached else "-"
        if src.kind == "file":
            where = src.url
        else:
            problem = registry.hf_pin_problem(src)
            where = f"hf:{src.hf_id}@{src.revision} ({src.hf_config})" + (
                f"  UNPINNED: {problem}" if problem else ""
            )
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
@click.option(
    "--strict",
    is_flag=True,
    help="Also fail when a source is neither cached nor mirrored, or is an unpinned Hugging Face source.",
)
def verify(names: tuple[str, ...], strict: bool) -> None:
    """Check cached and mirrored files against their pins (no network).

    Statuses: ok, missing (not cached, not mirrored), mismatch (wrong hash: exit 1), unpinned
    (a Hugging Face source without a commit + export hash; fetching it is refused).
    """
    results = registry.verify(list(names) or None)
    bad = 0
    for r in results:
        click.echo(f"{r.status:9s} {r.name:28s} {r.detail}")
        if r.status == "mismatch" or (strict and r.status in ("missing", "unpinned")):
            bad += 1
    count = {s: sum(r.status == s for r in results) for s in ("ok", "missing", "mismatch", "unpinned")}
    click.echo(
        f"{count['ok']} ok, {count['missing']} missing, {count['mismatch']} mismatched, "
        f"{count['unpinned']} unpinned (Hugging Face, refused until pinned)"
    )
    if bad:
        raise SystemExit(1)


@data.command("pin-hf")
@click.argument("name")
@click.option("--revision", required=True, help="The dataset commit to pin (40 hex digits).")
def pin_hf(name: str, revision: str) -> None:
    """Export Hugging Face source NAME at commit REVISION and print the pins for datasets/sources.yaml."""
    path, digest = registry.pin_hf(name, revision)
    click.echo(f"exported {name} at {revision} to {path}")
    click.echo(f"set these in {registry.SOURCES_FILE} under `{name}`:")
    click.echo(f"    revision: {revision}")
    click.echo(f"    export_sha256: {digest}")
