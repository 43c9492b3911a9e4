"""Step 1: the modules. Each takes the keyword arguments Lyra passes to its kind, then its
own options as keyword parameters with defaults:

- activation    ``(channels, *, aa_taps=25)``                        [B, C, T] -> [B, C, T]
- residual_unit ``(channels, dilation, kernel_size, activation)``    [B, C, T] -> [B, C, T]

An option is set in the config's ``[model.options.<component name>]`` table
(``[model.options.aa_snake] aa_taps = 25``); Lyra gives it to that component only, wherever
the model builds it, and rejects a key the constructor does not name. So nothing here
passes options on: the residual unit builds its activation by name through the registry,
and the activation's options reach it by themselves. A bad option value is an
``OptionError(key, why)``, which Lyra reports naming the component and the config key.
"""

from __future__ import annotations

import torch
from torch import nn

from lyra import registry
from lyra.registry import OptionError
from lyra_plugin_example.ops import snake


def halfband_lowpass(taps: int, kaiser_beta: float = 5.0) -> torch.Tensor:
    """A Kaiser-windowed sinc with cutoff at half the band (fs/4), unit DC gain: [taps].

    With 25 taps and beta 5 it is flat (0.1 dB) up to 0.19 fs and 40 dB down from 0.31 fs.
    """
    m = (taps - 1) / 2
    n = torch.arange(taps, dtype=torch.float64) - m
    h = 0.5 * torch.sinc(0.5 * n) * torch.kaiser_window(taps, periodic=False, beta=kaiser_beta, dtype=torch.float64)
    return (h / h.sum()).float()


class LowpassFilter(nn.Conv1d):
    """The half-band low-pass as a fixed depthwise `Conv1d`: [B, C, T] -> [B, C, T/stride].

    A `Conv1d` module, not a bare `F.conv1d` call, so that tools inspecting the model's
    convolutions see it: Lyra's streaming codec sizes its chunk overlap from them, and a
    hidden temporal filter would make streamed output differ from offline. The taps are a
    buffer rebuilt from the config: not learned, not in the checkpoint.
    """

    def __init__(self, channels: int, taps: int, stride: int = 1, gain: float = 1.0) -> None:
        super().__init__(channels, channels, taps, stride=stride, padding=taps // 2, groups=channels, bias=False)
        del self.weight
        weight = gain * halfband_lowpass(taps).expand(channels, 1, taps).clone()   # [C, 1, taps]
        self.register_buffer("weight", weight, persistent=False)


class AntiAliasedSnake(nn.Module):
    """Snake computed at twice the sample rate: upsample 2x, Snake, low-pass, decimate 2x.

    sin^2 creates harmonics above the input's Nyquist frequency; at the doubled rate they
    have room, and the low-pass removes them before decimation instead of letting them
    fold back (the alias-free activation of BigVGAN). Per-channel log-parameters start at
    0, like Lyra's Snake. Option ``aa_taps`` (odd, default 25) sets the filter length.
    """

    def __init__(self, channels: int, *, aa_taps: int = 25) -> None:
        super().__init__()
        if isinstance(aa_taps, bool) or not isinstance(aa_taps, int) or aa_taps < 3 or aa_taps % 2 == 0:
            raise OptionError("aa_taps", f"must be an odd integer >= 3, got {aa_taps!r}")
        self.log_alpha = nn.Parameter(torch.zeros(channels))
        self.log_beta = nn.Parameter(torch.zeros(channels))
        self.interpolate = LowpassFilter(channels, aa_taps, gain=2.0)  # x2: zero-stuffing halves the level
        self.decimate = LowpassFilter(channels, aa_taps, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = torch.stack((x, torch.zeros_like(x)), dim=-1).flatten(-2)   # [B, C, T] -> [B, C, 2T] (zero-stuffed)
        up = self.interpolate(up)                                          # [B, C, 2T] -> [B, C, 2T]
        up = snake(up, self.log_alpha, self.log_beta)                      # [B, C, 2T] -> [B, C, 2T]
        return self.decimate(up)                                           # [B, C, 2T] -> [B, C, T]


class DepthwiseResidualUnit(nn.Module):
    """A ConvNeXt-style unit: x + scale * PW(act(PW(act(DWConv_k,d(x))))).

    The dilated conv is depthwise (one filter per channel) and the channel mixing is done by
    two pointwise convs through a 2x wider hidden layer, so it costs about half the
    built-in unit's parameters at the same receptive field. ``scale`` is a per-channel layer
    scale (starting at 0.1) that keeps the residual branch small at initialisation.
    """

    def __init__(self, channels: int, dilation: int = 1, kernel_size: int = 7,
                 activation: str = "snake") -> None:
        super().__init__()
        hidden = 2 * channels
        self.dwconv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                                padding=dilation * (kernel_size - 1) // 2, groups=channels)
        self.act1 = registry.create("activation", activation, channels=channels)
        self.pwconv1 = nn.Conv1d(channels, hidden, 1)
        self.act2 = registry.create("activation", activation, channels=hidden)
        self.pwconv2 = nn.Conv1d(hidden, channels, 1)
        self.scale = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.dwconv(x))     # [B, C, T] -> [B, C, T]
        y = self.act2(self.pwconv1(y))    # [B, C, T] -> [B, 2C, T]
        y = self.pwconv2(y)               # [B, 2C, T] -> [B, C, T]
        return x + self.scale[:, None] * y
