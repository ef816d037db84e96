"""Pinned upstream data: fetch, verify and cache the files listed in datasets/sources.yaml.

Lookup order for a file source: the cache ($EM_PERSONA_DATA_DIR), then an offline
mirror ($EM_PERSONA_MIRROR, layout ``<group>/<file>``), then the pinned URL.
Every copy is written to a temporary file, hashed, and only then renamed into the
cache, so a bad or partial file is never left where it could be taken as valid.

A Hugging Face source (``kind: hf``) is pinned by a commit (``revision``, 40 hex digits)
and by the sha256 of its JSONL export (``export_sha256``); it is exported once at that
commit, verified, and then read like any other file (cache, mirror, hub). A source whose
pins are missing or name a branch is refused with instructions (`hf_pin_problem`);
`em-persona data pin-hf NAME --revision COMMIT` prints the values to record.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from em_persona.core.errors import EmPersonaError
from em_persona.core.paths import DATASETS_DIR, home
from em_persona.core.yaml_lines import yaml_error_where

SOURCES_FILE = DATASETS_DIR / "sources.yaml"


class SourceError(EmPersonaError, RuntimeError):
    """A pinned source could not be provided; the message says which and what to do."""


@dataclass(frozen=True)
class Source:
    """One pinned upstream file (or Hugging Face dataset)."""

    name: str
    group: str
    file: str
    kind: str = "file"
    url: str | None = None
    sha256: str | None = None
    git_blob_sha1: str | None = None
    license: str = ""
    redistributable: bool = False
    citation: str = ""
    rows: int | None = None
    description: str = ""
    hf_id: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    revision: str | None = None
    """Hugging Face sources: the dataset commit (40 hex digits)."""
    export_sha256: str | None = None
    """Hugging Face sources: sha256 of the JSONL export at `revision`."""

    @property
    def checksum(self) -> str:
        """Human-readable pinned checksum."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.git_blob_sha1:
            return f"git-blob-sha1:{self.git_blob_sha1}"
        if self.kind == "hf":
            return (
                f"export-sha256:{self.export_sha256}" if self.export_sha256 else "UNPINNED (no export_sha256)"
            )
        return "none"


def data_dir() -> Path:
    """The data cache: $EM_PERSONA_DATA_DIR, else $EM_PERSONA_HOME (default ~/.cache/em-persona)."""
    env = os.environ.get("EM_PERSONA_DATA_DIR")
    return Path(env).expanduser() if env else home()


def mirror_dir() -> Path | None:
    """The offline mirror folder from $EM_PERSONA_MIRROR, if set."""
    env = os.environ.get("EM_PERSONA_MIRROR")
    return Path(env).expanduser() if env else None


def _load_registry(path: Path = SOURCES_FILE) -> dict[str, Source]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SourceError(
            f"{yaml_error_where(path, exc)}: invalid YAML in the source registry: {exc}"
        ) from exc
    groups: dict[str, dict[str, Any]] = raw.get("groups", {})
    out: dict[str, Source] = {}
    for name, entry in raw.get("sources", {}).items():
        group = groups.get(entry["group"])
        if group is None:
            raise SourceError(f"{path}: source {name!r} names unknown group {entry['group']!r}")
        url = None
        if entry.get("kind", "file") == "file":
            url = entry.get("url") or f"{group['base_url']}/{entry['path']}"
        out[name] = Source(
            name=name,
            group=entry["group"],
            file=entry.get("file", f"{name}.jsonl"),
            kind=entry.get("kind", "file"),
            url=url,
            sha256=entry.get("sha256"),
            git_blob_sha1=entry.get("git_blob_sha1"),
            license=group.get("license", ""),
            redistributable=bool(group.get("redistributable", False)),
            citation=group.get("citation", ""),
            rows=entry.get("rows"),
            description=entry.get("description", ""),
            hf_id=entry.get("hf_id"),
            hf_config=entry.get("hf_config"),
            hf_split=entry.get("hf_split", "train"),
            revision=None if entry.get("revision") is None else str(entry["revision"]),
            export_sha256=entry.get("export_sha256"),
        )
    return out


_REGISTRY: dict[str, Source] | None = None


def sources() -> dict[str, Source]:
    """All pinned sources by name."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _load_registry()
    return _REGISTRY


def get_source(name: str) -> Source:
    """Look a source up by name, with the list of names on a miss."""
    try:
        return sources()[name]
    except KeyError:
        raise SourceError(f"unknown data source {name!r}; known: {', '.join(sorted(sources()))}") from None


# --- hashing ---------------------------------------------------------------


def _file_digest(path: Path, algo: str, prefix: bytes = b"") -> str:
    h = hashlib.new(algo)
    h.update(prefix)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    return _file_digest(path, "sha256")


def _matches(path: Path, sha256: str | None, git_blob_sha1: str | None) -> tuple[bool, str]:
    """Whether the file has the pinned checksum; returns (ok, actual)."""
    if sha256:
        actual = _file_digest(path, "sha256")
        return actual == sha256, f"sha256:{actual}"
    if git_blob_sha1:
        prefix = f"blob {path.stat().st_size}\0".encode()
        actual = _file_digest(path, "sha1", prefix)
        return actual == git_blob_sha1, f"git-blob-sha1:{actual}"
    return True, "unpinned"


# --- fetching --------------------------------------------------------------


def cache_path(source: Source) -> Path:
    """Where the verified copy of a source lives in the cache."""
    return data_dir() / source.group / source.file


def _install(src_reader: Any, dest: Path, source: Source, sha256: str | None, origin: str) -> Path:
    """Copy a stream to a temp file beside dest, verify it, then rename atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src_reader, out, length=1 << 20)
        git_sha1 = source.git_blob_sha1 if sha256 is None else None
        ok, actual = _matches(tmp, sha256, git_sha1)
        if not ok:
            expected = f"sha256:{sha256}" if sha256 else source.checksum
            raise SourceError(
                f"checksum mismatch for source {source.name!r} from {origin}: expected {expected}, "
                f"got {actual}. The file was not cached. If upstream changed, re-pin it in "
                f"{SOURCES_FILE}; if a mirror is corrupt, replace the file there."
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _notice(source: Source) -> None:
    if not source.redistributable:
        print(
            f"[em-persona] {source.name}: {source.license}\n[em-persona]   cite: {source.citation}",
            file=sys.stderr,
        )


def _download(source: Source, dest: Path) -> Path:
    from tqdm import tqdm

    assert source.url is not None
    try:
        with urllib.request.urlopen(source.url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm.wrapattr(
                resp,
                "read",
                total=total,
                desc=f"fetch {source.name}",
                unit="B",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            ) as reader:
                return _install(reader, dest, source, source.sha256, source.url)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        if isinstance(exc, SourceError):
            raise
        mirror = mirror_dir()
        raise SourceError(
            f"cannot download source {source.name!r} from {source.url} ({exc}). Offline? "
            f"Put the file at {mirror or '$EM_PERSONA_MIRROR'}/{source.group}/{source.file} and set "
            f"EM_PERSONA_MIRROR, or copy a verified file to {dest}."
        ) from exc


def _pinned_digest(source: Source) -> tuple[str | None, str | None]:
    """(sha256, git_blob_sha1) a verified copy of this source must have."""
    if source.kind == "hf":
        return source.export_sha256, None
    return source.sha256, (None if source.sha256 else source.git_blob_sha1)


def load_source(name: str) -> Path:
    """Return the path of a verified local copy of a pinned source, fetching it if needed."""
    source = get_source(name)
    if source.kind == "hf":
        problem = hf_pin_problem(source)
        if problem:
            raise SourceError(_unpinned_message(source, problem))
    sha256, git_sha1 = _pinned_digest(source)
    cache_root = data_dir() / source.group
    # 1. the cache: verified again on every use (files are small), never trusted blindly
    cached = cache_root / source.file
    if cached.exists():
        ok, _ = _matches(cached, sha256, git_sha1)
        if ok:
            return cached
        print(f"[em-persona] cached {cached} failed its checksum; fetching again", file=sys.stderr)
        cached.unlink()
    # 2. the offline mirror
    mirror = mirror_dir()
    if mirror is not None:
        candidate = mirror / source.group / source.file
        if candidate.exists():
            with candidate.open("rb") as reader:
                path = _install(reader, cached, source, sha256, str(candidate))
            _notice(source)
            return path
    # 3. the network
    path = (
        _export_hf(source, source.revision or "", cached)
        if source.kind == "hf"
        else _download(source, cached)
    )
    _notice(source)
    return path


# --- Hugging Face sources: a commit and the sha256 of the JSONL export -------

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def hf_pin_problem(source: Source) -> str | None:
    """Why a Hugging Face source is not pinned well enough to load (None when it is)."""
    problems = []
    if source.revision is None:
        problems.append("`revision` is not set")
    elif not _COMMIT.fullmatch(source.revision):
        problems.append(f"`revision` {source.revision!r} is a branch or tag name, not a 40-hex commit id")
    if source.export_sha256 is None:
        problems.append("`export_sha256` is not set")
    elif not _SHA256.fullmatch(str(source.export_sha256)):
        problems.append(f"`export_sha256` {source.export_sha256!r} is not a 64-hex sha256")
    return "; ".join(problems) or None


def _unpinned_message(source: Source, problem: str) -> str:
    return (
        f"Hugging Face source {source.name!r} ({source.hf_id}, config {source.hf_config!r}) is not pinned: "
        f"{problem}. em-persona never loads a moving branch. In {SOURCES_FILE}, set `revision:` to the "
        f"dataset's commit id (40 hex digits; https://huggingface.co/datasets/{source.hf_id}/commits/main) and "
        f"`export_sha256:` to the sha256 that `em-persona data pin-hf {source.name} --revision <commit>` prints "
        f"(it exports the dataset at that commit to JSONL). Offline: put that export at "
        f"$EM_PERSONA_MIRROR/{source.group}/{source.file}."
    )


def _export_hf(source: Source, revision: str, dest: Path) -> Path:
    """Export the dataset at `revision` to JSONL at `dest` (atomically), verified against `export_sha256`.

    With `export_sha256` None (pinning a new commit) the export is kept unverified; the
    caller records its hash.
    """
    try:
        import datasets as hf_datasets

        ds = hf_datasets.load_dataset(
            source.hf_id, source.hf_config, split=source.hf_split, revision=revision
        )
    except Exception as exc:  # the hub client raises many types; all mean "not available"
        raise SourceError(
            f"cannot load Hugging Face dataset {source.hf_id!r} (config {source.hf_config!r}, "
            f"revision {revision!r}) for source {source.name!r}: {exc}. Offline? Put its JSONL export at "
            f"{mirror_dir() or '$EM_PERSONA_MIRROR'}/{source.group}/{source.file}."
        ) from exc
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in ds).encode("utf-8")
    return _install(io.BytesIO(body), dest, source, source.export_sha256, f"hf:{source.hf_id}@{revision}")


def pin_hf(name: str, revision: str) -> tuple[Path, str]:
    """Export a Hugging Face source at commit `revision` into the cache; (path, sha256 of the export)."""
    source = get_source(name)
    if source.kind != "hf":
        raise SourceError(f"source {name!r} is not a Hugging Face dataset (kind {source.kind!r})")
    if not _COMMIT.fullmatch(revision):
        raise SourceError(
            f"--revision {revision!r} is not a commit id: give the 40-hex commit of {source.hf_id} "
            f"(https://huggingface.co/datasets/{source.hf_id}/commits/main), not a branch or tag"
        )
    unverified = replace(source, revision=revision, export_sha256=None)
    path = _export_hf(unverified, revision, cache_path(source))
    return path, file_sha256(path)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one source."""

    name: str
    status: str  # "ok", "missing", "mismatch", "unpinned"
    detail: str


def verify(names: list[str] | None = None) -> list[VerifyResult]:
    """Check cached or mirrored copies against their pins, without touching the network.

    A Hugging Face source without a commit and export hash is "unpinned" (load_source refuses it).
    """
    results = []
    mirror = mirror_dir()
    for name in names or sorted(sources()):
        source = get_source(name)
        if source.kind == "hf":
            problem = hf_pin_problem(source)
            if problem:
                results.append(VerifyResult(name, "unpinned", f"Hugging Face {source.hf_id}: {problem}"))
                continue
        found = None
        for root in [data_dir(), mirror] if mirror else [data_dir()]:
            p = root / source.group / source.file
            if p.exists():
                found = p
                break
        if found is None:
            results.append(VerifyResult(name, "missing", "not cached and not in the mirror"))
            continue
        ok, actual = _matches(found, *_pinned_digest(source))
        results.append(VerifyResult(name, "ok" if ok else "mismatch", f"{found} ({actual})"))
    return results
