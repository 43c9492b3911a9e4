"""Peak memory of one call of a workload, measured, not estimated.

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``: the peak of
  the caching allocator's live tensors during the call, model, optimiser state and inputs
  included (``peak_bytes``); ``growth_bytes`` is that peak minus what was allocated before.
- CPU: the growth of the process's resident set during the call. Linux keeps the peak
  resident size (``VmHWM`` in ``/proc/self/status``), and writing ``5`` to
  ``/proc/self/clear_refs`` resets it to the current size. Before the call, freed heap
  memory is handed back to the kernel (``malloc_trim(0)``), so memory that glibc kept from
  earlier calls cannot hide the call's own needs; then the peak is reset, the call runs,
  and ``peak_bytes = growth_bytes = VmHWM - VmRSS(before)``. What was resident before the
  call (model, optimiser state, inputs) is not counted. Page granularity: 4 KiB.

  The glibc allocator would make that figure depend on history: memory freed earlier sits
  in its arenas as free chunks, a later allocation reuses one (even when it is large), and
  when freed again its pages stay resident, so the peak counted pages touched rather than
  bytes live (2.5x too high after a few timed rounds, in one case). Hence the measured call
  runs on a thread of its own (`PeakMemoryMeter`), whose arena has only ever served
  measured calls, and with every allocation of 128 KiB or more given its own mapping
  (``mallopt(M_MMAP_THRESHOLD)``), so a freed tensor leaves the resident set at once. The
  figure is then the workload's own peak, repeatable to within a few pages. Outside the
  measured call, in the timed rounds too, the thresholds are pinned to the values glibc's
  dynamic policy settles at after its first large free (mmap 32 MiB, trim 64 MiB,
  `use_steady_allocator`), so timings do not depend on which benchmark ran before.

Where neither works (not Linux, /proc not writable) the measurement is ``None`` and says why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MEASURE_MMAP_THRESHOLD = 128 * 1024          # glibc's initial threshold
STEADY_MMAP_THRESHOLD = 32 * 1024 * 1024     # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit


@dataclass(frozen=True)
class PeakMemory:
    peak_bytes: int | None    # the figure the report shows
    growth_bytes: int | None  # peak minus what was in use before the call
    method: str               # "cuda_max_allocated", "rss_growth" or "unavailable: <why>"


class PeakMemoryMeter:
    """Measures the peak memory of one call on `device` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.unavailable = "" if device.type == "cuda" else rss_unavailable()
        self._thread: ThreadPoolExecutor | None = None
        if device.type != "cuda" and not self.unavailable:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="lyra-memory")
            self._thread.submit(_start_thread, torch.get_num_threads()).result()

    def measure(self, fn: Callable[[], object]) -> PeakMemory:
        """Run `fn` once (exceptions propagate) and return its peak memory."""
        if self.device.type == "cuda":
            return _cuda_peak(fn, self.device)
        if self._thread is None:
            fn()  # the workload still runs: a broken workload must not pass unnoticed
            return PeakMemory(None, None, f"unavailable: {self.unavailable}")
        return self._thread.submit(_rss_peak, fn).result()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown()


def _start_thread(threads: int) -> None:
    """Give the thread the session's intra-op thread count and start those workers now
    (their stacks are not the workload's memory)."""
    torch.set_num_threads(threads)
    torch.ones(1 << 20).sin().sum()


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> PeakMemory:
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return PeakMemory(peak, peak - before, "cuda_max_allocated")


def _rss_peak(fn: Callable[[], object]) -> PeakMemory:
    gc.collect()
    _mallopt(M_MMAP_THRESHOLD, MEASURE_MMAP_THRESHOLD)
    try:
        _malloc_trim()
        _reset_peak_rss()
        before = _status_kib("VmRSS")
        fn()
        growth = max(0, _status_kib("VmHWM") - before) * 1024
    finally:
        use_steady_allocator()
    return PeakMemory(growth, growth, "rss_growth")


def use_steady_allocator() -> None:
    """Pin glibc's mmap and trim thresholds to its dynamic policy's steady state."""
    _mallopt(M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD)
    _mallopt(M_TRIM_THRESHOLD, 2 * STEADY_MMAP_THRESHOLD)


@functools.cache
def rss_unavailable() -> str:
    """Why peak-RSS measurement cannot work here ("" when it can)."""
    try:
        _status_kib("VmHWM")
        _reset_peak_rss()
    except OSError as exc:
        return f"cannot read or reset the peak RSS via /proc/self ({exc.strerror or exc})"
    except KeyError:
        return "/proc/self/status has no VmHWM"
    return ""


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # 5: reset the peak resident set size (VmHWM) to the current size


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # "VmHWM:   123456 kB"
    raise KeyError(key)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # glibc only
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def _malloc_trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _mallopt(param: int, value: int) -> None:
    libc = _libc()
    if libc is not None:
        libc.mallopt(param, value)
