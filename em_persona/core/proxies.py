"""Proxy models by name: `proxy:NAME` (or a bare NAME) in every command and file, where they are
built, and which are built. Building them is em_persona.finetune.proxy's job (torch, transformers)."""

from __future__ import annotations

import json
from pathlib import Path

from em_persona.core.errors import EmPersonaError
from em_persona.core.paths import proxies_dir

PROXY_NAMES = ("tiny", "gemma-270m")
PROXY_PREFIX = "proxy:"  # the spelling experiment files and fine-tuning configs use: proxy:NAME
MARKER = "proxy.json"  # written last: a folder without it is not a finished proxy


class ProxyError(EmPersonaError, RuntimeError):
    """A proxy model is unknown, not built, or could not be built."""


def is_built(folder: Path) -> bool:
    """True when `folder` holds a finished proxy (its marker file is written last)."""
    return (Path(folder) / MARKER).is_file()


def proxy_name(spec: str | Path) -> str | None:
    """The proxy a base-model spec names: `proxy:NAME`, or a bare NAME when no folder of that name exists.

    None when `spec` names no proxy. Every command that takes a base model resolves it here, so
    `proxy:gemma-270m` and `gemma-270m` mean the same thing everywhere.
    Raises ProxyError for `proxy:X` with an unknown X.
    """
    text = str(spec)
    if text.startswith(PROXY_PREFIX):
        name = text[len(PROXY_PREFIX) :]
        if name not in PROXY_NAMES:
            raise ProxyError(
                f"unknown proxy {name!r} in {text!r}; choose one of: "
                + ", ".join(PROXY_PREFIX + n for n in PROXY_NAMES)
            )
        return name
    if text in PROXY_NAMES and not Path(text).is_dir():  # a folder of that name wins
        return text
    return None


def proxy_folder(spec: str | Path) -> Path | None:
    """The built folder of the proxy `spec` names (None when it names none); an unbuilt proxy is a
    ProxyError that says how to build it (`em-persona proxy build NAME`)."""
    name = proxy_name(spec)
    if name is None:
        return None
    folder = proxies_dir() / name
    if not is_built(folder):
        raise ProxyError(
            f"proxy model {name!r} is not built yet ({folder}): run `em-persona proxy build {name}`"
        )
    return folder


def proxy_of_folder(folder: str | Path) -> str | None:
    """The proxy a model folder holds: a folder `.../proxies/NAME` (any em-persona home) or one whose
    proxy.json marker names it; None for other folders."""
    folder = Path(folder).expanduser()
    if folder.parent.name == "proxies" and folder.name in PROXY_NAMES:
        return folder.name
    try:
        name = json.loads((folder / MARKER).read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if name in PROXY_NAMES else None


def proxy_candidates() -> list[str]:
    """One line per proxy: its `proxy:NAME` spelling and whether (and where) it is built."""
    lines = []
    for name in PROXY_NAMES:
        folder = proxies_dir() / name
        state = f"built, {folder}" if is_built(folder) else f"not built: em-persona proxy build {name}"
        lines.append(f"{PROXY_PREFIX}{name} ({state})")
    return lines


# --------------------------------------------------------------------------- CLI
