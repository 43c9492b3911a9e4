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

  glibc's allocator: during that one call, every allocation of 128 KiB or more gets its own
  mapping (``mallopt(M_MMAP_THRESHOLD)``), so a freed tensor leaves the resident set at
  once and the figure is the workload's own peak, not the allocator's fragmentation (which
  made repeated readings of one workload differ by 20% and more). Outside it, including in
  the timed rounds, the thresholds are pinned to the values glibc's dynamic policy settles
  at after its first large free (mmap 32 MiB, trim 64 MiB, `use_steady_allocator`), so
  timings do not depend on which benchmark ran before.

Where neither works (not Linux, /proc not writable) the measurement is ``None`` and says why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
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


def measure_peak_memory(fn: Callable[[], object], device: torch.device) -> PeakMemory:
    """Run `fn` once and return its peak memory on `device` (see the module docstring)."""
    if device.type == "cuda":
        return _cuda_peak(fn, device)
    return _rss_peak(fn)


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
    why = rss_unavailable()
    if why:
        fn()  # the workload still runs: a broken workload must not pass unnoticed
        return PeakMemory(None, None, f"unavailable: {why}")
    gc.collect()
    _mallopt(M_MMAP_THRESHOLD, MEASURE_MMAP_THRESHOLD)
    try:
        _malloc_trim()
        _reset_peak_rss()
        before = _status_kib("VmRSS")
        import os
        if os.environ.get("LYRA_MEMDBG"):
            class MI(ctypes.Structure):
                _fields_ = [(n, ctypes.c_size_t) for n in ("arena","ordblks","smblks","hblks","hblkhd","usmblks","fsmblks","uordblks","fordblks","keepcost")]
            f = _libc().mallinfo2; f.restype = MI
            h0 = f().hblkhd; t = torch.empty(8_000_000); h1 = f().hblkhd; del t
            import threading
            res = []
            def th():
                g0 = f().hblkhd; tt = torch.empty(8_000_000); res.append((f().hblkhd - g0) >> 20)
            T = threading.Thread(target=th); T.start(); T.join()
            print("MEMDBG probe: 32MB tensor mmapped MiB", (h1 - h0) >> 20, "from another thread", res, "maps", sum(1 for _ in open("/proc/self/maps")))
            b = {k: _status_kib(k) for k in ("RssAnon", "RssFile", "RssShmem")}
        fn()
        growth = max(0, _status_kib("VmHWM") - before) * 1024
        if os.environ.get("LYRA_MEMDBG"):
            a = {k: _status_kib(k) for k in ("RssAnon", "RssFile", "RssShmem")}
            print("MEMDBG growth MiB", growth >> 20, {k: (a[k] - b[k]) >> 10 for k in a}, "anon before", b["RssAnon"] >> 10)
            class MI(ctypes.Structure):
                _fields_ = [(n, ctypes.c_size_t) for n in ("arena","ordblks","smblks","hblks","hblkhd","usmblks","fsmblks","uordblks","fordblks","keepcost")]
            f = _libc().mallinfo2; f.restype = MI
            m = f(); print("MEMDBG mallinfo MiB", {n: getattr(m, n) >> 20 for n, _ in MI._fields_ if n not in ("ordblks","smblks","hblks")}, "hblks", m.hblks)
            _malloc_trim(); print("MEMDBG anon after trim", _status_kib("RssAnon") >> 10)
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
