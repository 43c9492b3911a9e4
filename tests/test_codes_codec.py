"""Discrete bottlenecks (fsq, rvq) through the codec: `lyra.Codec` gives integer codes, streamed
codes equal whole-file codes and streamed audio equals whole-file audio, fewer quantisers give a
lower bit rate that still decodes, and the CLI (encode --quantizers, info, decode, eval per bit
rate) does the same through the installed entry point."""

from __future__ import annotations

import json

import pytest
import torch

from lyra import Codec, ModelConfig
from lyra.audio.container import read_lyra
from lyra.core.errors import LyraError
from lyra.model.checkpoint import save_checkpoint
from lyra.model.vae import build_model

from cli_helpers import lyra, read, write_wav

SMALL = dict(base_channels=16, latent_dim=16, c_mults=(1, 2, 2, 4, 4))
BOTTLENECKS = {
    "rvq": {"num_quantizers": 4, "codebook_size": 64, "codebook_dim": 4},
    "fsq": {"levels": [8, 5, 5, 5], "groups": 2},
}


def discrete_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**SMALL, bottleneck=name, options={name: BOTTLENECKS[name]}))


@pytest.fixture(scope="module", params=sorted(BOTTLENECKS))
def codec(request):
    return Codec(discrete_model(request.param), device="cpu")


def test_codec_gives_integer_codes_and_streaming_equals_whole(codec):
    audio = torch.randn(2, 3 * 2048 * 7 + 123, generator=torch.Generator().manual_seed(1)) * 0.3   # 22 frames
    codes = codec.encode(audio)
    rows = codec.num_quantizers
    assert codes.dtype == torch.int64 and codes.shape == (rows, 22)
    assert 0 <= int(codes.min()) and int(codes.max()) < codec.codebook_size
    assert torch.equal(codec.encode(audio, stream=True, chunk_seconds=0.1), codes)           # 2-frame chunks
    assert torch.equal(torch.cat(list(codec.encode_iter([audio[:, :5000], audio[:, 5000:]], chunk_seconds=0.2)), -1),
                       codes)
    whole = codec.decode(codes, audio.shape[-1])
    assert whole.shape == audio.shape
    torch.testing.assert_close(codec.decode(codes, audio.shape[-1], stream=True, chunk_seconds=0.1), whole,
                               rtol=1e-4, atol=1e-5)
    # The model's own pass: what the decoder gets from the codes is the quantised latent.
    h = codec.model.encode_features(audio[None])
    torch.testing.assert_close(codec.model.bottleneck.decode(codes[None]), codec.model.bottleneck(h).z,
                               rtol=1e-5, atol=1e-5)


def test_fewer_rvq_quantizers_decode_and_lower_the_bitrate():
    codec = Codec(discrete_model("rvq"), device="cpu")
    audio = torch.randn(2, 2048 * 10, generator=torch.Generator().manual_seed(2)) * 0.3
    full = codec.encode(audio)
    two = codec.encode(audio, quantizers=2)
    assert torch.equal(two, full[:2])                              # residual: the first rows are the same
    assert codec.bitrate(2) == pytest.approx(codec.bitrate() / 2) == pytest.approx(2 * 6 * 44100 / 2048)
    z2 = codec.model.bottleneck.decode(two[None])
    with torch.no_grad():   # row i holds quantiser i's codes: its codebook row, projected back
        parts = [q.vectors(full[None, i]) for i, q in enumerate(codec.model.bottleneck.quantizers[:2])]
    torch.testing.assert_close(z2, parts[0] + parts[1], rtol=1e-5, atol=1e-6)   # the sum of the first two
    assert codec.decode(two).shape == (2, 2048 * 10)
    with pytest.raises(LyraError, match=r"^--quantizers: must be in 1\.\.4"):
        codec.encode(audio, quantizers=5)
    with pytest.raises(LyraError, match=r"^decode: codes must be in 0\.\.63"):
        codec.decode(full + 64)
    with pytest.raises(LyraError, match=r"^decode expects integer codes"):
        codec.decode(full.float())


def test_fsq_is_not_residual():
    codec = Codec(discrete_model("fsq"), device="cpu")
    with pytest.raises(LyraError, match=r"^--quantizers: this model's bottleneck is not residual"):
        codec.encode(torch.zeros(2, 4096), quantizers=1)
    with pytest.raises(LyraError, match=r"^decode: codes have 1 rows; this model decodes 2"):
        codec.decode(torch.zeros(1, 3, dtype=torch.int64))


@pytest.mark.parametrize("name", sorted(BOTTLENECKS))
def test_cli_encode_info_decode_eval_with_codes(tmp_path, name):
    model = discrete_model(name, seed=3)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    wav = write_wav(tmp_path / "a.wav", 2048 * 9 + 77, seed=4)
    stream = ["--stream", "--chunk-seconds", "0.1"]
    done = lyra("encode", wav, tmp_path / "a.lyra", "-c", ckpt)
    assert done.returncode == 0, done.stderr
    done = lyra("encode", wav, tmp_path / "s.lyra", "-c", ckpt, *stream)
    assert done.returncode == 0, done.stderr
    header, codes, trailer = read_lyra(tmp_path / "a.lyra")
    _, streamed, _ = read_lyra(tmp_path / "s.lyra")
    assert header.codes and header.bottleneck == name and codes.dtype == torch.int64
    assert torch.equal(streamed, codes)                                            # streamed == whole
    audio, _ = read(wav)
    assert torch.equal(codes, Codec(model, device="cpu").encode(audio))            # the file holds the codes
    info = json.loads(lyra("info", tmp_path / "a.lyra", "--json").stdout)
    rows, k = BOTTLENECKS[name].get("num_quantizers", BOTTLENECKS[name].get("groups")), header.codebook_size
    assert info["bottleneck"] == name and info["num_quantizers"] == rows
    bits = (k - 1).bit_length()
    assert info["bits_per_code"] == bits and info["latent_kbps"] == pytest.approx(rows * bits * 44.1 / 2048)
    for src, dst in (("a.lyra", "a.wav.out.wav"), ("s.lyra", "s.out.wav")):
        done = lyra("decode", tmp_path / src, tmp_path / dst, "-c", ckpt, "--subtype", "FLOAT", *stream)
        assert done.returncode == 0, done.stderr
    whole, streamed = read(tmp_path / "a.wav.out.wav")[0], read(tmp_path / "s.out.wav")[0]
    torch.testing.assert_close(streamed, whole, rtol=1e-4, atol=1e-5)
    expected = Codec(model, device="cpu").decode(codes, trailer.num_samples)
    torch.testing.assert_close(whole, expected, rtol=1e-4, atol=1e-5)
    # Eval: one table per bit rate for rvq, one for fsq.
    done = lyra("eval", wav, "-c", ckpt, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    counts = [r["quantizers"] for r in report["bitrates"]]
    assert counts == ([1, 2, 3, 4] if name == "rvq" else [2])
    rates = [r["kbit_s"] for r in report["bitrates"]]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(rows * bits * 44.1 / 2048)


def test_cli_quantizers_usage_errors(tmp_path):
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, discrete_model("rvq"))
    vae = tmp_path / "v.pt"
    save_checkpoint(vae, build_model(ModelConfig(**SMALL)))
    wav = write_wav(tmp_path / "a.wav", 4096)
    done = lyra("encode", wav, tmp_path / "x.lyra", "-c", ckpt, "--quantizers", "9")
    assert done.returncode == 1 and done.stderr.strip() == (
        "lyra: error: --quantizers: must be in 1..4 (the quantisers this model has), got 9")
    assert not (tmp_path / "x.lyra").exists()
    done = lyra("encode", wav, tmp_path / "x.lyra", "-c", vae, "--quantizers", "1")
    assert done.returncode == 1 and "stores continuous latents, not codes" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = lyra("encode", wav, tmp_path / "x.lyra", "-c", ckpt, "--quantizers", "two")
    assert done.returncode == 2 and "--quantizers" in done.stderr
    # A file of codes given to another kind of model: one line.
    assert lyra("encode", wav, tmp_path / "c.lyra", "-c", ckpt, "--quantizers", "2").returncode == 0
    done = lyra("decode", tmp_path / "c.lyra", tmp_path / "c.wav", "-c", vae)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "c.wav").exists()
    done = lyra("decode", tmp_path / "c.lyra", tmp_path / "c.wav", "-c", ckpt)
    assert done.returncode == 0, done.stderr


def test_folder_pre_encoding_writes_codes_and_resumes_them(tmp_path):
    ckpt = tmp_path / "m.pt"
    model = discrete_model("rvq", seed=6)
    save_checkpoint(ckpt, model)
    (tmp_path / "music" / "sub").mkdir(parents=True)
    write_wav(tmp_path / "music" / "a.wav", 2048 * 4 + 5, seed=1)
    write_wav(tmp_path / "music" / "sub" / "b.wav", 2048 * 2, seed=2)
    out, manifest = tmp_path / "latents", tmp_path / "latents.jsonl"
    args = ("encode", tmp_path / "music", out, "-c", ckpt, "--manifest", manifest)
    done = lyra(*args, "--quantizers", "3", "-q")
    assert done.returncode == 0, done.stderr
    codec = Codec(model, device="cpu")
    for rel in ("a", "sub/b"):
        header, codes, _ = read_lyra(out / f"{rel}.lyra")
        assert header.codes and header.num_quantizers == 3
        assert torch.equal(codes, codec.encode(read(tmp_path / "music" / f"{rel}.wav")[0], quantizers=3))
    assert len(manifest.read_text().splitlines()) == 2
    assert not manifest.with_suffix(".stats.json").exists()            # statistics are of float latents
    again = lyra(*args, "--quantizers", "3")
    assert again.returncode == 0 and "skipped 2 already encoded" in again.stderr
    other = lyra(*args)                                                  # all 4 rows: not these outputs
    assert other.returncode == 1 and "already exists with 3 code rows per frame, not --quantizers 4" in other.stderr
