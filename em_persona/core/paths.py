"""Where the toolkit keeps its data folder, caches and proxy models.

From a checkout (editable install) the data folders sit at the top of the repository; from an
installed wheel they sit inside the package (`em_persona/datasets`, ...). `package_dir` finds
either, so the code never cares how the toolkit was installed.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""The `em_persona` package folder."""
REPO_ROOT = PACKAGE_ROOT.parent
"""The checkout (or, for an installed wheel, site-packages): relative paths in experiment files
resolve against it when they do not exist relative to the working folder."""


def package_dir(name: str) -> Path:
    """Folder of the toolkit part `name` (tasks, scorers, datasets, finetune, ...), installed or not."""
    inside = PACKAGE_ROOT / name
    return inside if inside.is_dir() else REPO_ROOT / name


def in_checkout() -> bool:
    """True when the toolkit runs from a checkout (an editable install), not an installed wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and not (PACKAGE_ROOT / "tasks").is_dir()


def resolve_input(path: str | Path) -> Path:
    """A file an experiment file names (e.g. `finetune/configs/x.yaml`): absolute as given; else in
    the working folder, else in the checkout, else inside the installed package."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for root in (Path.cwd(), REPO_ROOT):
        if (root / p).exists():
            return root / p
    parts = p.parts
    return package_dir(parts[0]).joinpath(*parts[1:]) if parts else p


def output_root() -> Path:
    """Where relative output folders (logs/, adapters/, reports/) go: the checkout, else the working folder."""
    return REPO_ROOT if in_checkout() else Path.cwd()


DATASETS_DIR = package_dir("datasets")
TASKS_DIR = package_dir("tasks")


def home() -> Path:
    """Root of em-persona's caches: $EM_PERSONA_HOME or ~/.cache/em-persona."""
    env = os.environ.get("EM_PERSONA_HOME")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "em-persona"


def proxies_dir() -> Path:
    """Where `em-persona proxy build` writes proxy models by default."""
    return home() / "proxies"
