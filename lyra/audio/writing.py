"""Writing WAV or FLAC: a file (atomically, `lyra.core.atomic`), or a stream on stdout, a
named pipe or a device. A streamed WAV whose length is not known in advance gets the usual
0xFFFFFFFF "unknown size" header (as ffmpeg and sox write); a streamed FLAC is made in an
anonymous temporary file and copied out when complete, because libsndfile finishes a FLAC
header by seeking back to it. Every byte is written or an `OSError` propagates.

    with AudioWriter("out.wav", 44100, 2) as out:
        out.write(block)                                     # [C, n]
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import torch

from lyra.audio.resample import check_sample_rate
from lyra.audio.sndfile import error_reason, write_error_reason
from lyra.core.atomic import atomic_path
from lyra.core.errors import LyraError
from lyra.core.paths import file_kind
from lyra.core.streams import write_all

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


def output_format(path: str | Path, fmt: str | None) -> str:
    """'WAV' or 'FLAC', from `fmt` or else the path's suffix (stdout defaults to WAV)."""
    if fmt is not None:
        if fmt.upper() not in WRITE_FORMATS.values():
            raise LyraError(f"--format: expected wav or flac, got {fmt!r}")
        return fmt.upper()
    if str(path) == "-":
        return "WAV"
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise LyraError(f"{path}: decoded audio is written as .wav or .flac, not {suffix or 'no suffix'!r}")
    return WRITE_FORMATS[suffix]


class AudioWriter:
    """Write [C, n] float blocks to a WAV/FLAC file (atomically), or to stdout (``"-"``) or a
    named pipe / device as a stream (WAV front to back; FLAC copied out when complete).

    PCM subtypes clip to [-1, 1]; `clipped` counts the samples that were clipped. `frames`
    (if known) lets a streamed WAV carry its true length. Write errors propagate as `OSError`
    (`BrokenPipeError` for a closed pipe).
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int, subtype: str = "PCM_16",
                 fmt: str | None = None, frames: int | None = None) -> None:
        self.path, self.sample_rate, self.channels = str(path), sample_rate, channels
        self.format = output_format(path, fmt)
        subtype = subtype.upper()
        if subtype not in SUBTYPES:
            raise LyraError(f"--subtype: expected one of {', '.join(SUBTYPES)}, got {subtype!r}")
        if self.format == "FLAC" and subtype == "FLOAT":
            raise LyraError(f"{path}: FLAC stores integers; use --subtype PCM_16 or PCM_24 (or write .wav)")
        self.subtype, self.frames = subtype, frames
        _check_writable(self.path, self.format, sample_rate, channels, subtype)   # before any file exists
        self.clipped = 0
        self.written = 0
        self._stack = contextlib.ExitStack()
        self._sink: soundfile.SoundFile | _WavStream | None = None
        self._copy_out: tuple[BinaryIO, BinaryIO] | None = None   # (spooled FLAC, stream)

    def __enter__(self) -> "AudioWriter":
        try:
            stream = self._stream()
            if stream is not None and self.format == "WAV":
                self._sink = _WavStream(stream, self.sample_rate, self.channels, self.subtype, self.frames)
            elif stream is not None:
                # libsndfile completes a FLAC header by seeking back to it, which a pipe cannot
                # do: the FLAC is made in a temporary file and copied out when it is complete.
                spool = self._stack.enter_context(tempfile.TemporaryFile(prefix="lyra-flac-"))
                self._sink = self._stack.enter_context(soundfile.SoundFile(
                    spool.fileno(), "w", self.sample_rate, self.channels, self.subtype,
                    format=self.format, closefd=False))
                self._copy_out = (spool, stream)
            else:
                tmp = self._stack.enter_context(atomic_path(self.path))
                # Opened by descriptor, never created by name: a signal handler that has just
                # removed the temporary (`lyra.core.atomic.remove_temporaries`) cannot see it come back.
                fd = os.open(tmp, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
                self._sink = self._stack.enter_context(soundfile.SoundFile(
                    fd, "w", self.sample_rate, self.channels, self.subtype, format=self.format, closefd=True))
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            self._abandon(exc)
            raise LyraError(f"{self.path}: cannot write audio ({error_reason(exc)})") from None
        except BaseException as exc:
            self._abandon(exc)
            raise
        return self

    def _abandon(self, exc: BaseException) -> None:
        """Unwind what `__enter__` opened as a failure, so that the temporary file is removed
        (closing the stack normally would rename it into place)."""
        with contextlib.suppress(Exception):
            self._stack.__exit__(type(exc), exc, exc.__traceback__)

    def write(self, block: torch.Tensor) -> None:
        data = block.detach().float().cpu().numpy().T                      # [C, n] -> [n, C]
        if self.subtype != "FLOAT":
            over = np.abs(data) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                data = np.clip(data, -1.0, 1.0)
        try:
            self._sink.write(np.ascontiguousarray(data))
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise LyraError(f"{self.path}: cannot write audio ({write_error_reason(exc, self._sink)})") from None
        self.written += data.shape[0]

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._stack.__exit__(exc_type, exc, tb)   # removes the temporary file
            return
        try:
            try:
                self._finish()
            except BaseException as error:
                self._stack.__exit__(type(error), error, error.__traceback__)
                raise
            self._stack.close()     # closes the sound file, then renames it into place
        except (soundfile.LibsndfileError, RuntimeError) as exc:   # libsndfile finishing the file
            raise LyraError(f"{self.path}: cannot write audio ({write_error_reason(exc, self._sink)})") from None

    def _stream(self) -> BinaryIO | None:
        """Where a stream goes: stdout for "-", the opened path for a pipe, socket or device
        (which libsndfile could not seek in, and which must not be replaced); else None."""
        if self.path == "-":
            return sys.stdout.buffer
        if file_kind(self.path) != "stream":
            return None
        return self._stack.enter_context(open(self.path, "wb", buffering=0))

    def _finish(self) -> None:
        if isinstance(self._sink, _WavStream):
            self._sink.close()
        if self._copy_out is not None:
            spool, stream = self._copy_out
            self._sink.close()                       # libsndfile writes the FLAC header now
            spool.seek(0)
            while block := spool.read(1 << 20):
                write_all(stream, block)
            stream.flush()


def _check_writable(path: str, fmt: str, sample_rate: int, channels: int, subtype: str) -> None:
    """Refuse, in one line naming `path`, what libsndfile would refuse to write (a rate FLAC
    cannot hold, too many channels), by trying it in memory."""
    check_sample_rate(sample_rate, path)
    try:
        with soundfile.SoundFile(io.BytesIO(), "w", sample_rate, channels, subtype, format=fmt):
            pass
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise LyraError(f"{path}: cannot write audio ({error_reason(exc)})") from None


class _WavStream:
    """A WAV written front to back (no seeking): for stdout, where libsndfile cannot."""

    _FORMATS = {"PCM_16": (1, 16), "PCM_24": (1, 24), "FLOAT": (3, 32)}

    def __init__(self, f: BinaryIO, sample_rate: int, channels: int, subtype: str, frames: int | None) -> None:
        self.f, self.subtype = f, subtype
        tag, bits = self._FORMATS[subtype]
        block_align = channels * bits // 8
        if frames is not None and 36 + frames * block_align > 0xFFFFFFFF:
            frames = None                    # too long for a WAV header to say: "unknown size"
        size = 0xFFFFFFFF if frames is None else frames * block_align
        riff = 0xFFFFFFFF if frames is None else 36 + size
        write_all(f, b"RIFF" + struct.pack("<I", riff) + b"WAVE"
                  + b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels, sample_rate,
                                          sample_rate * block_align, block_align, bits)
                  + b"data" + struct.pack("<I", size))

    def write(self, data: np.ndarray) -> None:   # [n, C] float32 in [-1, 1] for PCM
        if self.subtype == "FLOAT":
            raw = data.astype("<f4").tobytes()
        elif self.subtype == "PCM_16":
            raw = np.round(data * 32767).astype("<i2").tobytes()
        else:
            ints = np.round(data * 8388607).astype("<i4")                  # [n, C]
            raw = ints.reshape(-1, 1).view(np.uint8)[:, :3].tobytes()       # low 3 bytes of each
        write_all(self.f, raw)      # all of it, or OSError (BrokenPipeError on a closed pipe)
        self.f.flush()

    def close(self) -> None:
        self.f.flush()


def write_audio(path: str | Path, audio: torch.Tensor, sample_rate: int, subtype: str = "PCM_16",
                fmt: str | None = None) -> AudioWriter:
    """Write a whole [C, T] tensor; returns the (closed) writer for its `clipped` count."""
    with AudioWriter(path, sample_rate, audio.shape[0], subtype, fmt, frames=audio.shape[-1]) as out:
        out.write(audio)
    return out
