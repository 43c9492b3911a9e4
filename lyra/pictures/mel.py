"""The mel spectrogram of the labelled validation picture: HTK's mel scale and a clip's mid
signal as dBFS levels on mel-spaced rows (`lyra.pictures.plots` draws it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

N_FFT = 2048
FRAMES = 512        # about this many time frames: the hop is the clip length / FRAMES, within [16, 512]
ROWS = 256          # mel-spaced frequency rows
RANGE_DB = 80.0     # colour range below the top of the original's level


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
    spec = torch.stft(mid, N_FFT, hop, window=window, return_complex=True).abs()   # [T] -> [bins, frames]
    power = (spec / (window.sum() / 2)).square().double().numpy()      # full-scale sine -> 1
    bins = np.arange(power.shape[0]) * sample_rate / N_FFT              # [bins] Hz
    top = float(hz_to_mel(sample_rate / 2))
    edges = mel_to_hz(np.linspace(0.0, top, ROWS + 1))                  # [ROWS + 1] Hz
    centres = (edges[:-1] + edges[1:]) / 2                              # [ROWS]
    rows = np.stack([np.interp(centres, bins, frame) for frame in power.T], axis=1)   # -> [ROWS, frames]
    which = np.clip(np.searchsorted(edges, bins, side="right") - 1, 0, ROWS - 1)      # [bins] -> row
    np.maximum.at(rows, which, power)                                   # [bins, frames] into [ROWS, frames]
    db = 10 * np.log10(np.maximum(rows, 1e-14))
    return Spectrogram(db.astype(np.float32), top, mid.shape[-1] / sample_rate)
