"""Which process does what when `accelerate launch` runs several training processes.

Each process learns its place from RANK and WORLD_SIZE (`process_ranks`). Work that must happen
once (locking, cleaning, the work folder's records, publishing) runs on rank 0 (`on_main`), which
broadcasts its result, or its error, to the others; work that fills a shared cache runs on rank 0
first, then on the rest (`main_first`). One process runs everything in place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from em_persona.core.errors import EmPersonaError

T = TypeVar("T")


class ProcessError(EmPersonaError, RuntimeError):
    """The training processes are not set up as launched, or rank 0 failed (its message is carried)."""


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (`accelerate launch` sets RANK, WORLD_SIZE)."""

    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that locks, cleans, keeps the work folder's records and publishes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_ranks(env: Mapping[str, str] | None = None) -> Processes:
    """RANK and WORLD_SIZE from `env` (default os.environ); absent means one process."""
    env = os.environ if env is None else env
    values = {}
    for key, default in (("RANK", "0"), ("WORLD_SIZE", "1")):
        text = env.get(key, default)
        try:
            values[key] = int(text)
        except ValueError:
            raise ProcessError(f"environment variable {key}={text!r} is not an integer") from None
    rank, world = values["RANK"], values["WORLD_SIZE"]
    if world < 1 or not 0 <= rank < world:
        raise ProcessError(
            f"RANK={rank} and WORLD_SIZE={world} do not name a process (0 <= RANK < WORLD_SIZE)"
        )
    return Processes(rank, world)


SHARDING_FLAGS = (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))


def sharding_requested(env: Mapping[str, str] | None = None) -> list[str]:
    """The sharding `accelerate launch` asked for (`FSDP`, `DeepSpeed`): its ACCELERATE_USE_FSDP /
    _DEEPSPEED flags in `env` (default os.environ), read as accelerate reads them (str_to_bool)."""
    from accelerate.utils import str_to_bool

    env = os.environ if env is None else env
    names = []
    for name, flag in SHARDING_FLAGS:
        text = env.get(flag, "false")
        try:
            if str_to_bool(text):
                names.append(name)
        except ValueError:
            raise ProcessError(f"environment variable {flag}={text!r} is not true or false") from None
    return names


def accelerate_places_model(procs: Processes, env: Mapping[str, str] | None = None) -> bool:
    """Whether accelerate puts the model on devices (so loading must not): several processes, or
    one launched with FSDP or DeepSpeed (`sharding_requested`)."""
    return procs.distributed or bool(sharding_requested(env))


def require_process_group(procs: Processes) -> None:
    """Refuse several processes without the torch.distributed group that joins them."""
    if not procs.distributed:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ProcessError(
            f"WORLD_SIZE={procs.world_size} but no torch.distributed process group is set up: run "
            "several training processes with `em-persona finetune CONFIG --launcher accelerate`"
        )
    if (dist.get_rank(), dist.get_world_size()) != (procs.rank, procs.world_size):
        raise ProcessError(
            f"RANK={procs.rank} WORLD_SIZE={procs.world_size}, but the process group has rank "
            f"{dist.get_rank()} of {dist.get_world_size()}"
        )


def share(procs: Processes, value: Any) -> Any:
    """Rank 0's `value` on every rank (a broadcast: the others wait here until rank 0 sends)."""
    if not procs.distributed:
        return value
    import torch.distributed as dist

    box = [value if procs.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(procs: Processes, work: Callable[..., T], *args: Any) -> T:
    """Run `work(*args)` on rank 0 only and return its result on every rank.

    The broadcast is the barrier: the other ranks go on once rank 0 is done. An error on rank 0
    is raised there as it is and on every other rank as a ProcessError carrying its message, so no
    process is left waiting for a collective that will not come.
    """
    if not procs.distributed:
        return work(*args)
    failure: BaseException | None = None
    outcome: tuple[str, Any] = ("ok", None)
    if procs.main:
        try:
            outcome = ("ok", work(*args))
        except BaseException as exc:
            failure = exc
            outcome = ("error", f"{type(exc).__name__}: {exc}")
    kind, value = share(procs, outcome)
    if failure is not None:
        raise failure
    if kind == "error":
        raise ProcessError(f"rank 0 failed: {value}")
    return value


def main_first(procs: Processes, work: Callable[..., T], *args: Any) -> T:
    """Run `work(*args)` on rank 0, then (once it succeeded) on the other ranks: for steps that
    fill a shared cache (data files, a proxy model) and whose result every rank needs."""
    if not procs.distributed:
        return work(*args)
    box: list[T] = []
    # Only rank 0's success or error is broadcast: its result stays with it (the others make their own).
    on_main(procs, lambda: box.append(work(*args)))
    return box[0] if procs.main else work(*args)
