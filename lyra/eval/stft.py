"""The multi-resolution STFT distance: the reconstruction loss of training and a metric of `lyra eval`.

`MultiResolutionSTFTLoss` is spectral convergence + L1 log-magnitude, averaged over several
STFT resolutions (Yamamoto et al. 2019), with the same definitions and defaults as auraloss's
``MultiResolutionSTFTLoss`` (hann window, centred frames, magnitudes ``sqrt(max(|X|^2, eps))``).
One deliberate difference: the spectral-convergence ratio is taken per example and then
averaged over the batch, where auraloss takes it over the whole batch at once. For a batch of
one the two are identical; per example, the loss of a batch is the mean of its examples'
losses, so gradient accumulation and data-parallel training equal one big batch exactly, and a
quiet clip counts as much as a loud one.

Options: a mel-scale variant (``n_mels``, ``sample_rate``; Slaney mel filters, librosa's
default, as auraloss uses) and stereo handling: per channel (default), sum/difference
(mid/side, auraloss's ``SumAndDifferenceSTFTLoss``) or both.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lyra.core.errors import LyraError

StereoMode = Literal["channels", "sum_difference", "both"]


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1 over several FFT sizes.

    ``forward(pred [B, C, T], target [B, C, T]) -> scalar``; ``parts(...)`` also returns the
    two terms separately (each already weighted and averaged over resolutions).
    """

    def __init__(
        self,
        fft_sizes: tuple[int, ...] = (1024, 2048, 512),
        hop_sizes: tuple[int, ...] = (120, 240, 50),
        win_lengths: tuple[int, ...] = (600, 1200, 240),
        w_sc: float = 1.0,
        w_log_mag: float = 1.0,
        n_mels: int = 0,
        sample_rate: int | None = None,
        stereo: StereoMode = "channels",
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths) or not fft_sizes:
            raise LyraError(
                f"loss: fft_sizes, hop_sizes and win_lengths need the same non-zero length, got "
                f"{len(fft_sizes)}, {len(hop_sizes)}, {len(win_lengths)}"
            )
        for n_fft, hop, win in zip(fft_sizes, hop_sizes, win_lengths):
            if not (0 < win <= n_fft and hop > 0):
                raise LyraError(f"loss: need 0 < win_length <= fft_size and hop > 0, got fft {n_fft}, hop {hop}, win {win}")
        if stereo not in ("channels", "sum_difference", "both"):
            raise LyraError(f"loss.stereo: expected 'channels', 'sum_difference' or 'both', got {stereo!r}")
        if n_mels and not sample_rate:
            raise LyraError("loss: a mel-scale STFT loss (n_mels > 0) needs the sample rate")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_lengths))
        self.w_sc = w_sc
        self.w_log_mag = w_log_mag
        self.stereo = stereo
        self.eps = eps
        self.n_mels = n_mels
        for i, (n_fft, _, win) in enumerate(self.resolutions):
            self.register_buffer(f"window_{i}", torch.hann_window(win), persistent=False)
            if n_mels:
                self.register_buffer(f"mel_{i}", mel_filters(n_fft, n_mels, sample_rate), persistent=False)

    # -- public --------------------------------------------------------------------------
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sc, log_mag = self.parts(pred, target)
        return sc + log_mag

    def parts(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted spectral convergence, weighted log-magnitude), each averaged as `forward`."""
        if pred.shape != target.shape or pred.dim() != 3:
            raise LyraError(f"STFT loss needs two [B, C, T] tensors of one shape, got {list(pred.shape)} and {list(target.shape)}")
        pred, target = pred.float(), target.float()
        if self.stereo == "channels":
            return self._multi_resolution(pred, target)
        sc_sd, mag_sd = self._sum_difference(pred, target)
        if self.stereo == "sum_difference":
            return sc_sd, mag_sd
        sc_ch, mag_ch = self._multi_resolution(pred, target)
        return sc_ch + sc_sd, mag_ch + mag_sd

    # -- internals -----------------------------------------------------------------------
    def _sum_difference(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """auraloss's sum/difference loss: the mean of the mid and side signals' losses."""
        if pred.shape[1] != 2:
            raise LyraError(f"loss.stereo = 'sum_difference' needs stereo audio, got {pred.shape[1]} channel(s)")
        sc_sum, mag_sum = self._multi_resolution(_mid(pred), _mid(target))     # [B, 1, T] each
        sc_diff, mag_diff = self._multi_resolution(_side(pred), _side(target))
        return (sc_sum + sc_diff) / 2, (mag_sum + mag_diff) / 2

    def _multi_resolution(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sc_total = pred.new_zeros(())
        mag_total = pred.new_zeros(())
        for i in range(len(self.resolutions)):
            x_mag = self._magnitude(pred, i)      # [B, C, T] -> [B, C, bins, frames]
            y_mag = self._magnitude(target, i)
            if self.w_sc:
                # Per example: ||Y - X||_F / ||Y||_F over its channels, bins and frames.
                num = torch.linalg.vector_norm(y_mag - x_mag, dim=(1, 2, 3))  # [B]
                den = torch.linalg.vector_norm(y_mag, dim=(1, 2, 3))          # [B]
                sc_total = sc_total + self.w_sc * (num / den).mean()
            if self.w_log_mag:
                mag_total = mag_total + self.w_log_mag * (x_mag.log() - y_mag.log()).abs().mean()
        n = len(self.resolutions)
        return sc_total / n, mag_total / n

    def _magnitude(self, x: torch.Tensor, i: int) -> torch.Tensor:
        n_fft, hop, win = self.resolutions[i]
        batch, channels, length = x.shape
        spec = torch.stft(x.reshape(batch * channels, length), n_fft, hop, win,
                          getattr(self, f"window_{i}"), return_complex=True)  # [B*C, T] -> [B*C, n_fft/2+1, frames]
        mag = torch.sqrt(torch.clamp(spec.real.square() + spec.imag.square(), min=self.eps))
        if self.n_mels:
            # [n_mels, bins] @ [B*C, bins, frames] -> [B*C, n_mels, frames]; the clamp only acts on
            # an all-zero filter row, which `mel_filters` rules out.
            mag = torch.matmul(getattr(self, f"mel_{i}"), mag).clamp(min=self.eps)
        return mag.reshape(batch, channels, *mag.shape[-2:])


def mel_filters(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Slaney-style mel filterbank [n_mels, n_fft/2 + 1] (librosa.filters.mel's default)."""
    import warnings

    import torchaudio

    with warnings.catch_warnings():  # torchaudio warns about empty bands; we raise below instead
        warnings.simplefilter("ignore")
        fb = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
        ).T  # [bins, n_mels] -> [n_mels, bins]
    empty = int((fb.sum(dim=1) == 0).sum())
    if empty:
        raise LyraError(
            f"loss: {n_mels} mel bands are too many for fft_size {n_fft} at {sample_rate} Hz "
            f"({empty} bands would be empty); use fewer n_mels or larger FFT sizes"
        )
    return fb.contiguous()


def _mid(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] + x[:, 1]).unsqueeze(1)  # [B, 2, T] -> [B, 1, T]


def _side(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] - x[:, 1]).unsqueeze(1)  # [B, 2, T] -> [B, 1, T]
