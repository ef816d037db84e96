"""Where the toolkit keeps its data folder, caches and proxy models."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = REPO_ROOT / "datasets"


def home() -> Path:
    """Root of em-persona's caches: $EM_PERSONA_HOME or ~/.cache/em-persona."""
    env = os.environ.get("EM_PERSONA_HOME")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "em-persona"


def proxies_dir() -> Path:
    """Where `em-persona proxy build` writes proxy models by default."""
    return home() / "proxies"
