"""Integer codes packed at their bit width: how a `.lyra` file of a discrete bottleneck stores
its [Q, n] codes (Q quantisers, n frames, each code in 0..K-1 for a codebook of K entries).

Each code takes ``bits_per_code(K) = ceil(log2 K)`` bits (K = 1024: 10; K = 1000: 10; K = 2: 1).
Codes are laid out frame-major (the Q codes of frame 0, then frame 1, ...) into one bit stream,
little-endian at both levels: bit 0 of a code comes first, and stream bit i is bit i % 8 of
byte i // 8. The stream is padded with zero bits to a whole byte at its end only (frames are
not byte-aligned), so n frames take ``ceil(n * Q * bits / 8)`` bytes. Vectorised with numpy:

    data = pack_codes(codes, K)                # [Q, n] integer tensor -> bytes
    codes = unpack_codes(data, K, n, Q)        # bytes -> [Q, n] int64
"""

from __future__ import annotations

import numpy as np
import torch

from lyra.core.errors import LyraError

MAX_CODEBOOK_SIZE = 1 << 24      # 24 bits per code at most
MAX_QUANTIZERS = 1024            # code rows per frame at most
_WORD = 32                       # codes are handled as little-endian uint32 words


def bits_per_code(codebook_size: int) -> int:
    """ceil(log2 K) in exact integers: the bits one code of a K-entry codebook takes (K >= 2)."""
    return (codebook_size - 1).bit_length()


def packed_bytes(frames: int, num_quantizers: int, codebook_size: int) -> int:
    """Bytes that `frames` frames of `num_quantizers` codes pack into (the last byte padded)."""
    return -(-frames * num_quantizers * bits_per_code(codebook_size) // 8)


def check_codebook(codebook_size: object, num_quantizers: object) -> None:
    """Refuse (one line naming the header key) a codebook size outside 2..2^24 or a quantiser
    count outside 1..1024."""
    for key, value, most in (("codebook_size", codebook_size, MAX_CODEBOOK_SIZE),
                             ("num_quantizers", num_quantizers, MAX_QUANTIZERS)):
        least = 2 if key == "codebook_size" else 1
        if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
            raise LyraError(f"header {key}: expected an integer in {least}..{most:,} for a codes file, got {value!r}")


def pack_codes(codes: torch.Tensor, codebook_size: int, first_frame: int = 0) -> bytes:
    """[Q, n] integer codes in 0..K-1 -> their packed bytes (see the module docstring).
    A code out of range is refused naming its quantiser and frame (counted from `first_frame`)."""
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise LyraError(f"expected integer codes, got a {str(codes.dtype).removeprefix('torch.')} tensor")
    values = codes.detach().cpu().to(torch.int64).T.contiguous().numpy()       # [Q, n] -> [n, Q]
    bad = (values < 0) | (values >= codebook_size)
    if bad.any():
        raise _out_of_range(values, bad, codebook_size, first_frame)
    bits = bits_per_code(codebook_size)
    words = values.astype("<u4").reshape(-1, 1).view(np.uint8)                 # [n*Q, 4] bytes of each code
    stream = np.unpackbits(words, axis=1, bitorder="little")[:, :bits]         # [n*Q, 32] -> [n*Q, bits]
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()        # zero-padded to a byte


def unpack_codes(data: bytes, codebook_size: int, frames: int, num_quantizers: int,
                 first_frame: int = 0) -> torch.Tensor:
    """Inverse of `pack_codes`: packed bytes -> [Q, frames] int64. Refuses (one line) a payload
    of the wrong size, padding bits that are not zero, and codes of K or more."""
    bits, count = bits_per_code(codebook_size), frames * num_quantizers
    if len(data) != packed_bytes(frames, num_quantizers, codebook_size):
        raise LyraError(f"{len(data)} bytes of codes for {frames} frames of {num_quantizers} codes of {bits} bits")
    stream = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")   # [8 * bytes]
    if stream[count * bits:].any():
        raise LyraError("the padding bits after the last code are not zero")
    words = np.zeros((count, _WORD), np.uint8)
    words[:, :bits] = stream[:count * bits].reshape(count, bits)               # [n*Q, bits] -> [n*Q, 32]
    values = np.packbits(words, axis=1, bitorder="little").view("<u4").reshape(frames, num_quantizers)
    bad = values >= codebook_size                                              # [n, Q]
    if bad.any():
        raise _out_of_range(values, bad, codebook_size, first_frame)
    return torch.from_numpy(values.astype(np.int64).T.copy())                  # [n, Q] -> [Q, n]


def _out_of_range(values: np.ndarray, bad: np.ndarray, codebook_size: int, first_frame: int) -> LyraError:
    """The error for the first code flagged in `bad` ([n, Q], like `values`)."""
    frame, row = np.argwhere(bad)[0]
    return LyraError(f"code {values[frame, row]} (quantizer {row}, frame {first_frame + frame}) is outside "
                     f"0..{codebook_size - 1} of a {codebook_size}-entry codebook")
