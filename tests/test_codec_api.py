"""The library codec (`lyra.codec.codec.Codec`): tensor, iterator and file forms, against the model
itself, the command line and each other."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional

import lyra
import lyra.model.checkpoint
from lyra.codec.codec import Codec
from lyra.model.config import ModelConfig
from lyra.audio.container import read_lyra, stored

from cli_helpers import lyra as run_lyra
from cli_helpers import read, run_on_pty, screen_lines, write_wav
from lyra.cli import main

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

TOL = 1e-4           # streamed vs whole, float32 compute (as tests/test_streaming.py)
FLOAT16_TOL = 2e-3   # after float16 latent storage a value may land one float16 step away


def tiny_model(seed: int = 0) -> lyra.VAE:
    """Hop 8 with the full dilations: a receptive field of dozens of frames, cheap per frame."""
    torch.manual_seed(seed)
    return lyra.build_model(ModelConfig.small(strides=(2, 2, 2), c_mults=(1, 2, 2))).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("codec") / "tiny.pt"
    lyra.model.checkpoint.save_checkpoint(path, tiny_model())
    return str(path)


@pytest.fixture(scope="module")
def codec(ckpt) -> Codec:
    return Codec.load(ckpt, device="cpu")


def unit_audio(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).clamp(-3, 3) / 3


def chunk_seconds(codec: Codec, frames: int) -> float:
    return frames * codec.hop_length / codec.sample_rate


# ---------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------
def test_tensor_forms_equal_the_model_run_directly(codec):
    gen = torch.Generator().manual_seed(11)
    reference = tiny_model()                                   # the same weights, not through Codec
    x = unit_audio(gen, 3, 2, 37 * codec.hop_length + 5)       # [B, C, T], T not a multiple of the hop
    with torch.no_grad():
        mean, _ = reference.encode(x)
        audio = reference.decode(mean, x.shape[-1])

    z = codec.encode(x)
    assert z.dtype == torch.float32 and z.device.type == "cpu"
    assert torch.allclose(z, mean, atol=1e-6)
    assert torch.allclose(codec.encode(x[1]), mean[1], atol=1e-6)           # [C, T] -> [D, F]
    assert torch.allclose(codec.decode(mean, x.shape[-1]), audio, atol=1e-6)
    assert torch.allclose(codec.decode(mean[2], x.shape[-1]), audio[2], atol=1e-6)
    assert codec.decode(mean[0]).shape == (2, mean.shape[-1] * codec.hop_length)   # default: F * hop

    mono = x[0, :1]                                                        # [1, T] is duplicated
    assert torch.allclose(codec.encode(mono), codec.encode(mono.expand(2, -1)), atol=1e-6)
    with torch.no_grad():   # another rate: torchaudio's resampler, then the model
        at_rate = reference.encode(torchaudio.functional.resample(x[0], 32000, 44100)[None])[0][0]
    assert torch.allclose(codec.encode(x[0], sample_rate=32000), at_rate, atol=1e-6)

    # round_trip stores the latents as a float16 .lyra file would, then decodes to T samples.
    with torch.no_grad():
        expected = reference.decode(stored(mean[0], "float16")[None], x.shape[-1])[0]
    assert torch.allclose(codec.round_trip(x[0]), expected, atol=1e-6)


@pytest.mark.parametrize("frames", [7, 13])
def test_streamed_tensor_forms_equal_whole_within_float_rounding(codec, frames):
    gen = torch.Generator().manual_seed(frames)
    x = unit_audio(gen, 2, 2, 101 * codec.hop_length + 3)
    seconds = chunk_seconds(codec, frames)
    z = codec.encode(x)
    zs = codec.encode(x, stream=True, chunk_seconds=seconds)
    assert zs.shape == z.shape and (zs - z).abs().max() <= TOL
    y = codec.decode(z, x.shape[-1])
    ys = codec.decode(z, x.shape[-1], stream=True, chunk_seconds=seconds)
    assert ys.shape == y.shape and (ys - y).abs().max() <= TOL
    r = codec.round_trip(x, stream=True, chunk_seconds=seconds)
    assert r.shape == x.shape and (r - codec.round_trip(x)).abs().max() <= FLOAT16_TOL


def test_bad_tensors_are_one_line_errors(codec):
    cases = [
        (lambda: codec.encode(torch.zeros(3, 100)), "audio: has 3 channels; the model takes 2"),
        (lambda: codec.encode(torch.zeros(100)), "audio: expected shape [channels, samples]"),
        (lambda: codec.encode(torch.zeros(2, 100, dtype=torch.int16)), "audio: expected a float tensor"),
        (lambda: codec.encode(torch.full((2, 100), float("nan"))), "audio: holds NaN or infinite samples"),
        (lambda: codec.decode(torch.zeros(5, 4)), f"latents: expected shape [{codec.latent_dim}, frames]"),
        (lambda: codec.decode(torch.zeros(codec.latent_dim, 4), 33), "decode: length must be in 1..32"),
        (lambda: codec.encode(torch.zeros(2, 100), stream=True, chunk_seconds=0), "--chunk-seconds: must be positive"),
        (lambda: codec.round_trip(torch.zeros(2, 100), dtype="float8"), "--dtype: expected one of"),
    ]
    for call, message in cases:
        with pytest.raises(lyra.LyraError) as info:
            call()
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------
# Iterators
# ---------------------------------------------------------------------------------------
def test_iterator_forms_equal_the_tensor_forms(codec):
    gen = torch.Generator().manual_seed(5)
    x = unit_audio(gen, 2, 89 * codec.hop_length + 7)
    cuts = sorted(torch.randint(1, x.shape[-1], (12,), generator=gen).tolist())
    blocks = [x[:, a:b] for a, b in zip([0, *cuts], [*cuts, x.shape[-1]])]      # odd sizes, some empty
    seconds = chunk_seconds(codec, 11)
    out = list(codec.encode_iter(iter(blocks), chunk_seconds=seconds))
    assert len(out) > 3                                                         # yielded as it went
    z = torch.cat(out, dim=-1)
    whole = codec.encode(x)
    assert z.shape == whole.shape and (z - whole).abs().max() <= TOL

    pieces = list(whole.split(5, dim=-1))
    y = torch.cat(list(codec.decode_iter(iter(pieces), lambda: x.shape[-1], chunk_seconds=seconds)), dim=-1)
    expected = codec.decode(whole, x.shape[-1])
    assert y.shape == expected.shape and (y - expected).abs().max() <= TOL
    with pytest.raises(lyra.LyraError, match=r"^audio block 1: expected shape \[2 or 1, samples\], got \[3, 10\]$"):
        list(codec.encode_iter([x[:, :10], torch.zeros(3, 10)]))


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------
def cli(capsys, *args: object) -> tuple[int, str]:
    """`lyra ARGS` in this process: (exit status, stderr)."""
    capsys.readouterr()
    code = main([*map(str, args), "--device", "cpu"])
    return code, capsys.readouterr().err


def test_file_forms_write_what_the_command_line_writes(tmp_path, capsys, codec, ckpt):
    wav = write_wav(tmp_path / "in.wav", 9000, rate=32000, seed=3)
    calls = []
    done = codec.encode_file(wav, tmp_path / "api.lyra", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][0] == calls[-1][1] == pytest.approx(done.seconds)
    assert done.samples == -(-9000 * 44100 // 32000) and done.frames == -(-done.samples // codec.hop_length)
    assert done.truncation is None and done.header.model_fingerprint == codec.fingerprint
    assert cli(capsys, "encode", wav, tmp_path / "cli.lyra", "-c", ckpt)[0] == 0
    assert (tmp_path / "api.lyra").read_bytes() == (tmp_path / "cli.lyra").read_bytes()

    decoded = codec.decode_file(tmp_path / "cli.lyra", tmp_path / "api.wav", original_rate=True)
    assert (decoded.sample_rate, decoded.channels, decoded.samples) == (32000, 2, 9000)
    assert cli(capsys, "decode", tmp_path / "api.lyra", tmp_path / "cli.wav", "-c", ckpt, "--original-rate")[0] == 0
    assert (tmp_path / "api.wav").read_bytes() == (tmp_path / "cli.wav").read_bytes()


def test_streamed_files_report_progress_and_equal_whole_files(tmp_path, codec):
    wav = write_wav(tmp_path / "in.wav", 20000, seed=4)
    seconds = chunk_seconds(codec, 300)
    calls = []
    codec.encode_file(wav, tmp_path / "whole.lyra", dtype="float32")
    done = codec.encode_file(wav, tmp_path / "streamed.lyra", stream=True, chunk_seconds=seconds, dtype="float32",
                             progress=lambda d, t: calls.append((d, t)))
    assert len(calls) > 5 and all(t == pytest.approx(20000 / 44100) for _, t in calls)   # the WAV header's length
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and calls[-1][0] == pytest.approx(done.seconds)
    _, zw, tw = read_lyra(tmp_path / "whole.lyra")
    _, zs, ts = read_lyra(tmp_path / "streamed.lyra")
    assert tw == ts and (zw - zs).abs().max() <= TOL

    calls.clear()
    codec.decode_file(tmp_path / "whole.lyra", tmp_path / "whole.wav", subtype="FLOAT")
    codec.decode_file(tmp_path / "whole.lyra", tmp_path / "streamed.wav", subtype="FLOAT", stream=True,
                      chunk_seconds=seconds, progress=lambda d, t: calls.append((d, t)))
    assert len(calls) > 5 and calls[-1][0] == calls[-1][1] == pytest.approx(20000 / 44100)
    assert (read(tmp_path / "whole.wav")[0] - read(tmp_path / "streamed.wav")[0]).abs().max() <= TOL


def test_decode_file_refuses_another_models_file_in_one_line(tmp_path, codec, ckpt):
    other = Codec(tiny_model(seed=1))
    wav = write_wav(tmp_path / "in.wav", 3000)
    other.encode_file(wav, tmp_path / "other.lyra")
    with pytest.raises(lyra.LyraError) as info:
        codec.decode_file(tmp_path / "other.lyra", tmp_path / "out.wav")
    assert str(info.value) == (f"{tmp_path / 'other.lyra'}: written by model {other.fingerprint}, but {ckpt} is "
                               f"model {codec.fingerprint}; decode with the checkpoint that encoded it")
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("stream", [False, True])
def test_original_channels_gives_back_a_mono_source_as_the_channel_mean(tmp_path, codec, stream):
    mono = write_wav(tmp_path / "mono.wav", 7000, channels=1, rate=22050, seed=int(stream))
    codec.encode_file(mono, tmp_path / "mono.lyra")
    options = dict(stream=stream, chunk_seconds=chunk_seconds(codec, 50), subtype="FLOAT", original_rate=True)
    stereo = codec.decode_file(tmp_path / "mono.lyra", tmp_path / "stereo.wav", **options)
    back = codec.decode_file(tmp_path / "mono.lyra", tmp_path / "back.wav", original_channels=True, **options)
    assert (stereo.channels, back.channels, back.sample_rate, back.samples) == (2, 1, 22050, 7000)
    y, rate = read(tmp_path / "back.wav")
    assert y.shape == (1, 7000) and rate == 22050
    assert torch.allclose(y, read(tmp_path / "stereo.wav")[0].mean(dim=0, keepdim=True), atol=1e-6)


def test_original_channels_cannot_restore_channels_mixed_down(tmp_path, codec):
    codec.encode_file(write_wav(tmp_path / "six.wav", 3000, channels=6), tmp_path / "six.lyra", downmix=True)
    with pytest.raises(lyra.LyraError, match=r"six\.lyra: its source had 6 channels, mixed down when encoded; "
                                             r"--original-channels cannot restore them$"):
        codec.decode_file(tmp_path / "six.lyra", tmp_path / "out.wav", original_channels=True)
    assert codec.decode_file(tmp_path / "six.lyra", tmp_path / "two.wav").channels == 2


def test_loading_a_checkpoint_that_stores_its_fingerprint_hashes_nothing(tmp_path, monkeypatch):
    model = tiny_model(seed=2)
    expected = lyra.model.checkpoint.model_fingerprint(model)
    lyra.model.checkpoint.save_checkpoint(tmp_path / "m.pt", model)

    def no_hashing(*args, **kwargs):
        raise AssertionError("the weights were hashed")

    monkeypatch.setattr(lyra.model.checkpoint, "model_fingerprint", no_hashing)
    monkeypatch.setattr(lyra.model.checkpoint, "weights_fingerprint", no_hashing)
    loaded = Codec.load(tmp_path / "m.pt", device="cpu")
    assert loaded.fingerprint == expected and loaded.checkpoint == tmp_path / "m.pt"
    with pytest.raises(AssertionError, match="hashed"):      # the patch does catch hashing
        Codec(tiny_model(seed=2))


# ---------------------------------------------------------------------------------------
# Layout and the command line's progress
# ---------------------------------------------------------------------------------------
def test_audio_io_does_not_import_the_model():
    code = ("import sys, lyra.audio.reading, lyra.audio.writing, lyra.audio.container; "
            "print(sorted(m for m in ('lyra.model.vae', 'lyra.codec.streaming', 'lyra.model.blocks') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_streamed_encode_shows_progress_on_a_terminal_and_none_when_piped(tmp_path, capsys, ckpt):
    wav = write_wav(tmp_path / "song.wav", 3 * 44100, seed=6)
    args = ["-c", ckpt, "--stream", "--chunk-seconds", "0.5", "--device", "cpu"]
    code, output = run_on_pty(["encode", wav, tmp_path / "a.lyra", *args])
    assert code == 0, output
    header, _, _ = read_lyra(tmp_path / "a.lyra")
    summary = f"16538 frames, 3.000 s, {header.bitrate / 1000:.2f} kbit/s (float16)"
    shown = [line.rstrip() for line in screen_lines(output) if line.strip()]
    bars = [line for line in shown if line.lstrip("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ").startswith("encoding song.wav ")]
    assert bars and all("elapsed" in line for line in bars), shown
    assert "3.0 s/3.0 s" in bars[-1], bars                      # the WAV's duration, all of it done
    assert shown[-1] == f"{tmp_path / 'a.lyra'}: {summary}"

    piped = run_lyra("encode", wav, tmp_path / "b.lyra", *args)               # stderr is a pipe
    assert piped.returncode == 0 and piped.stderr == f"{tmp_path / 'b.lyra'}: {summary}\n"
    assert cli(capsys, "encode", wav, tmp_path / "c.lyra", *args[:-2], "--quiet") == (0, "")
    assert (tmp_path / "a.lyra").read_bytes() == (tmp_path / "b.lyra").read_bytes() == (tmp_path / "c.lyra").read_bytes()


def test_cli_original_channels_writes_mono_for_a_mono_source(tmp_path, capsys, ckpt):
    mono = write_wav(tmp_path / "mono.wav", 5000, channels=1, seed=8)
    assert cli(capsys, "encode", mono, tmp_path / "m.lyra", "-c", ckpt)[0] == 0
    assert cli(capsys, "decode", tmp_path / "m.lyra", tmp_path / "m.wav", "-c", ckpt, "--original-channels",
               "-q") == (0, "")
    info = sf.info(str(tmp_path / "m.wav"))
    assert (info.channels, info.frames) == (1, 5000)
    assert np.isfinite(sf.read(str(tmp_path / "m.wav"))[0]).all()
