"""Serve a base model and all its LoRA adapters from one vLLM server.

Python API: ``start_server(base, {"name": adapter_dir}, ...) -> ServerHandle`` (a context
manager). CLI: ``em-persona serve ADAPTERS... --base MODEL`` starts a detached server, writes
its environment (``VLLM_BASE_URL``, ``VLLM_API_KEY``, model names) to ``$EM_PERSONA_HOME/serve/``
(serving.state) and returns; ``em-persona serve --stop`` stops it. Inspect then reaches the
adapters as ``vllm/<adapter-name>`` and the base model as ``vllm/<served-name>``.

Past one GPU: `tensor_parallel_size`, `pipeline_parallel_size` and `data_parallel_size` become
vLLM's own flags, and `distributed_executor_backend="ray"` spreads the server over the nodes of a
Ray cluster the user started beforehand (`ray start --head` on this node, `ray start
--address=HEAD:6379` on each other one). `preview_command` gives the exact command line a run will
use, without starting anything (the plan prints it).

The checks and the command line are in serving.command, ports, process groups and the health
wait in serving.processes, the private log and state files in serving.state.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from em_persona.core.paths import home, proxies_dir
from em_persona.core.proxies import ProxyError, proxy_name
from em_persona.serving.command import (
    Adapter,
    DtypeChoice,
    Parallelism,
    build_command,
    check_adapters,
    choose_dtype,
    cpu_max_model_len,
    executor_backend_problem,
    on_cpu,
    parallel_problem,
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
    dtype: str | None = None  # the --dtype the server got (None: vLLM's default)
    dtype_reason: str = ""  # why (serving.command.choose_dtype)
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


def ray_installed() -> bool:
    """Whether Ray, which vLLM's `ray` executor backend needs, is importable here."""
    return importlib.util.find_spec("ray") is not None


PORT_CHOSEN_AT_START = "<free port>"  # what the preview shows when no port is set


@dataclass(frozen=True)
class ServerPreview:
    """The command line a server gets (never the API key: that travels in its environment) and its dtype."""

    command: list[str]
    dtype: DtypeChoice


def _plan(
    model: str,
    served_name: str,
    adapters: Sequence[Adapter],
    *,
    cpu: bool,
    host: str,
    port: int | str,
    max_model_len: int | None,
    dtype: str | None,
    parallel: Parallelism,
    extra_args: Sequence[str],
) -> ServerPreview:
    """The command line and dtype: what start_server runs and preview_command shows (both have run
    check_parallel_settings first)."""
    if cpu and max_model_len is None:
        max_model_len = cpu_max_model_len(model)
    choice = choose_dtype(dtype, cpu=cpu, extra_args=extra_args)
    cmd = build_command(
        model,
        served_name,
        adapters,
        host=host,
        port=port,
        max_model_len=max_model_len,
        dtype=choice.dtype,
        parallel=parallel,
        extra_args=extra_args,
    )
    return ServerPreview(cmd, choice)


def check_parallel_settings(
    parallel: Parallelism, *, cpu: bool | None = None, extra_args: Sequence[str] = ()
) -> None:
    """Raise ServeError listing every parallel setting this machine cannot serve, Ray asked for but
    not installed included (cpu: None asks torch); start_server and preview_command run it first,
    the CLI runs it before saying it starts."""
    cpu = on_cpu() if cpu is None else cpu
    sizes = parallel.sizes().items()
    problems = [parallel_problem(o, n, cpu=cpu, extra_args=extra_args) for o, n in sizes]
    backend = parallel.distributed_executor_backend
    problems.append(executor_backend_problem(backend, extra_args))
    if backend == "ray" and not ray_installed():
        problems.append(
            "distributed_executor_backend 'ray' needs Ray: pip install ray, then start the cluster "
            "before serving (`ray start --head` on this node, `ray start --address=HEAD_IP:6379` on each "
            "other node)"
        )
    found = [p for p in problems if p]
    if found:
        raise ServeError("\n".join(found))


def _planned_base(base: str) -> tuple[str, str]:
    """(model argument, default served name) as start_server will resolve `base` once it exists:
    a proxy's folder (built or not), a local folder, else the hub id itself (the Hub is not asked)."""
    try:
        name = proxy_name(base)
    except ProxyError as exc:
        raise ServeError(str(exc)) from None
    path = (proxies_dir() / name) if name is not None else Path(base).expanduser()
    if name is not None or path.is_dir():
        return str(path.resolve()), path.resolve().name
    return base, base


def preview_command(
    base: str | Path,
    adapters: Mapping[str, tuple[Path | str, int]] | None = None,
    *,
    served_name: str | None = None,
    port: int | None = None,
    host: str = DEFAULT_HOST,
    max_model_len: int | None = None,
    dtype: str | None = None,
    tensor_parallel_size: int | None = None,
    pipeline_parallel_size: int | None = None,
    data_parallel_size: int | None = None,
    distributed_executor_backend: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float | None = None,
    log_path: Path | str | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerPreview:
    """The command line start_server will run for `base` and `adapters`, without starting anything.

    `adapters`: served name -> (folder, LoRA rank); the folders need not exist yet (a plan runs
    before fine-tuning). The keywords are start_server's, so an experiment's `serve:` settings pass
    whole (`timeout`, `log_path` and `env` do not shape the command). Without a `port` the server
    takes a free one at start, shown as PORT_CHOSEN_AT_START. Raises ServeError as start_server
    does for parallel settings this machine cannot serve.
    """
    cpu = on_cpu()
    parallel = Parallelism(
        tensor_parallel_size, pipeline_parallel_size, data_parallel_size, distributed_executor_backend
    )
    check_parallel_settings(parallel, cpu=cpu, extra_args=extra_args)
    model, default_name = _planned_base(str(base))
    planned = [
        Adapter(name=name, path=Path(folder).expanduser().resolve(), rank=rank)
        for name, (folder, rank) in (adapters or {}).items()
    ]
    return _plan(
        model,
        served_name or default_name,
        planned,
        cpu=cpu,
        host=host,
        port=PORT_CHOSEN_AT_START if port is None else port,
        max_model_len=max_model_len,
        dtype=dtype,
        parallel=parallel,
        extra_args=extra_args,
    )


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
    tensor_parallel_size: int | None = None,
    pipeline_parallel_size: int | None = None,
    data_parallel_size: int | None = None,
    distributed_executor_backend: str | None = None,
    timeout: float = 900.0,
    log_path: Path | str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> ServerHandle:
    """Start one vLLM server for `base` and `adapters` (served name -> folder); wait until it answers.

    Raises ServeError, with the tail of the server log, when the base model names nothing
    servable, an adapter is not servable or was trained on another base model, a parallel size
    asks for GPUs on a CPU server, Ray is asked for but not installed, the port is taken, the
    process dies while starting, or it is not healthy within `timeout` seconds. Without `dtype`
    a CPU server runs in float32 unless the CPU has native bfloat16 (serving.command.choose_dtype);
    the choice is printed, written at the top of the log and kept in the handle. The key reaches
    the server through its environment (VLLM_API_KEY), and the log is private (0600). `command`
    replaces the vLLM command line (tests use it to simulate a failing server).
    """
    cpu = on_cpu()
    parallel = Parallelism(
        tensor_parallel_size, pipeline_parallel_size, data_parallel_size, distributed_executor_backend
    )
    check_parallel_settings(parallel, cpu=cpu, extra_args=extra_args)
    model, default_name = resolve_base(str(base))
    served_name = served_name or default_name
    checked = check_adapters(model, str(base), served_name, adapters or {})
    if port is None:
        port = free_port(host)
    elif port_in_use(host, port):
        raise ServeError(f"port {port} on {host} is already in use; stop that server or pick another --port")
    api_key = api_key or f"emp-{secrets.token_urlsafe(24)}"
    planned = _plan(
        model,
        served_name,
        checked,
        cpu=cpu,
        host=host,
        port=port,
        max_model_len=max_model_len,
        dtype=dtype,
        parallel=parallel,
        extra_args=extra_args,
    )
    cmd = list(command) if command is not None else planned.command
    print(f"[serve] {planned.dtype.describe()}", file=sys.stderr)
    proc_env = server_environment(os.environ, api_key=api_key, cpu=cpu, with_adapters=bool(checked), env=env)
    if log_path is None:
        log_path = home() / "serve" / f"vllm-{port}.log"
    log_path = Path(log_path)
    private_dir(log_path.parent)
    with open_private(log_path) as log:
        log.write(f"# {planned.dtype.describe()}\n$ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=proc_env,
            start_new_session=True,
        )
    handle = ServerHandle(
        base_url=f"http://{host}:{port}/v1",
        api_key=api_key,
        base_model=served_name,
        adapters=[a.name for a in checked],
        pid=proc.pid,
        log_path=log_path,
        command=cmd,
        dtype=planned.dtype.dtype,
        dtype_reason=planned.dtype.reason,
        _proc=proc,
    )
    try:
        wait_ready(proc, handle.base_url, api_key, [served_name, *handle.adapters], log_path, timeout)
    except BaseException:
        handle.stop(timeout=10)
        raise
    return handle
