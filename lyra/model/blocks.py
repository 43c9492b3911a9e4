"""The built-in blocks, registered exactly the way a plugin registers its own.

Every block is a small `nn.Module` taking its widths as keyword arguments, so a config can
swap any of them for a registered alternative of the same kind (the arguments each kind gets
are `lyra.registry.ARGUMENTS`; the contract is docs/plugins.md):

- activation    ``(channels)``                                    -> [B, C, T] -> [B, C, T]
- residual_unit ``(channels, dilation, kernel_size, activation)``  -> [B, C, T] -> [B, C, T]
- encoder_block ``(in_channels, out_channels, stride, dilations, kernel_size, activation, residual_unit)``
                                                                  -> [B, Cin, T] -> [B, Cout, T/s]
- decoder_block (same arguments)                                  -> [B, Cin, T] -> [B, Cout, T*s]

``activation`` and ``residual_unit`` are registry names: blocks build their sub-components
by name through `registry.create`, never by import. The built-ins take no options; their
``**block_options`` only carries the deprecated flat ``[model] block_options`` table, which
they pass to every component they build. Every built-in is ``streamable``.

Two decoder blocks are built in: ``decoder_block`` (the design document's: residual units at
the input width, then upsampling) and ``oobleck_decoder_block`` (stable-audio-tools' Oobleck
order: upsampling first, residual units at the output width), so published Oobleck weights
run unchanged (docs/stable-audio-open.md).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from lyra import registry
from lyra.model.snake import snake, snake_reference


@registry.register("activation", "snake", streamable=True)
class Snake(nn.Module):
    """Snake with per-channel log-parameters initialised to zero (alpha = beta = 1).

    Runs `lyra.model.snake.snake`: the fused Triton kernels on CUDA, elsewhere plain PyTorch that
    `torch.compile` fuses with its neighbours.
    """

    def __init__(self, channels: int, **_: Any) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(channels))
        self.log_beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return snake(x, self.log_alpha, self.log_beta)  # [B, C, T] -> [B, C, T]


@registry.register("activation", "snake_reference", streamable=True)
class ReferenceSnake(Snake):
    """The same Snake (same parameters, same checkpoints) through the plain formula and autograd.

    The baseline that tests and benchmarks hold `snake` against: nothing fused, every
    intermediate kept for the backward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return snake_reference(x, self.log_alpha, self.log_beta)  # [B, C, T] -> [B, C, T]


@registry.register("residual_unit", "residual_unit", streamable=True)
class ResidualUnit(nn.Module):
    """x + Conv1x1(Snake(Conv_k,d(Snake(x)))): a dilated conv that keeps the length."""

    def __init__(self, channels: int, dilation: int = 1, kernel_size: int = 7,
                 activation: str = "snake", **block_options: Any) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2  # "same" length for an odd kernel
        self.act1 = registry.create("activation", activation, channels=channels, **block_options)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation, padding=pad)
        self.act2 = registry.create("activation", activation, channels=channels, **block_options)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.act1(x))  # [B, C, T] -> [B, C, T]
        y = self.conv2(self.act2(y))  # [B, C, T] -> [B, C, T]
        return x + y


def _residual_stack(channels: int, dilations: tuple[int, ...], kernel_size: int,
                    activation: str, residual_unit: str, block_options: dict[str, Any]) -> nn.Sequential:
    return nn.Sequential(*(
        registry.create("residual_unit", residual_unit, channels=channels, dilation=d,
                        kernel_size=kernel_size, activation=activation, **block_options)
        for d in dilations
    ))


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Conv1d:
    # k = 2s, p = ceil(s/2): for T a multiple of s the output is exactly T/s long.
    return nn.Conv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2))


def _upsample(in_channels: int, out_channels: int, stride: int) -> nn.ConvTranspose1d:
    # k = 2s, p = ceil(s/2), output_padding = s mod 2: exactly T*s samples out.
    return nn.ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride,
                              padding=math.ceil(stride / 2), output_padding=stride % 2)


class _ResidualsThenResample(nn.Module):
    """The design document's block: residual units at the input width, Snake, then the
    convolution that resamples time by `stride`. A subclass gives that convolution
    (`resampler`) and its attribute name (`resampler_name`, hence its state-dict keys)."""

    resampler_name: str
    resampler: Callable[[int, int, int], nn.Module]

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 dilations: tuple[int, ...] = (1, 3, 9), kernel_size: int = 7,
                 activation: str = "snake", residual_unit: str = "residual_unit",
                 **block_options: Any) -> None:
        super().__init__()
        self.res = _residual_stack(in_channels, dilations, kernel_size, activation, residual_unit, block_options)
        self.act = registry.create("activation", activation, channels=in_channels, **block_options)
        self.add_module(self.resampler_name, self.resampler(in_channels, out_channels, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res(x)                                          # [B, Cin, T] -> [B, Cin, T]
        return getattr(self, self.resampler_name)(self.act(x))   # -> [B, Cout, T/s] or [B, Cout, T*s]


@registry.register("encoder_block", "encoder_block", streamable=True)
class EncoderBlock(_ResidualsThenResample):
    """Residual units at the input width, Snake, then a strided conv that divides time by s."""

    resampler_name, resampler = "down", staticmethod(_downsample)


@registry.register("decoder_block", "decoder_block", streamable=True)
class DecoderBlock(_ResidualsThenResample):
    """Residual units at the input width, Snake, then a transposed conv that multiplies time by s."""

    resampler_name, resampler = "up", staticmethod(_upsample)


@registry.register("decoder_block", "oobleck_decoder_block", streamable=True)
class OobleckDecoderBlock(nn.Module):
    """stable-audio-tools' order: Snake, a transposed conv that multiplies time by s, then
    residual units at the output width (cheaper than `DecoderBlock` at the same widths)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 dilations: tuple[int, ...] = (1, 3, 9), kernel_size: int = 7,
                 activation: str = "snake", residual_unit: str = "residual_unit",
                 **block_options: Any) -> None:
        super().__init__()
        self.act = registry.create("activation", activation, channels=in_channels, **block_options)
        self.up = _upsample(in_channels, out_channels, stride)
        self.res = _residual_stack(out_channels, dilations, kernel_size, activation, residual_unit, block_options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(self.act(x))          # [B, Cin, T] -> [B, Cout, T*s]
        return self.res(x)                # [B, Cout, T*s] -> [B, Cout, T*s]
