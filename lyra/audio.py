"""Audio files in and out: soundfile (libsndfile) for the files, torchaudio for resampling.

Reading takes WAV, FLAC, OGG/Vorbis, MP3 (and anything else libsndfile reads) at any sample
rate and bit depth, from a file or from standard input, in blocks so that a file of any length
streams through in constant memory:

    with open_audio("song.mp3") as src:                      # or "-" for stdin
        for block in conform(src, 44100, 2, downmix=False):  # [2, n] float32 at 44.1 kHz
            ...

`conform` maps channels (mono is duplicated; more channels than the model's is an error unless
`downmix`, which averages all channels and duplicates the mix) and resamples with
`torchaudio.functional.resample`, streamed so that the result equals resampling the whole file.
Every block is checked for NaN/Inf; a file without samples is an error.

Writing produces WAV or FLAC, atomically (`lyra.atomic`), or a WAV/FLAC stream on stdout:

    with AudioWriter("out.wav", 44100, 2) as out:
        out.write(block)                                     # [C, n]

Standard input, a named pipe or a process substitution (``<(ffmpeg ...)``) is read as it
arrives when it is WAV or OGG (libsndfile reads those from a pipe); other formats on a pipe
(FLAC, MP3) need seeking, so they are first spooled to an anonymous temporary file. A WAV
stream on stdout (or a pipe) whose length is not known in advance gets the usual 0xFFFFFFFF
"unknown size" header, as ffmpeg and sox write; a FLAC for stdout or a pipe is written to an
anonymous temporary file and copied out when complete, because libsndfile finishes a FLAC
header by seeking back to it. Every byte is written or an `OSError` propagates.

A WAV, RF64 or AIFF whose header promises more samples than the file holds (a copy or
download cut short) is read as far as it goes; `AudioSource.truncation` (and
`AudioInfo.truncation`) then holds a one-line warning giving both durations.
"""

from __future__ import annotations

import contextlib
import math
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

from lyra.atomic import atomic_path
from lyra.durations import format_duration
from lyra.errors import LyraError, first_line
from lyra.fullread import read_upto
from lyra.fullwrite import write_all
from lyra.overlap import Context, OverlapStream, run_stream

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")   # picked from folders
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
BLOCK_FRAMES = 1 << 16
STDIN = "-"
# Formats libsndfile reads from a pipe (no seeking); anything else on a pipe is spooled first.
_PIPE_MAGIC = (b"RIFF", b"OggS")   # (libsndfile misreads RF64 from a pipe: spooled)
# The resampler's polyphase kernel is [new', 1, orig' + 2*width] for coprime orig':new'; cap it.
_MAX_RESAMPLE_KERNEL = 1 << 25
_HEAD_BYTES = 1 << 16   # where a file's header is looked for (the length it promises)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
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
                raise LyraError(f"{self.name}: cannot read audio after sample {self.frames_read} ({_reason(exc)})") from None
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
    if not path.exists():
        raise LyraError(f"{path}: no such file")
    if path.is_dir():
        raise LyraError(f"{path}: is a directory, not an audio file")
    if not path.is_file():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise LyraError(f"{path}: cannot open ({exc.strerror or exc})") from None
        return open_audio_fd(fd, str(path), owned=True)
    if path.stat().st_size == 0:
        raise LyraError(f"{path}: empty file (0 bytes), not audio")
    stack = contextlib.ExitStack()
    try:
        with _quiet_stderr():   # libmpg123 prints probing notes to fd 2 on non-audio input
            sf = stack.enter_context(soundfile.SoundFile(path))
        with path.open("rb") as f:
            head = f.read(_HEAD_BYTES)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        stack.close()
        raise LyraError(f"{path}: not a readable audio file ({_reason(exc)})") from None
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
        with _quiet_stderr():
            sf = stack.enter_context(soundfile.SoundFile(source, closefd=False))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        stack.close()
        raise LyraError(f"{name}: not readable audio ({_reason(exc)})") from None
    except BaseException:
        stack.close()
        raise
    return _source(sf, name, stack, bytes(head))   # libsndfile has read the header: it is in `head`


def _source(sf: soundfile.SoundFile, name: str, stack: contextlib.ExitStack, head: bytes) -> AudioSource:
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


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C libraries' chatter) for the duration; Python's own
    sys.stderr is unaffected if it is not fd 2 (as under pytest's capture)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _reason(exc: BaseException) -> str:
    """libsndfile's own words for `exc` (its ``error_string``), else its message's first line."""
    reason = (getattr(exc, "error_string", None) or first_line(exc)).strip().rstrip(".")
    if reason.startswith("File does not exist or is not a regular file"):
        return "unrecognised or damaged audio data"   # libsndfile's message after a failed MP3 probe
    return reason or type(exc).__name__


def _write_reason(exc: BaseException, sink: object) -> str:
    """Why libsndfile could not write: for its generic "System error", the OS's own message
    (disk full, file too large), which libsndfile keeps per file."""
    reason = _reason(exc)
    if getattr(exc, "code", None) == 2 and isinstance(sink, soundfile.SoundFile):   # SFE_SYSTEM
        with contextlib.suppress(Exception):   # (soundfile has no public call for it)
            detail = soundfile._ffi.string(soundfile._snd.sf_strerror(sink._file)).decode()
            reason = detail.split(":", 1)[-1].strip().rstrip(".") or reason
    return reason


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


# ---------------------------------------------------------------------------------------
# Channels and sample rate
# ---------------------------------------------------------------------------------------
def check_channels(have: int, want: int, downmix: bool, name: str) -> None:
    """Raise unless `have` channels can become `want` (see `map_channels`)."""
    if have == want or have == 1:
        return
    if have > want and downmix:
        return
    if have > want:
        raise LyraError(
            f"{name}: has {have} channels but the model takes {want}; pass --downmix to mix them down"
        )
    raise LyraError(f"{name}: has {have} channels; the model takes {want} (or mono, which is duplicated)")


def mix_channels(x: torch.Tensor, want: int, downmix: bool) -> torch.Tensor:
    """[C, n] -> [C or 1, n]: the downmix (mean of all channels) when asked and needed."""
    if x.shape[0] > want and downmix:
        return x.mean(dim=0, keepdim=True)   # [C, n] -> [1, n]
    return x


def expand_channels(x: torch.Tensor, want: int) -> torch.Tensor:
    """[1 or want, n] -> [want, n]: mono is duplicated."""
    return x.expand(want, -1) if x.shape[0] == 1 and want > 1 else x


def resampled_length(length: int, orig: int, new: int) -> int:
    """Samples `resample` returns for `length` input samples."""
    g = math.gcd(orig, new)
    return math.ceil(length * (new // g) / (orig // g))


def resample(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """[..., T] at `orig` Hz -> [..., resampled_length(T)] at `new` Hz (torchaudio's sinc)."""
    if orig == new:
        return x
    import torchaudio.functional

    _check_ratio(orig, new)
    return torchaudio.functional.resample(x, orig, new)


def resample_stream(blocks: Iterator[torch.Tensor], orig: int, new: int) -> Iterator[torch.Tensor]:
    """`resample` over a stream of [C, n] blocks; the concatenation equals resampling the whole.

    torchaudio's resampler is a polyphase filter: with g = gcd, each group of new/g outputs
    depends on one group of orig/g inputs plus `width` samples either side, so groups are the
    steps of an `OverlapStream`.
    """
    if orig == new:
        yield from blocks
        return
    _check_ratio(orig, new)
    g = math.gcd(orig, new)
    in_step, out_step = orig // g, new // g
    steps = math.ceil(_resample_width(in_step, out_step) / in_step)
    chunk = max(1, math.ceil(orig / in_step))   # about one second of input per segment

    def run(segment: torch.Tensor, keep: slice) -> torch.Tensor:
        stop = None if keep.stop is None else keep.stop * out_step
        return resample(segment, orig, new)[..., keep.start * out_step:stop]

    stream = OverlapStream(run, in_step, Context(steps, steps), chunk)
    yield from run_stream(stream, blocks)


def _resample_width(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> int:
    """torchaudio's sinc kernel half-width in input samples (for coprime orig:new)."""
    return math.ceil(lowpass_filter_width * orig / (min(orig, new) * rolloff))


def _check_ratio(orig: int, new: int) -> None:
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    if n * (o + 2 * _resample_width(o, n)) > _MAX_RESAMPLE_KERNEL:
        raise LyraError(f"cannot resample {orig} Hz to {new} Hz: the rates' ratio ({o}:{n}) is too irregular")


def conform(source: AudioSource, sample_rate: int, channels: int, downmix: bool = False,
            block_frames: int = BLOCK_FRAMES) -> Iterator[torch.Tensor]:
    """The source's blocks as [channels, n] float32 at `sample_rate` (streamed)."""
    check_channels(source.channels, channels, downmix, source.name)
    mixed = (mix_channels(b, channels, downmix) for b in source.blocks(block_frames))
    for block in resample_stream(mixed, source.sample_rate, sample_rate):
        yield expand_channels(block, channels)


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
    x = resample(x, info.sample_rate, sample_rate)                  # [C', T_src] -> [C', T]
    return expand_channels(x, channels).contiguous(), info


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------
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
                # removed the temporary (`lyra.atomic.remove_temporaries`) cannot see it come back.
                fd = os.open(tmp, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
                self._sink = self._stack.enter_context(soundfile.SoundFile(
                    fd, "w", self.sample_rate, self.channels, self.subtype, format=self.format, closefd=True))
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            self._stack.close()
            raise LyraError(f"{self.path}: cannot write audio ({_reason(exc)})") from None
        except BaseException:
            self._stack.close()
            raise
        return self

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
            raise LyraError(f"{self.path}: cannot write audio ({_write_reason(exc, self._sink)})") from None
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
            raise LyraError(f"{self.path}: cannot write audio ({_write_reason(exc, self._sink)})") from None

    def _stream(self) -> BinaryIO | None:
        """Where a stream goes: stdout for "-", the opened path for a pipe, socket or device
        (which libsndfile could not seek in, and which must not be replaced); else None."""
        if self.path == "-":
            return sys.stdout.buffer
        try:
            mode = os.stat(self.path).st_mode
        except OSError:
            return None
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
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


class _WavStream:
    """A WAV written front to back (no seeking): for stdout, where libsndfile cannot."""

    _FORMATS = {"PCM_16": (1, 16), "PCM_24": (1, 24), "FLOAT": (3, 32)}

    def __init__(self, f: BinaryIO, sample_rate: int, channels: int, subtype: str, frames: int | None) -> None:
        self.f, self.subtype = f, subtype
        tag, bits = self._FORMATS[subtype]
        block_align = channels * bits // 8
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
