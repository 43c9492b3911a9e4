"""Reading a run of frames from a `.lyra` file without reading the rest: the header, then the
chunk heads only (8 bytes each, then a seek) up to the chunks that hold the frames asked for,
whose payloads are read and CRC32-checked. A short crop of a long file reads a few kilobytes.

    header, latents = read_frames("a.lyra", start=100, count=64)   # [D, <= 64] float32

The byte layout is docs/lyra-format.md (versions 1 to 3); the whole-file reader with every
check (the chain of links, the end marker) is `lyra.audio.container.LatentReader`. A chunk
that is read is checked in full; the links between chunks are not followed (a crop does not
see the whole chain), so a file spliced from two files of one model, each chunk intact,
reads without error: `lyra stats`, resuming and decoding check whole files.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Union

import torch

from lyra.audio.container import Header, LatentReader, frame_bytes, unpack
from lyra.core.errors import LyraError

_CHUNK = struct.Struct("<4sI")     # tag, payload size
_V1_DATA = struct.Struct("<I")     # version 1's DATA prefix: frames
_DATA = struct.Struct("<QII")      # version 2 on: first frame, link, frames


def read_frames(path: Union[str, Path], start: int, count: int) -> tuple[Header, torch.Tensor]:
    """(header, frames start..start+count of `path` as [D, n] float32), n < count only where
    the file ends first. Integer codes are refused (`lyra.codec.statistics.refuse_codes`)."""
    name = str(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise LyraError(f"{name}: no such .lyra file (listed in the manifest)") from None
    except OSError as exc:
        raise LyraError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    with f:
        reader = LatentReader(f, name)                 # the header, CRC-checked
        header = reader.header
        if header.dtype == "codes":
            raise LyraError(f"{name}: holds integer codes (a discrete bottleneck); LatentDataset reads float latents")
        prefix = _V1_DATA if reader.version == 1 else _DATA
        per_frame = frame_bytes(header.dtype, header.latent_dim)
        parts, first, end = [], 0, start + count
        while first < end:
            head = f.read(_CHUNK.size)
            if len(head) < _CHUNK.size:
                raise LyraError(f"{name}: truncated .lyra file (cut off after frame {first})")
            tag, size = _CHUNK.unpack(head)
            if tag == b"END ":
                break
            if tag != b"DATA":
                f.seek(size + 4, 1)                    # a chunk readers skip
                continue
            place = f.read(prefix.size)
            if len(place) < prefix.size or size < prefix.size:
                raise LyraError(f"{name}: truncated or corrupted .lyra file (at frame {first})")
            n = prefix.unpack(place)[-1]
            if size != prefix.size + n * per_frame:
                raise LyraError(f"{name}: corrupted .lyra file (a chunk of {size} bytes for {n} frames, at frame {first})")
            if first + n <= start:
                f.seek(size - prefix.size + 4, 1)      # before the crop: not read
            else:
                data = f.read(size - prefix.size)
                crc = f.read(4)
                if len(crc) < 4 or int.from_bytes(crc, "little") != zlib.crc32(place + data, zlib.crc32(head)):
                    raise LyraError(f"{name}: corrupted .lyra file (the chunk at frame {first} fails its CRC32 check)")
                values = unpack(data, header.dtype, n, header.latent_dim)             # [D, n]
                parts.append(values[:, max(0, start - first):end - first])           # [D, n] -> [D, n']
            first += n
    latents = torch.cat(parts, dim=-1) if parts else torch.zeros(header.latent_dim, 0)
    if not torch.isfinite(latents).all():
        raise LyraError(f"{name}: corrupted .lyra file (values that are not finite; is its dtype really {header.dtype}?)")
    return header, latents
