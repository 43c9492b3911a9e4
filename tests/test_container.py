"""The `.lyra` container: round trips per dtype, streaming (no seeking), and every way a file
can be damaged giving a one-line error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch

from lyra import container
from lyra.container import MAGIC, Header, LatentReader, LatentWriter, read_lyra, write_lyra
from lyra.errors import LyraError

HOP = 2048


def header(dtype: str = "float16", latent_dim: int = 8) -> Header:
    return Header(sample_rate=44100, channels=2, hop_length=HOP, latent_dim=latent_dim, dtype=dtype,
                  model_fingerprint="0123456789abcdef", source_sample_rate=48000, source_channels=1)


def encode_bytes(latents: torch.Tensor, dtype: str = "float16", blocks: int = 1, num_samples: int | None = None) -> bytes:
    buf = io.BytesIO()
    writer = LatentWriter(buf, header(dtype, latents.shape[0]))
    for part in latents.tensor_split(blocks, dim=-1):
        writer.write(part)
    frames = latents.shape[-1]
    writer.finish(num_samples or frames * HOP - 100, 12345)
    return buf.getvalue()


def decode_bytes(data: bytes) -> tuple[Header, torch.Tensor, container.Trailer]:
    reader = LatentReader(io.BytesIO(data), "x.lyra")
    latents = reader.read_all()
    return reader.header, latents, reader.trailer


class NoSeek(io.RawIOBase):
    """A pipe-like sink/source: no seek, no tell."""

    def __init__(self, data: bytes = b"") -> None:
        self.data, self.pos, self.out = data, 0, bytearray()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b) -> int:
        self.out += bytes(b)
        return len(b)

    def read(self, n: int = -1) -> bytes:
        n = min(n, 7) if n > 0 else 7      # trickle: at most 7 bytes per read, like a slow pipe
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk

    def seek(self, *a):
        raise io.UnsupportedOperation("seek")

    def tell(self):
        raise io.UnsupportedOperation("tell")


# ---------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------
def test_float32_round_trip_is_exact_and_keeps_header_and_lengths():
    z = torch.randn(8, 37)
    h, out, trailer = decode_bytes(encode_bytes(z, "float32", blocks=3, num_samples=36 * HOP + 5))
    assert torch.equal(out, z)
    assert h == header("float32")
    assert trailer == container.Trailer(37, 36 * HOP + 5, 12345)


@pytest.mark.parametrize("dtype, reference", [
    ("float16", lambda z: z.half().float()),
    ("bfloat16", lambda z: z.bfloat16().float()),
])
def test_half_precision_storage_equals_torch_rounding(dtype, reference):
    z = torch.randn(8, 50) * 3
    _, out, _ = decode_bytes(encode_bytes(z, dtype, blocks=4))
    assert torch.equal(out, reference(z))


def test_int8_storage_uses_a_per_frame_scale():
    z = torch.randn(8, 40) * torch.logspace(-3, 2, 40)     # frames of very different scales
    z[:, 5] = 0.0                                           # an all-zero frame
    _, out, _ = decode_bytes(encode_bytes(z, "int8"))
    # independent reference: numpy absmax quantisation per frame
    ref = np.zeros_like(z.numpy())
    for f in range(z.shape[1]):
        col = z[:, f].numpy()
        scale = np.float32(np.abs(col).max() / 127)
        ref[:, f] = 0 if scale == 0 else np.clip(np.round(col / scale), -127, 127) * scale
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-12)
    err = (out - z).abs() / z.abs().amax(dim=0).clamp_min(1e-30)
    assert err.max() <= 0.5 / 127 + 1e-6                    # at most half a step of each frame's scale
    assert torch.equal(out[:, 5], torch.zeros(8))


def test_bitrate_of_the_default_model_in_float16_is_22_05_kbit_per_second():
    h = Header(44100, 2, 2048, 64, "float16", "f", 44100, 2)
    assert h.bitrate == pytest.approx(64 * 16 * 44100 / 2048)
    assert h.bitrate / 1000 == pytest.approx(22.05)
    assert Header(44100, 2, 2048, 64, "int8", "f", 44100, 2).bitrate == pytest.approx((64 * 8 + 32) * 44100 / 2048)


def test_written_to_a_pipe_and_read_from_a_trickling_pipe():
    z = torch.randn(8, 3000)          # more than one chunk's worth per write (split at 1024)
    sink = NoSeek()
    writer = LatentWriter(sink, header("float32"))
    writer.write(z[:, :2500])
    writer.write(z[:, 2500:])
    writer.finish(3000 * HOP, 1)
    reader = LatentReader(NoSeek(bytes(sink.out)), "<stdin>")
    parts = list(reader)
    assert max(p.shape[-1] for p in parts) <= container.MAX_CHUNK_FRAMES
    assert torch.equal(torch.cat(parts, dim=-1), z)
    assert reader.trailer.num_frames == 3000


def test_nothing_reaches_a_pipe_before_the_first_latents():
    """So `lyra encode - -` on input that fails before any audio sends no half-file downstream."""
    sink = NoSeek()
    writer = LatentWriter(sink, header())
    assert bytes(sink.out) == b""
    writer.write(torch.randn(8, 2))
    assert bytes(sink.out).startswith(MAGIC)


def test_same_latents_give_byte_identical_files():
    z = torch.randn(8, 20)
    assert encode_bytes(z) == encode_bytes(z.clone())


def test_write_lyra_and_read_lyra_use_files(tmp_path):
    z = torch.randn(8, 9)
    path = tmp_path / "a.lyra"
    write_lyra(path, header("float32"), z, 9 * HOP, 9 * HOP)
    h, out, t = read_lyra(path)
    assert torch.equal(out, z) and t.num_samples == 9 * HOP and h.dtype == "float32"
    assert path.read_bytes().startswith(MAGIC)


def test_unknown_ancillary_chunks_are_skipped_but_unknown_critical_ones_are_errors():
    data = encode_bytes(torch.randn(8, 4), "float32")
    first_chunk = data.index(b"DATA")

    def chunk(tag: bytes, payload: bytes) -> bytes:
        head = struct.pack("<4sI", tag, len(payload))
        return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))

    with_note = data[:first_chunk] + chunk(b"note", b"hello") + data[first_chunk:]
    _, out, _ = decode_bytes(with_note)
    assert out.shape == (8, 4)
    with pytest.raises(LyraError, match="unknown type"):
        decode_bytes(data[:first_chunk] + chunk(b"NOTE", b"hello") + data[first_chunk:])


# ---------------------------------------------------------------------------------------
# Damage
# ---------------------------------------------------------------------------------------
def test_every_truncation_is_a_one_line_error():
    data = encode_bytes(torch.randn(8, 30), blocks=3)
    for n in range(len(data)):
        with pytest.raises(LyraError) as info:
            decode_bytes(data[:n])
        message = str(info.value)
        assert "\n" not in message and message.startswith("x.lyra: ")
        assert ("truncated" in message) or ("not a .lyra" in message) or ("empty" in message), (n, message)


def test_every_corrupted_byte_is_detected():
    data = encode_bytes(torch.randn(8, 6), blocks=2)
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x5A
        with pytest.raises(LyraError) as info:
            decode_bytes(bytes(damaged))
        assert "\n" not in str(info.value)


def test_a_corrupted_chunk_names_the_chunk():
    data = bytearray(encode_bytes(torch.randn(8, 30), "float32", blocks=3))
    second = data.index(b"DATA", data.index(b"DATA") + 1)
    data[second + 20] ^= 0xFF
    with pytest.raises(LyraError, match=r"corrupted \.lyra file \(chunk 2, at frame 10 fails its CRC32 check\)"):
        decode_bytes(bytes(data))


@pytest.mark.parametrize("data, expected", [
    (b"", "empty input, not a .lyra file"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a .lyra file"),
    (b"\x89LYRA\r\n\x1a\n" + struct.pack("<HI", 2, 2) + b"{}", "version 2 is newer than this Lyra reads"),
])
def test_not_a_lyra_file(data, expected):
    with pytest.raises(LyraError, match=expected):
        decode_bytes(data)


def test_data_after_the_end_marker_is_an_error():
    with pytest.raises(LyraError, match="data after the end marker"):
        decode_bytes(encode_bytes(torch.randn(8, 3)) + b"\x00")


def test_header_must_describe_the_model():
    text = b'{"sample_rate": 44100}'
    head = MAGIC + struct.pack("<HI", 1, len(text)) + text
    with pytest.raises(LyraError, match="the header has no 'channels'"):
        decode_bytes(head + struct.pack("<I", zlib.crc32(head)))


def test_float16_overflow_is_an_error_not_infinity():
    z = torch.randn(8, 3)
    z[2, 1] = 1e6
    with pytest.raises(LyraError, match="exceed the float16 range"):
        encode_bytes(z, "float16")
    _, out, _ = decode_bytes(encode_bytes(z, "bfloat16"))
    assert torch.isfinite(out).all()


def test_finish_checks_the_frame_count_against_the_length():
    writer = LatentWriter(io.BytesIO(), header())
    writer.write(torch.randn(8, 3))
    with pytest.raises(LyraError, match="need 4 latent frames, 3 were written"):
        writer.finish(3 * HOP + 1, 1)
