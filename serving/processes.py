"""The server's process: free ports, its process group, and waiting until it is healthy."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Collection
from pathlib import Path

from em_persona.serving.errors import ServeError

DEFAULT_HOST = "127.0.0.1"
LOG_TAIL_LINES = 40


# --------------------------------------------------------------------------- ports


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (host, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port on `host` nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- process groups


def pid_alive(pid: int) -> bool:
    """True when process `pid` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts for killpg; check /proc when we can.
    proc_dir = Path("/proc")
    if proc_dir.is_dir():
        for stat in proc_dir.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    return True


def stop_process_group(pid: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group led by `pid`; SIGKILL whatever is left after `timeout` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our own child so it does not linger as a zombie
            if not _group_alive(pid):
                break
            time.sleep(0.2)
        if not _group_alive(pid):
            break
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


# --------------------------------------------------------------------------- health


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' if absent)."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _http_get(url: str, api_key: str | None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(
    proc: subprocess.Popen,
    base_url: str,
    api_key: str,
    models: Collection[str],
    log_path: Path,
    timeout: float,
) -> None:
    """Return once the server at `base_url` (ending in /v1) is healthy and lists every one of
    `models`; a ServeError with the log's tail when `proc` exits first or `timeout` seconds pass."""
    root = base_url.removesuffix("/v1")
    wanted = set(models)
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise ServeError(
                f"vLLM server exited with code {code} while starting (log: {log_path}). "
                f"Last lines:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise ServeError(
                f"vLLM server did not become healthy within {timeout:.0f}s (log: {log_path}). "
                f"Last lines:\n{log_tail(log_path)}"
            )
        try:
            status, _ = _http_get(f"{root}/health", None, timeout=2)
            if status == 200:
                status, body = _http_get(f"{root}/v1/models", api_key, timeout=5)
                if status == 200:
                    served = {m["id"] for m in json.loads(body).get("data", [])}
                    if wanted <= served:
                        return
        except (OSError, ValueError):
            pass
        time.sleep(1.0)
