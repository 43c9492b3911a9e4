"""Reconstruction metrics for evaluation: SI-SDR, multi-resolution STFT distance, mel distance.

Each takes a reference and an estimate of one shape, ``[B, C, T]`` or ``[C, T]``, and returns
one value per example: a ``[B]`` tensor, or a 0-d tensor for ``[C, T]`` input. Channels are
averaged (SI-SDR per channel in dB, then the mean). Computed in float32 or better, without
gradients bookkeeping of their own (wrap in ``torch.no_grad()`` as you would anyway).

- `si_sdr`: scale-invariant signal-to-distortion ratio in dB, higher is better (Le Roux et al.
  2019, "SDR - half-baked or well done?"), zero-mean by default.
- `stft_distance`: `lyra.eval.stft.MultiResolutionSTFTLoss` with its defaults (auraloss's
  resolutions), lower is better.
- `mel_distance`: mean L1 distance of log mel magnitudes (natural log) at FFT sizes 2048, 1024
  and 512 (hop 1/4, 80 Slaney mel bands) at 44.1 kHz, lower is better. Audio at another rate
  is resampled to 44.1 kHz first, so any rate works and the mel bands mean the same thing.

`METRIC_RATE` (44.1 kHz, the codec's rate) is where `lyra eval` measures: it resamples both
signals to it (`at_metric_rate`) before all three metrics, so that files at any sample rate
give comparable numbers. Content above 22.05 kHz is therefore not measured.
"""

from __future__ import annotations

import torch

from lyra.core.errors import LyraError
from lyra.eval.stft import MultiResolutionSTFTLoss

MEL_FFT_SIZES = (2048, 1024, 512)
MEL_BANDS = 80
METRIC_RATE = 44100   # the mel settings above are for this rate


def si_sdr(ref: torch.Tensor, est: torch.Tensor, zero_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB, per example (channels averaged)."""
    ref, est, squeeze = _batched(ref, est)
    if zero_mean:
        ref = ref - ref.mean(dim=-1, keepdim=True)
        est = est - est.mean(dim=-1, keepdim=True)
    # Project the estimate on the reference: target = alpha * ref, alpha = <est, ref> / |ref|^2.
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.square().sum(-1, keepdim=True) + eps)  # [B, C, 1]
    target = alpha * ref                                                                     # [B, C, T]
    noise = est - target
    ratio = (target.square().sum(-1) + eps) / (noise.square().sum(-1) + eps)                # [B, C]
    value = 10 * torch.log10(ratio).mean(dim=-1)                                             # [B]
    return value[0] if squeeze else value


def stft_distance(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss (spectral convergence + log magnitude) per example."""
    ref, est, squeeze = _batched(ref, est)
    loss = MultiResolutionSTFTLoss().to(ref.device)
    _check_length(ref, loss)
    value = torch.stack([loss(est[i:i + 1], ref[i:i + 1]) for i in range(ref.shape[0])])
    return value[0] if squeeze else value


def mel_distance(ref: torch.Tensor, est: torch.Tensor, sample_rate: int = METRIC_RATE) -> torch.Tensor:
    """L1 distance of log mel magnitudes, averaged over three resolutions, per example
    (computed at `METRIC_RATE`: audio at `sample_rate` is resampled to it first)."""
    ref, est, squeeze = _batched(ref, est)
    ref, est = at_metric_rate(ref, sample_rate), at_metric_rate(est, sample_rate)
    loss = _mel_loss(METRIC_RATE).to(ref.device)
    _check_length(ref, loss)
    value = torch.stack([loss(est[i:i + 1], ref[i:i + 1]) for i in range(ref.shape[0])])
    return value[0] if squeeze else value


def at_metric_rate(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """[..., T] at `sample_rate` -> [..., T'] at `METRIC_RATE` (unchanged if already there)."""
    from lyra.audio.resample import resample

    return resample(audio, sample_rate, METRIC_RATE)


def _check_length(x: torch.Tensor, loss: MultiResolutionSTFTLoss) -> None:
    """torch.stft pads each side by n_fft / 2 (reflecting), which needs more samples than that."""
    need = max(n_fft for n_fft, _, _ in loss.resolutions) // 2 + 1
    if x.shape[-1] < need:
        raise LyraError(f"too short to measure: {x.shape[-1]} samples, and the STFT metrics need at least {need}")


def _batched(ref: torch.Tensor, est: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if ref.shape != est.shape:
        raise LyraError(f"metrics: reference and estimate shapes differ: {list(ref.shape)} vs {list(est.shape)}")
    if ref.dim() not in (2, 3):
        raise LyraError(f"metrics: expected [B, C, T] or [C, T] audio, got shape {list(ref.shape)}")
    squeeze = ref.dim() == 2
    if squeeze:
        ref, est = ref[None], est[None]  # [C, T] -> [1, C, T]
    dtype = torch.promote_types(ref.dtype, torch.float32)
    return ref.to(dtype), est.to(dtype), squeeze


def _mel_loss(sample_rate: int) -> MultiResolutionSTFTLoss:
    return MultiResolutionSTFTLoss(
        fft_sizes=MEL_FFT_SIZES, hop_sizes=tuple(n // 4 for n in MEL_FFT_SIZES), win_lengths=MEL_FFT_SIZES,
        w_sc=0.0, w_log_mag=1.0, n_mels=MEL_BANDS, sample_rate=sample_rate,
    )
