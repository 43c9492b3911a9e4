"""Integer codes in the `.lyra` container (format version 3, issue 23): packed at ceil(log2 K)
bits for every width 1..24, checked against the byte layout of docs/lyra-format.md (its own
reader, which unpacks with Python integers rather than numpy); the new header fields and their
refusals; version 1 and 2 files still read as the `vae` bottleneck; `lyra info` of a codes file."""

from __future__ import annotations

import io
import json
import math
import random
import re
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cli_helpers import lyra_many
from lyra.audio import codes as packing
from lyra.audio.container import CODES, MAX_CHUNK_FRAMES, Header, LatentReader, LatentWriter, check_model
from lyra.core.errors import LyraError
from lyra_file_helpers import chunk, header as header_of, relinked, split, tag, with_header

HOP = 512
DOC = Path(__file__).parents[1] / "docs" / "lyra-format.md"
V1 = Path(__file__).parent / "data" / "v1.lyra"
# Written by lyra/audio/container.py of commit fb779f8 (format version 2, the last before codes):
# int8 latents linspace(-3, 3, 30).reshape(6, 5) in chunks of 2 and 3 frames, hop 1024,
# 4 * 1024 + 7 samples, source 2056 samples at 22050 Hz.
V2 = bytes.fromhex(
    "894c5952410d0a1a0a0200b80000007b226368616e6e656c73223a322c226474797065223a22696e7438222c22686f"
    "705f6c656e677468223a313032342c226c6174656e745f64696d223a362c226d6f64656c5f66696e676572707269"
    "6e74223a223030313132323333343435353636373738383939616162626363646465656666222c2273616d706c65"
    "5f72617465223a34343130302c22736f757263655f6368616e6e656c73223a312c22736f757263655f73616d706c"
    "655f72617465223a32323035307d9068bfe3444154412400000000000000000000009068bfe3020000000683c13c"
    "8a2ab43c81add904305c81b0df0e3d6c6d493842444154412e00000002000000000000006d493842030000000ed2"
    "a63c8a2ab43c0683c13c81b4e7194c7f94c3f221507fa4d0fc27537fb79f0f8d454e44201c000000050000000000"
    "000007100000000000000808000000000000b79f0f8d2f7d5ade")


def codes_header(codebook_size: int = 1024, num_quantizers: int = 3, **changes) -> Header:
    fields = dict(sample_rate=44100, channels=2, hop_length=HOP, latent_dim=8, dtype=CODES,
                  model_fingerprint="0123456789abcdef", source_sample_rate=44100, source_channels=2,
                  bottleneck="rvq", bottleneck_options={"codebook_size": codebook_size, "num_quantizers": 9},
                  codebook_size=codebook_size, num_quantizers=num_quantizers)
    return Header(**{**fields, **changes})


def write_codes(codes: torch.Tensor, header: Header, blocks: int = 1) -> bytes:
    buf = io.BytesIO()
    writer = LatentWriter(buf, header, "x.lyra")
    for part in codes.tensor_split(blocks, dim=-1):
        writer.write(part)
    frames = codes.shape[-1]
    hop = header.hop_length
    writer.finish(frames * hop - 7, frames * hop - 7)
    return buf.getvalue()


def read(data: bytes) -> LatentReader:
    reader = LatentReader(io.BytesIO(data), "x.lyra")
    reader.values = reader.read_all()
    return reader


def random_codes(codebook_size: int, rows: int, frames: int, seed: int) -> torch.Tensor:
    """[rows, frames] codes, uniformly random, with 0 and K-1 each at a random place."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, codebook_size, (rows, frames), generator=g)
    flat = codes.view(-1)
    at = torch.randperm(flat.numel(), generator=g)[:2]
    flat[at[0]], flat[at[1]] = 0, codebook_size - 1
    return codes


def documented_reader():
    """The `read_lyra` of docs/lyra-format.md's "Reading one without Lyra"."""
    block = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[-1]
    space: dict = {}
    exec(block, space)
    return space["read_lyra"]


# ---------------------------------------------------------------------------------------
# Every bit width
# ---------------------------------------------------------------------------------------
WIDTHS = [(bits, k) for bits in range(1, 25) for k in sorted({2 ** (bits - 1) + 1, 2 ** bits} - {1})]


@pytest.mark.parametrize("bits, codebook_size", WIDTHS, ids=[f"K{k}" for _, k in WIDTHS])
def test_packed_codes_round_trip_through_the_container_for_every_bit_width(tmp_path, bits, codebook_size):
    """K from 2 to 2^24: the smallest and largest K of each width, an odd number of frames in
    several writes and chunks (one longer than MAX_CHUNK_FRAMES); every DATA payload is exactly
    the packed size, its bytes are the documented little-endian bit stream, and the documented
    reader gives the same codes back."""
    rng = random.Random(codebook_size)
    rows, frames = rng.choice([1, 2, 3, 7]), rng.choice([13, 1031 + 2 * rng.randrange(10)])
    codes = random_codes(codebook_size, rows, frames, seed=codebook_size)
    header = codes_header(codebook_size, rows)
    assert header.bits_per_frame == rows * math.ceil(math.log2(codebook_size)) == rows * bits
    data = write_codes(codes, header, blocks=3)

    reader = read(data)
    assert reader.version == 3 and reader.header == header
    assert reader.values.dtype == torch.int64 and torch.equal(reader.values, codes)

    _, chunks = split(data)
    done = 0
    for c in (c for c in chunks if tag(c) == b"DATA"):
        first, _, n = struct.unpack_from("<QII", c, 8)
        payload = c[8 + 16:-4]
        assert first == done and n <= MAX_CHUNK_FRAMES
        assert len(payload) == -(-n * rows * bits // 8)                   # packed, padded once per chunk
        part = codes[:, done:done + n].T.reshape(-1).tolist()            # frame-major
        stream = sum(int(code) << (bits * i) for i, code in enumerate(part))
        assert payload == stream.to_bytes(len(payload), "little")        # the documented bit order
        done += n
    assert done == frames

    path = tmp_path / "c.lyra"
    path.write_bytes(data)
    doc_header, doc_codes, _ = documented_reader()(path)
    assert doc_header["codebook_size"] == codebook_size and doc_header["num_quantizers"] == rows
    assert np.array_equal(doc_codes, codes.numpy())


def test_the_documented_example_gives_the_documented_bytes():
    assert packing.pack_codes(torch.tensor([[4, 0], [1, 3]]), 5) == bytes([0x0C, 0x06])
    assert "bytes `0x0C 0x06`" in DOC.read_text()


def test_every_integer_dtype_packs_and_files_are_deterministic():
    codes = random_codes(1000, 4, 50, seed=1)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        small = codes % 256 if dtype == torch.uint8 else codes
        assert torch.equal(read(write_codes(small.to(dtype), codes_header(1000, 4))).values, small)
    assert write_codes(codes, codes_header(1000, 4), 2) == write_codes(codes.clone(), codes_header(1000, 4), 2)


def test_bitrate_is_quantizers_times_bits_per_code():
    h = codes_header(1024, 9, hop_length=2048)
    assert h.bits_per_frame == 90 and h.bitrate == pytest.approx(90 * 44100 / 2048)
    assert round(h.bitrate / 1000, 2) == 1.94                            # the table in docs/lyra-format.md
    assert codes_header(1000, 4).bits_per_frame == 40                    # FSQ 8,5,5,5: K = 1000, 10 bits
    assert codes_header(2, 1).payload_bytes(9) == 2 and codes_header(3, 5).payload_bytes(1) == 2


# ---------------------------------------------------------------------------------------
# The writer refuses what cannot be stored
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-1, 1000, 2 ** 40])
def test_codes_outside_the_codebook_are_refused_naming_quantizer_and_frame(value):
    writer = LatentWriter(io.BytesIO(), codes_header(1000, 3), "x.lyra")
    writer.write(random_codes(1000, 3, 5, seed=2))
    codes = random_codes(1000, 3, 8, seed=3)
    codes[2, 6] = value
    with pytest.raises(LyraError, match=rf"^x\.lyra: code {value} \(quantizer 2, frame 11\) is outside "
                                        r"0\.\.999 of a 1000-entry codebook$"):
        writer.write(codes)


@pytest.mark.parametrize("codes, expected", [
    (torch.zeros(3, 4), r"expected integer codes, got a float32 tensor"),
    (torch.zeros(3, 4, dtype=torch.bool), r"expected integer codes, got a bool tensor"),
    (torch.zeros(4, 4, dtype=torch.int64), r"expected codes of shape \[3, frames\], got \[4, 4\]"),
    (torch.zeros(3, dtype=torch.int64), r"expected codes of shape \[3, frames\], got \[3\]"),
])
def test_codes_of_another_kind_or_shape_are_refused(codes, expected):
    with pytest.raises(LyraError, match=rf"^x\.lyra: {expected}$"):
        LatentWriter(io.BytesIO(), codes_header(1000, 3), "x.lyra").write(codes)


# ---------------------------------------------------------------------------------------
# The reader refuses forged payloads
# ---------------------------------------------------------------------------------------
def forged(data: bytes, edit) -> bytes:
    """`data` with its first DATA payload's codes replaced by `edit(bytes)`, links redone."""
    head, chunks = split(data)
    i = next(i for i, c in enumerate(chunks) if tag(c) == b"DATA")
    payload = chunks[i][8:-4]
    chunks[i] = chunk(b"DATA", payload[:16] + edit(payload[16:]))
    return relinked(head, chunks)


def test_a_code_of_k_or_more_is_a_corrupted_file():
    """K = 1000 in 10 bits: 1000..1023 fit the bits but are not codes."""
    data = write_codes(torch.zeros(2, 6, dtype=torch.int64), codes_header(1000, 2))
    bad = forged(data, lambda b: (int.from_bytes(b, "little") | (1013 << 30)).to_bytes(len(b), "little"))
    with pytest.raises(LyraError, match=r"^x\.lyra: corrupted \.lyra file \(chunk 1, at frame 0: code 1013 "
                                        r"\(quantizer 1, frame 1\) is outside 0\.\.999 of a 1000-entry codebook\)$"):
        read(bad)


def test_padding_bits_and_payload_sizes_are_checked():
    data = write_codes(torch.ones(3, 3, dtype=torch.int64), codes_header(5, 3))   # 27 bits: 5 padding bits
    with pytest.raises(LyraError, match=r"chunk 1, at frame 0: the padding bits after the last code are not zero\)$"):
        read(forged(data, lambda b: b[:-1] + bytes([b[-1] | 0x80])))
    for edit in (lambda b: b + b"\x00", lambda b: b[:-1]):
        with pytest.raises(LyraError, match=r"^x\.lyra: corrupted \.lyra file \(chunk 1, at frame 0: \d+ bytes for 3 frames\)$"):
            read(forged(data, edit))


# ---------------------------------------------------------------------------------------
# Header fields
# ---------------------------------------------------------------------------------------
def test_a_float_header_names_the_vae_and_no_codebook():
    h = Header(44100, 2, HOP, 8, "float16", "f", 44100, 2)
    assert (h.bottleneck, h.bottleneck_options, h.codes, h.rows) == ("vae", {}, False, 8)
    fields = json.loads(h.to_json())
    assert fields["bottleneck"] == "vae" and fields["bottleneck_options"] == {}
    assert "codebook_size" not in fields and "num_quantizers" not in fields
    c = json.loads(codes_header(1024, 6).to_json())
    assert (c["dtype"], c["codebook_size"], c["num_quantizers"], c["bottleneck"]) == ("codes", 1024, 6, "rvq")


def test_bottleneck_options_are_kept_as_json_gives_them_back():
    h = codes_header(bottleneck="fsq", bottleneck_options={"levels": (8, 5, 5, 5), "x": {"y": [1.5]}})
    assert h.bottleneck_options == {"levels": [8, 5, 5, 5], "x": {"y": [1.5]}}
    assert read(write_codes(random_codes(1024, 3, 4, seed=4), h)).header == h


@pytest.mark.parametrize("changes, expected", [
    ({"codebook_size": 0}, r"header codebook_size: expected an integer in 2\.\.16,777,216 for a codes file, got 0"),
    ({"codebook_size": 1}, r"header codebook_size: .* got 1$"),
    ({"codebook_size": 2 ** 24 + 1}, r"header codebook_size: .* got 16777217$"),
    ({"codebook_size": 2 ** 40}, r"header codebook_size: .* got 1099511627776$"),
    ({"codebook_size": True}, r"header codebook_size: .* got True$"),
    ({"codebook_size": "1024"}, r"header codebook_size: .* got '1024'$"),
    ({"codebook_size": 1024.0}, r"header codebook_size: .* got 1024\.0$"),
    ({"num_quantizers": 0}, r"header num_quantizers: expected an integer in 1\.\.1,024 for a codes file, got 0$"),
    ({"num_quantizers": 1025}, r"header num_quantizers: .* got 1025$"),
    ({"num_quantizers": 10 ** 30}, r"header num_quantizers: .* got 10{30}$"),
    ({"bottleneck": "vae"}, r"header bottleneck: 'vae' stores float latents, not codes$"),
    ({"bottleneck": ""}, r"header bottleneck: expected a component name, got ''$"),
    ({"bottleneck": "rvq\x1b[2J"}, r"header bottleneck: expected a component name"),
    ({"bottleneck": "r" * 101}, r"header bottleneck: expected a component name"),
    ({"bottleneck": None}, r"header bottleneck: expected a component name, got None$"),
    ({"bottleneck_options": []}, r"header bottleneck_options: expected a JSON object, got \[\]$"),
    ({"bottleneck_options": {"a": float("nan")}}, r"header bottleneck_options: expected a JSON object"),
    ({"bottleneck_options": {"a": object()}}, r"header bottleneck_options: expected a JSON object"),
    ({"dtype": "int4"}, r"header dtype: expected one of float16, bfloat16, float32, int8, codes, got 'int4'$"),
    ({"dtype": []}, r"header dtype: expected one of .*, got \[\]$"),
    ({"dtype": "float16"}, r"header codebook_size/num_quantizers: only a codes file has them \(this one is float16\)$"),
])
def test_impossible_header_fields_are_one_line_errors(changes, expected):
    with pytest.raises(LyraError, match=expected) as info:
        codes_header(**changes)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("changes, expected", [
    ({"codebook_size": 1}, r"header codebook_size: expected an integer in 2\.\.16,777,216 for a codes file, got 1\)$"),
    ({"codebook_size": 2 ** 40}, r"header codebook_size: .* got 1099511627776\)$"),
    ({"num_quantizers": 0}, r"header num_quantizers: .* got 0\)$"),
    ({"num_quantizers": 2 ** 31}, r"header num_quantizers: .* got 2147483648\)$"),
    ({"bottleneck": "vae"}, r"header bottleneck: 'vae' stores float latents, not codes\)$"),
    ({"bottleneck_options": "x"}, r"header bottleneck_options: expected a JSON object, got 'x'\)$"),
    ({"bottleneck": None}, r"header bottleneck: expected a component name, got None\)$"),
])
def test_forged_header_fields_are_refused_when_read(changes, expected):
    data = write_codes(random_codes(1024, 3, 5, seed=5), codes_header(1024, 3))
    with pytest.raises(LyraError, match=rf"^x\.lyra: corrupted \.lyra file \({expected}"):
        read(with_header(data, relink=True, **changes))


def test_a_codes_header_that_claims_other_sizes_is_caught_by_the_payload_size():
    """A header forged (links redone) to say more quantisers or a wider codebook than the
    chunks were packed with no longer fits the payloads."""
    data = write_codes(random_codes(1024, 3, 64, seed=6), codes_header(1024, 3))
    for changes in ({"num_quantizers": 4}, {"codebook_size": 2048}, {"codebook_size": 512}):
        with pytest.raises(LyraError, match=r"^x\.lyra: corrupted \.lyra file \(chunk 1, at frame 0: \d+ bytes for 64 frames\)$"):
            read(with_header(data, relink=True, **changes))


@pytest.mark.parametrize("missing", ["bottleneck", "bottleneck_options", "codebook_size", "num_quantizers"])
def test_a_version_3_header_must_name_its_bottleneck_and_codebook(missing):
    data = write_codes(random_codes(16, 2, 3, seed=7), codes_header(16, 2))
    fields = header_of(data)
    del fields[missing]
    head, chunks = split(data)
    text = json.dumps(fields).encode()
    new = head[:11] + struct.pack("<I", len(text)) + text
    with pytest.raises(LyraError, match=rf"^x\.lyra: corrupted \.lyra file \(the header has no '{missing}'\)$"):
        read(relinked(new + struct.pack("<I", zlib.crc32(new)), chunks))


def test_a_float_file_claiming_a_codebook_is_refused():
    writer_buf = io.BytesIO()
    writer = LatentWriter(writer_buf, Header(44100, 2, HOP, 8, "float16", "f", 44100, 2))
    writer.write(torch.randn(8, 3))
    writer.finish(3 * HOP, 3 * HOP)
    with pytest.raises(LyraError, match=r"^x\.lyra: corrupted \.lyra file \(header codebook_size/num_quantizers: "
                                        r"only a codes file has them \(this one is float16\)\)$"):
        read(with_header(writer_buf.getvalue(), relink=True, num_quantizers=4))


def test_codes_claimed_by_a_version_2_file_are_refused():
    forged_v2 = with_header(V2, relink=True, dtype="codes", codebook_size=1024, num_quantizers=6, bottleneck="rvq",
                            bottleneck_options={})
    with pytest.raises(LyraError, match=r"^x\.lyra: corrupted \.lyra file \(dtype codes needs format version 3, "
                                        r"the file says 2\)$"):
        read(forged_v2)


# ---------------------------------------------------------------------------------------
# Older files, and the model check
# ---------------------------------------------------------------------------------------
def test_version_2_files_still_read_as_the_vae_bottleneck():
    reader = read(V2)
    assert reader.version == 2 and reader.chunks == 3
    assert (reader.header.bottleneck, reader.header.bottleneck_options, reader.header.codes) == ("vae", {}, False)
    z = torch.linspace(-3, 3, 30).reshape(6, 5)
    scale = z.abs().amax(dim=0) / 127                                    # int8: a scale per frame
    assert torch.allclose(reader.values, torch.round(z / scale) * scale, rtol=0, atol=1e-6)
    assert (reader.trailer.num_samples, reader.trailer.source_num_samples) == (4 * 1024 + 7, 2056)
    # keys a version-2 writer never wrote are informational there, whatever they say
    assert read(with_header(V2, relink=True, bottleneck="rvq", codebook_size=1)).header.bottleneck == "vae"
    damaged = bytearray(V2)
    damaged[damaged.index(b"DATA") + 24] ^= 0x01
    with pytest.raises(LyraError, match="fails its CRC32 check"):
        read(bytes(damaged))


def test_version_1_files_still_read_as_the_vae_bottleneck():
    reader = read(V1.read_bytes())
    assert reader.version == 1 and reader.header.bottleneck == "vae" and reader.values.shape == (16, 3)


def test_the_header_bottleneck_must_be_the_models():
    """A codes file given to a model with a float bottleneck (and the reverse) is refused
    before decoding; a config without a `bottleneck` field is a `vae` model."""
    from lyra.model.config import ModelConfig

    vae = SimpleNamespace(sample_rate=44100, channels=2, hop_length=HOP, latent_dim=8)
    rvq = SimpleNamespace(**vars(vae), bottleneck="rvq")
    with pytest.raises(LyraError, match=r"^x\.lyra: corrupted \.lyra file \(its header says bottleneck rvq, but the "
                                        r"model it names, m\.pt, has bottleneck vae\)$"):
        check_model(codes_header(), vae, "x.lyra", "m.pt")
    float_header = Header(44100, 2, HOP, 8, "float16", "f", 44100, 2)
    with pytest.raises(LyraError, match=r"its header says bottleneck vae, but the model it names, m\.pt, has bottleneck rvq"):
        check_model(float_header, rvq, "x.lyra", "m.pt")
    check_model(codes_header(), rvq, "x.lyra", "m.pt")
    check_model(float_header, vae, "x.lyra", "m.pt")
    config = ModelConfig.small(latent_dim=8)                             # the default bottleneck: vae
    with pytest.raises(LyraError, match=r"its header says bottleneck rvq, but the model it names, m\.pt, has bottleneck vae"):
        check_model(codes_header(hop_length=config.hop_length), config, "x.lyra", "m.pt")


# ---------------------------------------------------------------------------------------
# Fuzz, and `lyra info`
# ---------------------------------------------------------------------------------------
HOSTILE = [0, 1, 2, -1, 2 ** 24, 2 ** 24 + 1, 2 ** 40, 10 ** 30, 1024, 1025, 1.5, float("nan"), None, True, "",
           "codes", "vae", "float16", [], {}, {"a": 1}, "rvq"]
NEW_KEYS = ["dtype", "bottleneck", "bottleneck_options", "codebook_size", "num_quantizers"]


def test_fuzzed_codes_files_are_a_one_line_error_or_codes_in_range():
    data = write_codes(random_codes(1000, 4, 300, seed=8), codes_header(1000, 4), blocks=3)
    outcomes = {"error": 0, "read": 0}
    for seed in range(200):
        rng = random.Random(seed)
        if rng.random() < 0.6:      # header values, links redone so the parser behind the CRCs is reached
            damaged = with_header(data, relink=rng.random() < 0.8,
                                  **{rng.choice(NEW_KEYS): rng.choice(HOSTILE) for _ in range(rng.randint(1, 2))})
        else:                       # bytes flipped in a payload, CRCs redone
            damaged = forged(data, lambda b: bytes(x ^ (rng.randrange(256) if rng.random() < 0.01 else 0) for x in b))
        try:
            reader = read(damaged)
            h = reader.header
            assert reader.trailer is not None and reader.values.shape == (h.rows, reader.trailer.num_frames)
            if h.codes:
                assert reader.values.dtype == torch.int64
                assert 0 <= int(reader.values.min()) and int(reader.values.max()) < h.codebook_size
            h.bitrate
            outcomes["read"] += 1
        except LyraError as exc:
            assert str(exc).startswith("x.lyra: ") and "\n" not in str(exc), (seed, str(exc))
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["read"] > 5, outcomes


def test_lyra_info_shows_the_codes_bitrate_bottleneck_quantizers_and_codebook(tmp_path):
    codes = tmp_path / "codes.lyra"
    header = codes_header(1000, 4, hop_length=2048, bottleneck="fsq", bottleneck_options={"levels": [8, 5, 5, 5]})
    codes.write_bytes(write_codes(random_codes(1000, 4, 22, seed=9), header))
    floats = tmp_path / "floats.lyra"
    writer_buf = io.BytesIO()
    writer = LatentWriter(writer_buf, Header(44100, 2, 2048, 8, "float16", "f", 44100, 2))
    writer.write(torch.randn(8, 22))
    writer.finish(22 * 2048 - 7, 22 * 2048 - 7)
    floats.write_bytes(writer_buf.getvalue())
    text, as_json, float_text = lyra_many([["info", codes], ["info", codes, "--json"], ["info", floats]])
    assert text.returncode == 0 and text.stderr == "", text.stderr
    out = text.stdout.decode()
    kbps = 4 * 10 * 44100 / 2048 / 1000                                 # Q x ceil(log2 K) bits per frame
    assert f"bitrate:    {kbps:.2f} kbit/s code payload; " in out
    assert 'bottleneck: fsq, 4 quantizers of 1,000 codes {"levels": [8, 5, 5, 5]}' in out
    assert "integer codes 0..999, 10 bits each, packed (40 bits per frame)" in out
    assert "(.lyra format version 3, " in out
    facts = json.loads(as_json.stdout)
    assert facts["latent_kbps"] == pytest.approx(kbps) and facts["dtype"] == "codes"
    assert (facts["bottleneck"], facts["codebook_size"], facts["num_quantizers"], facts["bits_per_code"]) == ("fsq", 1000, 4, 10)
    assert facts["bottleneck_options"] == {"levels": [8, 5, 5, 5]}
    assert float_text.returncode == 0 and "bottleneck: vae\n" in float_text.stdout.decode()
    assert f"{8 * 16 * 44100 / 2048 / 1000:.2f} kbit/s latent payload" in float_text.stdout.decode()
