"""The `.lyra` latent file: a header, CRC32-checked chunks of latent frames (each linked to the
one before it), an end marker. Frames are float latents (`lyra.audio.floats`) or the integer
codes of a discrete bottleneck packed at their bit width (`lyra.audio.codes`). It is written
strictly front to back, so a writer on a pipe never seeks back; a truncated, corrupted,
reordered or spliced file is a one-line `LyraError`, never garbage latents. The byte layout and every check: docs/lyra-format.md.

    with atomic_write("x.lyra") as f:
        w = LatentWriter(f, header, "x.lyra")
        w.write(frames)                       # [D, n] floats (or [Q, n] codes), as often as needed
        w.finish(num_samples, source_num_samples)
    with open("x.lyra", "rb") as f:
        r = LatentReader(f, "x.lyra")
        for frames in r: ...                  # [D, n] float32 (or [Q, n] int64); r.trailer is set at the end

A codes file's header: ``Header(..., dtype=CODES, codebook_size=K, num_quantizers=Q,
bottleneck="rvq", bottleneck_options={...})``.
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch

from lyra.audio.codes import bits_per_code, check_codebook, pack_codes, packed_bytes, unpack_codes
from lyra.audio.floats import DTYPES, check_dtype, frame_bytes, pack, stored, unpack  # noqa: F401 (also this module's API)
from lyra.audio.resample import resampled_length
from lyra.core.limits import MAX_SAMPLE_RATE
from lyra.core.atomic import atomic_write
from lyra.core.errors import LyraError
from lyra.core.paths import input_kind
from lyra.core.streams import read_upto, write_all

MAGIC = b"\x89LYRA\r\n\x1a\n"
VERSION = 3                      # what is written
READ_VERSIONS = (1, 2, 3)        # what is read
CODES = "codes"                  # the header dtype of integer codes (version 3 on)
CONTINUOUS = "vae"               # the bottleneck of float latents, and of every file before version 3
MAX_HEADER_BYTES = 1 << 16
MAX_CHUNK_BYTES = 1 << 26
MAX_CHUNK_FRAMES = 1024          # a writer splits longer blocks
_DATA, _END = b"DATA", b"END "
_PREFIX = struct.Struct("<HI")   # version, header size
_CHUNK = struct.Struct("<4sI")   # tag, payload size
_CRC = struct.Struct("<I")
_TRAILER = struct.Struct("<QQQ")  # frames, samples, source samples
_FRAMES = struct.Struct("<I")     # version 1's DATA prefix: frames
_PLACE = struct.Struct("<QII")    # version 2's DATA prefix: first frame, link, frames
_LINK = struct.Struct("<I")       # version 2's END suffix: link


@dataclass(frozen=True)
class Header:
    """What a reader needs before the first latent: the model's shape and who wrote it. A codes
    file (dtype `CODES`) also says its codebook size K and code rows per frame Q."""

    sample_rate: int
    channels: int
    hop_length: int
    latent_dim: int           # the decoder's input channels (for codes too)
    dtype: str                # a name of DTYPES, or CODES
    model_fingerprint: str
    source_sample_rate: int
    source_channels: int
    bottleneck: str = CONTINUOUS                                     # its registry name
    bottleneck_options: dict[str, Any] = field(default_factory=dict)  # a JSON object
    codebook_size: int = 0    # K (codes only): codes are 0..K-1
    num_quantizers: int = 0   # Q (codes only): code rows per frame

    def __post_init__(self) -> None:
        for key in ("sample_rate", "channels", "hop_length", "latent_dim", "source_sample_rate", "source_channels"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise LyraError(f"header {key}: expected a positive integer, got {value!r}")
            if key.endswith("sample_rate") and value > MAX_SAMPLE_RATE:
                raise LyraError(f"header {key}: {value} Hz is above the {MAX_SAMPLE_RATE} Hz Lyra handles")
        if not isinstance(self.dtype, str) or self.dtype not in (*DTYPES, CODES):
            raise LyraError(f"header dtype: expected one of {', '.join((*DTYPES, CODES))}, got {self.dtype!r}")
        if not isinstance(self.model_fingerprint, str) or not self.model_fingerprint:
            raise LyraError(f"header model_fingerprint: expected a string, got {self.model_fingerprint!r}")
        name = self.bottleneck
        if not isinstance(name, str) or not 0 < len(name) <= 100 or not name.isprintable():
            raise LyraError(f"header bottleneck: expected a component name, got {name!r:.120}")
        try:   # stored as JSON gives it back: lists for tuples, no NaN
            options = json.loads(json.dumps(self.bottleneck_options, sort_keys=True, allow_nan=False))
        except (TypeError, ValueError, RecursionError):
            options = None
        if not isinstance(options, dict):
            raise LyraError(f"header bottleneck_options: expected a JSON object, got {self.bottleneck_options!r:.120}")
        object.__setattr__(self, "bottleneck_options", options)
        if self.codes:
            check_codebook(self.codebook_size, self.num_quantizers)
            if name == CONTINUOUS:
                raise LyraError(f"header bottleneck: {CONTINUOUS!r} stores float latents, not {CODES}")
        elif (self.codebook_size, self.num_quantizers) != (0, 0):
            raise LyraError(f"header codebook_size/num_quantizers: only a {CODES} file has them (this one is {self.dtype})")

    @property
    def codes(self) -> bool:
        """Whether the file holds integer codes ([Q, n] int64) rather than float latents."""
        return self.dtype == CODES

    @property
    def rows(self) -> int:
        """Rows of every tensor written and read: Q for codes, else latent_dim."""
        return self.num_quantizers if self.codes else self.latent_dim

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def bits_per_frame(self) -> int:
        """Stored bits per latent frame: Q codes of ceil(log2 K) bits, or float values plus, for
        int8, the frame's float32 scale."""
        if self.codes:
            return self.num_quantizers * bits_per_code(self.codebook_size)
        return self.latent_dim * DTYPES[self.dtype] + (32 if self.dtype == "int8" else 0)

    def payload_bytes(self, frames: int) -> int:
        """Bytes of a DATA chunk's `frames` frames (after its placement prefix)."""
        if self.codes:
            return packed_bytes(frames, self.num_quantizers, self.codebook_size)
        return frames * frame_bytes(self.dtype, self.latent_dim)

    @property
    def bitrate(self) -> float:
        """Latent payload in bit/s (container overhead excluded)."""
        return self.bits_per_frame * self.frame_rate

    def to_json(self) -> bytes:
        fields = asdict(self)
        if not self.codes:     # a float file has no codebook
            del fields["codebook_size"], fields["num_quantizers"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Trailer:
    """What is only known at the end: the lengths."""

    num_frames: int
    num_samples: int          # at header.sample_rate: decoded audio is cropped to this
    source_num_samples: int   # at header.source_sample_rate: the input file's length


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------
class LatentWriter:
    """Writes a `.lyra` stream front to back to a binary file object (a file or a pipe).

    Every byte is written or an `OSError` propagates (a closed pipe: `BrokenPipeError`).
    """

    def __init__(self, f: BinaryIO, header: Header, name: str = "<output>") -> None:
        self.f, self.header, self.name = f, header, name
        self.frames = 0
        text = header.to_json()
        head = MAGIC + _PREFIX.pack(VERSION, len(text)) + text
        self._link = zlib.crc32(head)    # the CRC32 the next DATA chunk (or END) links to
        # Sent with the first chunk: on a pipe, input that fails before any latent (an empty
        # or unreadable file) then sends nothing at all.
        self._pending = head + _CRC.pack(self._link)

    def write(self, latents: torch.Tensor) -> None:
        """Append [D, n] latent frames, or [Q, n] integer codes for a codes header (split into
        chunks of at most MAX_CHUNK_FRAMES)."""
        h = self.header
        if latents.dim() != 2 or latents.shape[0] != h.rows:
            raise LyraError(f"{self.name}: expected {'codes' if h.codes else 'latents'} of shape [{h.rows}, frames], "
                            f"got {list(latents.shape)}")
        for start in range(0, latents.shape[-1], MAX_CHUNK_FRAMES):
            part = latents[:, start:start + MAX_CHUNK_FRAMES]                 # [D, n'] (or [Q, n'])
            try:
                values = (pack_codes(part, h.codebook_size, self.frames) if h.codes else pack(part, h.dtype))
            except LyraError as exc:
                raise LyraError(f"{self.name}: {exc}") from None
            place = _PLACE.pack(self.frames, self._link, part.shape[-1])
            self._link = self._chunk(_DATA, place + values)
            self.frames += part.shape[-1]

    def finish(self, num_samples: int, source_num_samples: int) -> Trailer:
        """Write the end marker with the lengths; the stream is complete after this."""
        if self.frames != _frames_for(num_samples, self.header.hop_length):
            raise LyraError(f"{self.name}: {num_samples} samples need {_frames_for(num_samples, self.header.hop_length)} "
                            f"latent frames, {self.frames} were written")
        trailer = Trailer(self.frames, num_samples, source_num_samples)
        lengths = _TRAILER.pack(trailer.num_frames, trailer.num_samples, trailer.source_num_samples)
        self._chunk(_END, lengths + _LINK.pack(self._link))
        return trailer

    def _chunk(self, tag: bytes, payload: bytes) -> int:
        """Write one chunk; returns its CRC32."""
        head = _CHUNK.pack(tag, len(payload))
        crc = zlib.crc32(payload, zlib.crc32(head))
        self._write(head + payload + _CRC.pack(crc))
        return crc

    def _write(self, data: bytes) -> None:
        data, self._pending = self._pending + data, b""
        write_all(self.f, data)    # all of it, or OSError (BrokenPipeError on a closed pipe)
        self.f.flush()


def write_lyra(path: str | Path, header: Header, latents: torch.Tensor, num_samples: int,
               source_num_samples: int) -> Trailer:
    """Write a whole [D, F] latent tensor as a `.lyra` file (atomically; ``"-"`` is stdout)."""
    with atomic_write(path) as f:
        writer = LatentWriter(f, header, str(path))
        writer.write(latents)
        return writer.finish(num_samples, source_num_samples)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------
class LatentReader:
    """Reads a `.lyra` stream front to back; iterate for [D, n] float32 latent chunks, or, when
    `header.codes`, [Q, n] int64 code chunks.

    The header is read and checked on construction (`version` is the file's format version).
    `trailer` is set once iteration reaches the end marker, after checking it against the
    frames seen. From version 2 on, every DATA chunk must start at the frame where the one
    before it ended and link to that chunk's CRC32 (the first one to the header's).
    """

    def __init__(self, f: BinaryIO, name: str = "<input>") -> None:
        self.f, self.name = f, name
        self.trailer: Trailer | None = None
        self.chunks = 0
        self.frames = 0
        self.bytes_read = 0
        magic = self._read_some(len(MAGIC))
        if not magic:
            raise LyraError(f"{name}: empty input, not a .lyra file")
        if magic != MAGIC:
            raise LyraError(f"{name}: not a .lyra file (it does not start with the .lyra magic bytes)")
        prefix = self._read(_PREFIX.size, "the header")
        version, size = _PREFIX.unpack(prefix)
        if version not in READ_VERSIONS:
            newer = "newer than" if version > VERSION else "not one"
            raise LyraError(f"{name}: .lyra format version {version} is {newer} this Lyra reads "
                            f"({', '.join(map(str, READ_VERSIONS))})" + ("; upgrade lyra" if version > VERSION else ""))
        self.version: int = version
        if size > MAX_HEADER_BYTES:
            raise LyraError(f"{name}: corrupted .lyra file (header size {size} is implausible)")
        text = self._read(size, "the header")
        (crc,) = _CRC.unpack(self._read(_CRC.size, "the header"))
        if crc != zlib.crc32(magic + prefix + text):
            raise LyraError(f"{name}: corrupted .lyra file (the header fails its CRC32 check)")
        self.header = _parse_header(text, name, version)
        self._link = crc             # what the next DATA chunk (or END) must link to
        self._after = "the header"   # ... described for messages

    def __iter__(self) -> Iterator[torch.Tensor]:
        h = self.header
        prefix = _FRAMES if self.version == 1 else _PLACE
        while True:
            where = f"chunk {self.chunks + 1}, at frame {self.frames}"
            head = self._read_some(_CHUNK.size)
            if not head:
                raise LyraError(f"{self.name}: truncated .lyra file (no end marker after {self.frames} frames)")
            if len(head) < _CHUNK.size:
                raise LyraError(f"{self.name}: truncated .lyra file (cut off in {where})")
            tag, size = _CHUNK.unpack(head)
            if size > MAX_CHUNK_BYTES:
                raise LyraError(f"{self.name}: corrupted .lyra file ({where} claims {size} bytes)")
            payload = self._read(size, where)
            (crc,) = _CRC.unpack(self._read(_CRC.size, where))
            if crc != zlib.crc32(payload, zlib.crc32(head)):
                raise LyraError(f"{self.name}: corrupted .lyra file ({where} fails its CRC32 check)")
            self.chunks += 1
            if tag == _DATA:
                if size < prefix.size:
                    raise LyraError(f"{self.name}: corrupted .lyra file ({where} is too short)")
                if self.version == 1:
                    (n,) = _FRAMES.unpack_from(payload)
                else:
                    first, link, n = _PLACE.unpack_from(payload)
                    self._check_place(first, link, where)
                if size != prefix.size + h.payload_bytes(n):
                    raise LyraError(f"{self.name}: corrupted .lyra file ({where}: {size} bytes for {n} frames)")
                if h.codes:
                    values = self._codes(payload[prefix.size:], n, where)               # [Q, n]
                else:
                    values = unpack(payload[prefix.size:], h.dtype, n, h.latent_dim)   # [D, n]
                if not h.codes and not torch.isfinite(values).all():
                    raise LyraError(f"{self.name}: corrupted .lyra file ({where} holds values that are not "
                                    f"finite; is its dtype really {h.dtype}?)")
                self.frames += n
                self._link, self._after = crc, f"chunk {self.chunks}"
                yield values
            elif tag == _END:
                self._end(payload, where)
                return
            elif not tag[:1].islower():
                raise LyraError(f"{self.name}: unsupported .lyra file ({where} has unknown type {tag!r})")

    def read_all(self) -> torch.Tensor:
        """Every latent frame: [D, F] float32, or [Q, F] int64 codes (and `trailer` set)."""
        parts = list(self)
        empty = torch.zeros(self.header.rows, 0, dtype=torch.int64 if self.header.codes else torch.float32)
        return torch.cat(parts, dim=-1) if parts else empty

    def _codes(self, data: bytes, n: int, where: str) -> torch.Tensor:
        h = self.header
        try:
            return unpack_codes(data, h.codebook_size, n, h.num_quantizers, self.frames)
        except LyraError as exc:
            raise LyraError(f"{self.name}: corrupted .lyra file ({where}: {exc})") from None

    def _check_place(self, first: int, link: int, where: str) -> None:
        """A version-2 DATA chunk must continue the frames, and the chain, where they stand."""
        if first != self.frames:
            raise LyraError(f"{self.name}: corrupted .lyra file ({where} holds frames from {first} on, so "
                            "chunks are out of order, duplicated or missing)")
        if link != self._link:
            raise LyraError(f"{self.name}: corrupted .lyra file ({where} does not continue {self._after}: "
                            + ("the header was altered, or the chunk comes from another .lyra file)"
                               if self._after == "the header" else "one of them comes from another .lyra file)"))

    def _end(self, payload: bytes, where: str) -> None:
        size = _TRAILER.size + (0 if self.version == 1 else _LINK.size)
        if len(payload) != size:
            raise LyraError(f"{self.name}: corrupted .lyra file (end marker of {len(payload)} bytes)")
        trailer = Trailer(*_TRAILER.unpack_from(payload))
        hop = self.header.hop_length
        if trailer.num_frames != self.frames:
            raise LyraError(f"{self.name}: corrupted .lyra file (end marker says {trailer.num_frames} frames, "
                            f"found {self.frames})")
        if self.version > 1 and _LINK.unpack_from(payload, _TRAILER.size)[0] != self._link:
            raise LyraError(f"{self.name}: corrupted .lyra file (the end marker does not continue "
                            f"{self._after}: one of them comes from another .lyra file)")
        if trailer.num_samples < 1 or _frames_for(trailer.num_samples, hop) != self.frames:
            raise LyraError(f"{self.name}: corrupted .lyra file ({trailer.num_samples} samples do not fit "
                            f"{self.frames} frames of {hop})")
        if self._read_some(1):
            raise LyraError(f"{self.name}: corrupted .lyra file (data after the end marker)")
        self.trailer = trailer

    def _read(self, n: int, where: str) -> bytes:
        """Exactly `n` bytes, or a "truncated" error naming `where`."""
        data = self._read_some(n)
        if len(data) < n:
            raise LyraError(f"{self.name}: truncated .lyra file (cut off in {where})")
        return data

    def _read_some(self, n: int) -> bytes:
        """Up to `n` bytes: fewer only at the end of the input."""
        data = read_upto(self.f.read, n)
        self.bytes_read += len(data)
        return data


def _frames_for(num_samples: int, hop: int) -> int:
    """Latent frames that `num_samples` samples make (the ceiling, in exact integers)."""
    return -(-num_samples // hop)


def source_length(header: Header, trailer: Trailer, name: str) -> int:
    """`trailer.source_num_samples`, checked against the decoded length: encoding resamples the
    source to the model's rate, so the source's length at its rate maps onto `num_samples` (to
    a sample, or one in four million for a length that went through float32 rounding)."""
    n, have = trailer.source_num_samples, trailer.num_samples
    mapped = resampled_length(n, header.source_sample_rate, header.sample_rate)
    if n < 1 or abs(mapped - have) > 2 + have // (1 << 22):
        raise LyraError(f"{name}: corrupted .lyra file (its end marker says the source had {n:,} samples at "
                        f"{header.source_sample_rate} Hz, which do not make its {have:,} samples at "
                        f"{header.sample_rate} Hz)")
    return n


def _parse_header(text: bytes, name: str, version: int = VERSION) -> Header:
    try:
        data = json.loads(text.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):   # ValueError: JSONDecodeError, or an int of 4,300+ digits
        raise LyraError(f"{name}: corrupted .lyra file (the header is not JSON)") from None
    if not isinstance(data, dict):
        raise LyraError(f"{name}: corrupted .lyra file (the header is not a JSON object)")
    # Before version 3 every file held float latents of the "vae" bottleneck, whatever keys
    # it had; from version 3 on the bottleneck is named, and a codes file names its codebook.
    required = [*Header.__dataclass_fields__][:8]    # the keys of every version: sample_rate .. source_channels
    required += ["bottleneck", "bottleneck_options"] if version >= 3 else []
    if version >= 3 and data.get("dtype") == CODES:
        required += ["codebook_size", "num_quantizers"]
    fields: dict[str, Any] = {}
    for key in required:
        if key not in data:
            raise LyraError(f"{name}: corrupted .lyra file (the header has no '{key}')")
        fields[key] = data[key]     # unknown keys are informational and ignored
    if version >= 3:                # a float file may not claim a codebook
        fields.update((key, data[key]) for key in ("codebook_size", "num_quantizers") if key in data)
    if fields["dtype"] == CODES and version < 3:
        raise LyraError(f"{name}: corrupted .lyra file (dtype {CODES} needs format version 3, the file says {version})")
    try:
        return Header(**fields)
    except LyraError as exc:
        raise LyraError(f"{name}: corrupted .lyra file ({exc})") from None


def check_model(header: Header, config: Any, name: str, checkpoint: str) -> None:
    """Refuse a header whose shape is not its model's (`config`: the `ModelConfig` of the
    checkpoint whose fingerprint the header names): a header altered with its CRC redone."""
    for key in ("sample_rate", "channels", "hop_length", "latent_dim", "bottleneck"):
        have, want = getattr(header, key), getattr(config, key, CONTINUOUS)
        if have != want:
            raise LyraError(f"{name}: corrupted .lyra file (its header says {key} {have}, but the model it "
                            f"names, {checkpoint}, has {key} {want})")


def read_lyra(path: str | Path) -> tuple[Header, torch.Tensor, Trailer]:
    """A whole `.lyra` file: (header, latents [D, F] float32 or codes [Q, F] int64, trailer)."""
    with open_lyra(path) as reader:
        latents = reader.read_all()
        return reader.header, latents, reader.trailer


@contextlib.contextmanager
def open_lyra(path: str | Path) -> Iterator[LatentReader]:
    """``with open_lyra(path) as reader``: a `.lyra` file, or standard input for ``"-"``."""
    if str(path) == "-":
        yield LatentReader(sys.stdin.buffer, "<stdin>")
        return
    path = Path(path)
    input_kind(path, "a .lyra file")
    with path.open("rb") as f:
        yield LatentReader(f, str(path))
