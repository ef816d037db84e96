"""Atomic file writes: a temporary file beside the target, renamed over it once complete.

A reader sees the old file or the new one, never a half-written one; on an exception (Ctrl-C included)
the temporary file `.<name>.<random>.tmp` is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically; its folder must exist."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(
    path: Path, payload: Any, *, indent: int | None = 2, default: Callable[[Any], Any] | None = None
) -> None:
    """Write `payload` as JSON (keys in their order, `indent`, a final newline) to `path` atomically;
    `default` turns values JSON cannot hold into ones it can (as in json.dumps)."""
    write_text_atomic(path, json.dumps(payload, indent=indent, default=default) + "\n")
