"""torchrun's process groups: the same program runs alone or as one of N processes.

`torchrun --nproc_per_node=N ...` sets RANK, LOCAL_RANK and WORLD_SIZE in each process's
environment. `launch()` reads them (None without torchrun), `process_device` is this process's
device (``cuda:LOCAL_RANK`` for ``auto``/``cuda`` on GPUs), `leave_group` ends a group joined.
Training joins with `setup` (NCCL on GPUs, gloo on CPUs) and sums with `all_sum`; folder
encoding joins a gloo group of its own (`lyra.codec.group`). Only rank 0 writes and reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch

from lyra.core.devices import resolve_device
from lyra.core.errors import LyraError


@dataclass(frozen=True)
class Launch:
    """What torchrun told this process."""

    rank: int
    local_rank: int
    world_size: int


@dataclass(frozen=True)
class Distributed:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    initialised: bool  # whether this process joined a process group (and must leave it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch() -> Optional[Launch]:
    """RANK, LOCAL_RANK (0 when unset) and WORLD_SIZE, when launched by torchrun; else None."""
    if not launched_by_torchrun():
        return None
    return Launch(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))


def process_device(preference: Union[str, torch.device], local_rank: int, *, key: str) -> torch.device:
    """The device of torchrun's process `local_rank` on this machine (`resolve_device`:
    ``auto``/``cuda`` is ``cuda:LOCAL_RANK``), made the current CUDA device. A process
    without a GPU of its own (more processes than visible GPUs) is a one-line error."""
    device = resolve_device(preference, local_rank=local_rank, key=key)
    if device.type != "cuda":
        return device
    if str(preference) in ("auto", "cuda"):
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise LyraError(f"{key} {preference}: process {local_rank} on this machine has no GPU "
                            f"(only {count} are visible); start at most {count} processes per machine")
    torch.cuda.set_device(device)
    return device


def leave_group() -> None:
    """Leave the default process group, if this process is in one."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def setup(preference: str) -> Distributed:
    """Join the torchrun process group if launched by torchrun; otherwise a single process."""
    here = launch()
    if here is None:
        return Distributed(0, 0, 1, resolve_device(preference, key="runtime.device"), False)
    device = process_device(preference, here.local_rank, key="runtime.device")
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(here.rank, here.local_rank, here.world_size, device, True)


def teardown(ctx: Distributed) -> None:
    if ctx.initialised:
        leave_group()


def all_sum(ctx: Distributed, values: torch.Tensor) -> torch.Tensor:
    """Sum a small tensor over processes (identity for a single process)."""
    if ctx.world_size == 1:
        return values
    import torch.distributed as dist

    values = values.to(ctx.device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()
