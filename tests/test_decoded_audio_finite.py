"""Decoded audio that is not finite is an error, never a file: a model whose weights overflow
(finite, but 3e38: its output is infinite or NaN) or hold a NaN decodes to NaN, which a PCM_16
file would hold as -32768 (and infinity as clipped samples), with exit 0. Whole-file and
streamed decode, `Codec.decode_file`, and the tensor API `Codec.decode`/`decode_iter` (a
`LyraError` too, never NaN audio returned). (issue 22, item 1: the decoding part)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from cli_helpers import lyra, small_checkpoint, write_wav
from lyra.codec.codec import Codec
from lyra.core.errors import LyraError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")
NOT_FINITE = r"decoded audio is not finite \(NaN or infinity from sample \d+\): the model is broken \(are its weights damaged\?\)"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A small model, and the same with the decoder's last convolution's weights all 3e38
    (finite, so any check of the weights passes; its output overflows), each with a .lyra file
    it wrote."""
    from lyra.model.checkpoint import load_model, save_checkpoint

    folder = tmp_path_factory.mktemp("models")
    good = small_checkpoint(folder / "good.pt", seed=3)
    model = load_model(good)
    with torch.no_grad():
        model.decoder.conv_out.weight.fill_(3e38)
    save_checkpoint(folder / "overflowing.pt", model)
    write_wav(folder / "in.wav", 6000)
    for name in ("good", "overflowing"):
        Codec.load(folder / f"{name}.pt", device="cpu").encode_file(folder / "in.wav", folder / f"{name}.lyra")
    return {"folder": folder, "good": good, "bad": folder / "overflowing.pt", "lyra": folder / "overflowing.lyra",
            "good_lyra": folder / "good.lyra"}


@pytest.mark.parametrize("stream", [False, True])
def test_decode_of_non_finite_audio_is_an_error_leaving_nothing(tmp_path, models, stream):
    out = tmp_path / "out.wav"
    args = ["--stream", "--chunk-seconds", "0.05"] if stream else []
    done = lyra("decode", models["lyra"], out, "-c", models["bad"], *args)
    assert done.returncode == 1
    assert re.fullmatch(f"lyra: error: {re.escape(str(out))}: {NOT_FINITE}\n", done.stderr), done.stderr
    assert list(tmp_path.iterdir()) == []                          # nothing left behind
    done = lyra("decode", models["lyra"], out, "-c", models["bad"], "--subtype", "FLOAT", "--original-rate", *args)
    assert done.returncode == 1 and done.stderr.endswith("the model is broken (are its weights damaged?)\n")
    assert list(tmp_path.iterdir()) == []


def test_folder_decode_reports_the_file(tmp_path, models):
    (tmp_path / "latents").mkdir()
    (tmp_path / "latents" / "x.lyra").write_bytes(models["lyra"].read_bytes())
    done = lyra("decode", tmp_path / "latents", tmp_path / "decoded", "-c", models["bad"])
    assert done.returncode == 1
    first, second = done.stderr.splitlines()
    assert re.fullmatch(f"lyra: error: {re.escape(str(tmp_path / 'decoded' / 'x.wav'))}: {NOT_FINITE}", first)
    assert second == f"lyra: error: 1 of 1 files failed; the others were written to {tmp_path / 'decoded'}"
    assert list((tmp_path / "decoded").iterdir()) == []


def test_the_library_refuses_non_finite_audio(tmp_path, models):
    codec = Codec.load(models["good"], device="cpu")
    z = codec.encode(torch.zeros(2, 6000).uniform_(-0.3, 0.3))      # [D, F]
    assert torch.isfinite(codec.decode(z)).all()
    with torch.no_grad():
        codec.model.decoder.conv_out.bias[0] = float("nan")        # a weight damaged in memory
    for stream in (False, True):
        with pytest.raises(LyraError, match=r"^decode: decoded audio is not finite \(NaN or infinity from sample 0\)"):
            codec.decode(z, stream=stream)
        with pytest.raises(LyraError, match=r"^decode: decoded audio is not finite"):
            codec.round_trip(torch.zeros(2, 6000), stream=stream)
    with pytest.raises(LyraError, match=r"^decode_iter: decoded audio is not finite \(NaN or infinity from sample 0\)"):
        list(codec.decode_iter([z[:, :2], z[:, 2:]], chunk_seconds=0.05))
    for stream in (False, True):
        with pytest.raises(LyraError) as caught:
            codec.decode_file(models["good_lyra"], tmp_path / "y.wav", stream=stream, chunk_seconds=0.05)
        assert re.fullmatch(f"{re.escape(str(tmp_path / 'y.wav'))}: {NOT_FINITE}", str(caught.value))
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(LyraError, match=r"^latents: holds NaN or infinite values; latents must be finite$"):
        codec.decode(torch.full_like(z, float("nan")))
