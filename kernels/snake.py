"""Fused Triton kernels for Snake, their launchers, and the ops `lyra::snake` / `lyra::snake_backward`.

    y = x + 1/(beta + eps) * sin(alpha * x)^2,  alpha = exp(log_alpha), beta = exp(log_beta)

on [B, C, T] tensors with [C] log-parameters. Each program handles one row (b, c) and one
block of BLOCK_T time steps, so a channel's alpha and beta are two scalar loads per program.

The backward is one pass over the data: it writes grad_x and, per program, one float32
partial sum for grad_log_alpha and one for grad_log_beta into two [C, B * n_blocks]
buffers; `.sum(-1)` in torch then gives each [C] result. No atomics, so the gradients are
bit-identical run to run.

The launchers are `torch.library.triton_op`s: inside a `torch.compile`d graph inductor sees
the kernels (through `wrap_triton`) and schedules them with the rest of the graph, instead of
calling an opaque op. `lyra::snake`'s autograd formula is `lyra::snake_backward`, and it
saves only x and the two parameter vectors.

Inputs may be any strided view (strides are kernel arguments); outputs are contiguous.
All math is float32 whatever the input dtype (fp32, fp16, bf16).

This module imports Triton and registers the ops, so `lyra.snake` imports it only on the first
call that takes the Triton path. With TRITON_INTERPRET=1 Triton's interpreter runs the kernels
on CPU tensors (eager only). Triton reads the variable when it decorates a function, its own
library (tl.sum, ...) included, so it must be set before `triton` is first imported: in
practice, in the environment of the process.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake
from torch.library import triton_op, wrap_triton

MAX_BLOCK_T = 1024  # 4 warps x 32 threads x 8 elements: two 16-byte fp32 loads per thread


@triton.jit
def _program_row(pid, C, T, n_blocks, LOG_ALPHA, LOG_BETA, EPS: tl.constexpr, BLOCK_T: tl.constexpr):
    """Which row (b, c) and time block program `pid` handles, and that channel's Snake parameters."""
    row = pid // n_blocks            # row = b * C + c
    block = pid % n_blocks
    b = row // C
    c = row % C
    t = block * BLOCK_T + tl.arange(0, BLOCK_T)
    mask = t < T
    alpha = tl.exp(tl.load(LOG_ALPHA + c).to(tl.float32))
    beta = tl.exp(tl.load(LOG_BETA + c).to(tl.float32))
    inv = 1.0 / (beta + EPS)
    return row, block, b, c, t, mask, alpha, beta, inv


@triton.jit
def _load_f32(PTR, b, c, t, mask, stride_b, stride_c, stride_t):
    """Row (b, c) of a [B, C, T] tensor with any strides, at times `t`, as float32 (0 where masked)."""
    ptrs = PTR + b.to(tl.int64) * stride_b + c.to(tl.int64) * stride_c + t.to(tl.int64) * stride_t
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(PTR, row, T, t, mask, value):
    """`value` into row `row` (= b * C + c) of a contiguous [B, C, T] output, in its dtype."""
    tl.store(PTR + row.to(tl.int64) * T + t, value.to(PTR.dtype.element_ty), mask=mask)


@triton.jit
def _snake_fwd_kernel(
    X, LOG_ALPHA, LOG_BETA, Y,
    C, T, n_blocks,
    stride_xb, stride_xc, stride_xt,
    EPS: tl.constexpr, BLOCK_T: tl.constexpr,
):
    row, block, b, c, t, mask, alpha, beta, inv = _program_row(
        tl.program_id(0), C, T, n_blocks, LOG_ALPHA, LOG_BETA, EPS, BLOCK_T)
    x = _load_f32(X, b, c, t, mask, stride_xb, stride_xc, stride_xt)
    s = tl.sin(alpha * x)
    _store(Y, row, T, t, mask, x + inv * s * s)


@triton.jit
def _snake_bwd_kernel(
    G, X, LOG_ALPHA, LOG_BETA, GX, PARTIAL_ALPHA, PARTIAL_BETA,
    C, T, n_blocks, n_partials,
    stride_gb, stride_gc, stride_gt,
    stride_xb, stride_xc, stride_xt,
    EPS: tl.constexpr, BLOCK_T: tl.constexpr,
):
    row, block, b, c, t, mask, alpha, beta, inv = _program_row(
        tl.program_id(0), C, T, n_blocks, LOG_ALPHA, LOG_BETA, EPS, BLOCK_T)
    g = _load_f32(G, b, c, t, mask, stride_gb, stride_gc, stride_gt)  # masked lanes: g = 0, no contribution
    x = _load_f32(X, b, c, t, mask, stride_xb, stride_xc, stride_xt)

    ax = alpha * x
    s = tl.sin(ax)
    sin2 = 2.0 * s * tl.cos(ax)      # sin(2 alpha x)
    gx = g * (1.0 + inv * alpha * sin2)
    _store(GX, row, T, t, mask, gx)

    # grad_log_alpha[c] = alpha * sum(g * inv * x * sin2); grad_log_beta[c] = -beta * inv^2 * sum(g * s^2)
    d_log_alpha = alpha * inv * tl.sum(g * x * sin2, axis=0)
    d_log_beta = -beta * inv * inv * tl.sum(g * s * s, axis=0)
    slot = c.to(tl.int64) * n_partials + b * n_blocks + block  # [C, B * n_blocks]
    tl.store(PARTIAL_ALPHA + slot, d_log_alpha)
    tl.store(PARTIAL_BETA + slot, d_log_beta)


def _launch_config(T: int) -> tuple[int, int, int]:
    """(BLOCK_T, number of time blocks, num_warps) for rows of length T >= 1.

    T may be symbolic (a compiled graph with a dynamic time axis): rows of 1024 or more, as
    in any real use, need only the guard ``T >= 1024``; shorter rows specialise on T.
    """
    block_t = MAX_BLOCK_T if T >= MAX_BLOCK_T else max(16, triton.next_power_of_2(int(T)))
    num_warps = max(1, min(4, block_t // 256))
    return block_t, (T + block_t - 1) // block_t, num_warps


def _device_guard(x: torch.Tensor):
    # Triton launches on the current CUDA device: make it x's. (Not while tracing with fake
    # tensors: nothing launches then, and the device need not exist.)
    return torch.cuda.device(x.device) if x.is_cuda and not is_fake(x) else contextlib.nullcontext()


@triton_op("lyra::snake", mutates_args={})
def snake_forward(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor, eps: float) -> torch.Tensor:
    """[B, C, T] (any strides) -> [B, C, T] contiguous, in x's dtype."""
    B, C, T = x.shape
    y = torch.empty((B, C, T), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    block_t, n_blocks, num_warps = _launch_config(T)
    log_alpha, log_beta = log_alpha.contiguous(), log_beta.contiguous()  # [C]: the kernel reads element c at c
    with _device_guard(x):
        wrap_triton(_snake_fwd_kernel)[(B * C * n_blocks,)](
            x, log_alpha, log_beta, y,
            C, T, n_blocks,
            *x.stride(),
            EPS=eps, BLOCK_T=block_t, num_warps=num_warps,
        )
    return y


@triton_op("lyra::snake_backward", mutates_args={})
def snake_backward(grad: torch.Tensor, x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_y, x) [B, C, T] -> grad_x [B, C, T] in x's dtype, grad_log_alpha and grad_log_beta [C]
    in the parameters' dtype (reduced in float32)."""
    B, C, T = x.shape
    grad_x = torch.empty((B, C, T), dtype=x.dtype, device=x.device)
    if grad_x.numel() == 0:
        zeros = torch.zeros(C, dtype=log_alpha.dtype, device=x.device)
        return grad_x, zeros, zeros.clone()
    block_t, n_blocks, num_warps = _launch_config(T)
    n_partials = B * n_blocks
    log_alpha, log_beta = log_alpha.contiguous(), log_beta.contiguous()
    # One float32 partial per program; every slot is written, so no zeroing.
    partial_alpha = torch.empty((C, n_partials), dtype=torch.float32, device=x.device)
    partial_beta = torch.empty_like(partial_alpha)
    with _device_guard(x):
        wrap_triton(_snake_bwd_kernel)[(B * C * n_blocks,)](
            grad, x, log_alpha, log_beta, grad_x, partial_alpha, partial_beta,
            C, T, n_blocks, n_partials,
            *grad.stride(),
            *x.stride(),
            EPS=eps, BLOCK_T=block_t, num_warps=num_warps,
        )
    # [C, B * n_blocks] -> [C], in a fixed order: deterministic
    return (grad_x, partial_alpha.sum(dim=-1).to(log_alpha.dtype),
            partial_beta.sum(dim=-1).to(log_beta.dtype))


def _setup_context(ctx, inputs, output) -> None:
    x, log_alpha, log_beta, eps = inputs
    ctx.save_for_backward(x, log_alpha, log_beta)  # nothing else: sin/cos are recomputed
    ctx.eps = eps


def _backward(ctx, grad: torch.Tensor):
    x, log_alpha, log_beta = ctx.saved_tensors
    grad_x, grad_log_alpha, grad_log_beta = torch.ops.lyra.snake_backward(grad, x, log_alpha, log_beta, ctx.eps)
    return grad_x, grad_log_alpha, grad_log_beta, None


snake_forward.register_autograd(_backward, setup_context=_setup_context)
