"""Spectrogram images of a validation clip: the original above, the reconstruction below.

Log-magnitude STFT of the mid signal (channel mean, about 512 frames across), low frequencies
at the bottom, in dB
relative to the original's loudest bin over an 80 dB range, coloured from black through purple
and orange to pale yellow (a magma-like ramp).
"""

from __future__ import annotations

import numpy as np
import torch

N_FFT = 1024
WIDTH = 512  # target image width in frames: the hop is the clip length / WIDTH, within [16, 256]
RANGE_DB = 80.0
SEPARATOR = 3  # white pixel rows between the two halves
# Colour ramp stops (position, RGB), magma-like.
RAMP = np.array([
    (0.00, 0, 0, 4), (0.25, 80, 18, 123), (0.50, 182, 54, 121), (0.75, 251, 136, 97), (1.00, 252, 253, 191),
], dtype=np.float64)


def spectrogram_image(original: torch.Tensor, reconstruction: torch.Tensor) -> np.ndarray:
    """[C, T] and [C, T] audio -> [H, W, 3] uint8 image (original on top)."""
    ref = _log_magnitude(original)                # [C, T] -> [bins, frames] in dB
    est = _log_magnitude(reconstruction)
    top = float(ref.max())
    halves = [_colour(np.clip((s - top + RANGE_DB) / RANGE_DB, 0.0, 1.0)) for s in (ref, est)]
    gap = np.full((SEPARATOR, ref.shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([halves[0], gap, halves[1]], axis=0)


def _log_magnitude(audio: torch.Tensor) -> np.ndarray:
    mid = audio.detach().float().cpu().mean(dim=0)  # [C, T] -> [T]
    hop = min(max(mid.shape[-1] // WIDTH, 16), 256)
    spec = torch.stft(mid, N_FFT, hop, window=torch.hann_window(N_FFT), return_complex=True).abs()  # [bins, frames]
    spec = spec[:-1].reshape(N_FFT // 4, 2, -1).mean(dim=1)  # [512, F] -> [256, F]: pairs of bins averaged
    db = 20 * torch.log10(spec.clamp(min=1e-7))
    return db.flip(0).numpy()                         # low frequencies at the bottom


def _colour(values: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8 along the ramp."""
    rgb = [np.interp(values, RAMP[:, 0], RAMP[:, 1 + c]) for c in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)
