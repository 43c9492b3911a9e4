"""`lyra encode/decode --compile` and `--precision`, through the installed entry point: the
compiled codec gives the eager codec's output (a whole-file encode, a streamed decode),
compilation took effect (inductor generated code, no graph break, no recompile-limit
fallback), and bf16 stays within a stated SI-SDR of fp32. (Compiled streaming and whole files
of many lengths are also checked in-process, in tests/test_compilation.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_helpers import lyra, lyra_env, lyra_many, read, write_wav
from lyra.audio.container import read_lyra
from lyra.eval.metrics import si_sdr

# Hop 16, two blocks each way: six compiled stages, compiled in seconds.
TINY_TOML = """[model]
base_channels = 4
latent_dim = 4
c_mults = [1, 2]
strides = [4, 4]
dilations = [1, 3]
"""
BF16_MIN_SI_SDR_DB = 25.0   # decoded bf16 vs decoded fp32, this model, measured about 40 dB


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny checkpoint, a 0.75 s stereo WAV not a multiple of the hop or the chunk)."""
    folder = tmp_path_factory.mktemp("codec")
    (folder / "tiny.toml").write_text(TINY_TOML)
    done = lyra("init-checkpoint", folder / "tiny.pt", "--config", folder / "tiny.toml", "--seed", "5")
    assert done.returncode == 0, done.stderr
    return folder / "tiny.pt", write_wav(folder / "in.wav", 33_077, subtype="FLOAT")


def test_compiled_codec_equals_eager_and_compiles_without_breaks(tiny, tmp_path):
    ckpt, wav = tiny
    cache = tmp_path / "inductor"
    compiled_env = lyra_env(TORCHINDUCTOR_CACHE_DIR=str(cache), TORCH_LOGS="graph_breaks,recompiles")
    common = ["-c", ckpt, "--dtype", "float32", "--chunk-seconds", "0.1"]
    eager = lyra_many([["encode", wav, tmp_path / "eager.lyra", *common],
                       ["encode", wav, tmp_path / "eager-stream.lyra", *common, "--stream"]])
    assert all(done.returncode == 0 for done in eager), [d.stderr for d in eager]
    compiled = lyra("encode", wav, tmp_path / "compiled.lyra", *common, "--compile", env=compiled_env)
    assert compiled.returncode == 0, compiled.stderr
    assert "Graph break" not in compiled.stderr and "recompile_limit" not in compiled.stderr, compiled.stderr
    assert list(cache.rglob("*.py")), "inductor generated no code: nothing was compiled"

    _, z_eager, _ = read_lyra(tmp_path / "eager.lyra")
    for name in ("eager-stream", "compiled"):
        _, z, _ = read_lyra(tmp_path / f"{name}.lyra")
        assert isinstance(z, torch.Tensor) and z.numel() > 0
        torch.testing.assert_close(z, z_eager, rtol=1e-4, atol=1e-5)

    out = {}
    for name, flags, env in (("eager", [], None), ("compiled-stream", ["--compile", "--stream"], compiled_env)):
        done = lyra("decode", tmp_path / "eager.lyra", tmp_path / f"{name}.wav", "-c", ckpt, "--subtype", "FLOAT",
                    "--chunk-seconds", "0.1", *flags, env=env)
        assert done.returncode == 0, done.stderr
        assert "Graph break" not in done.stderr and "recompile_limit" not in done.stderr, done.stderr
        out[name] = read(tmp_path / f"{name}.wav")[0]
    torch.testing.assert_close(out["compiled-stream"], out["eager"], rtol=1e-4, atol=1e-5)


def test_bf16_codec_within_the_stated_si_sdr_of_fp32(tiny, tmp_path):
    ckpt, wav = tiny
    runs = {}
    for precision in ("fp32", "bf16"):
        done = lyra("encode", wav, tmp_path / f"{precision}.lyra", "-c", ckpt, "--dtype", "float32",
                    "--precision", precision)
        assert done.returncode == 0, done.stderr
        done = lyra("decode", tmp_path / f"{precision}.lyra", tmp_path / f"{precision}.wav", "-c", ckpt,
                    "--subtype", "FLOAT", "--precision", precision)
        assert done.returncode == 0, done.stderr
        runs[precision] = (read(tmp_path / f"{precision}.wav")[0], done.stderr)
    (fp32, _), (bf16, stderr) = runs["fp32"], runs["bf16"]
    assert not torch.equal(fp32, bf16)                       # it really ran in bf16
    assert float(si_sdr(fp32[None], bf16[None])) > BF16_MIN_SI_SDR_DB
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():     # this CPU emulates bf16: say so, in one line
        assert stderr.count("lyra: warning: bf16 on this cpu is emulated") == 1, stderr
        assert "RuntimeWarning" not in stderr


def test_bad_precision_is_a_usage_error_before_loading(tiny, tmp_path):
    ckpt, wav = tiny
    done = lyra("encode", wav, tmp_path / "x.lyra", "-c", ckpt, "--precision", "fp8")
    assert done.returncode == 1 and done.stderr == "lyra: error: --precision: expected one of fp32, bf16, fp16, got 'fp8'\n"
    assert not (tmp_path / "x.lyra").exists()
