"""Training data: a folder of audio -> random crops, plus a fixed validation set.

- `check_data_dirs` fails in one line on a missing or empty folder, before anything heavy.
- `scan_audio` finds .wav/.flac/.ogg/.mp3 files recursively and reads their headers; an
  unreadable file, or one with a channel count the model cannot take, is skipped with one
  warning.
- `split_files` holds out a fixed share of the files for validation (by a hash of the path,
  so the split does not depend on the seed or on the order files were found in).
- `CropDataset` maps a global item index (``epoch * epoch_size + i``) to one crop: the file
  (chosen with probability proportional to its length), the offset and the posterior-noise
  seed all come from a generator seeded with ``(seed, epoch, i)``. Items are pure functions of
  their index, so any number of workers, processes or restarts see exactly the same data.
  Crops quieter than the silence threshold are redrawn; after `crop_attempts` failures in a
  row the folder is declared to have no usable audio (an error, not an endless loop).
- `EpochBatchSampler` is the data order: each epoch a `DistributedSampler` permutation, split
  across processes, cut into batches; it can start at any batch, which is how a resumed run
  continues the exact data order.
- `validation_set` cuts fixed, evenly spaced, non-silent crops from the validation files.

Every crop is resampled to the model's rate, made stereo from mono, and peak-normalised.
Files are read with soundfile directly, because cropping needs to seek (read a span) and
`lyra.audio.reading` reads whole files or streams; its channel mapping and resampler are reused.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from lyra.audio.folders import audio_files
from lyra.core.errors import LyraError, first_line

Warn = Callable[[str], None]


def print_warning(message: str) -> None:
    print(f"lyra: warning: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class AudioFile:
    """One usable file: where it is and its header facts."""

    path: str
    frames: int          # at its own sample rate
    sample_rate: int
    channels: int

    def length_at(self, sample_rate: int) -> int:
        """Its length in samples at `sample_rate`."""
        return self.frames * sample_rate // self.sample_rate


# ---------------------------------------------------------------------------------------
# Finding files
# ---------------------------------------------------------------------------------------
def find_audio(folder: str | Path, extensions: tuple[str, ...]) -> list[Path]:
    """Audio files under `folder` (recursive, sorted), by extension (case-insensitive)."""
    return audio_files(folder, [f".{e}" for e in extensions])


def check_data_dirs(train_dir: str, val_dir: str | None, extensions: tuple[str, ...]) -> None:
    """One-line errors for a missing, non-folder or audio-less data folder."""
    for key, folder in (("data.train_dir", train_dir), ("data.val_dir", val_dir)):
        if folder is None:
            continue
        path = Path(folder)
        if not path.exists():
            raise LyraError(f"{key}: folder {folder} does not exist")
        if not path.is_dir():
            raise LyraError(f"{key}: {folder} is not a folder")
        if not find_audio(path, extensions):
            raise LyraError(f"{key}: folder {folder} has no audio files ({', '.join('.' + e for e in extensions)})")


def scan_audio(folder: str | Path, extensions: tuple[str, ...], channels: int,
               warn: Warn = print_warning) -> list[AudioFile]:
    """Header facts of every usable audio file under `folder`; the others warned about once."""
    import soundfile as sf

    files = []
    for path in find_audio(folder, extensions):
        try:
            info = sf.info(os.fsencode(path))   # bytes: soundfile encodes str names strictly (non-UTF-8 names)
        except Exception as exc:  # libsndfile's error types vary by version; any failure = unreadable
            warn(f"skipping {path}: unreadable audio ({first_line(exc)})")
            continue
        if info.frames <= 0 or info.samplerate <= 0:
            warn(f"skipping {path}: no audio frames")
            continue
        if not _channels_usable(info.channels, channels):
            warn(f"skipping {path}: {info.channels} channels, the model takes {channels} (or mono)")
            continue
        files.append(AudioFile(str(path), int(info.frames), int(info.samplerate), int(info.channels)))
    return files


def split_files(files: list[AudioFile], val_fraction: float, folder: str | Path) -> tuple[list[AudioFile], list[AudioFile]]:
    """(train, validation): a fixed share of the files, chosen by a hash of each file's path
    relative to `folder` (so the split survives moving the folder). Needs two files or more."""
    if val_fraction <= 0 or len(files) < 2:
        return list(files), []
    n_val = min(len(files) - 1, max(1, round(val_fraction * len(files))))

    def rank(f: AudioFile) -> str:
        return hashlib.sha1(Path(f.path).relative_to(folder).as_posix().encode()).hexdigest()

    ranked = sorted(files, key=rank)
    val = set(f.path for f in ranked[:n_val])
    return [f for f in files if f.path not in val], [f for f in files if f.path in val]


# ---------------------------------------------------------------------------------------
# Reading crops
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropSpec:
    """How a crop is made from a file: its length and level handling at the model's rate."""

    length: int
    sample_rate: int
    channels: int
    silence_threshold_db: float = -40.0
    peak: float = 0.95


def read_crop(file: AudioFile, start: int, spec: CropSpec) -> torch.Tensor:
    """`spec.length` samples from `start` (model rate) -> [C, length] float32, zero-padded at the end.

    Reads only the span needed (libsndfile seeks); resampling (`lyra.audio.resample`) reads a
    little extra on both sides so the filter has context.
    """
    import soundfile as sf

    from lyra.audio.channels import expand_channels, mix_channels
    from lyra.audio.resample import resample

    ratio = file.sample_rate / spec.sample_rate
    margin = 0 if file.sample_rate == spec.sample_rate else 64
    src_start = int(start * ratio)
    lead = min(margin, src_start)
    frames = math.ceil(spec.length * ratio) + lead + margin
    data, _ = sf.read(os.fsencode(file.path), start=src_start - lead, frames=frames, dtype="float32", always_2d=True)
    audio = torch.from_numpy(np.ascontiguousarray(data.T))           # [t, c] -> [c, t]
    audio = resample(audio, file.sample_rate, spec.sample_rate)      # [c, t] -> [c, t'] at the model rate
    skip = round(lead / ratio)
    audio = audio[:, skip:skip + spec.length]
    audio = expand_channels(mix_channels(audio, spec.channels, downmix=True), spec.channels)  # -> [C, t']
    if audio.shape[-1] < spec.length:
        audio = torch.nn.functional.pad(audio, (0, spec.length - audio.shape[-1]))
    return audio.contiguous()


def level_db(audio: torch.Tensor) -> float:
    """RMS level in dBFS (a full-scale sine is -3 dBFS)."""
    rms = audio.double().square().mean().sqrt().item()
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def normalise_peak(audio: torch.Tensor, peak: float) -> torch.Tensor:
    top = audio.abs().max()
    return audio * (peak / top) if top > 0 else audio


def _channels_usable(file_channels: int, channels: int) -> bool:
    return file_channels in (1, channels) or channels == 1


# ---------------------------------------------------------------------------------------
# Training crops
# ---------------------------------------------------------------------------------------
class CropDataset(Dataset):
    """Random crops addressed by a global index ``epoch * epoch_size + i`` (see module doc).

    ``dataset[index] -> (audio [C, length] float32, noise_seed int64 tensor)``.
    """

    def __init__(self, files: list[AudioFile], spec: CropSpec, seed: int, folder: str,
                 attempts: int = 50, epoch_size: int | None = None, warn: Warn = print_warning) -> None:
        if not files:
            raise LyraError(f"{folder}: no usable audio files for training")
        self.files = files
        self.spec = spec
        self.seed = seed
        self.folder = folder
        self.attempts = attempts
        self.warn = warn
        lengths = np.array([max(f.length_at(spec.sample_rate), 1) for f in files], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        # One epoch holds about as much audio as the folder: total length / crop length.
        self.epoch_size = epoch_size or max(1, int(lengths.sum()) // spec.length)
        self._bad: set[int] = set()  # files that failed to read in this process

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(int(index), self.epoch_size)
        rng = np.random.default_rng((self.seed, epoch, i))
        noise_seed = torch.tensor(int(rng.integers(2**62)), dtype=torch.int64)
        for _ in range(self.attempts):
            k = int(rng.choice(len(self.files), p=self.weights))
            file = self.files[k]
            start = int(rng.integers(max(file.length_at(self.spec.sample_rate) - self.spec.length, 0) + 1))
            if k in self._bad:
                continue
            try:
                audio = read_crop(file, start, self.spec)
            except Exception as exc:  # a file that decodes badly mid-way: skip it from now on
                self._bad.add(k)
                self.warn(f"skipping {file.path}: unreadable audio ({first_line(exc)})")
                continue
            if level_db(audio) >= self.spec.silence_threshold_db:
                return normalise_peak(audio, self.spec.peak), noise_seed
        raise LyraError(
            f"{self.folder}: no usable audio: {self.attempts} crops in a row were near-silent "
            f"(RMS below {self.spec.silence_threshold_db:g} dBFS) or unreadable; check the folder "
            f"or lower data.silence_threshold_db"
        )


class EpochBatchSampler:
    """Batches of global item indices, epoch after epoch, starting at batch `start`.

    Each epoch is one `DistributedSampler` permutation of ``range(epoch_size)`` (seeded with
    `seed`, `set_epoch(epoch)`), this process's share of it, in batches of `batch_size`
    (a partial last batch is dropped). Batch number `n` is the same batch whatever `start` is.
    """

    def __init__(self, epoch_size: int, batch_size: int, seed: int, start: int = 0,
                 world_size: int = 1, rank: int = 0) -> None:
        self.epoch_size = epoch_size
        self.batch_size = batch_size
        self.seed = seed
        self.start = start
        self.world_size = world_size
        self.rank = rank
        self.batches_per_epoch = (epoch_size // world_size) // batch_size
        if self.batches_per_epoch == 0:
            raise LyraError(
                f"data: one epoch has {epoch_size} crops, fewer than one batch of {batch_size} per "
                f"process x {world_size} processes; add audio or lower data.batch_size"
            )

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        sampler = DistributedSampler(range(self.epoch_size), num_replicas=self.world_size, rank=self.rank,
                                     shuffle=True, seed=self.seed, drop_last=True)
        sampler.set_epoch(epoch)
        order = [epoch * self.epoch_size + i for i in sampler]
        b = self.batch_size
        return [order[k * b:(k + 1) * b] for k in range(self.batches_per_epoch)]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = divmod(self.start, self.batches_per_epoch)
        while True:
            yield from self.epoch_batches(epoch)[skip:]
            epoch, skip = epoch + 1, 0


# ---------------------------------------------------------------------------------------
# Validation crops
# ---------------------------------------------------------------------------------------
def validation_set(files: list[AudioFile], spec: CropSpec, count: int, folder: str,
                   warn: Warn = print_warning) -> torch.Tensor:
    """Up to `count` fixed crops [N, C, length]: evenly spaced, non-silent, round-robin over files."""
    if not files:
        return torch.zeros(0, spec.channels, spec.length)
    per_file = math.ceil(count / len(files))
    candidates: list[list[torch.Tensor]] = []
    for file in files:
        span = max(file.length_at(spec.sample_rate) - spec.length, 0)
        # Evenly spaced candidate offsets (more than needed, to skip silent ones).
        starts = sorted({round(span * j / max(4 * per_file - 1, 1)) for j in range(4 * per_file)})
        good = []
        for start in starts:
            if len(good) == per_file:
                break
            try:
                audio = read_crop(file, start, spec)
            except Exception as exc:
                warn(f"skipping {file.path}: unreadable audio ({first_line(exc)})")
                break
            if level_db(audio) >= spec.silence_threshold_db:
                good.append(normalise_peak(audio, spec.peak))
        candidates.append(good)
    clips = [c[j] for j in range(per_file) for c in candidates if j < len(c)][:count]
    if not clips:
        raise LyraError(
            f"{folder}: no usable validation audio: every crop was near-silent (RMS below "
            f"{spec.silence_threshold_db:g} dBFS) or unreadable"
        )
    return torch.stack(clips)  # N x [C, L] -> [N, C, L]


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: seed numpy and `random` from torch's per-worker seed, and leave
    SIGINT/SIGTERM to the training process (which finishes its step, saves, then ends us)."""
    import random
    import signal

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
