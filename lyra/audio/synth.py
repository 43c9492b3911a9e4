"""Synthetic voiced audio for the demo: no downloads, the same files from the same seed.

Each clip is a sequence of phrases separated by silence. A phrase is a harmonic voice: a
fundamental that glides between notes (portamento) with vibrato, harmonics shaped by a
moving three-formant envelope (vowel-like), syllable-like amplitude envelopes, a little
breath noise, and a stereo image (a pan and a sub-millisecond inter-channel delay).
Sometimes a second voice sings along a third or a fifth above. A faint noise floor lies under
everything, as in any recording.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lyra.core.atomic import atomic_path

# Formant centre frequencies (Hz) of a few vowels: a, e, i, o, u.
VOWELS = np.array([[730, 1090, 2440], [530, 1840, 2480], [270, 2290, 3010], [570, 840, 2410], [300, 870, 2240]], float)
FORMANT_WIDTH = np.array([110.0, 160.0, 260.0])


def voiced_clip(rng: np.random.Generator, seconds: float, sample_rate: int = 44100) -> np.ndarray:
    """One stereo clip [2, T] float32 with peaks around 0.5."""
    n = int(seconds * sample_rate)
    out = np.zeros((2, n))
    t = 0
    while t < n:
        t += int(rng.uniform(0.05, 0.4) * sample_rate)          # silence before the phrase
        length = min(int(rng.uniform(0.6, 1.8) * sample_rate), n - t)
        if length < sample_rate // 10:
            break
        phrase = _voice(rng, length, sample_rate)
        if rng.random() < 0.3:
            phrase += 0.6 * _voice(rng, length, sample_rate, interval=rng.choice([1.26, 1.5]))
        out[:, t:t + length] += _stereo(rng, phrase, sample_rate)
        t += length
    peak = np.abs(out).max()
    out = out * (0.5 / peak) if peak > 0 else out
    # A recording's noise floor (-70 dBFS RMS, gently low-passed): the pauses are quiet, not digital zero.
    floor = np.stack([np.convolve(rng.standard_normal(n), np.ones(4) / 2, mode="same") for _ in range(2)])
    return (out + 10 ** (-70 / 20) * floor).astype(np.float32)


def _voice(rng: np.random.Generator, n: int, sr: int, interval: float = 1.0) -> np.ndarray:
    time = np.arange(n) / sr
    # Pitch: notes on a semitone grid around a random register, glided between, plus vibrato.
    base = rng.uniform(100, 350) * interval
    notes = base * 2 ** (rng.integers(-5, 8, size=4) / 12)
    knots = np.linspace(0, n, len(notes) + 1)[:-1]
    f0 = np.interp(np.arange(n), knots + rng.uniform(0, n / 8, len(notes)), notes)
    f0 *= 1 + rng.uniform(0.005, 0.02) * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * time)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    # Vowel: formants interpolated between two random vowels over the phrase.
    a, b = VOWELS[rng.integers(len(VOWELS), size=2)]
    mix = np.linspace(0, 1, n)[:, None]
    formants = a * (1 - mix) + b * mix                          # [T, 3]
    signal = np.zeros(n)
    tilt = rng.uniform(0.8, 1.4)
    control = np.arange(0, n, 64)                                # harmonic amplitudes at a control rate
    for k in range(1, int(min(10000, sr / 2 - 500) / f0.min()) + 1):
        freq = k * f0[control]                                   # [T/64]
        envelope = np.exp(-0.5 * ((freq[:, None] - formants[control]) / FORMANT_WIDTH) ** 2).sum(axis=1)
        amplitude = (0.15 + envelope) / k ** tilt * (freq < sr / 2 - 500)
        signal += np.interp(np.arange(n), control, amplitude) * np.sin(k * phase)
    # Syllables: a few attack/decay bumps; a touch of breath noise rides on them.
    syllables = np.zeros(n)
    for start in np.sort(rng.uniform(0, n * 0.8, size=rng.integers(2, 5))).astype(int):
        length = int(rng.uniform(0.15, 0.5) * sr)
        seg = np.arange(min(length, n - start))
        syllables[start:start + len(seg)] = np.maximum(
            syllables[start:start + len(seg)], np.minimum(seg / (0.02 * sr), 1.0) * np.exp(-seg / (0.6 * length)))
    noise = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * sr))
    return (signal * (0.3 + 0.7 * syllables) + 0.02 * noise * syllables) * fade


def _stereo(rng: np.random.Generator, mono: np.ndarray, sr: int) -> np.ndarray:
    pan = rng.uniform(0.2, 0.8)
    delay = int(rng.uniform(0, 0.0008) * sr)
    right = np.concatenate([np.zeros(delay), mono[:len(mono) - delay]])
    return np.stack([np.sqrt(1 - pan) * mono, np.sqrt(pan) * right])   # [T] -> [2, T]


def write_dataset(folder: str | Path, files: int, seconds: float, seed: int, sample_rate: int = 44100,
                  prefix: str = "voice") -> list[Path]:
    """Write `files` clips as 16-bit WAV files into `folder` (created); returns their paths."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(files):
        path = folder / f"{prefix}-{i:03d}.wav"
        clip = voiced_clip(rng, seconds, sample_rate)
        with atomic_path(path) as tmp:
            sf.write(str(tmp), clip.T, sample_rate, subtype="PCM_16", format="WAV")
        paths.append(path)
    return paths
