"""Pinned upstream data: fetch, verify and cache the files listed in datasets/sources.yaml.

Lookup order for a file source: the cache ($EM_PERSONA_DATA_DIR), then an offline
mirror ($EM_PERSONA_MIRROR, layout ``<group>/<file>``), then the pinned URL.
Every copy is written to a temporary file, hashed, and only then renamed into the
cache, so a bad or partial file is never left where it could be taken as valid.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from em_persona.paths import DATASETS_DIR, home

SOURCES_FILE = DATASETS_DIR / "sources.yaml"


class SourceError(RuntimeError):
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
    alt_file: str | None = None
    alt_sha256: str | None = None
    hf_id: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    revision: str | None = None

    @property
    def checksum(self) -> str:
        """Human-readable pinned checksum."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.git_blob_sha1:
            return f"git-blob-sha1:{self.git_blob_sha1}"
        return "none (Hugging Face revision pin)"


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
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SourceError(f"{where}: invalid YAML in the source registry: {exc}") from exc
    groups: dict[str, dict[str, Any]] = raw.get("groups", {})
    out: dict[str, Source] = {}
    for name, entry in raw.get("sources", {}).items():
        group = groups.get(entry["group"])
        if group is None:
            raise SourceError(f"{path}: source {name!r} names unknown group {entry['group']!r}")
        alt = entry.get("mirror_alternative") or {}
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
            alt_file=alt.get("file"),
            alt_sha256=alt.get("sha256"),
            hf_id=entry.get("hf_id"),
            hf_config=entry.get("hf_config"),
            hf_split=entry.get("hf_split", "train"),
            revision=entry.get("revision"),
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
        raise SourceError(
            f"unknown data source {name!r}; known: {', '.join(sorted(sources()))}"
        ) from None


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


def _candidates(source: Source) -> Iterator[tuple[str, str | None]]:
    """(file name, sha256) pairs a mirror or cache may hold for this source."""
    yield source.file, source.sha256
    if source.alt_file:
        yield source.alt_file, source.alt_sha256


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
            f"[em-persona] {source.name}: {source.license}\n"
            f"[em-persona]   cite: {source.citation}",
            file=sys.stderr,
        )


def _download(source: Source, dest: Path) -> Path:
    from tqdm import tqdm

    assert source.url is not None
    try:
        with urllib.request.urlopen(source.url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm.wrapattr(
                resp, "read", total=total, desc=f"fetch {source.name}", unit="B",
                unit_scale=True, leave=False, file=sys.stderr,
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


def load_source(name: str) -> Path:
    """Return the path of a verified local copy of a pinned source, fetching it if needed."""
    source = get_source(name)
    if source.kind == "hf":
        return _load_hf_source(source)
    cache_root = data_dir() / source.group
    # 1. the cache: verified again on every use (files are small), never trusted blindly
    for fname, sha in _candidates(source):
        cached = cache_root / fname
        if cached.exists():
            git_sha1 = source.git_blob_sha1 if sha is None else None
            ok, _ = _matches(cached, sha, git_sha1)
            if ok:
                return cached
            print(f"[em-persona] cached {cached} failed its checksum; fetching again", file=sys.stderr)
            cached.unlink()
    # 2. the offline mirror
    mirror = mirror_dir()
    if mirror is not None:
        for fname, sha in _candidates(source):
            candidate = mirror / source.group / fname
            if candidate.exists():
                with candidate.open("rb") as reader:
                    path = _install(reader, cache_root / fname, source, sha, str(candidate))
                _notice(source)
                return path
    # 3. the network
    path = _download(source, cache_root / source.file)
    _notice(source)
    return path


def _load_hf_source(source: Source) -> Path:
    """Export a Hugging Face dataset (id + revision) to JSONL in the cache; mirror first."""
    dest = data_dir() / source.group / source.file
    if dest.exists():
        return dest
    mirror = mirror_dir()
    if mirror is not None and (mirror / source.group / source.file).exists():
        with (mirror / source.group / source.file).open("rb") as reader:
            return _install(reader, dest, source, None, str(mirror / source.group / source.file))
    try:
        import datasets as hf_datasets

        ds = hf_datasets.load_dataset(
            source.hf_id, source.hf_config, split=source.hf_split, revision=source.revision
        )
    except Exception as exc:  # the hub client raises many types; all mean "not available"
        raise SourceError(
            f"cannot load Hugging Face dataset {source.hf_id!r} (config {source.hf_config!r}, "
            f"revision {source.revision!r}) for source {source.name!r}: {exc}. Offline? Export it "
            f"to JSONL at {mirror or '$EM_PERSONA_MIRROR'}/{source.group}/{source.file}."
        ) from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with tmp.open("w") as f:
        for row in ds:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, dest)
    _notice(source)
    return dest


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one source."""

    name: str
    status: str  # "ok", "missing", "mismatch", "skipped"
    detail: str


def verify(names: list[str] | None = None) -> list[VerifyResult]:
    """Check cached or mirrored copies against their pins, without touching the network."""
    results = []
    mirror = mirror_dir()
    for name in names or sorted(sources()):
        source = get_source(name)
        if source.kind == "hf":
            results.append(VerifyResult(name, "skipped", "Hugging Face dataset (revision pin)"))
            continue
        found = None
        for root in [data_dir(), mirror] if mirror else [data_dir()]:
            for fname, sha in _candidates(source):
                p = root / source.group / fname
                if p.exists():
                    found = (p, sha)
                    break
            if found:
                break
        if found is None:
            results.append(VerifyResult(name, "missing", "not cached and not in the mirror"))
            continue
        path, sha = found
        ok, actual = _matches(path, sha, source.git_blob_sha1 if sha is None else None)
        results.append(VerifyResult(name, "ok" if ok else "mismatch", f"{path} ({actual})"))
    return results


# --- MFQ-30: read upstream mfq_questions.py without executing it -------------

_MFQ_LISTS = {"_RELEVANCE_ITEMS": "relevance", "_AGREEMENT_ITEMS": "agreement"}


def parse_mfq_python(text: str, filename: str = "mfq_questions.py") -> list[dict[str, Any]]:
    """Read the two MFQ item lists out of upstream mfq_questions.py with ast (never exec)."""
    tree = ast.parse(text, filename=filename)
    lists: dict[str, list[tuple[str, str]]] = {}
    for node in tree.body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        if isinstance(target, ast.Name) and target.id in _MFQ_LISTS and node.value is not None:
            try:
                lists[target.id] = ast.literal_eval(node.value)
            except ValueError as exc:
                raise SourceError(f"{filename}:{node.lineno}: {target.id} is not a literal list") from exc
    missing = [k for k in _MFQ_LISTS if k not in lists]
    if missing:
        raise SourceError(f"{filename}: no assignment to {', '.join(missing)}; upstream format changed")
    items = []
    for var, qtype in _MFQ_LISTS.items():
        for foundation, text_ in lists[var]:
            items.append({"id": len(items) + 1, "type": qtype, "foundation": foundation, "text": text_})
    return items


def load_mfq_items() -> list[dict[str, Any]]:
    """The 30 scored MFQ items as dicts: id (1-30), type, foundation, text."""
    path = load_source("mfq30")
    if path.suffix == ".json":
        items = json.loads(path.read_text())["items"]
    else:
        items = parse_mfq_python(path.read_text(), str(path))
    if len(items) != 30:
        raise SourceError(f"{path}: expected 30 MFQ items, found {len(items)}")
    return [
        {"id": int(i["id"]), "type": i["type"], "foundation": i["foundation"], "text": i["text"]}
        for i in items
    ]
