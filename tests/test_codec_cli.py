"""`lyra encode / decode / info / eval` end to end: formats, folders, pipes, streamed ==
offline, and every bad input of the issue (one-line error, non-zero exit, nothing written,
input untouched)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lyra.audio.resample import resampled_length
from lyra.model.checkpoint import load_model
from lyra.cli import main
from lyra.audio.container import read_lyra, stored
from lyra.eval.metrics import mel_distance, si_sdr, stft_distance

from cli_helpers import read, small_checkpoint

SR = 44100
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", seed=3)


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "other.pt", seed=4)


@pytest.fixture(scope="module")
def model(ckpt):
    return load_model(ckpt)


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tones(frames: int, channels: int = 2, rate: int = SR, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / rate
    x = 0.4 * np.sin(2 * np.pi * np.array([220.0, 330.0, 440.0, 550.0, 660.0, 770.0])[:channels] * t)
    return (x + 0.05 * rng.standard_normal((frames, channels))).astype(np.float32)       # [n, C]


def write_wav(path: Path, frames: int, channels: int = 2, rate: int = SR, subtype: str = "FLOAT", seed: int = 0) -> Path:
    sf.write(path, tones(frames, channels, rate, seed), rate, subtype=subtype)
    return path


def offline_reference(model, x: torch.Tensor, dtype: str = "float16") -> tuple[torch.Tensor, torch.Tensor]:
    """What encode+decode must give, computed with the model directly: (stored latents, audio)."""
    with torch.inference_mode():
        mean, _ = model.encode(x[None])
        z = stored(mean[0], dtype)
        return z, model.decode(z[None], x.shape[-1])[0]


# ---------------------------------------------------------------------------------------
# The happy paths
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["encode", "decode", "info", "eval"])
def test_help_is_useful_on_its_own(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "Examples" in out or "Example" in out
    for word in {"encode": ["--checkpoint", "--stream", "--chunk-seconds", "--device", "--dtype", "--downmix"],
                 "decode": ["--checkpoint", "--stream", "--original-rate", "--format", "--subtype"],
                 "info": ["FILE", "--json"], "eval": ["REF", "DEGRADED", "--checkpoint"]}[command]:
        assert word in out


def test_encode_info_decode_eval(tmp_path, capsys, ckpt, model):
    wav = write_wav(tmp_path / "song.wav", 40000)
    lyra_file, back = tmp_path / "song.lyra", tmp_path / "back.wav"
    before = wav.read_bytes()

    code, out, err = run(capsys, "encode", wav, lyra_file, "-c", ckpt)
    assert code == 0, err
    assert out == ""                                      # messages go to stderr
    x, _ = read(wav)
    z_ref, y_ref = offline_reference(model, x)
    header, z, trailer = read_lyra(lyra_file)
    assert torch.equal(z, z_ref)                          # the posterior mean, stored as float16
    assert (trailer.num_samples, trailer.source_num_samples, trailer.num_frames) == (40000, 40000, 20)
    assert header.model_fingerprint in run(capsys, "info", lyra_file)[1]

    code, out, _ = run(capsys, "info", lyra_file)
    assert code == 0
    assert "5.51 kbit/s latent payload" in out            # 16 channels x 16 bits x 21.53 Hz
    assert "40,000 samples" in out and "float16" in out
    facts = json.loads(run(capsys, "info", lyra_file, "--json")[1])
    assert facts["frames"] == 20 and facts["latent_kbps"] == pytest.approx(16 * 16 * SR / 2048 / 1000)

    assert run(capsys, "decode", lyra_file, back, "-c", ckpt, "--subtype", "FLOAT")[0] == 0
    y, rate = read(back)
    assert rate == SR and y.shape == x.shape
    assert (y - y_ref).abs().max() <= TOL

    code, out, _ = run(capsys, "eval", wav, back, "--json")
    assert code == 0
    got = json.loads(out)["mean"]
    assert got["si_sdr_db"] == pytest.approx(float(si_sdr(x, y)), abs=1e-3)
    assert got["stft_distance"] == pytest.approx(float(stft_distance(x, y)), rel=1e-4)
    assert got["mel_distance"] == pytest.approx(float(mel_distance(x, y)), rel=1e-4)
    assert wav.read_bytes() == before


def test_streamed_files_equal_offline_files(tmp_path, capsys, ckpt):
    wav = write_wav(tmp_path / "in.wav", 2 * SR + 777)
    a, b = tmp_path / "a.lyra", tmp_path / "b.lyra"
    common = ["-c", ckpt, "--dtype", "float32"]
    assert run(capsys, "encode", wav, a, *common)[0] == 0
    assert run(capsys, "encode", wav, b, *common, "--stream", "--chunk-seconds", "0.3")[0] == 0
    _, za, ta = read_lyra(a)
    _, zb, tb = read_lyra(b)
    assert ta == tb and (za - zb).abs().max() <= TOL
    ya, yb = tmp_path / "a.wav", tmp_path / "b.wav"
    assert run(capsys, "decode", a, ya, "-c", ckpt, "--subtype", "FLOAT")[0] == 0
    assert run(capsys, "decode", a, yb, "-c", ckpt, "--subtype", "FLOAT", "--stream", "--chunk-seconds", "0.2")[0] == 0
    assert (read(ya)[0] - read(yb)[0]).abs().max() <= TOL


def test_encoding_is_deterministic(tmp_path, capsys, ckpt):
    wav = write_wav(tmp_path / "in.wav", 9000)
    for name in ("a.lyra", "b.lyra"):
        assert run(capsys, "encode", wav, tmp_path / name, "-c", ckpt, "--stream")[0] == 0
    assert (tmp_path / "a.lyra").read_bytes() == (tmp_path / "b.lyra").read_bytes()


# (suffix, soundfile subtype, rate, channels)
INPUTS = [
    ("wav", "PCM_16", 44100, 2),
    ("wav", "PCM_24", 48000, 1),
    ("wav", "FLOAT", 96000, 2),
    ("flac", "PCM_24", 22050, 2),
    ("ogg", "VORBIS", 32000, 2),
    ("mp3", "MPEG_LAYER_III", 44100, 1),
]


@pytest.mark.parametrize("suffix, subtype, rate, channels", INPUTS, ids=lambda v: str(v))
def test_each_input_format_round_trips(tmp_path, capsys, ckpt, model, suffix, subtype, rate, channels):
    src = tmp_path / f"in.{suffix}"
    sf.write(src, tones(rate // 3, channels, rate), rate, subtype=subtype)
    source, _ = read(src)
    lyra_file = tmp_path / "x.lyra"
    assert run(capsys, "encode", src, lyra_file, "-c", ckpt, "--stream")[0] == 0
    header, z, trailer = read_lyra(lyra_file)
    assert (header.source_sample_rate, header.source_channels) == (rate, channels)
    assert trailer.source_num_samples == source.shape[-1]
    assert trailer.num_samples == resampled_length(source.shape[-1], rate, SR)

    import torchaudio.functional
    x = torchaudio.functional.resample(source, rate, SR).expand(2, -1) if rate != SR else source.expand(2, -1)
    z_ref, y_ref = offline_reference(model, x.contiguous())
    assert (z - z_ref).abs().max() <= 2e-3               # float16 storage: at most an ulp apart

    at_model, at_source = tmp_path / "model.wav", tmp_path / "source.flac"
    assert run(capsys, "decode", lyra_file, at_model, "-c", ckpt, "--subtype", "FLOAT")[0] == 0
    y, y_rate = read(at_model)
    assert y_rate == SR and y.shape == (2, trailer.num_samples)
    assert run(capsys, "decode", lyra_file, at_source, "-c", ckpt, "--original-rate", "--stream")[0] == 0
    info = sf.info(at_source)
    assert (info.samplerate, info.frames, info.channels) == (rate, source.shape[-1], 2)


def test_decode_to_stdout(tmp_path, capfdbinary, ckpt):
    wav = write_wav(tmp_path / "in.wav", 5000)
    lyra_file = tmp_path / "x.lyra"
    assert main(["encode", str(wav), str(lyra_file), "-c", str(ckpt)]) == 0
    capfdbinary.readouterr()
    assert main(["decode", str(lyra_file), "-", "-c", str(ckpt), "--stream", "--subtype", "FLOAT"]) == 0
    (tmp_path / "out.wav").write_bytes(capfdbinary.readouterr().out)
    assert main(["decode", str(lyra_file), str(tmp_path / "ref.wav"), "-c", str(ckpt), "--subtype", "FLOAT"]) == 0
    assert (read(tmp_path / "out.wav")[0] - read(tmp_path / "ref.wav")[0]).abs().max() <= TOL


def test_folders_are_mirrored(tmp_path, capsys, ckpt):
    music = tmp_path / "music"
    (music / "sub").mkdir(parents=True)
    write_wav(music / "a.wav", 6000)
    sf.write(music / "sub" / "b.flac", tones(7000, 1), SR)
    (music / "notes.txt").write_text("not audio, not picked up")
    code, _, err = run(capsys, "encode", music, tmp_path / "latents", "-c", ckpt)
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "latents").as_posix() for p in (tmp_path / "latents").rglob("*.lyra")) \
        == ["a.lyra", "sub/b.lyra"]
    assert "encoding" in err                               # the progress bar's label
    assert run(capsys, "decode", tmp_path / "latents", tmp_path / "decoded", "-c", ckpt, "--stream")[0] == 0
    assert (tmp_path / "decoded" / "sub" / "b.wav").is_file() and (tmp_path / "decoded" / "a.wav").is_file()
    code, out, _ = run(capsys, "eval", music, tmp_path / "decoded")
    assert code == 0
    assert "a.wav" in out and "sub/b.flac" in out and "mean of 2" in out


def test_a_folder_with_a_bad_file_reports_it_and_writes_the_rest(tmp_path, capsys, ckpt):
    music = tmp_path / "music"
    music.mkdir()
    write_wav(music / "good.wav", 6000)
    (music / "bad.wav").write_text("not audio")
    code, _, err = run(capsys, "encode", music, tmp_path / "out", "-c", ckpt)
    assert code == 1
    assert "bad.wav: not a readable audio file" in err and "1 of 2 files failed" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.lyra"]


def test_folder_outputs_that_would_collide_are_refused_before_any_work(tmp_path, capsys, ckpt):
    music = tmp_path / "music"
    music.mkdir()
    write_wav(music / "a.wav", 3000)
    sf.write(music / "a.flac", tones(3000, 2), SR)
    code, _, err = run(capsys, "encode", music, tmp_path / "out", "-c", ckpt)
    assert code == 1 and "would both be written to" in err and "a.lyra" in err
    assert not (tmp_path / "out").exists()


def test_eval_with_a_checkpoint_matches_the_metrics_of_the_round_trip(tmp_path, capsys, ckpt, model):
    wav = write_wav(tmp_path / "in.wav", 20000)
    code, out, _ = run(capsys, "eval", wav, "-c", ckpt, "--json")
    assert code == 0
    x, _ = read(wav)
    _, y = offline_reference(model, x)
    got = json.loads(out)["mean"]
    assert got["si_sdr_db"] == pytest.approx(float(si_sdr(x, y)), abs=1e-3)
    assert got["mel_distance"] == pytest.approx(float(mel_distance(x, y)), rel=1e-4)
    code, out, _ = run(capsys, "eval", wav, wav)
    assert code == 0 and "SI-SDR" in out
    assert float(out.splitlines()[1].split()[1]) > 60                 # identical files


def test_shorter_than_one_hop_is_accepted_and_keeps_its_length(tmp_path, capsys, ckpt):
    """Decided: a file shorter than one hop (2048 samples) is valid input; the model pads it
    to one latent frame and decoding crops back to its length."""
    wav = write_wav(tmp_path / "click.wav", 100)
    assert run(capsys, "encode", wav, tmp_path / "c.lyra", "-c", ckpt)[0] == 0
    assert read_lyra(tmp_path / "c.lyra")[2].num_frames == 1
    assert run(capsys, "decode", tmp_path / "c.lyra", tmp_path / "c.wav", "-c", ckpt)[0] == 0
    assert sf.info(tmp_path / "c.wav").frames == 100


def test_downmix_on_request(tmp_path, capsys, ckpt):
    six = write_wav(tmp_path / "six.wav", 5000, channels=6)
    code, _, err = run(capsys, "encode", six, tmp_path / "x.lyra", "-c", ckpt)
    assert code == 1 and "six.wav: has 6 channels but the model takes 2; pass --downmix" in err
    assert run(capsys, "encode", six, tmp_path / "x.lyra", "-c", ckpt, "--downmix")[0] == 0
    assert read_lyra(tmp_path / "x.lyra")[0].source_channels == 6


def test_int8_storage_halves_the_bitrate(tmp_path, capsys, ckpt):
    wav = write_wav(tmp_path / "in.wav", 9000)
    assert run(capsys, "encode", wav, tmp_path / "q.lyra", "-c", ckpt, "--dtype", "int8")[0] == 0
    facts = json.loads(run(capsys, "info", tmp_path / "q.lyra", "--json")[1])
    assert facts["dtype"] == "int8" and facts["latent_kbps"] == pytest.approx((16 * 8 + 32) * SR / 2048 / 1000)


# ---------------------------------------------------------------------------------------
# Bad inputs: one line, non-zero, nothing written, input untouched
# ---------------------------------------------------------------------------------------
def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def make_bad_audio(folder: Path, kind: str) -> Path:
    data = tones(5000, 2)
    path = folder / f"{kind}.wav"
    if kind in ("nan", "inf"):
        data[1234, 0] = np.nan if kind == "nan" else np.inf
        sf.write(path, data, SR, subtype="FLOAT")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "header_only":
        sf.write(path, np.zeros((0, 2), np.float32), SR)
    elif kind == "not_audio":
        path.write_text("definitely not a RIFF file\n" * 10)
    elif kind == "not_audio_mp3":
        path = folder / "song.mp3"
        path.write_bytes(os.urandom(3000))
    return path


@pytest.mark.parametrize("kind, message", [
    ("nan", r"nan\.wav: sample 1234 \(0:00\.028\) of channel 1 is nan"),
    ("inf", r"inf\.wav: sample 1234 \(0:00\.028\) of channel 1 is inf"),
    ("empty", r"empty\.wav: empty file \(0 bytes\)"),
    ("header_only", r"header_only\.wav: contains no audio samples"),
    ("not_audio", r"not_audio\.wav: not a readable audio file"),
    ("not_audio_mp3", r"song\.mp3: not a readable audio file"),
    ("missing", r"missing\.wav: no such file"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_audio_input(tmp_path, capsys, ckpt, kind, message, stream):
    src = make_bad_audio(tmp_path, kind) if kind != "missing" else tmp_path / "missing.wav"
    before = digest(tmp_path)
    code, out, err = run(capsys, "encode", src, tmp_path / "out.lyra", "-c", ckpt, *(["--stream"] if stream else []))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("lyra: error: ")
    assert re.search(message, err), err
    assert digest(tmp_path) == before                    # no output, no temporary file, input untouched


@pytest.fixture()
def good_lyra(tmp_path, capsys, ckpt) -> Path:
    wav = write_wav(tmp_path / "in.wav", 30000)
    path = tmp_path / "good.lyra"
    assert run(capsys, "encode", wav, path, "-c", ckpt, "--stream", "--chunk-seconds", "0.1")[0] == 0
    wav.unlink()
    return path


def damage(path: Path, kind: str) -> Path:
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        out = path.with_name("truncated.lyra")
        out.write_bytes(bytes(data[: len(data) * 2 // 3]))
    elif kind == "corrupted":
        out = path.with_name("corrupted.lyra")
        data[len(data) // 2] ^= 0x10
        out.write_bytes(bytes(data))
    elif kind == "not_lyra":
        out = path.with_name("song.lyra")
        sf.write(path.with_name("tmp.wav"), tones(100, 2), SR)
        out.write_bytes(path.with_name("tmp.wav").read_bytes())
        path.with_name("tmp.wav").unlink()
    else:
        out = path.with_name("missing.lyra")
    return out


@pytest.mark.parametrize("kind, message", [
    ("truncated", r"truncated\.lyra: truncated \.lyra file"),
    ("corrupted", r"corrupted\.lyra: corrupted \.lyra file \(chunk \d+, at frame \d+ fails its CRC32 check\)"),
    ("not_lyra", r"song\.lyra: not a \.lyra file"),
    ("missing", r"missing\.lyra: no such file"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_lyra_input(tmp_path, capsys, ckpt, good_lyra, kind, message, stream):
    src = damage(good_lyra, kind)
    before = digest(tmp_path)
    code, _, err = run(capsys, "decode", src, tmp_path / "out.wav", "-c", ckpt, *(["--stream", "--chunk-seconds", "0.1"] if stream else []))
    assert code == 1
    assert err.count("\n") == 1 and re.search(message, err), err
    assert digest(tmp_path) == before


def test_decoding_with_another_model_is_refused(tmp_path, capsys, other_ckpt, good_lyra):
    before = digest(tmp_path)
    code, _, err = run(capsys, "decode", good_lyra, tmp_path / "out.wav", "-c", other_ckpt)
    assert code == 1 and err.count("\n") == 1
    assert "good.lyra: written by model" in err and "decode with the checkpoint that encoded it" in err
    assert digest(tmp_path) == before


def test_refuses_to_overwrite_its_input(tmp_path, capsys, ckpt):
    wav = write_wav(tmp_path / "in.wav", 3000)
    before = digest(tmp_path)
    code, _, err = run(capsys, "encode", wav, wav, "-c", ckpt)
    assert code == 1 and "is the input file" in err
    assert digest(tmp_path) == before


def test_a_fifo_or_device_as_out_is_written_in_place_not_replaced(tmp_path, capsys, ckpt):
    """`lyra encode x.wav /dev/null` must not rename a temporary file onto the device. Tested
    on a FIFO in tmp_path (renaming over it would turn it into a regular file)."""
    import stat
    import threading

    wav = write_wav(tmp_path / "in.wav", 5000)
    fifo = tmp_path / "out.lyra"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _, err = run(capsys, "encode", wav, fifo, "-c", ckpt, "--stream")
    reader.join(timeout=60)
    assert code == 0, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert received and received[0].startswith(b"\x89LYRA")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.lyra"]


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_ctrl_c_while_writing_leaves_no_partial_output(tmp_path, capsys, ckpt, good_lyra, monkeypatch, command):
    import lyra.audio.writing
    import lyra.audio.container

    target = lyra.audio.container.LatentWriter if command == "encode" else lyra.audio.writing.AudioWriter
    original = target.write
    calls = []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(target, "write", interrupted)
    src = write_wav(tmp_path / "in.wav", 30000) if command == "encode" else good_lyra
    out = tmp_path / ("out.lyra" if command == "encode" else "out.wav")
    out.write_bytes(b"an older output stays as it was")
    before = digest(tmp_path)
    code, _, err = run(capsys, command, src, out, "-c", ckpt, "--stream", "--chunk-seconds", "0.1", "--force")
    assert len(calls) == 2
    assert digest(tmp_path) == before                    # no partial output, old output intact
    assert code == 130 and err == "lyra: interrupted (SIGINT)\n"


def test_pipeline_through_real_pipes(tmp_path, ckpt, model):
    """`cat in.wav | lyra encode --stream - - | lyra decode --stream - out.wav` in real processes."""
    wav = write_wav(tmp_path / "in.wav", SR + 999, subtype="PCM_16")
    out = tmp_path / "out.wav"
    lyra = f"{sys.executable} -m lyra"
    common = f"-c {ckpt} --device cpu --chunk-seconds 0.3"
    cmd = (f"set -o pipefail; cat {wav} | {lyra} encode --stream - - {common} "
           f"| {lyra} decode --stream - {out} {common} --subtype FLOAT")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}      # two processes on a shared 2-core machine
    result = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    x, _ = read(wav)
    _, y_ref = offline_reference(model, x)
    y, rate = read(out)
    assert rate == SR and y.shape == x.shape
    assert (y - y_ref).abs().max() <= 2e-3        # float16 latents: streamed and offline may differ by an ulp


def test_ema_weights_are_used_unless_no_ema(tmp_path):
    """A checkpoint holding EMA weights encodes with them; `--no-ema` uses the trained weights."""
    from cli_helpers import lyra_many, small_checkpoint, write_wav
    from lyra.model.checkpoint import read_checkpoint
    from lyra.audio.container import read_lyra

    raw = small_checkpoint(tmp_path / "raw.pt", seed=3)
    state = read_checkpoint(raw)
    state["ema"] = {k: v + 0.01 * torch.randn_like(v) for k, v in state["model"].items()}
    torch.save(state, tmp_path / "ema.pt")
    wav = write_wav(tmp_path / "x.wav", 5000)
    runs = lyra_many([["encode", wav, tmp_path / f"{name}.lyra", "-c", tmp_path / ckpt, "--dtype", "float32", *flags]
                      for name, ckpt, flags in (("raw", "raw.pt", []), ("ema", "ema.pt", []),
                                                ("no-ema", "ema.pt", ["--no-ema"]))])
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    z = {name: read_lyra(tmp_path / f"{name}.lyra")[1] for name in ("raw", "ema", "no-ema")}
    assert torch.equal(z["no-ema"], z["raw"]) and not torch.allclose(z["ema"], z["raw"])
