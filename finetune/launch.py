"""Fine-tuning past one GPU with Hugging Face Accelerate (`em-persona finetune CONFIG --launcher accelerate`).

The CLI checks an accelerate config (`check_accelerate_config`: a shipped one by name, `fsdp` or
`zero3` from finetune/configs/accelerate/, or a file) and builds (`accelerate_command`)::

    accelerate launch --config_file FILE --num_processes N -m em_persona.finetune.launch CONFIG [-o ...]

Every launched process runs this module (`main`): it joins the processes (accelerate's
PartialState, before any model loads), loads CONFIG with the same overrides and calls
em_persona.finetune.train.finetune, where rank 0 alone locks, keeps the work folder and publishes.
Under the launcher `backend: auto` means peft (Unsloth trains in one process on one GPU), and the
recipe's global batch (per-device batch x gradient accumulation) is kept by dividing the gradient
accumulation among the processes.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from em_persona.core.errors import EmPersonaError
from em_persona.core.yaml_lines import yaml_error_where, yaml_problem
from em_persona.finetune.config import FinetuneConfig, load_config
from em_persona.finetune.ranks import process_ranks, sharding_requested

ENTRY_MODULE = "em_persona.finetune.launch"
ACCELERATE_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "accelerate"
NAMED_CONFIGS = {"fsdp": "fsdp.yaml", "zero3": "zero3.yaml"}
# accelerate's distributed types that launch one training process per GPU.
DISTRIBUTED_TYPES = ("FSDP", "DEEPSPEED", "MULTI_GPU")


class LaunchError(EmPersonaError, ValueError):
    """A multi-process fine-tuning launch cannot go ahead; the message names the file and what to change."""


@dataclass(frozen=True)
class AccelerateConfig:
    """A checked accelerate config file and the processes a launch with it runs."""

    path: Path
    distributed_type: str
    num_processes: int  # all machines together, as accelerate counts them
    num_machines: int

    @property
    def processes_per_machine(self) -> int:
        return self.num_processes // self.num_machines


# --------------------------------------------------------------------------- the accelerate config


def resolve_accelerate_config(spec: str | Path) -> Path:
    """A shipped config by name (`fsdp`, `zero3`) or a file; a missing file is a LaunchError naming it."""
    text = str(spec)
    if text in NAMED_CONFIGS:
        path = ACCELERATE_CONFIG_DIR / NAMED_CONFIGS[text]
    else:
        path = Path(text).expanduser()
    if not path.is_file():
        raise LaunchError(
            f"accelerate config {path} not found; give {' or '.join(NAMED_CONFIGS)} "
            f"(shipped in {ACCELERATE_CONFIG_DIR}) or the path of an accelerate config file"
        )
    return path.resolve()


def _launch_options() -> set[str]:
    """The option names `accelerate launch` knows (its parser's destinations)."""
    from accelerate.commands.launch import launch_command_parser

    return set(vars(launch_command_parser().parse_args([ENTRY_MODULE])))


def check_accelerate_config(spec: str | Path, num_processes: int | None = None) -> AccelerateConfig:
    """Read and check an accelerate config with accelerate's own loader, and settle the process count.

    Refuses (LaunchError naming the file): a missing or unreadable file, keys accelerate does not
    know, a distributed type that does not run one process per GPU, a DeepSpeed JSON that is not
    there, no process count (neither `num_processes` in the file nor the `num_processes` argument,
    which wins), and a count that does not split evenly over `num_machines`.
    """
    path = resolve_accelerate_config(spec)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LaunchError(f"{yaml_error_where(path, exc)}: invalid YAML: {yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise LaunchError(f"{path}: an accelerate config is a YAML mapping")
    if importlib.util.find_spec("accelerate") is None:
        raise LaunchError("accelerate is not installed: pip install 'em-persona[finetune]'")
    from accelerate.commands.config.config_args import ClusterConfig

    try:
        cluster = ClusterConfig.from_yaml_file(str(path))
    except (ValueError, TypeError, KeyError) as exc:
        raise LaunchError(f"{path}: accelerate cannot read it: {' '.join(str(exc).split())}") from None
    kind = str(getattr(cluster.distributed_type, "value", cluster.distributed_type))
    if kind not in DISTRIBUTED_TYPES:
        raise LaunchError(
            f"{path}: distributed_type {kind} does not launch one training process per GPU; "
            f"use one of {', '.join(DISTRIBUTED_TYPES)} (e.g. --accelerate-config fsdp)"
        )
    known = _launch_options()
    sections = (("fsdp_config", "fsdp_"), ("deepspeed_config", ""))
    for section, prefix in sections:
        for key in raw.get(section) or {}:
            option = key if key.startswith(prefix) else prefix + key
            if option not in known:
                raise LaunchError(f"{path}: {section}.{key} is not an option accelerate launch knows")
    ds_file = (raw.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if ds_file and not Path(ds_file).expanduser().is_file():
        raise LaunchError(
            f"{path}: deepspeed_config.deepspeed_config_file {ds_file} not found (accelerate reads it "
            "relative to the folder it is launched from; give an absolute path)"
        )
    machines = int(cluster.num_machines or 1)
    count = num_processes if num_processes is not None else int(cluster.num_processes)
    if count < 1:
        raise LaunchError(
            f"{path}: no process count: set num_processes in the file or pass --num-processes N "
            "(the GPUs to train on, all machines together)"
        )
    if count % machines:
        raise LaunchError(
            f"{path}: {count} processes do not split evenly over num_machines={machines} "
            "(num_processes counts the processes of all machines together)"
        )
    return AccelerateConfig(path, kind, count, machines)


# --------------------------------------------------------------------------- the fine-tuning config under the launcher


def launch_backend(config: FinetuneConfig, origin: str | Path) -> FinetuneConfig:
    """The config as the launched processes train it: `auto` means peft; Unsloth is refused."""
    if config.backend == "unsloth":
        raise LaunchError(
            f"{origin}: backend unsloth trains in one process on one GPU and cannot run under "
            "`accelerate launch`; set backend: peft (or -o backend=peft), or drop --launcher accelerate"
        )
    return config.model_copy(update={"backend": "peft"}) if config.backend == "auto" else config


def split_accumulation(config: FinetuneConfig, processes: int, origin: str | Path) -> int:
    """The gradient accumulation per process that keeps the recipe's global batch over `processes`."""
    steps = config.train.gradient_accumulation_steps
    if steps % processes:
        raise LaunchError(
            f"{origin}: the global batch {config.train.per_device_train_batch_size} x {steps} (per-device "
            f"batch x gradient accumulation) cannot be split over {processes} processes; use a process "
            f"count that divides {steps}, or set train.gradient_accumulation_steps yourself (-o ...)"
        )
    return steps // processes


def accelerate_executable() -> str:
    """The `accelerate` script of this Python environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("accelerate")
    found = str(beside) if beside.exists() else shutil.which("accelerate")
    if not found:
        raise LaunchError("the `accelerate` command is not installed: pip install 'em-persona[finetune]'")
    return found


def accelerate_command(
    config_path: str | Path,
    config: FinetuneConfig,
    accelerate: AccelerateConfig,
    *,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    max_rows: int | None = None,
    force: bool = False,
) -> list[str]:
    """`accelerate launch ... -m em_persona.finetune.launch CONFIG ...` for `config` (loaded from
    `config_path` with `overrides`): the recipe's global batch kept over the processes."""
    launch_backend(config, config_path)
    steps = split_accumulation(config, accelerate.num_processes, config_path)
    args = [str(Path(config_path).resolve())]
    for text in overrides:
        args += ["-o", text]
    if steps != config.train.gradient_accumulation_steps:
        args += ["-o", f"train.gradient_accumulation_steps={steps}"]
    if out is not None:
        args += ["--out", str(Path(out).expanduser().resolve())]
    if max_rows is not None:
        args += ["--max-rows", str(max_rows)]
    if force:
        args.append("--force")
    return [
        accelerate_executable(),
        "launch",
        "--config_file",
        str(accelerate.path),
        "--num_processes",
        str(accelerate.num_processes),
        "-m",
        ENTRY_MODULE,
        *args,
    ]


def check_launch_host(accelerate: AccelerateConfig, cuda_devices: int | None = None) -> None:
    """Refuse a launch this machine cannot run: too few CUDA GPUs for its share of the processes,
    or DeepSpeed asked for but not installed."""
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    per_machine = accelerate.processes_per_machine
    if cuda_devices < per_machine:
        have = f"{cuda_devices} CUDA GPU(s)" if cuda_devices else "no CUDA GPU"
        raise LaunchError(
            f"{accelerate.path}: {per_machine} process(es) on this machine need as many CUDA GPUs, but it "
            f"has {have}; on CPU run `em-persona finetune CONFIG` without --launcher"
        )
    if accelerate.distributed_type == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise LaunchError(f"{accelerate.path}: DeepSpeed is not installed: pip install deepspeed")


# --------------------------------------------------------------------------- what each launched process runs


def join_processes(env: dict[str, str] | None = None) -> Any:
    """accelerate's PartialState for this launched process: it sets up the process group (and the
    process's GPU) before anything loads, which FSDP's low-memory loading needs. On CPU (accelerate's
    ACCELERATE_USE_CPU, or no CUDA) the processes join over gloo. Refuses a launch whose processes
    accelerate does not join as launched (WORLD_SIZE), and FSDP or DeepSpeed on CPU processes
    (accelerate shards over GPUs only; its FSDP plugin stops with a RuntimeError there)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType, str_to_bool

    env = dict(os.environ) if env is None else env
    cpu = bool(str_to_bool(env.get("ACCELERATE_USE_CPU", "false"))) or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    launched = int(env.get("WORLD_SIZE", "1"))
    if state.num_processes != launched:
        raise LaunchError(
            f"{launched} processes were launched (WORLD_SIZE) but accelerate joined {state.num_processes} "
            f"({state.distributed_type}); launch with `em-persona finetune CONFIG --launcher accelerate`"
        )
    sharded = sharding_requested(env)
    if sharded and state.distributed_type == DistributedType.MULTI_CPU:
        raise LaunchError(
            f"{sharded[0]} needs CUDA GPUs (accelerate shards a model over GPUs only); these processes "
            "run on CPU"
        )
    return state


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {ENTRY_MODULE}",
        description="One process of an `accelerate launch` fine-tuning run (em-persona finetune --launcher accelerate).",
    )
    parser.add_argument("config", help="fine-tuning config YAML")
    parser.add_argument(
        "-o", "--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE"
    )
    parser.add_argument("--out", default=None, help="adapter folder (default: $EM_PERSONA_HOME/adapters)")
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--force", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one launched process: load the config and fine-tune; the main process reports the adapters."""
    args = _parser().parse_args(argv)
    main_process = True  # until the ranks are read, a failure is reported by every process
    try:
        main_process = process_ranks().main
        state = join_processes()
        config = launch_backend(load_config(args.config, list(args.overrides)), args.config)
        config = config.with_max_rows(args.max_rows)
        from em_persona.finetune.train import finetune

        results = finetune(config, args.out, force=args.force)
    except EmPersonaError as exc:
        if main_process:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    state.destroy_process_group()  # every rank got here past rank 0's last broadcast
    if main_process:
        for r in results:
            state = "trained" if r.trained else "already finished"
            print(f"{r.name}\t{r.path}\t{state}\tdomain={r.manifest['domain']}")
    return 0


def exit_process(code: int) -> NoReturn:
    """End a launched process with `code` once its output is flushed, skipping interpreter shutdown.

    torch's gloo worker threads outlive destroy_process_group (the DDP-wrapped model still holds the
    group) and free their last collective's tensors when they get to it; freeing a tensor takes the
    GIL, and a thread that takes it while the interpreter shuts down aborts the process ("terminate
    called without an active exception", SIGABRT), so a finished, published run failed now and then.
    Everything this process had to do is done and written by the time it gets here.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    exit_process(main())
