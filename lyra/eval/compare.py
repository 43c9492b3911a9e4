"""Comparing audio with audio (`lyra eval`): the three metrics of `lyra.eval.metrics`, measured
at 44.1 kHz, for two signals (`scores`) or two files (`compare_files`); and for references (a
file, or a folder's audio files: `references`), each measured against DEGRADED (`against`) or
against what a codec gives back (`through`), all together by `measure_all`:

    results = measure_all(references("music"), against("music", "decoded"))
    results.rows, results.mean, results.failed      # [(name, scores)], scores, {name: error}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar

import torch

from lyra.audio.folders import AUDIO_SUFFIXES, audio_files
from lyra.core.errors import LyraError, os_error_line

METRICS = ("si_sdr_db", "stft_distance", "mel_distance")
Scores = dict[str, float]                       # {metric: value} for the METRICS
Measure = Callable[[Path, str], Scores]         # (reference file, its name) -> its scores
T = TypeVar("T")


@dataclass(frozen=True)
class Results:
    """The scores of the pairs measured, in order, and the errors of the pairs that failed."""

    rows: list[tuple[str, Scores]]
    failed: dict[str, str]

    @property
    def mean(self) -> Optional[Scores]:
        """Each metric averaged over `rows` (None when none was measured)."""
        rows = self.rows
        return {k: sum(r[k] for _, r in rows) / len(rows) for k in METRICS} if rows else None


def scores(ref: torch.Tensor, est: torch.Tensor, sample_rate: int) -> Scores:
    """The metrics of `est` against `ref` (both [C, T] at `sample_rate`), measured at 44.1 kHz."""
    from lyra.eval.metrics import METRIC_RATE, at_metric_rate, mel_distance, si_sdr, stft_distance

    ref, est = at_metric_rate(ref, sample_rate), at_metric_rate(est, sample_rate)   # any rate works
    with torch.no_grad():
        return {"si_sdr_db": float(si_sdr(ref, est)), "stft_distance": float(stft_distance(ref, est)),
                "mel_distance": float(mel_distance(ref, est, sample_rate=METRIC_RATE))}


def compare_files(ref_path: Path, est_path: Path, downmix: bool = False) -> Scores:
    """The scores of audio file `est_path` against `ref_path`: at REF's rate, mono matched to
    the other's channels, REF mixed down to mono with `downmix`; their lengths may differ by
    two samples at most (resampling rounds)."""
    from lyra.audio.channels import expand_channels, mix_channels
    from lyra.audio.reading import open_audio
    from lyra.audio.resample import resample, resampled_length

    with open_audio(ref_path) as src:
        ref, rate = src.read_all(), src.sample_rate                       # [C, T]
    with open_audio(est_path) as src:
        est, est_rate = src.read_all(), src.sample_rate                   # [C', T']
    at_ref_rate = resampled_length(est.shape[-1], est_rate, rate)
    if abs(at_ref_rate - ref.shape[-1]) > 2:      # checked before resampling (a 1 Hz file: gigabytes)
        raise LyraError(f"{est_path}: {at_ref_rate} samples at {rate} Hz, but {ref_path} has {ref.shape[-1]}")
    est = _named(est_path, resample, est, est_rate, rate)
    ref = mix_channels(ref, est.shape[0], downmix)                        # [C, T] -> [1, T] if asked
    if est.shape[0] != ref.shape[0]:
        if 1 not in (est.shape[0], ref.shape[0]):
            hint = "; pass --downmix to compare with REF mixed down" if ref.shape[0] > est.shape[0] else ""
            raise LyraError(f"{est_path}: has {est.shape[0]} channels, {ref_path} has {ref.shape[0]}{hint}")
        channels = max(est.shape[0], ref.shape[0])
        ref, est = expand_channels(ref, channels), expand_channels(est, channels)
    if abs(est.shape[-1] - ref.shape[-1]) > 2:   # resampling may round a length by a sample
        raise LyraError(f"{est_path}: {est.shape[-1]} samples at {rate} Hz, but {ref_path} has {ref.shape[-1]}")
    n = min(est.shape[-1], ref.shape[-1])
    return _named(ref_path, scores, ref[..., :n], est[..., :n], rate)


def _named(path: Path, step: Callable[..., T], *args: object) -> T:
    """`step(*args)`, its `LyraError` naming `path` when it names nothing (resampling that
    refuses a rate: "cannot resample 1 Hz to 44100 Hz: ...")."""
    try:
        return step(*args)
    except LyraError as exc:
        if str(exc).startswith(f"{path}:"):
            raise
        raise LyraError(f"{path}: {exc}") from None


def references(ref: str) -> list[tuple[Path, str]]:
    """(file, name) for a reference file (named as given), or for every audio file of a folder
    (named by its path relative to the folder, sorted)."""
    folder = Path(ref)
    if not folder.is_dir():
        return [(folder, ref)]
    pairs = [(p, str(p.relative_to(folder))) for p in audio_files(folder, AUDIO_SUFFIXES)]
    if not pairs:
        raise LyraError(f"{ref}: no audio files in this folder")
    return pairs


def counterpart(folder: Path, rel: str) -> Path:
    """The file of `folder` that matches reference `rel` (a relative path): the same path,
    with its own suffix or any audio suffix."""
    stem = folder / Path(rel).with_suffix("")
    for suffix in (Path(rel).suffix, *AUDIO_SUFFIXES):
        candidate = stem.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise LyraError(f"{folder}: no file matching {rel} (looked for {stem}.*)")


def against(ref: str, degraded: str, downmix: bool = False) -> Measure:
    """The measure comparing each reference with DEGRADED: the file itself, or the counterpart
    in the folder DEGRADED mirroring the folder `ref`."""
    if Path(ref).is_dir() != Path(degraded).is_dir():
        raise LyraError(f"{degraded}: REF and DEGRADED must both be files or both be folders")
    folder = Path(ref).is_dir()

    def measure(path: Path, rel: str) -> Scores:
        other = counterpart(Path(degraded), rel) if folder else Path(degraded)
        return compare_files(path, other, downmix=downmix)

    return measure


def measure_all(pairs: list[tuple[Path, str]], measure: Measure, quiet: bool = False) -> Results:
    """Every pair measured. One pair: its error is raised. Several: with a progress line
    (`lyra.core.progress`, unless `quiet`), a pair that fails is noted and the others measured."""
    if len(pairs) == 1:
        return Results([(pairs[0][1], measure(*pairs[0]))], {})
    from lyra.core.progress import Progress

    rows: list[tuple[str, Scores]] = []
    failed: dict[str, str] = {}
    with Progress("evaluating", total=len(pairs), unit="files", quiet=quiet) as bar:
        for path, rel in pairs:
            try:
                rows.append((rel, measure(path, rel)))
            except LyraError as exc:
                failed[rel] = str(exc)
            except OSError as exc:   # still one line naming the file
                failed[rel] = os_error_line(exc, path)
            bar.advance(1)
    return Results(rows, failed)


def through(round_trip: Callable[[torch.Tensor], torch.Tensor], sample_rate: int, channels: int,
            downmix: bool = False) -> Measure:
    """The measure comparing each reference, read as the codec takes it (at `sample_rate`,
    with `channels`; mixed down with `downmix`), with what `round_trip` gives back."""
    def measure(path: Path, rel: str) -> Scores:
        from lyra.audio.reading import load_audio

        x, _ = _named(path, load_audio, path, sample_rate, channels, downmix)   # [C, T]
        return _named(path, lambda: scores(x, round_trip(x), sample_rate))     # [C, T] -> [C, T]

    return measure
