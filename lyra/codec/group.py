"""The processes of a folder-encoding job: the only one, or torchrun's, in a gloo group.

The group carries small Python objects only (listings, results: `gather`), whatever the
device, and keeps torchrun's key-value store, through which the other ranks report their
progress counts to rank 0 (`announce`). An error on any rank during setup ends the job on
every rank, rank 0 saying why (`everywhere`, `on_main`, `fail`); no rank waits for one that
has stopped. Joining, leaving and the device are `lyra.core.distributed`'s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, NoReturn, Optional, Sequence, TypeVar

import torch

from lyra.core.distributed import launch, leave_group, process_device
from lyra.core.errors import LyraError, os_error_line

T = TypeVar("T")

# How long a rank waits for the others (for the slowest rank to finish its share, at the end).
GROUP_TIMEOUT = timedelta(days=7)


Say = Callable[[str], None]   # shows the user one line (the command line: on standard error)

class Group:
    """This process's place in the job: the only process, or one of torchrun's (gloo).
    `say` shows rank 0's error lines (`fail`)."""

    def __init__(self, say: Say, rank: int = 0, world_size: int = 1, local_rank: int = 0, store: Any = None,
                 group: Any = None, owned: bool = False) -> None:
        self.say = say
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.store, self.group, self.owned = store, group, owned

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls, say: Say) -> "Group":
        """Join torchrun's processes (`lyra.core.distributed.launch`), if there are several."""
        here = launch()
        if here is None or here.world_size == 1:
            return cls(say)
        import torch.distributed as dist

        if dist.is_initialized():   # a program that set up its own group calls this
            return cls(say, dist.get_rank(), dist.get_world_size(), here.local_rank, None,
                       dist.new_group(backend="gloo"))
        # As `init_process_group` does it, keeping the store for the progress counts.
        store, rank, world_size = next(dist.rendezvous("env://", timeout=GROUP_TIMEOUT))
        store.set_timeout(GROUP_TIMEOUT)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=GROUP_TIMEOUT)
        return cls(say, rank, world_size, here.local_rank, dist.PrefixStore("lyra-preencode", store), None,
                   owned=True)

    def leave(self) -> None:
        if self.owned:
            leave_group()

    def device_for(self, preference: str) -> str | torch.device:
        """--device for this process: as given for a single process; under torchrun
        `lyra.core.distributed.process_device` (``cuda:LOCAL_RANK`` for auto/cuda)."""
        if self.world_size == 1:
            return preference
        return process_device(preference, self.local_rank, key="--device")

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.group)
        return values

    def everywhere(self, step: Callable[[], T], gather: bool = False) -> Any:
        """`step()` on every rank (its result, or with `gather` every rank's); a `LyraError` on
        any rank ends the job on every rank."""
        result, error = _attempt(step)
        if self.world_size == 1:
            self._stop([error])
            return [result] if gather else result
        answers = self.gather((error, result if gather else None))
        self._stop([e for e, _ in answers])
        return [r for _, r in answers] if gather else result

    def on_main(self, step: Callable[[], T]) -> T:
        """`step()` on rank 0, its result on every rank (or its `LyraError` ending the job)."""
        error, result = _attempt(step)[::-1] if self.is_main else (None, None)
        if self.world_size > 1:
            error, result = self.gather((error, result))[0]
        self._stop([error])
        return result

    def announce(self, files: int, seconds: float) -> None:
        """This rank's progress, for rank 0's bar (a key in torchrun's store)."""
        if self.store is not None and not self.is_main:
            self.store.set(f"done/{self.rank}", f"{files} {seconds!r}")

    def progress_of_others(self) -> tuple[int, float]:
        files, seconds = 0, 0.0
        for rank in range(1, self.world_size):
            n, s = self.store.get(f"done/{rank}").decode().split()
            files, seconds = files + int(n), seconds + float(s)
        return files, seconds

    def _stop(self, errors: Sequence[Optional[str]]) -> None:
        found = [(rank, e) for rank, e in enumerate(errors) if e]
        if not found:
            return
        if len(found) == len(errors) and len({e for _, e in found}) == 1:
            self.fail([found[0][1]])                     # every rank found the same
        self.fail([f"rank {rank}: {e}" for rank, e in found])

    def fail(self, lines: Sequence[str]) -> NoReturn:
        """End the job on every rank with these error lines (rank 0 says them). Every rank
        calls this at the same point of the job."""
        if self.world_size == 1:
            for line in lines[:-1]:
                self.say(f"lyra: error: {line}")
            raise LyraError(lines[-1])
        if self.is_main:
            for line in lines:
                self.say(f"lyra: error: {line}")
        # torchrun stops every process as soon as one ends with an error: rank 0 speaks first.
        self.gather(None)
        raise SystemExit(1)


def _attempt(step: Callable[[], T]) -> tuple[Optional[T], Optional[str]]:
    try:
        return step(), None
    except LyraError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, os_error_line(exc)
