"""A minimal PNG writer (8-bit RGB, no filtering) on zlib, so images need no imaging library.

PNG = signature, then chunks (length, type, data, CRC-32 of type + data): IHDR (size and
format), IDAT (zlib-compressed scanlines, each prefixed with its filter type 0), IEND.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from lyra.core.atomic import atomic_write

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png(rgb: np.ndarray) -> bytes:
    """[H, W, 3] uint8 -> PNG file bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_png needs an [H, W, 3] uint8 array, got {rgb.dtype} {list(rgb.shape)}")
    height, width, _ = rgb.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, RGB, deflate, no filter, no interlace
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)  # [H, 1 + 3W]
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _chunk(b"IEND", b"")


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write [H, W, 3] uint8 pixels as a PNG file, atomically."""
    data = encode_png(rgb)
    with atomic_write(path) as f:
        f.write(data)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
