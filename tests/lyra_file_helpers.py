"""Taking `.lyra` files apart and putting them back together, written from
docs/lyra-format.md rather than from lyra.audio.container, to damage or craft files in tests."""

from __future__ import annotations

import json
import struct
import zlib

MAGIC = b"\x89LYRA\r\n\x1a\n"


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """(magic .. header CRC, [each chunk's bytes: tag, size, payload, CRC])."""
    assert data[:9] == MAGIC
    (size,) = struct.unpack_from("<I", data, 11)
    at = 15 + size + 4
    head, chunks = data[:at], []
    while at < len(data):
        (n,) = struct.unpack_from("<I", data, at + 4)
        chunks.append(data[at:at + 12 + n])
        at += 12 + n
    return head, chunks


def tag(chunk: bytes) -> bytes:
    return chunk[:4]


def chunk(tag: bytes, payload: bytes) -> bytes:
    head = struct.pack("<4sI", tag, len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))


def header(data: bytes) -> dict:
    (size,) = struct.unpack_from("<I", data, 11)
    return json.loads(data[15:15 + size])


def with_header(data: bytes, relink: bool = False, **changes) -> bytes:
    """`data` with header keys changed and a valid header CRC. With `relink`, every chunk's
    link and CRC is redone too (a fully consistent forgery of a version-2 file; version 1
    has no links)."""
    fields = {**header(data), **changes}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    (version,) = struct.unpack_from("<H", data, 9)
    head = MAGIC + struct.pack("<HI", version, len(text)) + text
    head += struct.pack("<I", zlib.crc32(head))
    _, chunks = split(data)
    return relinked(head, chunks) if relink and version >= 2 else head + b"".join(chunks)


def relinked(head: bytes, chunks: list[bytes]) -> bytes:
    """A version-2 file of these chunks with every DATA/END link (and CRC) made consistent."""
    (link,) = struct.unpack_from("<I", head, len(head) - 4)
    out = [head]
    for c in chunks:
        payload = c[8:-4]
        if tag(c) == b"DATA":
            first, _, n = struct.unpack_from("<QII", payload)
            c = chunk(b"DATA", struct.pack("<QII", first, link, n) + payload[16:])
            (link,) = struct.unpack_from("<I", c, len(c) - 4)
        elif tag(c) == b"END ":
            c = chunk(b"END ", payload[:24] + struct.pack("<I", link))
        out.append(c)
    return b"".join(out)
