"""Private files: the server log and the detached server's recorded state, 0600 from the first byte.

`em-persona serve` records the server it started in $EM_PERSONA_HOME/serve: `server.json` (pid,
URL, key, models, command line, dtype and why) and `env` (shell exports for Inspect's `vllm` provider). Both hold the API key,
so they, and the server log that may name it, are readable by their owner only.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from em_persona.core.paths import home
from em_persona.serving.errors import ServeError
from em_persona.serving.processes import pid_alive, stop_process_group

if TYPE_CHECKING:
    from em_persona.serving.launcher import ServerHandle

PRIVATE_FILE_MODE = 0o600  # server logs and state: they may name the API key
PRIVATE_DIR_MODE = 0o700


def open_private(path: Path) -> BinaryIO:
    """Open `path` for writing (truncated) with mode 0600, also when it already existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


def private_dir(folder: Path) -> None:
    """Create `folder` readable by its owner only (an existing folder is left as it is)."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)


def state_dir() -> Path:
    """Where `em-persona serve` records the running server: $EM_PERSONA_HOME/serve."""
    return home() / "serve"


def write_state(handle: ServerHandle, folder: Path | None = None) -> Path:
    """Write server.json and an `env` file (shell exports) atomically; return the env file."""
    folder = folder or state_dir()
    private_dir(folder)
    state = {
        "pid": handle.pid,
        "base_url": handle.base_url,
        "api_key": handle.api_key,
        "base_model": handle.base_model,
        "adapters": handle.adapters,
        "models": handle.model_names,
        "log": str(handle.log_path),
        "command": handle.command,
        "dtype": handle.dtype,  # None: vLLM's default
        "dtype_reason": handle.dtype_reason,
    }
    lines = [f"export {k}={shlex.quote(v)}" for k, v in handle.env().items()]
    lines.append(f"export EM_PERSONA_MODELS={shlex.quote(' '.join(handle.model_names))}")
    for path, text in (
        (folder / "server.json", json.dumps(state, indent=2) + "\n"),
        (folder / "env", "\n".join(lines) + "\n"),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open_private(tmp) as fh:  # holds the API key: 0600 from its first byte
            fh.write(text.encode())
        tmp.replace(path)
    return folder / "env"


def read_state(folder: Path | None = None) -> dict | None:
    """The recorded server, or None when none is recorded."""
    f = (folder or state_dir()) / "server.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise ServeError(f"{f}:{exc.lineno}: unreadable server state ({exc.msg}); delete it") from exc


def describe_state(state: dict) -> list[str]:
    """Status lines for a recorded server, without its API key (`em-persona serve --status`)."""
    dtype = state.get("dtype") or "auto"
    reason = state.get("dtype_reason") or "not recorded"
    lines = [
        f"pid {state['pid']} ({'running' if pid_alive(int(state['pid'])) else 'not running'})",
        f"url {state['base_url']}",
        f"models {' '.join(state.get('models', []))}",
        f"dtype {dtype} ({reason})",
        f"log {state.get('log', '?')}",
    ]
    if state.get("command"):
        lines.append(f"command {shlex.join(state['command'])}")
    return lines


def recorded_server_alive(folder: Path | None = None) -> dict | None:
    """The recorded server's state when its process still runs, else None."""
    state = read_state(folder)
    return state if state is not None and pid_alive(int(state["pid"])) else None


def stop_recorded(folder: Path | None = None, timeout: float = 30.0) -> dict | None:
    """Stop the server recorded in the state folder and forget it; return its state (None if none)."""
    folder = folder or state_dir()
    state = read_state(folder)
    if state is None:
        return None
    if pid_alive(int(state["pid"])):
        stop_process_group(int(state["pid"]), timeout=timeout)
    for name in ("server.json", "env"):
        (folder / name).unlink(missing_ok=True)
    return state
