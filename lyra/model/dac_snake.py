"""``dac_snake``: descript-audio-codec's Snake, one parameter per channel, of either sign.

    y = x + 1 / (alpha + 1e-9) * sin(alpha * x)^2        x [B, C, T], alpha [C]

Lyra's ``snake`` is the same formula with two positive parameters, alpha = exp(log_alpha) and
beta = exp(log_beta), and runs the fused Triton kernels on CUDA; a DAC model whose every alpha
is positive maps onto it exactly (log_alpha = log_beta = log alpha) and is imported so. A
trained alpha can end at or below zero, where no (log_alpha, log_beta) gives DAC's output:
with alpha < 0 the term 1 / alpha turns the bump into a dip (y = x - sin^2(|alpha| x) / |alpha|),
with alpha = 0 the channel is the identity. `lyra import descript-audio-codec` builds such a
model with this activation instead, which computes DAC's formula as written, in plain PyTorch
ops (float32 or wider) that `torch.compile` fuses with their neighbours.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lyra import registry

EPS = 1e-9   # DAC's


def dac_snake_reference(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """DAC's ``snake(x, alpha)``: [B, C, T], alpha [C] -> [B, C, T] in x's dtype (math in float32 or wider)."""
    dt = torch.promote_types(x.dtype, torch.float32)
    a = alpha.to(dt).view(1, -1, 1)                         # [C] -> [1, C, 1]
    y = x.to(dt) + (a + EPS).reciprocal() * torch.sin(a * x.to(dt)).pow(2)
    return y if y.dtype == x.dtype else y.to(x.dtype)


@registry.register("activation", "dac_snake", streamable=True)
class DACSnake(nn.Module):
    """DAC's Snake1d (alpha initialised to one), any sign of alpha; see the module docstring."""

    def __init__(self, channels: int, **_: Any) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dac_snake_reference(x, self.alpha)            # [B, C, T] -> [B, C, T]
