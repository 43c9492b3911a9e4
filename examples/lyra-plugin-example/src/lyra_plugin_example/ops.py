"""The plugin's own op: Snake as a `torch.library` custom op, with its autograd and fake kernel.

    snake(x, log_alpha, log_beta) = x + 1/(beta + eps) * sin(alpha * x)^2,
    alpha = exp(log_alpha), beta = exp(log_beta), per channel of x [B, C, T].

`torch.compile` treats a custom op as one opaque call, the way it would treat a CUDA or
Triton kernel you bring. Two registrations make it safe to compile, `fullgraph=True`
included, and to train through:

- `register_fake` tells the compiler the output's shape and dtype without running it;
- `register_autograd` gives the backward (here written out by hand, as a kernel's would be).

That is what the plugin vouches for when it registers its components with
``compile_safe=True``. Here the body is plain PyTorch; a real plugin would call its kernel.
The op computes in at least float32 and returns x's dtype, so it also works under autocast.
"""

from __future__ import annotations

import torch

EPS = 1e-9


@torch.library.custom_op("lyra_plugin_example::snake", mutates_args=())
def snake(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    dt = _compute_dtype(x)
    xf = x.to(dt)
    alpha = log_alpha.to(dt).exp()[:, None]                 # [C] -> [C, 1], broadcasts over [B, C, T]
    inv_beta = 1.0 / (log_beta.to(dt).exp()[:, None] + EPS)
    return (xf + inv_beta * torch.sin(alpha * xf).pow(2)).to(x.dtype)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)     # fp16/bf16 -> fp32; fp32, fp64 kept


@snake.register_fake
def _(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    torch._check(x.dim() == 3, lambda: f"snake expects [B, C, T], got {x.dim()} dims")
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output) -> None:
    x, log_alpha, log_beta = inputs
    ctx.save_for_backward(x, log_alpha, log_beta)


def _backward(ctx, grad: torch.Tensor):
    # y = x + s(x) / b with s = sin^2(a x), a = e^la, b = e^lb + eps:
    #   dy/dx = 1 + a sin(2 a x) / b,   dy/dla = x a sin(2 a x) / b,   dy/dlb = -e^lb s / b^2
    x, log_alpha, log_beta = ctx.saved_tensors
    dt = _compute_dtype(x)
    xf, g = x.to(dt), grad.to(dt)
    alpha = log_alpha.to(dt).exp()[:, None]
    beta = log_beta.to(dt).exp()[:, None]
    inv_b = 1.0 / (beta + EPS)
    sin2ax = torch.sin(2 * alpha * xf)                       # [B, C, T]
    grad_x = g * (1 + alpha * inv_b * sin2ax)
    grad_la = (g * xf * alpha * inv_b * sin2ax).sum(dim=(0, 2))                       # [B, C, T] -> [C]
    grad_lb = (g * -beta * inv_b.pow(2) * torch.sin(alpha * xf).pow(2)).sum(dim=(0, 2))  # [B, C, T] -> [C]
    return grad_x.to(x.dtype), grad_la.to(log_alpha.dtype), grad_lb.to(log_beta.dtype)


snake.register_autograd(_backward, setup_context=_setup_context)


def snake_reference(x: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor) -> torch.Tensor:
    """The same formula in differentiable PyTorch: what the op is tested against."""
    alpha = log_alpha.exp()[:, None]
    return x + 1.0 / (log_beta.exp()[:, None] + EPS) * torch.sin(alpha * x).pow(2)
