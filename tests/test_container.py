"""The `.lyra` container: round trips per dtype, streaming (no seeking), and every way a file
can be damaged giving a one-line error."""

from __future__ import annotations

import errno
import io
import itertools
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from lyra.audio import container
from lyra.audio.container import MAGIC, Header, LatentReader, LatentWriter, read_lyra, write_lyra
from lyra.core.errors import LyraError
from lyra_file_helpers import chunk, relinked, split, tag, with_header

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
    (b"\x89LYRA\r\n\x1a\n" + struct.pack("<HI", 4, 2) + b"{}", r"version 4 is newer than this Lyra reads \(1, 2, 3\)"),
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


# ---------------------------------------------------------------------------------------
# Chunk order and membership (format version 2)
# ---------------------------------------------------------------------------------------
def four_chunks(seed: int = 0) -> bytes:
    return encode_bytes(torch.randn(8, 40, generator=torch.Generator().manual_seed(seed)), "float32", blocks=4)


def test_written_files_are_version_3_and_say_so():
    data = four_chunks()
    assert struct.unpack_from("<H", data, 9) == (3,)
    assert LatentReader(io.BytesIO(data), "x.lyra").version == 3


def test_every_swap_of_two_data_chunks_is_detected():
    head, chunks = split(four_chunks())
    data_chunks = [i for i, c in enumerate(chunks) if tag(c) == b"DATA"]
    assert len(data_chunks) == 4
    for i, j in itertools.combinations(data_chunks, 2):
        swapped = list(chunks)
        swapped[i], swapped[j] = chunks[j], chunks[i]
        with pytest.raises(LyraError, match=rf"x\.lyra: corrupted \.lyra file \(chunk {i + 1}, at frame {10 * i} "
                                            rf"holds frames from {10 * j} on, so chunks are out of order"):
            decode_bytes(head + b"".join(swapped))


@pytest.mark.parametrize("k", range(4))
def test_a_duplicated_or_dropped_chunk_is_detected(k):
    head, chunks = split(four_chunks())
    doubled = chunks[:k + 1] + chunks[k:]
    with pytest.raises(LyraError, match=rf"chunk {k + 2}, at frame {10 * (k + 1)} holds frames from {10 * k} on"):
        decode_bytes(head + b"".join(doubled))
    dropped = chunks[:k] + chunks[k + 1:]
    with pytest.raises(LyraError, match="out of order, duplicated or missing" if k < 3 else "end marker says 40 frames, found 30"):
        decode_bytes(head + b"".join(dropped))


@pytest.mark.parametrize("k", range(5))
def test_a_chunk_spliced_in_from_another_file_of_the_same_model_is_detected(k):
    """Same header, same chunking, other latents: only the chain tells the chunks apart. A
    foreign chunk is caught where it fails to continue the chunk before it, or (the first,
    which continues the same header) where the next chunk fails to continue it."""
    a, b = four_chunks(seed=1), four_chunks(seed=2)
    head_a, chunks_a = split(a)
    head_b, chunks_b = split(b)
    assert head_a == head_b
    spliced = chunks_a[:k] + [chunks_b[k]] + chunks_a[k + 1:]
    at = max(k, 1)     # the chunk (0-based) that is caught
    expected = (rf"\(chunk {at + 1}, at frame {10 * at} does not continue chunk {at}: one of them comes from "
                r"another \.lyra file\)$" if k < 4 else
                r"\(the end marker does not continue chunk 4: one of them comes from another \.lyra file\)$")
    with pytest.raises(LyraError, match=expected):
        decode_bytes(head_a + b"".join(spliced))


@pytest.mark.parametrize("changes", [{"dtype": "bfloat16"}, {"source_sample_rate": 44100}, {"channels": 1},
                                     {"model_fingerprint": "fedcba9876543210"}])
def test_a_header_rewritten_with_a_fresh_crc_is_detected(changes):
    data = encode_bytes(torch.randn(8, 30), "float16", blocks=3)
    with pytest.raises(LyraError, match=r"\(chunk 1, at frame 0 does not continue the header: the header was altered"):
        decode_bytes(with_header(data, **changes))


def test_links_follow_the_documented_layout_and_skip_ancillary_chunks():
    data = four_chunks()
    assert relinked(*split(data)) == data     # the helpers' reading of docs/lyra-format.md
    head, chunks = split(data)
    note = chunk(b"note", b"hello")
    _, out, _ = decode_bytes(head + b"".join(chunks[:2] + [note] + chunks[2:]))
    assert out.shape == (8, 40)


# ---------------------------------------------------------------------------------------
# Version 1, as the previous writer made it
# ---------------------------------------------------------------------------------------
V1 = Path(__file__).parent / "data" / "v1.lyra"


def test_version_1_files_are_still_read():
    """tests/data/v1.lyra was written by lyra/container.py of commit d4a95ad (format version 1):
    float16 latents linspace(-2, 2, 48).reshape(16, 3) in two chunks, 6044 samples."""
    reader = LatentReader(io.BytesIO(V1.read_bytes()), "v1.lyra")
    latents = reader.read_all()
    assert reader.version == 1 and reader.chunks == 3
    assert torch.equal(latents, torch.linspace(-2, 2, 48).reshape(16, 3).half().float())
    assert reader.trailer == container.Trailer(3, 6044, 6578)
    assert reader.header.source_sample_rate == 48000 and reader.header.latent_dim == 16
    damaged = bytearray(V1.read_bytes())
    damaged[damaged.index(b"DATA") + 20] ^= 0x01
    with pytest.raises(LyraError, match="fails its CRC32 check"):
        LatentReader(io.BytesIO(bytes(damaged)), "v1.lyra").read_all()


# ---------------------------------------------------------------------------------------
# Header against the model, values that cannot be latents
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("sample_rate", 48000), ("channels", 1), ("hop_length", 1024), ("latent_dim", 16)])
def test_the_header_must_agree_with_the_model_it_names(key, value):
    from lyra.model.config import ModelConfig

    config = ModelConfig.small(latent_dim=8)
    h = Header(**{**container.asdict(header()), key: value})
    with pytest.raises(LyraError, match=rf"^x\.lyra: corrupted \.lyra file \(its header says {key} {value}, but the "
                                        rf"model it names, m\.pt, has {key} \d+\)$"):
        container.check_model(h, config, "x.lyra", "m.pt")
    container.check_model(header(), config, "x.lyra", "m.pt")    # the true header passes


def test_non_finite_latents_are_refused_by_the_writer_and_the_reader():
    z = torch.randn(8, 3)
    z[4, 1] = float("nan")
    with pytest.raises(LyraError, match=r"^<output>: latent values are not finite"):
        encode_bytes(z, "float32")
    good = encode_bytes(torch.randn(8, 3), "float32")
    head, chunks = split(good)
    payload = bytearray(chunks[0][8:-4])
    payload[16:20] = struct.pack("<f", float("inf"))
    forged = relinked(head, [chunk(b"DATA", bytes(payload)), chunks[1]])
    with pytest.raises(LyraError, match=r"chunk 1, at frame 0 holds values that are not finite; is its dtype really float32"):
        decode_bytes(forged)


# ---------------------------------------------------------------------------------------
# Short writes: everything is written, or the OSError comes out
# ---------------------------------------------------------------------------------------
class Trickle(NoSeek):
    """A raw sink that takes at most `most` bytes per call (then, optionally, fails)."""

    def __init__(self, most: int, capacity: int | None = None, error: OSError | None = None) -> None:
        super().__init__()
        self.most, self.capacity, self.error = most, capacity, error

    def write(self, b) -> int:
        room = len(b) if self.capacity is None else self.capacity - len(self.out)
        if room <= 0:
            raise self.error
        n = min(len(b), self.most, room)
        self.out += bytes(b[:n])
        return n


def test_short_writes_are_retried_until_everything_is_written():
    z = torch.randn(8, 50)
    sink = Trickle(most=5)
    writer = LatentWriter(sink, header("float32"))
    writer.write(z)
    writer.finish(50 * HOP - 100, 12345)
    assert bytes(sink.out) == encode_bytes(z, "float32")


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), BrokenPipeError(errno.EPIPE, "Broken pipe")])
def test_a_full_disk_or_a_closed_pipe_raises_instead_of_losing_data(error):
    """A sink that fills up after 100 bytes: the first write returns a short count, the
    retry gets the error, which propagates as it is (the CLI reports it)."""
    writer = LatentWriter(Trickle(most=1 << 20, capacity=100, error=error), header("float32"), "out.lyra")
    with pytest.raises(type(error)) as info:
        writer.write(torch.randn(8, 20))
    assert info.value.errno == error.errno
