"""Serve a base model and all its LoRA adapters from one vLLM server.

Python API: ``start_server(base, {"name": adapter_dir}, ...) -> ServerHandle`` (a context
manager). CLI: ``em-persona serve ADAPTERS... --base MODEL`` starts a detached server, writes
its environment (``VLLM_BASE_URL``, ``VLLM_API_KEY``, model names) to ``$EM_PERSONA_HOME/serve/``
(serving.state) and returns; ``em-persona serve --stop`` stops it. Inspect then reaches the
adapters as ``vllm/<adapter-name>`` and the base model as ``vllm/<served-name>``.

The checks and the command line are in serving.command, ports, process groups and the health
wait in serving.processes, the private log and state files in serving.state.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from em_persona.core.paths import home
from em_persona.serving.command import (
    build_command,
    check_adapters,
    cpu_max_model_len,
    on_cpu,
    resolve_base,
    server_environment,
)
from em_persona.serving.errors import ServeError
from em_persona.serving.processes import (
    DEFAULT_HOST,
    free_port,
    pid_alive,
    port_in_use,
    stop_process_group,
    wait_ready,
)
from em_persona.serving.state import open_private, private_dir


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
        """True while the server process runs."""
        if self._proc is not None:
            return self._proc.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and every process it started."""
        stop_process_group(self.pid, timeout=timeout, proc=self._proc)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    checked = check_adapters(model, str(base), served_name, adapters or {})
    if port is None:
        port = free_port(host)
    elif port_in_use(host, port):
        raise ServeError(f"port {port} on {host} is already in use; stop that server or pick another --port")
    api_key = api_key or f"emp-{secrets.token_urlsafe(24)}"
    cpu = on_cpu()
    if cpu and max_model_len is None:
        max_model_len = cpu_max_model_len(model)
    cmd = list(command) if command is not None else build_command(
        model, served_name, checked, host=host, port=port,
        max_model_len=max_model_len, dtype=dtype, extra_args=extra_args,
    )
    proc_env = server_environment(os.environ, api_key=api_key, cpu=cpu, with_adapters=bool(checked), env=env)
    if log_path is None:
        log_path = home() / "serve" / f"vllm-{port}.log"
    log_path = Path(log_path)
    private_dir(log_path.parent)
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
        wait_ready(proc, handle.base_url, api_key, [served_name, *handle.adapters], log_path, timeout)
    except BaseException:
        handle.stop(timeout=10)
        raise
    return handle
