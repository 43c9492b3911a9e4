"""Process-group setup: the same training script runs alone or under `torchrun`.

`torchrun --nproc_per_node=N -m lyra train cfg.toml` sets RANK, LOCAL_RANK and WORLD_SIZE in
each process's environment; `setup` reads them, picks this process's device (``cuda:LOCAL_RANK``
on GPUs) and joins the process group (NCCL on GPUs, gloo on CPUs). Without them it is a plain
single process. Only the process with rank 0 writes checkpoints, logs and audio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from lyra.errors import LyraError


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


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto`: this process's GPU if there is one, else the CPU."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LyraError(f"runtime.device: '{preference}' asked for, but CUDA is not available here")
    if preference.startswith("cuda:"):
        return torch.device(preference)
    return torch.device("cuda", local_rank)


def setup(preference: str) -> Distributed:
    """Join the torchrun process group if launched by torchrun; otherwise a single process."""
    if not launched_by_torchrun():
        return Distributed(0, 0, 1, pick_device(preference), False)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, local_rank, world_size, device, True)


def teardown(ctx: Distributed) -> None:
    import torch.distributed as dist

    if ctx.initialised and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(ctx: Distributed, values: torch.Tensor) -> torch.Tensor:
    """Sum a small tensor over processes (identity for a single process)."""
    if ctx.world_size == 1:
        return values
    import torch.distributed as dist

    values = values.to(ctx.device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()
