"""Spectrogram pictures of a validation clip, original beside reconstruction: the one picture
written as PNG into the run directory and sent to TensorBoard and W&B.

`spectrogram_picture` draws `lyra.pictures.plots.spectrogram_figure` (a labelled mel figure)
where matplotlib (the ``plot`` extra) is installed, else `pixel_image`: a bare pixel dump
(original above, reconstruction below, linear frequency, low frequencies at the bottom, 80 dB
below the original's loudest bin coloured black through purple and orange to pale yellow).
Both show the mid signal (the channel mean).
"""

from __future__ import annotations

import numpy as np
import torch

from lyra.core.extras import installed
from lyra.pictures.mel import RANGE_DB
from lyra.pictures.plots import render, spectrogram_figure

PIXEL_N_FFT = 1024
PIXEL_WIDTH = 512   # target image width in frames: the hop is the clip length / PIXEL_WIDTH, within [16, 256]
SEPARATOR = 3       # white pixel rows between the two halves
# Colour ramp stops (position, RGB), magma-like.
RAMP = np.array([
    (0.00, 0, 0, 4), (0.25, 80, 18, 123), (0.50, 182, 54, 121), (0.75, 251, 136, 97), (1.00, 252, 253, 191),
], dtype=np.float64)


def spectrogram_picture(original: torch.Tensor, reconstruction: torch.Tensor, sample_rate: int,
                        title: str = "") -> np.ndarray:
    """[C, T] and [C, T] audio -> [H, W, 3] uint8: the labelled figure when matplotlib is
    installed, else the pixel dump (which has no room for `title`)."""
    if installed("matplotlib"):
        return render(spectrogram_figure(original, reconstruction, sample_rate, title))
    return pixel_image(original, reconstruction)


# -- the fallback ------------------------------------------------------------------------
def pixel_image(original: torch.Tensor, reconstruction: torch.Tensor) -> np.ndarray:
    """[C, T] and [C, T] audio -> [H, W, 3] uint8 image (original on top), no axes."""
    ref = _log_magnitude(original)                # [C, T] -> [bins, frames] in dB
    est = _log_magnitude(reconstruction)
    top = float(ref.max())
    halves = [_colour(np.clip((s - top + RANGE_DB) / RANGE_DB, 0.0, 1.0)) for s in (ref, est)]
    gap = np.full((SEPARATOR, ref.shape[1], 3), 255, dtype=np.uint8)
    return np.concatenate([halves[0], gap, halves[1]], axis=0)


def _log_magnitude(audio: torch.Tensor) -> np.ndarray:
    mid = audio.detach().float().cpu().mean(dim=0)  # [C, T] -> [T]
    hop = min(max(mid.shape[-1] // PIXEL_WIDTH, 16), 256)
    window = torch.hann_window(PIXEL_N_FFT)
    spec = torch.stft(mid, PIXEL_N_FFT, hop, window=window, return_complex=True).abs()  # [T] -> [bins, frames]
    spec = spec[:-1].reshape(PIXEL_N_FFT // 4, 2, -1).mean(dim=1)  # [512, F] -> [256, F]: pairs of bins averaged
    db = 20 * torch.log10(spec.clamp(min=1e-7))
    return db.flip(0).numpy()                         # low frequencies at the bottom


def _colour(values: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8 along the ramp."""
    rgb = [np.interp(values, RAMP[:, 0], RAMP[:, 1 + c]) for c in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)
