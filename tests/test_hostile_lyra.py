"""Crafted `.lyra` files (issue 22): an end marker whose source length does not fit the frames
(item 6), header sample rates no audio file holds (item 11), and a seeded fuzz of the header
and container parser, in process and through `lyra info`: every result is a one-line error
naming the file, or a file read whole with finite latents."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from pathlib import Path

import pytest
import torch

from cli_helpers import lyra_many, small_checkpoint, write_wav
from lyra.audio.container import MAX_HEADER_BYTES, LatentReader, read_lyra, source_length
from lyra.audio.resample import MAX_SAMPLE_RATE, resampled_length
from lyra.cli import main
from lyra.core.errors import LyraError
from lyra_file_helpers import MAGIC, chunk, relinked, split, with_header

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    """A small model, and a .lyra it wrote of 0.5 s at 48 kHz mono (the model: 44.1 kHz stereo)."""
    folder = tmp_path_factory.mktemp("hostile_lyra")
    ckpt = small_checkpoint(folder / "ck.pt")
    wav = write_wav(folder / "a.wav", 24000, channels=1, rate=48000)
    assert main(["encode", "-c", str(ckpt), str(wav), str(folder / "a.lyra")]) == 0
    return ckpt, folder / "a.lyra"


def with_lengths(data: bytes, samples: int | None = None, source_samples: int | None = None) -> bytes:
    """`data` with its end marker's lengths replaced (its CRC redone)."""
    head, chunks = split(data)
    payload = chunks[-1][8:-4]
    frames, old_samples, old_source = struct.unpack_from("<QQQ", payload)
    lengths = struct.pack("<QQQ", frames, old_samples if samples is None else samples,
                          old_source if source_samples is None else source_samples)
    chunks[-1] = chunk(b"END ", lengths + payload[24:])
    return head + b"".join(chunks)


def with_header_text(data: bytes, text: bytes) -> bytes:
    """`data` with the header JSON replaced by `text` verbatim, every CRC and link redone."""
    head, chunks = split(data)
    (version,) = struct.unpack_from("<H", data, 9)
    new = MAGIC + struct.pack("<HI", version, len(text)) + text
    return relinked(new + struct.pack("<I", zlib.crc32(new)), chunks)


def one_error_line(err: str, name: object) -> bool:
    lines = err.splitlines()
    return len(lines) == 1 and lines[0].startswith(f"lyra: error: {name}: ") and "unexpected" not in err


def decode(capsys, ckpt: Path, src: Path, dst: Path, *extra: str) -> tuple[int, str]:
    code = main(["decode", "-c", str(ckpt), str(src), str(dst), "--original-rate", *extra])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Item 6: the source length must fit the frames
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_source_length_that_does_not_fit_the_frames_is_refused(tmp_path, capsys, made, stream):
    ckpt, good = made
    data = good.read_bytes()
    _, _, trailer = read_lyra(good)
    for n in (0, 1, trailer.source_num_samples * 2):
        bad = tmp_path / f"src{n}.lyra"
        bad.write_bytes(with_lengths(data, source_samples=n))
        out = tmp_path / f"src{n}.wav"
        code, err = decode(capsys, ckpt, bad, out, *(["--stream"] if stream else []))
        assert code == 1 and one_error_line(err, bad), err
        assert "corrupted .lyra file" in err and f"source had {n:,} samples" in err
        assert not out.exists()
    code, err = decode(capsys, ckpt, good, tmp_path / "good.wav", *(["--stream"] if stream else []))
    assert code == 0, err
    import soundfile

    info = soundfile.info(str(tmp_path / "good.wav"))
    assert (info.samplerate, info.frames) == (48000, 24000)


@pytest.mark.parametrize("orig", [8000, 22050, 32000, 44100, 48000, 96000, 192000])
def test_what_the_encoders_write_passes_the_source_length_check(orig):
    """The whole-file encoder resamples with torchaudio (whose length is rounded in float32);
    the streamed one gives `resampled_length` exactly: both fit `source_length`'s tolerance."""
    import torchaudio.functional

    from lyra.audio.container import Header, Trailer

    rng = random.Random(orig)
    header = Header(44100, 2, 2048, 8, "float16", "0" * 16, orig, 1)
    for length in [1, 2, 3, orig - 1, *(rng.randrange(1, 5 * orig) for _ in range(5))]:
        whole = torchaudio.functional.resample(torch.zeros(1, length), orig, 44100).shape[-1]
        for samples in {whole, resampled_length(length, orig, 44100)}:
            trailer = Trailer(-(-samples // 2048), samples, length)
            assert source_length(header, trailer, "x.lyra") == length
    long = Trailer(-(-10 ** 9 // 2048), 10 ** 9, resampled_length(10 ** 9, 44100, orig) + 300 * orig // 44100 + 300)
    with pytest.raises(LyraError, match="x.lyra: corrupted"):
        source_length(header, long, "x.lyra")


# ---------------------------------------------------------------------------------------
# Item 11 (header): sample rates beyond what audio files hold
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, rate", [("source_sample_rate", 2_100_000_000), ("source_sample_rate", MAX_SAMPLE_RATE + 1),
                                       ("sample_rate", 2_116_800_000)])
def test_a_header_sample_rate_beyond_768_khz_is_refused_when_read(tmp_path, capsys, made, key, rate):
    ckpt, good = made
    bad = tmp_path / "rate.lyra"
    bad.write_bytes(with_header(good.read_bytes(), relink=True, **{key: rate}))
    with pytest.raises(LyraError, match=rf"^{bad}: corrupted \.lyra file \(header {key}: {rate} Hz is above the 768000 Hz"):
        read_lyra(bad)
    for extra in ([], ["--stream"]):
        code, err = decode(capsys, ckpt, bad, tmp_path / "out.wav", *extra)
        assert code == 1 and one_error_line(err, bad) and f"{rate} Hz" in err, err
        assert not (tmp_path / "out.wav").exists()
    assert main(["info", str(bad)]) == 1
    assert one_error_line(capsys.readouterr().err, bad)


def test_768_khz_is_the_highest_source_rate_and_decodes(tmp_path, capsys, made):
    ckpt, good = made
    _, _, trailer = read_lyra(good)
    source = -(-trailer.num_samples * MAX_SAMPLE_RATE // 44100)        # what maps onto num_samples
    data = with_lengths(with_header(good.read_bytes(), relink=True, source_sample_rate=MAX_SAMPLE_RATE),
                        source_samples=source)
    path = tmp_path / "k768.lyra"
    path.write_bytes(data)
    code, err = decode(capsys, ckpt, path, tmp_path / "k768.wav")
    assert code == 0, err
    import soundfile

    assert soundfile.info(str(tmp_path / "k768.wav")).samplerate == MAX_SAMPLE_RATE


# ---------------------------------------------------------------------------------------
# Fuzz: seeded mutations of a valid file
# ---------------------------------------------------------------------------------------
HOSTILE_VALUES = [0, -1, 1, 2 ** 31, 2 ** 64, 10 ** 30, 2_100_000_000, 1.5, float("nan"), 1e308, "44100",
                  None, True, [], {}, "", "int4", "float64"]
HEADER_KEYS = ["sample_rate", "channels", "hop_length", "latent_dim", "dtype", "model_fingerprint",
               "source_sample_rate", "source_channels"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One seeded damage: bytes flipped, inserted, deleted or cut off; a header value replaced
    (CRCs redone, so that the parser behind the CRC checks is reached); hostile header text."""
    kind = rng.randrange(8)
    buf = bytearray(data)
    if kind == 0:                                    # flip 1..8 bits anywhere
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1:                                  # insert random bytes
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == 2:                                  # delete a span
        at = rng.randrange(len(buf))
        del buf[at:at + rng.randint(1, 32)]
    elif kind == 3:                                  # truncate
        del buf[rng.randrange(len(buf)):]
    elif kind == 4:                                  # a header value replaced, consistently
        value = rng.choice(HOSTILE_VALUES)
        return with_header(data, relink=rng.random() < 0.8, **{rng.choice(HEADER_KEYS): value})
    elif kind == 5:                                  # an end-marker length replaced, consistently
        value = rng.choice([0, 1, 2 ** 63, 2 ** 64 - 1, rng.randrange(1 << 40)])
        return with_lengths(data, **{rng.choice(["samples", "source_samples"]): value})
    elif kind == 6:                                  # hostile header text behind a valid CRC
        text = rng.choice([
            b"[" * 30000 + b"]" * 30000,                                       # nesting past the recursion limit
            b'{"sample_rate": 1' + b"0" * 5000 + b"}",                         # an int of 5,000 digits
            b'{"sample_rate": NaN, "channels": Infinity}',
            json.dumps({"x": "\ud800"}).encode(),                              # a lone surrogate
            b"\xff\xfe" + rng.randbytes(20),                                   # not UTF-8
            b"null", b"", b"1e999",
        ])
        return with_header_text(data, text[:MAX_HEADER_BYTES])
    else:                                            # the header size field replaced
        struct.pack_into("<I", buf, 11, rng.choice([0, 1, MAX_HEADER_BYTES, MAX_HEADER_BYTES + 1, 2 ** 32 - 1]))
    return bytes(buf)


def test_fuzzed_files_are_a_one_line_error_or_read_whole(made):
    _, good = made
    data = good.read_bytes()
    outcomes = {"error": 0, "read": 0}
    for seed in range(240):
        damaged = mutate(data, random.Random(seed))
        try:
            reader = LatentReader(io.BytesIO(damaged), "x.lyra")
            latents = reader.read_all()
            assert reader.trailer is not None and torch.isfinite(latents).all()
            assert latents.shape == (reader.header.latent_dim, reader.trailer.num_frames)
            reader.header.bitrate, source_length(reader.header, reader.trailer, "x.lyra")
            outcomes["read"] += 1
        except LyraError as exc:
            message = str(exc)
            assert message.startswith("x.lyra: ") and "\n" not in message, (seed, message)
            outcomes["error"] += 1
    assert outcomes["error"] > 150 and outcomes["read"] > 0, outcomes


def test_lyra_info_of_fuzzed_files_is_a_one_line_error_or_the_facts(tmp_path, made):
    _, good = made
    data = good.read_bytes()
    paths = [good]                # and one intact, for the facts
    for seed in (0, 5, 7, 9):     # header text, a header value, an end-marker length, the header size
        path = tmp_path / f"f{seed}.lyra"
        path.write_bytes(mutate(data, random.Random(seed)))
        paths.append(path)
    results = lyra_many([["info", p, *(["--json"] if i % 2 else [])] for i, p in enumerate(paths)])
    assert results[0].returncode == 0 and b"44100" in results[0].stdout, results[0].stderr
    for path, done in zip(paths, results):
        if done.returncode == 0:
            assert done.stderr == "" and done.stdout
        else:
            assert done.returncode == 1 and one_error_line(done.stderr, path), done.stderr
