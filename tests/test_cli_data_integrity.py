"""Issue 12, part B, as users meet it: the command line never reports success for lost or
wrong data. Damaged, spliced or forged `.lyra` files, outputs cut short (closed pipe, full
disk), FLAC to a pipe, truncated WAVs, FIFO inputs and hostile checkpoints.

What depends on the process (pipes, stdout, resource limits, the shell) runs the installed
`lyra` entry point in a subprocess; the rest calls the same `main` in-process (each
subprocess costs seconds of torch import)."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lyra.model.checkpoint import load_model, model_fingerprint
from lyra.cli import main
from lyra.model.config import ModelConfig
from lyra.audio.container import read_lyra

from cli_helpers import lyra_executable, small_checkpoint
from lyra_file_helpers import split, tag, with_header

SR = 44100
LYRA = lyra_executable()
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
COMMON = ["--device", "cpu", "--threads", "1"]
V1 = Path(__file__).parent / "data" / "v1.lyra"

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def lyra(*args, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([LYRA, *map(str, args)], capture_output=True, env={**ENV, **(env or {})},
                          timeout=300, **kwargs)


def run(capsys, *args) -> tuple[int, str, str]:
    """`lyra ARGS` in-process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(result: subprocess.CompletedProcess | tuple[int, str, str], *words: str) -> str:
    if isinstance(result, tuple):
        code, _, err = result
    else:
        code, err = result.returncode, result.stderr.decode()
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("lyra: error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def tones(seconds: float, seed: int = 0) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n)[:, None] / SR
    rng = np.random.default_rng(seed)
    return (0.4 * np.sin(2 * np.pi * np.array([[220.0 + 50 * seed, 330.0]]) * t)
            + 0.05 * rng.standard_normal((n, 2))).astype(np.float32)          # [n, 2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", seed=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory, ckpt) -> dict[str, Path]:
    """Two 1-second songs encoded with the same model, in chunks of about 0.2 s."""
    folder = tmp_path_factory.mktemp("songs")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        wav = folder / f"{name}.wav"
        sf.write(wav, tones(1.0, seed), SR, subtype="PCM_16")
        out[f"{name}.wav"] = wav
        out[name] = folder / f"{name}.lyra"
        assert main(["encode", str(wav), str(out[name]), "-c", str(ckpt), "--stream", "--chunk-seconds", "0.2",
                     *COMMON]) == 0
    return out


# ---------------------------------------------------------------------------------------
# Chunk order and membership; the format version
# ---------------------------------------------------------------------------------------
def test_swapped_or_spliced_chunks_are_damage_for_decode_and_info(tmp_path, capsys, ckpt, files):
    head, chunks = split(files["a"].read_bytes())
    _, others = split(files["b"].read_bytes())
    data = [i for i, c in enumerate(chunks) if tag(c) == b"DATA"]
    assert len(data) >= 4 and len(others) == len(chunks)
    swapped = list(chunks)
    swapped[data[1]], swapped[data[2]] = chunks[data[2]], chunks[data[1]]
    spliced = list(chunks)
    spliced[data[2]] = others[data[2]]          # same model, same place, another song
    for name, parts, words in (("swapped", swapped, "chunks are out of order, duplicated or missing"),
                               ("spliced", spliced, "one of them comes from another .lyra file")):
        path = tmp_path / f"{name}.lyra"
        path.write_bytes(head + b"".join(parts))
        one_line_error(run(capsys, "decode", path, tmp_path / f"{name}.wav", "-c", ckpt, *COMMON), f"{path}: corrupted", words)
        one_line_error(run(capsys, "decode", path, tmp_path / f"{name}-s.wav", "-c", ckpt, "--stream", *COMMON), words)
        result = run(capsys, "info", path)
        one_line_error(result, words)
        assert "checks pass" not in result[1]
        assert not (tmp_path / f"{name}.wav").exists() and not (tmp_path / f"{name}-s.wav").exists()


def test_info_reports_the_real_format_version_and_version_1_still_decodes(tmp_path, capsys, ckpt, files):
    code, out, err = run(capsys, "info", files["a"])
    assert code == 0 and "(.lyra format version 3, " in out, err
    assert "all CRC32 and chunk-order checks pass" in out
    assert '"format_version": 3' in run(capsys, "info", files["a"], "--json")[1]

    # tests/data/v1.lyra (written by the version-1 writer), claimed for this test's model
    model = load_model(ckpt)
    v1 = tmp_path / "v1.lyra"
    v1.write_bytes(with_header(V1.read_bytes(), model_fingerprint=model_fingerprint(model)))
    code, out, err = run(capsys, "info", v1)
    assert code == 0 and "(.lyra format version 1, " in out, err
    assert '"format_version": 1' in run(capsys, "info", v1, "--json")[1]
    out = tmp_path / "v1.wav"
    code, _, err = run(capsys, "decode", v1, out, "-c", ckpt, "--subtype", "FLOAT", *COMMON)
    assert code == 0, err
    z = torch.linspace(-2, 2, 48).reshape(16, 3).half().float()
    with torch.inference_mode():
        expected = model.decode(z[None], 6044)[0]
    got, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == SR and got.shape == (6044, 2)
    assert np.abs(got.T - expected.numpy()).max() <= 1e-4


@pytest.mark.parametrize("version, changes, relink, words", [
    (2, {"channels": 1}, True, "its header says channels 1, but the model it names"),
    (2, {"sample_rate": 48000}, True, "its header says sample_rate 48000, but the model it names"),
    (1, {"channels": 1}, False, "its header says channels 1, but the model it names"),
    (1, {"sample_rate": 48000}, False, "its header says sample_rate 48000, but the model it names"),
    (2, {"dtype": "bfloat16"}, False, "does not continue the header: the header was altered"),
    (2, {"source_sample_rate": 8000}, False, "does not continue the header: the header was altered"),
])
def test_crafted_headers_with_valid_crcs_are_refused(tmp_path, capsys, ckpt, files, version, changes, relink, words):
    """`relink`: every CRC and link redone, as a deliberate forgery would; the header is then
    checked against the model it names. Version 1: tests/data/v1.lyra, claimed for the model."""
    original = files["a"].read_bytes() if version == 2 else \
        with_header(V1.read_bytes(), model_fingerprint=model_fingerprint(load_model(ckpt)))
    forged = tmp_path / "forged.lyra"
    forged.write_bytes(with_header(original, relink=relink, **changes))
    for stream in ([], ["--stream"]):
        out = tmp_path / "out.wav"
        one_line_error(run(capsys, "decode", forged, out, "-c", ckpt, "--original-rate", *stream, *COMMON),
                       f"{forged}: corrupted .lyra file", words)
        assert not out.exists()


# ---------------------------------------------------------------------------------------
# Outputs cut short: a closed pipe, a full disk
# ---------------------------------------------------------------------------------------
UNBUFFERED = {"PYTHONUNBUFFERED": "1"}     # as in many containers: raw writes, short counts


def test_decode_into_a_pipe_closed_early_is_not_a_success(ckpt, files):
    """`PYTHONUNBUFFERED=1 lyra decode x.lyra - | head -c 1000`: the reader takes 1000 bytes
    of the 176 KB WAV and closes the pipe; the write that was under way returns a short
    count. That must not end in exit status 0 (nor in a traceback)."""
    proc = subprocess.Popen([LYRA, "decode", str(files["a"]), "-", "-c", str(ckpt), *COMMON],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**ENV, **UNBUFFERED})
    head = proc.stdout.read(1000)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=300)
    assert head[:4] == b"RIFF"
    assert code != 0, err
    assert "Traceback" not in err and err.count("\n") <= 1, err


def _file_size_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_fails_decode_and_encode(tmp_path, ckpt, files):
    """A file-size limit behaves like a disk that fills up: the write that crosses it is
    short, the next one fails (EFBIG). Python ignores SIGXFSZ, so the error comes back."""
    out = tmp_path / "out.wav"
    with out.open("wb") as f:
        result = subprocess.run([LYRA, "decode", str(files["a"]), "-", "-c", str(ckpt), *COMMON], stdout=f,
                                stderr=subprocess.PIPE, env={**ENV, **UNBUFFERED}, preexec_fn=_file_size_limit(65536),
                                timeout=300)
    one_line_error(result, "File too large")
    assert out.stat().st_size == 65536

    named = tmp_path / "named.wav"       # through libsndfile, into a temporary file renamed on success
    result = subprocess.run([LYRA, "decode", str(files["a"]), str(named), "-c", str(ckpt), *COMMON],
                            capture_output=True, env=ENV, preexec_fn=_file_size_limit(65536), timeout=300)
    one_line_error(result, f"{named}: cannot write audio (File too large)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]

    latents = tmp_path / "out.lyra"
    assert files["a"].stat().st_size > 512
    with latents.open("wb") as f:
        result = subprocess.run([LYRA, "encode", str(files["a.wav"]), "-", "-c", str(ckpt), *COMMON], stdout=f,
                                stderr=subprocess.PIPE, env={**ENV, **UNBUFFERED}, preexec_fn=_file_size_limit(512),
                                timeout=300)
    one_line_error(result, "File too large")


# ---------------------------------------------------------------------------------------
# FLAC into a pipe
# ---------------------------------------------------------------------------------------
def test_flac_to_a_pipe_or_a_fifo_is_a_valid_flac(tmp_path, capsys, ckpt, files):
    reference = tmp_path / "ref.flac"
    assert run(capsys, "decode", files["a"], reference, "-c", ckpt, *COMMON)[0] == 0
    expected, _ = sf.read(reference, dtype="int16")

    result = lyra("decode", files["a"], "-", "-c", ckpt, "--format", "flac", *COMMON)   # stdout is a pipe
    assert result.returncode == 0, result.stderr
    (tmp_path / "piped.flac").write_bytes(result.stdout)
    got, rate = sf.read(tmp_path / "piped.flac", dtype="int16")
    assert rate == SR and np.array_equal(got, expected)
    assert result.stdout == reference.read_bytes()

    fifo = tmp_path / "fifo.flac"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _, err = run(capsys, "decode", files["a"], fifo, "-c", ckpt, "--stream", *COMMON)
    reader.join(timeout=300)
    assert code == 0, err
    assert received and received[0] == reference.read_bytes()


# ---------------------------------------------------------------------------------------
# Inputs: truncated WAVs, FIFOs and process substitution
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_a_truncated_wav_is_encoded_with_a_warning_giving_both_durations(tmp_path, capsys, ckpt, stream):
    full = tmp_path / "full.wav"
    sf.write(full, tones(63063 / SR), SR, subtype="PCM_16")       # 1.430 s
    data = full.read_bytes()
    assert data[36:40] == b"data"                                  # a plain 44-byte header
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:44 + 1367 * 4])                          # holds 0.031 s
    code, _, err = run(capsys, "encode", cut, tmp_path / "cut.lyra", "-c", ckpt, *(["--stream"] if stream else []), *COMMON)
    assert code == 0, err
    assert (f"{cut}: warning: truncated file: its header promises 1.430 s (63,063 samples) but it holds "
            "0.031 s (1,367 samples)") in err, err
    assert read_lyra(tmp_path / "cut.lyra")[2].source_num_samples == 1367
    code, _, err = run(capsys, "encode", full, tmp_path / "full.lyra", "-c", ckpt, *COMMON)
    assert code == 0 and "warning" not in err


def test_process_substitution_is_read_as_a_stream(tmp_path, capsys, ckpt):
    """`lyra encode <(cat song.wav) out.lyra`: the path is /dev/fd/63, a pipe."""
    src = tmp_path / "song.wav"
    sf.write(src, tones(1.0, seed=3), SR, subtype="PCM_16")
    direct = tmp_path / "direct.lyra"
    assert run(capsys, "encode", src, direct, "-c", ckpt, *COMMON)[0] == 0
    substituted = tmp_path / "substituted.lyra"
    result = subprocess.run(["bash", "-c", f'"{LYRA}" encode <(cat "{src}") "{substituted}" -c "{ckpt}" '
                             + " ".join(COMMON)], capture_output=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    assert torch.equal(read_lyra(substituted)[1], read_lyra(direct)[1])


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_a_named_pipe_is_read_as_a_stream(tmp_path, capsys, ckpt, suffix):
    """WAV from a pipe is read as it arrives, FLAC is spooled first: both give the latents of
    the same file given by name."""
    src = tmp_path / f"song.{suffix}"
    sf.write(src, tones(1.0, seed=3), SR, subtype="PCM_16")
    direct = tmp_path / "direct.lyra"
    assert run(capsys, "encode", src, direct, "-c", ckpt, *COMMON)[0] == 0
    expected = read_lyra(direct)[1]

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as f:
            f.write(src.read_bytes())

    threading.Thread(target=feed, daemon=True).start()
    named = tmp_path / "named.lyra"
    code, _, err = run(capsys, "encode", fifo, named, "-c", ckpt, "--stream", *COMMON)
    assert code == 0, err
    assert torch.equal(read_lyra(named)[1], expected)


# ---------------------------------------------------------------------------------------
# Hostile checkpoints
# ---------------------------------------------------------------------------------------
def test_a_tiny_checkpoint_claiming_a_huge_model_is_refused_before_allocating(tmp_path, files):
    """base_channels = 65536: 120 GB for the first residual conv alone. Under an 8 GB
    address-space limit the old code died in the allocator; now nothing is allocated."""
    huge = tmp_path / "huge.pt"
    torch.save({"format": "lyra-checkpoint", "version": 1, "providers": {}, "model": {},
                "model_config": ModelConfig.small(base_channels=65536).to_dict()}, huge)
    assert huge.stat().st_size < 2048
    limit = 8 << 30
    result = subprocess.run([LYRA, "decode", str(files["a"]), str(tmp_path / "x.wav"), "-c", str(huge), *COMMON],
                            capture_output=True, env=ENV, timeout=300,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    one_line_error(result, f"{huge}: weights do not match the model config (no encoder.conv_in.weight")
    assert not (tmp_path / "x.wav").exists()
