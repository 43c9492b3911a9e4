"""Snake activation: y = x + 1/(beta + eps) * sin(alpha * x)^2, per channel.

alpha = exp(log_alpha), beta = exp(log_beta); x is [B, C, T], the log-parameters are [C].

Three thin layers, as in Liger-Kernel:
- kernels:  `lyra_kernels.snake` (kernels/snake.py), the fused Triton forward and one-pass backward;
- autograd: this file, two `torch.library` custom ops, `lyra::snake` and `lyra::snake_backward`,
  with fake (meta) implementations and `lyra::snake`'s autograd formula, so that
  `torch.compile(fullgraph=True)` traces through them;
- module:   `lyra.blocks.Snake`, which owns the parameters and calls `snake(...)`.

Dispatch, decided per call inside each op (`_use_triton`):
- CUDA tensors in fp32, fp16 or bf16 go to the Triton kernels;
- CPU tensors in those dtypes go to the Triton kernels too when TRITON_INTERPRET=1 (Triton's
  interpreter runs them on the CPU: that is how CI tests the kernels). Set it in the process's
  environment: Triton reads it when `triton` is imported;
- everything else (CPU tensors, float64, no Triton installed) goes to the plain PyTorch
  formula below, computed in float32 (float64 for float64 input).
Either way: internal math in float32 or wider, parameter gradients reduced in float32 (and
returned in the parameters' dtype), grad_x in x's dtype, outputs contiguous. Autograd saves
only x and the two parameter vectors and recomputes sin/cos in the backward.

The backward op has no autograd formula of its own: double backward is not supported.
Triton is imported lazily, on the first call that takes the Triton path.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

EPS = 1e-9
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def snake_reference(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """The plain PyTorch formula, differentiable by autograd: [B, C, T] -> [B, C, T]."""
    alpha = log_alpha.exp().view(1, -1, 1)  # [C] -> [1, C, 1]
    beta = log_beta.exp().view(1, -1, 1)
    return x + (1.0 / (beta + EPS)) * torch.sin(alpha * x).pow(2)


def snake_reference_backward(grad: torch.Tensor, x: torch.Tensor, log_alpha: torch.Tensor,
                             log_beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward written out: (grad_y, x) [B, C, T] -> grad_x [B, C, T], grad_log_alpha, grad_log_beta [C]."""
    alpha = log_alpha.exp().view(1, -1, 1)  # [C] -> [1, C, 1]
    beta = log_beta.exp().view(1, -1, 1)
    inv = 1.0 / (beta + EPS)
    s = torch.sin(alpha * x)
    sin2 = torch.sin(2 * alpha * x)
    grad_x = grad * (1 + inv * alpha * sin2)
    grad_log_alpha = alpha.view(-1) * (grad * inv * x * sin2).sum(dim=(0, 2))  # [B, C, T] -> [C]
    grad_log_beta = beta.view(-1) * (-grad * s.pow(2) * inv.pow(2)).sum(dim=(0, 2))
    return grad_x, grad_log_alpha, grad_log_beta


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _use_triton(x: torch.Tensor) -> bool:
    if x.dtype not in _TRITON_DTYPES or not _triton_installed():
        return False
    if x.is_cuda:
        return True
    return x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # fp16/bf16/fp32 -> fp32, fp64 -> fp64


def _check(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"snake: x must be [B, C, T], got shape {tuple(x.shape)}")
    for name, p in (("log_alpha", log_alpha), ("log_beta", log_beta)):
        if p.shape != (x.shape[1],):
            raise ValueError(f"snake: {name} must be [C] = [{x.shape[1]}], got shape {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"snake: {name} is on {p.device} but x is on {x.device}")


@torch.library.custom_op("lyra::snake", mutates_args=())
def _snake_op(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    _check(x, log_alpha, log_beta)
    if _use_triton(x):
        from lyra_kernels.snake import snake_forward
        return snake_forward(x, log_alpha, log_beta, eps=EPS)
    dt = _compute_dtype(x)
    y = snake_reference(x.to(dt), log_alpha.to(dt), log_beta.to(dt))
    return y.to(x.dtype).contiguous()  # [B, C, T], contiguous like the kernel's output


@_snake_op.register_fake
def _(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    _check(x, log_alpha, log_beta)
    return x.new_empty(x.shape)


@torch.library.custom_op("lyra::snake_backward", mutates_args=())
def _snake_backward_op(grad: torch.Tensor, x: torch.Tensor, log_alpha: torch.Tensor,
                       log_beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(x, log_alpha, log_beta)
    if _use_triton(x):
        from lyra_kernels.snake import snake_backward
        grad_x, grad_log_alpha, grad_log_beta = snake_backward(grad, x, log_alpha, log_beta, eps=EPS)
    else:
        dt = _compute_dtype(x)
        grad_x, grad_log_alpha, grad_log_beta = snake_reference_backward(
            grad.to(dt), x.to(dt), log_alpha.to(dt), log_beta.to(dt))
        grad_x = grad_x.to(x.dtype).contiguous()
    return grad_x, grad_log_alpha.to(log_alpha.dtype), grad_log_beta.to(log_beta.dtype)


@_snake_backward_op.register_fake
def _(grad: torch.Tensor, x: torch.Tensor, log_alpha: torch.Tensor,
      log_beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(x, log_alpha, log_beta)
    return x.new_empty(x.shape), log_alpha.new_empty(log_alpha.shape), log_beta.new_empty(log_beta.shape)


def _setup_context(ctx, inputs, output) -> None:
    x, log_alpha, log_beta = inputs
    ctx.save_for_backward(x, log_alpha, log_beta)  # nothing else: sin/cos are recomputed


def _backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, log_alpha, log_beta = ctx.saved_tensors
    return torch.ops.lyra.snake_backward(grad, x, log_alpha, log_beta)


_snake_op.register_autograd(_backward, setup_context=_setup_context)


def snake(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """Snake through the fused op: [B, C, T] -> [B, C, T] (contiguous, x's dtype)."""
    return torch.ops.lyra.snake(x, log_alpha, log_beta)
