"""The built-in discriminators, registered under the kind ``discriminator`` as a plugin would.

Every discriminator (built-in or plugin) follows one contract (docs/plugins.md):

    factory(channels: int, sample_rate: int, **options) -> nn.Module
    forward(x: Tensor[B, C, T]) -> list[tuple[Tensor, list[Tensor]]]

one ``(logits, feature_maps)`` pair per sub-discriminator (per scale, per period): logits of
any shape ``[B, ...]``, feature maps the intermediate activations, in layer order, that
feature matching compares. The pair count and every shape depend only on the input's shape,
so the outputs for real and generated audio line up one to one; `check_output` checks that
(the training engine uses it to name a plugin that breaks it).

Built-ins (both weight-normed with `torch.nn.utils.parametrizations.weight_norm`; neither
uses ``sample_rate``):

- ``ms_stft``: the multi-scale complex STFT discriminator of EnCodec (Défossez et al. 2022),
  which stable-audio-tools trains its Oobleck VAE with. Per scale: a Hann-windowed STFT
  (``center=False``, divided by the window's L2 norm, as torchaudio's ``normalized=True``),
  real and imaginary parts as channels ``[B, 2C, frames, bins]`` (time first, as EnCodec,
  so its weight layout carries over), then 2-D convs: (3, 9) in, three (3, 9) convs with
  stride (1, 2) and time dilations 1, 2, 4, a (3, 3) conv, LeakyReLU(0.2) after each (those
  five activations are the feature maps) and a (3, 3) conv to one logit channel.
  Options: ``filters`` (32), ``n_ffts`` (2048, 1024, 512, 256, 128), ``hop_lengths``
  (n_fft / 4), ``win_lengths`` (n_fft), ``dilations`` (1, 2, 4), ``negative_slope`` (0.2).
  Input must be at least as long as the largest window.
- ``mpd``: the multi-period waveform discriminator of HiFi-GAN (Kong et al. 2020), as DAC
  uses it. Per period p: reflect-pad the end to a multiple of p, view ``[B, C, T/p, p]``,
  2-D convs with kernel (5, 1), stride (3, 1) through ``widths`` (32, 128, 512, 1024), one
  more (5, 1) conv at stride 1 (1024), LeakyReLU(0.1) after each (the feature maps), and a
  (3, 1) conv to one logit channel. Options: ``periods`` (2, 3, 5, 7, 11), ``widths``
  ((32, 128, 512, 1024, 1024): the last is the stride-1 layer), ``negative_slope`` (0.1).
  The defaults are HiFi-GAN's (about 41 M parameters); pass smaller ``widths`` for CPU runs.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from lyra import registry
from lyra.core.errors import LyraError
from lyra.registry import OptionError

DiscriminatorOutput = list[tuple[torch.Tensor, list[torch.Tensor]]]


def _ints(key: str, value: Any) -> tuple[int, ...]:
    """A non-empty list of positive integers, or an `OptionError` naming the option."""
    try:
        out = tuple(int(v) for v in value)
        ok = bool(out) and all(v > 0 for v in out) and all(o == v for o, v in zip(out, value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise OptionError(key, f"must be a non-empty list of positive integers, got {value!r}")
    return out


def _number(key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise OptionError(key, f"must be a number, got {value!r}") from None


def _conv2d(*args: Any, **kwargs: Any) -> nn.Conv2d:
    return weight_norm(nn.Conv2d(*args, **kwargs))


# -- multi-scale STFT ------------------------------------------------------------------------
class STFTDiscriminator(nn.Module):
    """One scale of `MultiScaleSTFTDiscriminator`: [B, C, T] -> (logits [B, 1, T', F'], 5 feature maps)."""

    def __init__(self, channels: int, n_fft: int, hop_length: int, win_length: int, filters: int = 32,
                 dilations: Sequence[int] = (1, 2, 4), negative_slope: float = 0.2) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.negative_slope = negative_slope
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        k = (3, 9)  # (time, frequency)
        self.convs = nn.ModuleList([_conv2d(2 * channels, filters, k, padding=(1, 4))])
        for d in dilations:  # dilated in time, strided by 2 in frequency
            self.convs.append(_conv2d(filters, filters, k, stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
        self.convs.append(_conv2d(filters, filters, (3, 3), padding=(1, 1)))
        self.conv_post = _conv2d(filters, 1, (3, 3), padding=(1, 1))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> [B, 2C, frames, bins]: real parts of the C channels, then imaginary parts."""
        batch, channels, length = x.shape
        if length < self.win_length or length < self.n_fft:
            raise LyraError(f"discriminator 'ms_stft': input of {length} samples is shorter than its "
                            f"{max(self.n_fft, self.win_length)}-sample STFT window; use longer segments or smaller n_ffts")
        spec = torch.stft(x.float().reshape(batch * channels, length), self.n_fft, self.hop_length,
                          self.win_length, self.window, center=False, return_complex=True)  # [B*C, bins, frames]
        spec = torch.view_as_real(spec) / self.window.square().sum().sqrt()               # [B*C, bins, frames, 2]
        spec = spec.reshape(batch, channels, *spec.shape[1:])                              # [B, C, bins, frames, 2]
        spec = torch.cat([spec[..., 0], spec[..., 1]], dim=1)                              # [B, 2C, bins, frames]
        return spec.transpose(2, 3)                                                         # [B, 2C, frames, bins]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.spectrogram(x)
        features = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            features.append(z)
        return self.conv_post(z), features


@registry.register("discriminator", "ms_stft")
class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's multi-scale complex STFT discriminator: one `STFTDiscriminator` per FFT size."""

    def __init__(self, channels: int, sample_rate: int, filters: int = 32,
                 n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
                 hop_lengths: Sequence[int] | None = None, win_lengths: Sequence[int] | None = None,
                 dilations: Sequence[int] = (1, 2, 4), negative_slope: float = 0.2) -> None:
        super().__init__()
        n_ffts = _ints("n_ffts", n_ffts)
        hops = _ints("hop_lengths", hop_lengths) if hop_lengths is not None else tuple(max(n // 4, 1) for n in n_ffts)
        wins = _ints("win_lengths", win_lengths) if win_lengths is not None else n_ffts
        for key, values in (("hop_lengths", hops), ("win_lengths", wins)):
            if len(values) != len(n_ffts):
                raise OptionError(key, f"needs one value per n_fft ({len(n_ffts)}), got {len(values)}")
        if any(w > n for n, w in zip(n_ffts, wins)):
            raise OptionError("win_lengths", f"each must be at most its n_fft, got {list(wins)} for {list(n_ffts)}")
        (filters,) = _ints("filters", [filters])
        dilations = _ints("dilations", dilations)
        self.sample_rate = sample_rate
        self.discriminators = nn.ModuleList([
            STFTDiscriminator(channels, n, h, w, filters, dilations, _number("negative_slope", negative_slope))
            for n, h, w in zip(n_ffts, hops, wins)
        ])

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        return [d(x) for d in self.discriminators]


# -- multi-period ------------------------------------------------------------------------------
class PeriodDiscriminator(nn.Module):
    """One period of `MultiPeriodDiscriminator`: [B, C, T] -> (logits [B, 1, T'', p], feature maps)."""

    def __init__(self, channels: int, period: int, widths: Sequence[int] = (32, 128, 512, 1024, 1024),
                 negative_slope: float = 0.1) -> None:
        super().__init__()
        self.period = period
        self.negative_slope = negative_slope
        self.convs = nn.ModuleList()
        width_in = channels
        for i, width in enumerate(widths):
            stride = 1 if i == len(widths) - 1 else 3  # the last layer keeps the resolution
            self.convs.append(_conv2d(width_in, width, (5, 1), stride=(stride, 1), padding=(2, 0)))
            width_in = width
        self.conv_post = _conv2d(width_in, 1, (3, 1), padding=(1, 0))

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> [B, C, ceil(T/p), p]: reflect-pad the end to a multiple of the period."""
        length = x.shape[-1]
        pad = (-length) % self.period
        if pad:
            if pad >= length:
                raise LyraError(f"discriminator 'mpd': input of {length} samples is too short for period {self.period}")
            x = F.pad(x, (0, pad), mode="reflect")
        return x.reshape(*x.shape[:2], -1, self.period)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.fold(x)
        features = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            features.append(z)
        return self.conv_post(z), features


@registry.register("discriminator", "mpd")
class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's multi-period discriminator: one `PeriodDiscriminator` per period."""

    def __init__(self, channels: int, sample_rate: int, periods: Sequence[int] = (2, 3, 5, 7, 11),
                 widths: Sequence[int] = (32, 128, 512, 1024, 1024), negative_slope: float = 0.1) -> None:
        super().__init__()
        periods = _ints("periods", periods)
        widths = _ints("widths", widths)
        self.sample_rate = sample_rate
        self.discriminators = nn.ModuleList([
            PeriodDiscriminator(channels, p, widths, _number("negative_slope", negative_slope)) for p in periods
        ])

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        return [d(x) for d in self.discriminators]


# -- the contract ------------------------------------------------------------------------------
def check_output(name: str, output: Any, batch: int | None = None) -> DiscriminatorOutput:
    """Check a discriminator's output against the contract; a `LyraError` naming `name` if not.

    Returns the output unchanged (a list of ``(logits, feature_maps)`` pairs, logits ``[B, ...]``).
    """
    what = f"discriminator '{name}'"
    if not isinstance(output, (list, tuple)) or not output:
        raise LyraError(f"{what} returned {type(output).__name__}; expected a non-empty list of "
                        "(logits, feature_maps) pairs, one per sub-discriminator")
    for i, pair in enumerate(output):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise LyraError(f"{what}: output {i} is not a (logits, feature_maps) pair")
        logits, features = pair
        if not isinstance(logits, torch.Tensor) or logits.dim() < 1:
            raise LyraError(f"{what}: output {i}'s logits are not a tensor of shape [B, ...]")
        if batch is not None and logits.shape[0] != batch:
            raise LyraError(f"{what}: output {i}'s logits have batch size {logits.shape[0]}, input had {batch}")
        if not isinstance(features, (list, tuple)) or not all(isinstance(f, torch.Tensor) for f in features):
            raise LyraError(f"{what}: output {i}'s feature maps are not a list of tensors")
    return list(output)
