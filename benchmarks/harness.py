"""One measured benchmark: warm up (compile), peak memory of one call, timed rounds, extra_info.

Every benchmark in the suite goes through `run`, so every saved result carries the same
`extra_info` keys:

    variant, device            what ran where
    throughput, throughput_unit  work per second of the median round ("audio s/s" or "GB/s")
    median_s                   the median round, in seconds
    peak_mem_bytes, peak_mem_method, peak_mem_growth_bytes   see `benchmarks.memory`
    load_avg_1m                the system's 1-minute load average after the timed rounds
                               (how busy the machine was: above the core count, timings are noise)
    speedup_vs_eager           eager median / this median     (same group, same session)
    mem_ratio_vs_eager         this peak / eager peak         (same group, same session)

The eager variant of a group runs first (`conftest.py` orders the items) and leaves its
figures in the `Session`; the other variants of the group divide by them. A
variant whose eager run is not in the session (deselected, failed) gets ``None`` ratios;
`tools/bench_report.py` recomputes the ratios from the saved JSON either way.

Compile time is paid in the warm-up calls, outside the timed rounds. Each timed round is one
call; on CUDA the call ends with a synchronize, so the GPU's work is inside the round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from benchmarks.memory import PeakMemoryMeter
from benchmarks.variants import EAGER, Variant


@dataclass(frozen=True)
class Work:
    """What one call does, in the unit its throughput is quoted in."""

    amount: float  # seconds of audio, or gigabytes moved
    unit: str      # "audio s/s" or "GB/s"


@dataclass(frozen=True)
class Result:
    median_s: float | None   # None when timing is off (--benchmark-disable)
    throughput: float | None
    peak_mem_bytes: int | None


@dataclass
class Session:
    """What the benchmarks of one pytest session share."""

    device: torch.device
    memory: PeakMemoryMeter
    eager: dict[str, Result] = field(default_factory=dict)     # keyed by group
    copy_gbps: dict[str, float] = field(default_factory=dict)  # keyed by the copy group


def run(benchmark: Any, fn: Callable[[], object], *, session: Session, group: str, variant: Variant,
        work: Work, rounds: int, warmup: int = 1, info: dict[str, Any] | None = None,
        between: Callable[[], object] | None = None, warmup_rounds: int = 1) -> Result:
    """Benchmark `fn` (one call = `work`) and record it; returns what was measured.

    `between`, if given, runs (untimed) before every call after the first warm-up: other work
    interleaved with the measured one, such as a validation pass between training steps.
    """
    call = _synchronized(fn, session.device)
    benchmark.group = group
    benchmark.extra_info.update(variant=variant.label, device=describe(session.device), **(info or {}))

    for _ in range(warmup):  # compilation and first-call allocations happen here
        call()
        if between is not None:
            between()
    memory = session.memory.measure(call)
    def setup() -> None:  # pytest-benchmark calls it before each round, untimed
        between()

    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds,
                       setup=None if between is None else setup)

    stats = benchmark.stats.stats if benchmark.stats is not None else None
    median = stats.median if stats else None
    result = Result(median, work.amount / median if median else None, memory.peak_bytes)
    benchmark.extra_info.update(
        throughput=result.throughput, throughput_unit=work.unit, work_per_call=work.amount,
        median_s=median, peak_mem_bytes=memory.peak_bytes,
        peak_mem_growth_bytes=memory.growth_bytes, peak_mem_method=memory.method,
        load_avg_1m=os.getloadavg()[0],
    )
    if variant == EAGER:
        session.eager[group] = result
    eager = session.eager.get(group)
    benchmark.extra_info.update(
        speedup_vs_eager=_ratio(eager.median_s if eager else None, median),
        mem_ratio_vs_eager=_ratio(memory.peak_bytes, eager.peak_mem_bytes if eager else None),
    )
    return result


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    if device.type != "cuda":
        return fn

    def call() -> None:
        fn()
        torch.cuda.synchronize(device)

    return call


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def check_matches(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """Fail unless ``||actual - expected|| <= tol * ||expected||``: a variant that is fast
    because it computes something else must not produce a figure."""
    actual, expected = actual.detach().float(), expected.detach().float()
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    err = torch.linalg.vector_norm(actual - expected).item()
    ref = torch.linalg.vector_norm(expected).item()
    assert err <= tol * max(ref, 1e-12), f"{what}: relative error {err / max(ref, 1e-12):.2e} > {tol:.0e}"


def matmul_tolerance(device: torch.device) -> float:
    """Relative tolerance between two fp32 implementations of the same convolutions
    (TF32 convolutions on CUDA)."""
    return 1e-2 if device.type == "cuda" else 1e-4
