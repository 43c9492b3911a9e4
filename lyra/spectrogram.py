"""Spectrogram pictures of a validation clip, original beside reconstruction.

`spectrogram_picture(original, reconstruction, sample_rate, title)` -> [H, W, 3] uint8 RGB,
the one picture written as PNG into the run directory and sent to TensorBoard and W&B:

- with matplotlib (the ``plot`` extra): `lyra.plots.spectrogram_figure`, a labelled figure of
  `mel_spectrogram` (frequency in Hz on a mel scale, time in seconds, a colour bar in dBFS);
- without it: `pixel_image`, a bare pixel dump (original above, reconstruction below, linear
  frequency, low frequencies at the bottom, 80 dB below the original's loudest bin coloured
  black through purple and orange to pale yellow).

Both show the mid signal (the channel mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lyra.extras import installed

# The labelled spectrogram (mel-scaled rows of an STFT).
N_FFT = 2048
FRAMES = 512        # about this many time frames: the hop is the clip length / FRAMES, within [16, 512]
ROWS = 256          # mel-spaced frequency rows
RANGE_DB = 80.0     # colour range below the top of the original's level

# The pixel-dump fallback.
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
        from lyra.plots import render, spectrogram_figure

        return render(spectrogram_figure(original, reconstruction, sample_rate, title))
    return pixel_image(original, reconstruction)


# -- the data of the labelled picture ----------------------------------------------------
def hz_to_mel(hz):
    """HTK's mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@dataclass(frozen=True)
class Spectrogram:
    db: np.ndarray          # [ROWS, frames] level in dBFS (a full-scale sine peaks at 0), row 0 lowest
    top_mel: float          # rows are equal steps of mel from 0 to top_mel (the Nyquist frequency)
    seconds: float          # the clip's duration; frames are equal steps of time across it


def mel_spectrogram(audio: torch.Tensor, sample_rate: int) -> Spectrogram:
    """[C, T] audio -> its mid signal's STFT level on mel-spaced rows.

    Each row takes the loudest STFT bin whose frequency falls in it, or, in a row narrower than
    the bin spacing (low frequencies), the level interpolated at its centre: a sine shows at
    its level wherever it lies.
    """
    mid = audio.detach().float().cpu().mean(dim=0)                      # [C, T] -> [T]
    hop = min(max(mid.shape[-1] // FRAMES, 16), 512)
    window = torch.hann_window(N_FFT)
    spec = torch.stft(mid, N_FFT, hop, window=window, return_complex=True).abs()   # [bins, frames]
    power = (spec / (window.sum() / 2)).square().double().numpy()      # full-scale sine -> 1
    bins = np.arange(power.shape[0]) * sample_rate / N_FFT
    top = float(hz_to_mel(sample_rate / 2))
    edges = mel_to_hz(np.linspace(0.0, top, ROWS + 1))
    centres = (edges[:-1] + edges[1:]) / 2
    rows = np.stack([np.interp(centres, bins, frame) for frame in power.T], axis=1)   # [ROWS, frames]
    which = np.clip(np.searchsorted(edges, bins, side="right") - 1, 0, ROWS - 1)
    np.maximum.at(rows, which, power)
    db = 10 * np.log10(np.maximum(rows, 1e-14))
    return Spectrogram(db.astype(np.float32), top, mid.shape[-1] / sample_rate)


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
    spec = torch.stft(mid, PIXEL_N_FFT, hop, window=window, return_complex=True).abs()  # [bins, frames]
    spec = spec[:-1].reshape(PIXEL_N_FFT // 4, 2, -1).mean(dim=1)  # [512, F] -> [256, F]: pairs of bins averaged
    db = 20 * torch.log10(spec.clamp(min=1e-7))
    return db.flip(0).numpy()                         # low frequencies at the bottom


def _colour(values: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8 along the ramp."""
    rgb = [np.interp(values, RAMP[:, 0], RAMP[:, 1 + c]) for c in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)
