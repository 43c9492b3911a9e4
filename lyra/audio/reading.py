"""Reading audio: WAV, FLAC, OGG/Vorbis, MP3 (anything libsndfile reads) at any sample rate and
bit depth, from a file, standard input or a pipe, in checked blocks so that a file of any
length streams through in constant memory:

    with open_audio("song.mp3") as src:                      # or "-" for stdin
        for block in conform(src, 44100, 2, downmix=False):  # [2, n] float32 at 44.1 kHz
            ...

`conform` maps channels (`lyra.audio.channels`) and resamples (`lyra.audio.resample`, streamed);
`load_audio` does the same to a whole file at once. NaN/Inf and a file without samples are
errors. A pipe carrying WAV or OGG is read as it arrives; other formats on a pipe need seeking
and are spooled to an anonymous temporary file first. A WAV, RF64 or AIFF header that promises
more samples than the file holds (a copy cut short) is read as far as it goes, and
`AudioSource.truncation` says so. See docs/codec.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile
import torch

from lyra.audio.channels import check_channels, expand_channels, mix_channels
from lyra.audio.resample import check_sample_rate, resample, resample_stream
from lyra.audio.sndfile import error_reason, quiet_stderr
from lyra.core.durations import format_duration
from lyra.core.errors import LyraError
from lyra.core.paths import input_kind
from lyra.core.streams import read_upto

BLOCK_FRAMES = 1 << 16
STDIN = "-"
# Formats libsndfile reads from a pipe (no seeking); anything else on a pipe is spooled first.
_PIPE_MAGIC = (b"RIFF", b"OggS")   # (libsndfile misreads RF64 from a pipe: spooled)
_HEAD_BYTES = 1 << 16   # where a file's header is looked for (the length it promises)


class AudioSource:
    """An opened audio file (or stdin): its format, and its samples as checked blocks."""

    def __init__(self, sf: soundfile.SoundFile, name: str, stack: contextlib.ExitStack) -> None:
        self._sf, self.name, self._stack = sf, name, stack
        self.sample_rate: int = sf.samplerate
        self.channels: int = sf.channels
        self.format: str = sf.format
        self.subtype: str = sf.subtype
        self.frames_read = 0
        self.declared_frames: int | None = None   # what the file's header promises, if it says

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[torch.Tensor]:
        """[channels, n] float32 blocks until the end; NaN/Inf and empty files are errors."""
        while True:
            try:
                data = self._sf.read(block_frames, dtype="float32", always_2d=True)  # [n, C]
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                raise LyraError(f"{self.name}: cannot read audio after sample {self.frames_read} ({error_reason(exc)})") from None
            if len(data) == 0:
                break
            block = torch.from_numpy(np.ascontiguousarray(data.T))                  # [n, C] -> [C, n]
            _check_finite(block, self.frames_read, self.sample_rate, self.name)
            self.frames_read += block.shape[-1]
            yield block
        if self.frames_read == 0:
            raise LyraError(f"{self.name}: contains no audio samples (header only or empty stream)")

    def read_all(self) -> torch.Tensor:
        """The whole file as one [channels, T] tensor."""
        return torch.cat(list(self.blocks()), dim=-1)

    @property
    def expected_frames(self) -> int | None:
        """How many frames the file should hold, when known before reading it: what its
        header declares, else libsndfile's count for a file it can seek in (for progress)."""
        if self.declared_frames is not None:
            return self.declared_frames
        if self._sf.seekable() and 0 < self._sf.frames < 1 << 48:
            return self._sf.frames
        return None

    @property
    def truncation(self) -> str | None:
        """After reading: a one-line warning if the header promised more samples than came."""
        declared, got, rate = self.declared_frames, self.frames_read, self.sample_rate
        if declared is None or got >= declared:
            return None
        return (f"{self.name}: warning: truncated file: its header promises {declared / rate:.3f} s "
                f"({declared:,} samples) but it holds {got / rate:.3f} s ({got:,} samples); only those are used")

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "AudioSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audio(path: str | Path) -> AudioSource:
    """Open an audio file for reading, or standard input for ``"-"``. A path that is not a
    regular file (a named pipe, ``<(...)``, a device) is read as a stream, like stdin."""
    if str(path) == STDIN:
        return open_audio_fd(sys.stdin.fileno(), "<stdin>")
    path = Path(path)
    if input_kind(path, "an audio file") == "stream":
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise LyraError(f"{path}: cannot open ({exc.strerror or exc})") from None
        return open_audio_fd(fd, str(path), owned=True)
    if path.stat().st_size == 0:
        raise LyraError(f"{path}: empty file (0 bytes), not audio")
    stack = contextlib.ExitStack()
    try:
        with quiet_stderr():   # libmpg123 prints probing notes to fd 2 on non-audio input
            sf = stack.enter_context(soundfile.SoundFile(os.fsencode(path)))   # bytes: any file name
        with path.open("rb") as f:
            head = f.read(_HEAD_BYTES)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        stack.close()
        raise LyraError(f"{path}: not a readable audio file ({error_reason(exc)})") from None
    except BaseException:
        stack.close()
        raise
    return _source(sf, str(path), stack, head)


def open_audio_fd(fd: int, name: str, owned: bool = False) -> AudioSource:
    """Open audio arriving on file descriptor `fd` (a file, or a pipe: see the module doc).
    With `owned`, `fd` is closed when it is no longer needed."""
    stack = contextlib.ExitStack()
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            if owned:
                stack.callback(_close_fd, fd)
            at = os.lseek(fd, 0, os.SEEK_CUR)
            if os.fstat(fd).st_size - at <= 0:
                raise LyraError(f"{name}: empty input (0 bytes), not audio")
            source: int | BinaryIO = fd
            head: bytes | bytearray = os.pread(fd, _HEAD_BYTES, at)
        else:
            magic = read_upto(lambda k: os.read(fd, k), 4)
            if not magic:
                if owned:
                    _close_fd(fd)
                raise LyraError(f"{name}: empty input (0 bytes), not audio")
            if magic in _PIPE_MAGIC:
                head = bytearray()                    # what the relay passes on, up to _HEAD_BYTES
                source = _relay(fd, magic, head, owned)   # read as it arrives
                stack.callback(_close_fd, source)
            else:
                source = stack.enter_context(tempfile.TemporaryFile(prefix="lyra-stdin-"))
                source.write(magic)
                with open(fd, "rb", closefd=owned) as f:
                    shutil.copyfileobj(f, source, 1 << 20)
                source.seek(0)
                head = source.read(_HEAD_BYTES)
                source.seek(0)
        with quiet_stderr():
            sf = stack.enter_context(soundfile.SoundFile(source, closefd=False))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        stack.close()
        raise LyraError(f"{name}: not readable audio ({error_reason(exc)})") from None
    except BaseException:
        stack.close()
        raise
    return _source(sf, name, stack, bytes(head))   # libsndfile has read the header: it is in `head`


def _source(sf: soundfile.SoundFile, name: str, stack: contextlib.ExitStack, head: bytes) -> AudioSource:
    try:
        check_sample_rate(sf.samplerate, name)    # a .lyra header could not hold it, nor a resampler
    except LyraError:
        stack.close()
        raise
    source = AudioSource(sf, name, stack)
    source.declared_frames = _declared_frames(head)
    if source.declared_frames is None and sf.format == "FLAC" and sf.frames > 0:
        source.declared_frames = sf.frames          # FLAC's STREAMINFO total (0: unknown)
    return source


def _declared_frames(head: bytes) -> int | None:
    """Sample frames a WAV, RF64 or AIFF header declares (None: unknown, or another format).

    WAV's "unknown length" sizes (0 and 0xFFFFFFFF, as streaming writers leave them) declare
    nothing. `head` is the start of the file; a header longer than it declares nothing.
    """
    if len(head) < 12:
        return None
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        at, align, big_size, size = 12, 0, None, None
        while at + 8 <= len(head):
            cid, (n,) = head[at:at + 4], struct.unpack_from("<I", head, at + 4)
            body = at + 8
            if cid == b"ds64" and body + 16 <= len(head):
                (big_size,) = struct.unpack_from("<Q", head, body + 8)   # after the RIFF size
            elif cid == b"fmt " and body + 14 <= len(head):
                (align,) = struct.unpack_from("<H", head, body + 12)     # block align: bytes per frame
            elif cid == b"data":
                size = big_size if n == 0xFFFFFFFF and big_size is not None else n
                break
            at = body + n + (n & 1)
        if not align or size in (None, 0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
            return None
        return size // align
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        at = 12
        while at + 8 <= len(head):
            cid, (n,) = head[at:at + 4], struct.unpack_from(">I", head, at + 4)
            if cid == b"COMM" and at + 14 <= len(head):
                (frames,) = struct.unpack_from(">I", head, at + 10)   # after the channel count
                return frames or None
            at += 8 + n + (n & 1)
    return None


def _relay(fd: int, magic: bytes, seen: bytearray, owned: bool) -> int:
    """A pipe that yields `magic` and then everything else from `fd` (so libsndfile sees the
    bytes we peeked at); the first _HEAD_BYTES also go to `seen`, before libsndfile gets them.
    A daemon thread copies; it stops when either side closes (and closes `fd` if `owned`)."""
    r, w = os.pipe()

    def copy() -> None:
        try:
            with contextlib.suppress(OSError), open(w, "wb") as out:
                chunk = magic
                while chunk:
                    if len(seen) < _HEAD_BYTES:
                        seen.extend(chunk[:_HEAD_BYTES - len(seen)])
                    out.write(chunk)
                    chunk = os.read(fd, 1 << 16)
        finally:
            if owned:
                _close_fd(fd)

    threading.Thread(target=copy, name="lyra-stdin-relay", daemon=True).start()
    return r


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _check_finite(block: torch.Tensor, offset: int, sample_rate: int, name: str) -> None:
    bad = ~torch.isfinite(block)                                   # [C, n]
    if bad.any():
        channel, index = (int(i) for i in bad.nonzero()[0])
        value = block[channel, index].item()
        at = offset + index
        raise LyraError(
            f"{name}: sample {at} ({format_duration(at / sample_rate, millis=True)}) of channel {channel + 1} is {value}; "
            "audio must be finite"
        )


def conform(source: AudioSource, sample_rate: int, channels: int, downmix: bool = False,
            block_frames: int = BLOCK_FRAMES) -> Iterator[torch.Tensor]:
    """The source's blocks as [channels, n] float32 at `sample_rate` (streamed)."""
    check_channels(source.channels, channels, downmix, source.name)
    mixed = (mix_channels(b, channels, downmix) for b in source.blocks(block_frames))   # [C', n] each
    for block in resample_stream(mixed, source.sample_rate, sample_rate):                # [C', m] each
        yield expand_channels(block, channels)                                          # -> [channels, m]


@dataclass(frozen=True)
class AudioInfo:
    """What an encoded file remembers about its source (and a warning if it was cut short)."""

    sample_rate: int
    channels: int
    frames: int
    truncation: str | None = None


def load_audio(path: str | Path, sample_rate: int, channels: int, downmix: bool = False) -> tuple[torch.Tensor, AudioInfo]:
    """A whole file as [channels, T] at `sample_rate` (offline: resampled in one go)."""
    with open_audio(path) as src:
        check_channels(src.channels, channels, downmix, src.name)
        x = mix_channels(src.read_all(), channels, downmix)          # [C', T_src]
        info = AudioInfo(src.sample_rate, src.channels, src.frames_read, src.truncation)
    x = resample(x, info.sample_rate, sample_rate, src.name)        # [C', T_src] -> [C', T]
    return expand_channels(x, channels).contiguous(), info
