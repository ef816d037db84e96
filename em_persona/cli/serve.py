"""`em-persona serve ADAPTERS --base MODEL` / `--status` / `--stop`: one detached vLLM server and its
recorded state. Past one GPU: --tensor-parallel-size, --pipeline-parallel-size, --data-parallel-size
and --distributed-executor-backend ray (a Ray cluster started beforehand) go to vLLM as its own flags."""

from __future__ import annotations

import shlex
import time

import click

from em_persona.serving.command import EXECUTOR_BACKENDS, Parallelism, parse_adapter_spec
from em_persona.serving.errors import ServeError
from em_persona.serving.launcher import check_parallel_settings, start_server
from em_persona.serving.processes import DEFAULT_HOST
from em_persona.serving.state import (
    describe_state,
    read_state,
    recorded_server_alive,
    state_dir,
    stop_recorded,
    write_state,
)


@click.command()
@click.argument("adapters", nargs=-1)
@click.option(
    "--base",
    "base",
    help="Base model: a folder, a proxy (proxy:tiny, proxy:gemma-270m; "
    "the bare name works too), a cached hub model or a hub id.",
)
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to bind.")
@click.option("--api-key", default=None, help="API key clients must send (default: generated).")
@click.option(
    "--served-name", default=None, help="Name of the base model on the server (default: folder name)."
)
@click.option(
    "--max-model-len", type=int, default=None, help="Context length (default on CPU: min(model, 4096))."
)
@click.option(
    "--dtype",
    default=None,
    help="vLLM --dtype (default: vLLM's on GPU; on CPU float32, or bfloat16 where the CPU has "
    "avx512_bf16/amx_bf16).",
)
@click.option(
    "--tensor-parallel-size",
    type=click.IntRange(min=1),
    default=None,
    help="GPUs each model copy is split over (vLLM --tensor-parallel-size; GPU only).",
)
@click.option(
    "--pipeline-parallel-size",
    type=click.IntRange(min=1),
    default=None,
    help="Pipeline stages, e.g. one per node (vLLM --pipeline-parallel-size; GPU only).",
)
@click.option(
    "--data-parallel-size",
    type=click.IntRange(min=1),
    default=None,
    help="Model copies serving in parallel (vLLM --data-parallel-size; GPU only).",
)
@click.option(
    "--distributed-executor-backend",
    type=click.Choice(EXECUTOR_BACKENDS),
    default=None,
    help="ray: spread the server over a Ray cluster started beforehand (`ray start --head` here, "
    "`ray start --address=HEAD_IP:6379` on the other nodes); mp: one node.",
)
@click.option(
    "--vllm-arg",
    "vllm_args",
    multiple=True,
    metavar="ARG",
    help="A raw vLLM argument, repeatable: --vllm-arg --enforce-eager --vllm-arg=--max-num-seqs=8.",
)
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait for health.")
@click.option("--foreground", is_flag=True, help="Stay attached; Ctrl-C stops the server.")
@click.option("--status", "status", is_flag=True, help="Show the recorded server (no key), then exit.")
@click.option("--stop", "stop", is_flag=True, help="Stop the server started by `em-persona serve`.")
def serve(
    adapters: tuple[str, ...],
    base: str | None,
    port: int | None,
    host: str,
    api_key: str | None,
    served_name: str | None,
    max_model_len: int | None,
    dtype: str | None,
    tensor_parallel_size: int | None,
    pipeline_parallel_size: int | None,
    data_parallel_size: int | None,
    distributed_executor_backend: str | None,
    vllm_args: tuple[str, ...],
    timeout: float,
    foreground: bool,
    status: bool,
    stop: bool,
) -> None:
    """Serve base model --base and LoRA ADAPTERS (NAME=DIR or DIR) from one vLLM server.

    Writes VLLM_BASE_URL / VLLM_API_KEY to $EM_PERSONA_HOME/serve/env (`source` it), then
    evaluate with e.g. `inspect eval TASK --model vllm/NAME`. Stop it with `em-persona serve --stop`.
    """
    if status:
        recorded = read_state()
        click.echo("\n".join(describe_state(recorded)) if recorded else "no recorded vLLM server")
        return
    if stop:
        state = stop_recorded()
        click.echo(
            f"stopped vLLM server pid {state['pid']} ({state['base_url']})"
            if state
            else "no recorded vLLM server"
        )
        return
    if not base:
        raise click.UsageError("--base MODEL is required (or --status, --stop)")
    state = recorded_server_alive()
    if state:
        raise ServeError(
            f"a vLLM server is already recorded (pid {state['pid']}, {state['base_url']}); "
            "run `em-persona serve --stop` first"
        )
    specs = dict(parse_adapter_spec(s) for s in adapters)
    parallel = Parallelism(
        tensor_parallel_size, pipeline_parallel_size, data_parallel_size, distributed_executor_backend
    )
    check_parallel_settings(parallel, extra_args=vllm_args)
    click.echo(f"starting vLLM for {base} with {len(specs)} adapter(s); this takes a minute or two on CPU...")
    t0 = time.monotonic()
    handle = start_server(
        base,
        specs,
        port=port,
        host=host,
        api_key=api_key,
        served_name=served_name,
        max_model_len=max_model_len,
        dtype=dtype,
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        data_parallel_size=data_parallel_size,
        distributed_executor_backend=distributed_executor_backend,
        extra_args=vllm_args,
        timeout=timeout,
        log_path=state_dir() / "vllm.log",
    )
    env_file = write_state(handle)
    click.echo(f"vLLM ready in {time.monotonic() - t0:.0f}s, pid {handle.pid}, log {handle.log_path}")
    for k, v in handle.env().items():
        click.echo(f"export {k}={shlex.quote(v)}")
    click.echo("models: " + " ".join(handle.model_names))
    click.echo(f"environment written to {env_file} (source it); stop with `em-persona serve --stop`")
    if foreground:
        try:
            while handle.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            stop_recorded()
