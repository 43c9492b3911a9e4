"""Snake activation: y = x + 1/(beta + eps) * sin(alpha * x)^2, per channel.

alpha = exp(log_alpha), beta = exp(log_beta); x is [B, C, T], the log-parameters are [C].

Three thin layers, as in Liger-Kernel:
- kernels:  `lyra_kernels.snake` (kernels/snake.py): the fused Triton forward and one-pass
  backward, registered as the `torch.library.triton_op`s `lyra::snake` / `lyra::snake_backward`;
- autograd: this file: `snake()`, the one place that decides which implementation runs, and
  `SnakeFunction`, the plain-PyTorch implementation;
- module:   `lyra.model.blocks.Snake`, which owns the parameters and calls `snake(...)`.

The decision (`uses_triton`), made per call from the tensor alone:
- CUDA tensors in fp32, fp16 or bf16, with Triton installed: the Triton op. In a compiled
  graph inductor sees its kernels and schedules them;
- CPU tensors under TRITON_INTERPRET=1, outside `torch.compile`: the Triton op too, run by
  Triton's interpreter (how the kernels are tested on machines without a GPU);
- everything else (CPU, float64, no Triton): `SnakeFunction`. Its forward and backward are
  plain PyTorch ops, so `torch.compile` traces through both and inductor fuses them with their
  neighbours (the conv bias, the residual add, dtype casts) into single loops.

Either way: math in float32 or wider (float64 for float64 input), grad_x in x's dtype, parameter
gradients in the parameters' dtype, and autograd saves only x and the two parameter vectors:
the backward recomputes sin/cos from x instead of keeping the forward's intermediates.

`snake_reference` is the formula as autograd sees it (it saves every intermediate): the
reference the tests hold both implementations against, and the benchmarks' eager baseline.
"""

from __future__ import annotations

import importlib.util
import os

import torch

EPS = 1e-9
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TRITON_INSTALLED: bool | None = None  # looked up on the first CUDA call, not at import


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


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # fp16/bf16/fp32 -> fp32, fp64 -> fp64


class SnakeFunction(torch.autograd.Function):
    """Snake in plain PyTorch ops, with a backward that recomputes from x.

    Eager autograd keeps x and the parameters only (the formula alone would keep alpha*x, its
    sine and more); `torch.compile` traces both directions and fuses each into one loop.
    """

    @staticmethod
    def forward(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
        dt = _compute_dtype(x)
        y = snake_reference(x.to(dt), log_alpha.to(dt), log_beta.to(dt))
        # Not y.to(x.dtype) when the dtypes match: that returns y itself, and torch 2.11's dynamo then
        # routes the gradient to the wrong output (zero gradients; pytorch/pytorch#180642).
        return y if y.dtype == x.dtype else y.to(x.dtype)            # [B, C, T] -> [B, C, T]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)  # x, log_alpha, log_beta: nothing else

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, log_alpha, log_beta = ctx.saved_tensors
        dt = _compute_dtype(x)
        grad_x, grad_log_alpha, grad_log_beta = snake_reference_backward(
            grad.to(dt), x.to(dt), log_alpha.to(dt), log_beta.to(dt))
        return grad_x.to(x.dtype), grad_log_alpha.to(log_alpha.dtype), grad_log_beta.to(log_beta.dtype)


def uses_triton(x: torch.Tensor) -> bool:
    """Whether `snake(x, ...)` runs the Triton kernels (see the module docstring)."""
    if x.dtype not in _TRITON_DTYPES:
        return False
    if x.device.type == "cuda":
        return _triton_installed()
    return (x.device.type == "cpu" and not torch.compiler.is_compiling()
            and os.environ.get("TRITON_INTERPRET") == "1" and _triton_installed())


def _triton_installed() -> bool:
    global _TRITON_INSTALLED
    if _TRITON_INSTALLED is None:
        _TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
    return _TRITON_INSTALLED


def _check(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"snake: x must be [B, C, T], got shape {tuple(x.shape)}")
    for name, p in (("log_alpha", log_alpha), ("log_beta", log_beta)):
        if p.shape != (x.shape[1],):
            raise ValueError(f"snake: {name} must be [C] = [{x.shape[1]}], got shape {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"snake: {name} is on {p.device} but x is on {x.device}")


def snake(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """Snake: [B, C, T] -> [B, C, T] in x's dtype, by the Triton kernels or `SnakeFunction`."""
    _check(x, log_alpha, log_beta)
    if uses_triton(x):
        import lyra_kernels.snake  # noqa: F401  (registers the Triton ops on first use)

        return torch.ops.lyra.snake(x, log_alpha, log_beta, EPS)
    return SnakeFunction.apply(x, log_alpha, log_beta)
