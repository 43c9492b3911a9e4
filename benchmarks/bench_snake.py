"""The Snake activation on its own, in GB/s, against the device's measured copy bandwidth.

Bytes counted are the least any implementation must move, so the figures of all variants
are comparable and the copy bandwidth is their ceiling:

    copy              read x, write out                              2 x nbytes(x)
    forward           read x, write y                                2 x nbytes(x)
    forward+backward  forward, then read x and grad_y, write grad_x  5 x nbytes(x)

(the [C] parameters and their gradients are negligible). `copy_fraction` in extra_info is a
variant's GB/s over the copy's GB/s for the same dtype and shape, measured earlier in the
same session.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import harness
from benchmarks.sizes import sizes_from_config
from benchmarks.variants import EAGER, OP_VARIANTS, Variant, fresh_compile_state, require
from lyra.model.snake import snake, snake_reference

COPY = Variant("copy", shipped=False, compiled=False)
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dtype" in metafunc.fixturenames:
        dtypes = sizes_from_config(metafunc.config).snake_dtypes
        metafunc.parametrize("dtype", dtypes, ids=[str(d).removeprefix("torch.") for d in dtypes])


def _name(dtype: torch.dtype, shape: tuple[int, ...]) -> str:
    return f"{str(dtype).removeprefix('torch.')} [{'x'.join(map(str, shape))}]"


def _copy_group(dtype: torch.dtype, shape: tuple[int, ...]) -> str:
    return f"copy {_name(dtype, shape)}"


def _inputs(shape, dtype, device, requires_grad=False):
    gen = torch.Generator().manual_seed(0)
    x = (2.0 * torch.randn(shape, generator=gen)).to(device, dtype)
    log_alpha = (0.3 * torch.randn(shape[1], generator=gen)).to(device)
    log_beta = (0.3 * torch.randn(shape[1], generator=gen)).to(device)
    for t in (x, log_alpha, log_beta):
        t.requires_grad_(requires_grad)
    return x, log_alpha, log_beta


def _op(variant: Variant):
    """eager: the formula; lyra: `snake` as shipped (Triton on CUDA, `SnakeFunction` elsewhere);
    compile: `snake` under `torch.compile`, as inside a compiled stage."""
    if variant == EAGER:
        return snake_reference
    if variant.compiled:
        fresh_compile_state()
        return torch.compile(snake, dynamic=False, fullgraph=True)
    return snake


def _expected(x, log_alpha, log_beta):
    """The formula in float32 (whatever x's dtype): what every variant approximates."""
    return snake_reference(x.detach().float(), log_alpha.detach(), log_beta.detach())


def test_copy(benchmark, dtype, bench_sizes, device, bench_session):
    """The device's copy bandwidth for this dtype and shape: the ceiling for Snake."""
    shape = bench_sizes.snake_shape
    x = torch.randn(shape, device=device).to(dtype)
    out = torch.empty_like(x)
    result = harness.run(
        benchmark, lambda: out.copy_(x), group=_copy_group(dtype, shape), variant=COPY,
        work=harness.Work(2 * x.nbytes / 1e9, "GB/s"), session=bench_session,
        rounds=bench_sizes.fast_rounds,
    )
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    if result.throughput is not None:
        bench_session.copy_gbps[_copy_group(dtype, shape)] = result.throughput


@pytest.mark.parametrize("variant", OP_VARIANTS, ids=lambda v: v.name)
def test_snake_forward(benchmark, variant, dtype, bench_sizes, device, bench_session):
    require(variant, device)
    shape = bench_sizes.snake_shape
    x, log_alpha, log_beta = _inputs(shape, dtype, device)
    op = _op(variant)
    with torch.no_grad():
        harness.check_matches(op(x, log_alpha, log_beta), _expected(x, log_alpha, log_beta),
                              TOLERANCE[dtype], f"snake forward ({variant.name})")

    def forward():
        with torch.no_grad():
            return op(x, log_alpha, log_beta)

    result = harness.run(
        benchmark, forward, group=f"snake forward {_name(dtype, shape)}", variant=variant,
        work=harness.Work(2 * x.nbytes / 1e9, "GB/s"), session=bench_session,
        rounds=bench_sizes.fast_rounds, info={"dtype": str(dtype)},
    )
    _record_copy_fraction(benchmark, bench_session, result, dtype, shape)


@pytest.mark.parametrize("variant", OP_VARIANTS, ids=lambda v: v.name)
def test_snake_forward_backward(benchmark, variant, dtype, bench_sizes, device, bench_session):
    require(variant, device)
    shape = bench_sizes.snake_shape
    x, log_alpha, log_beta = _inputs(shape, dtype, device, requires_grad=True)
    grad_y = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    op = _op(variant)

    def forward_backward():
        y = op(x, log_alpha, log_beta)
        return torch.autograd.grad(y, (x, log_alpha, log_beta), grad_y)  # no .grad accumulation

    leaves = [t.detach().float().requires_grad_() for t in (x, log_alpha, log_beta)]
    expected = torch.autograd.grad(snake_reference(*leaves), leaves, grad_y.float())
    for got, want, name in zip(forward_backward(), expected, ("grad_x", "grad_log_alpha", "grad_log_beta")):
        harness.check_matches(got, want, TOLERANCE[dtype], f"snake {name} ({variant.name})")

    result = harness.run(
        benchmark, forward_backward, group=f"snake forward+backward {_name(dtype, shape)}",
        variant=variant, work=harness.Work(5 * x.nbytes / 1e9, "GB/s"), session=bench_session,
        rounds=bench_sizes.fast_rounds, info={"dtype": str(dtype)},
    )
    _record_copy_fraction(benchmark, bench_session, result, dtype, shape)


def _record_copy_fraction(benchmark, bench_session, result, dtype, shape) -> None:
    copy = bench_session.copy_gbps.get(_copy_group(dtype, shape))
    benchmark.extra_info["copy_group"] = _copy_group(dtype, shape)
    benchmark.extra_info["copy_gbps"] = copy
    benchmark.extra_info["copy_fraction"] = (
        result.throughput / copy if copy and result.throughput is not None else None
    )
