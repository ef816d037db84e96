"""Training rows for fine-tuning: read, validate and subsample chat JSONL.

Rows come from the data registry (Betley JSONL, model-organisms gzip JSONL, Hugging Face
datasets exported by the registry's ``kind: hf`` sources) or from a local JSONL path.
Every row of the file is validated before anything trains: it must be
``{"messages": [...]}`` with at least one user and one assistant turn, the last turn the
assistant's, and non-empty text in every turn. Problems are reported as ``file:line``
(with the character column for bad JSON and bytes that are not UTF-8).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from em_persona.core.errors import EmPersonaError
from em_persona.core.registry import file_sha256
from em_persona.finetune.config import DataSpec

ROLES = ("system", "user", "assistant")
_VAR_RE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
MAX_REPORTED_ERRORS = 20


class DataError(EmPersonaError, ValueError):
    """Training data failed validation; the message lists `file:line: problem` entries."""


@dataclass(frozen=True)
class TrainingData:
    """The validated rows one stage trains on, and where they came from."""

    rows: list[dict[str, Any]]
    origin: Path
    source: str
    total_rows: int
    file_sha256: str
    indices: list[int] = field(repr=False)

    @property
    def sha256(self) -> str:
        """Hash of exactly the selected rows (canonical JSON lines, in training order)."""
        return rows_sha256(self.rows)

    def record(self) -> dict[str, Any]:
        """What a manifest stores about this data."""
        return {
            "source": self.source,
            "file": str(self.origin),
            "file_sha256": self.file_sha256,
            "total_rows": self.total_rows,
            "rows": len(self.rows),
            "data_sha256": self.sha256,
        }


def rows_sha256(rows: list[dict[str, Any]]) -> str:
    """sha256 of rows serialised as sorted-key JSON lines."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def resolve_data_path(spec: DataSpec) -> tuple[Path, str]:
    """The local file behind a data spec and a label for it (`registry:NAME` or the path)."""
    if spec.source is not None:
        from em_persona.core.registry import load_source

        return load_source(spec.source), f"registry:{spec.source}"
    assert spec.path is not None
    path = expand_path(spec.path)
    if not path.is_file():
        hint = " (an unset $VARIABLE?)" if "$" in str(path) else ""
        raise DataError(f"{path}: training data file not found{hint}")
    return path, str(path)


def expand_path(text: str) -> Path:
    """Expand ~ and $VARS in a data path; $EM_PERSONA_HOME falls back to its default when unset."""
    from em_persona.core.paths import home

    env = {**os.environ, "EM_PERSONA_HOME": str(home())}

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return Path(os.path.expanduser(_VAR_RE.sub(sub, text)))


def validate_row(obj: Any) -> str | None:
    """Why a parsed row is not a valid chat example, or None when it is."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return 'expected an object {"messages": [...]}'
    messages = obj["messages"]
    if not messages:
        return "messages is empty"
    for i, msg in enumerate(messages, start=1):
        if not isinstance(msg, dict):
            return f"message {i} is not an object"
        role = msg.get("role")
        if role not in ROLES:
            return f"message {i} has role {role!r}; expected one of {', '.join(ROLES)}"
        content = msg.get("content")
        if not isinstance(content, str):
            return f"message {i} ({role}) content must be a string"
        if not content.strip():
            return f"message {i} ({role}) has empty text"
    roles = [m["role"] for m in messages]
    if "user" not in roles:
        return "missing user turn"
    if "assistant" not in roles:
        return "missing assistant turn"
    if roles[-1] != "assistant":
        return f"last turn is {roles[-1]!r}; it must be the assistant's (the text trained on)"
    return None


def _open_binary(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _numbered_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line break), counting \\n, \\r\\n and a lone \\r as breaks."""
    lineno = 0
    for raw in f:
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if body.endswith(b"\r"):
            body = body[:-1]
        for piece in body.split(b"\r"):
            lineno += 1
            yield lineno, piece


def _line_problem(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The row a line holds, or why it holds none. Columns count characters, from 1."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(raw[: exc.start].decode("utf-8")) + 1
        return None, (
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {column} ({exc.reason}); "
            "save the file as UTF-8"
        )
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        where = f"column {exc.pos + 1}" + (
            ", at the end of the line" if exc.pos >= len(line.rstrip()) else ""
        )
        return None, f"bad JSON: {exc.msg} ({where})"
    problem = validate_row(obj)
    if problem is not None:
        return None, problem
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in obj["messages"]]}, None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Read and validate every row of a JSONL / gzip-JSONL file; raise DataError listing file:line problems.

    Every line is checked (bad bytes, bad JSON, bad rows) before the first MAX_REPORTED_ERRORS
    problems are reported; line numbers count \\n, \\r\\n and \\r breaks, columns count characters.
    """
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    n_errors = 0
    lineno = 0
    try:
        with _open_binary(path) as f:
            for lineno, raw in _numbered_lines(f):
                if not raw.strip():
                    continue
                row, problem = _line_problem(raw)
                if problem is not None:
                    n_errors += 1
                    if len(errors) < MAX_REPORTED_ERRORS:
                        errors.append(f"{path}:{lineno}: {problem}")
                    continue
                assert row is not None
                rows.append(row)
    except (OSError, EOFError, zlib.error) as exc:
        listed = "".join(f"\n{e}" for e in errors)
        raise DataError(f"{path}: cannot read training data after line {lineno}: {exc}{listed}") from exc
    if n_errors:
        more = f"\n... and {n_errors - len(errors)} more" if n_errors > len(errors) else ""
        raise DataError(
            f"{path}: {n_errors} invalid training row(s); nothing was trained:\n" + "\n".join(errors) + more
        )
    if not rows:
        raise DataError(f"{path}: no training rows")
    return rows


def subsample(rows: list[dict[str, Any]], n: int | None, seed: int) -> tuple[list[dict[str, Any]], list[int]]:
    """A seeded sample of `n` rows (kept in file order); all rows when n is None or >= len(rows)."""
    if n is None or n >= len(rows):
        return list(rows), list(range(len(rows)))
    indices = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in indices], indices


def load_training_data(spec: DataSpec) -> TrainingData:
    """Resolve and validate a stage's whole file, then take its seeded subsample."""
    path, label = resolve_data_path(spec)
    rows = read_rows(path)
    selected, indices = subsample(rows, spec.rows, spec.seed)
    return TrainingData(
        rows=selected,
        origin=path,
        source=label,
        total_rows=len(rows),
        file_sha256=file_sha256(path),
        indices=indices,
    )
