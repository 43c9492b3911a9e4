"""Audio that the writers, the resampler and `lyra eval` must refuse in one line (issue 22):
a rate FLAC cannot hold leaves no file behind (item 7); a 1 Hz file is not resampled to
gigabytes (item 11); files too short for the STFT metrics (item 13)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cli_helpers import lyra, small_checkpoint, write_wav
from lyra.audio import writing
from lyra.audio.resample import MAX_GROWN_VALUES, check_resample, resample
from lyra.audio.writing import AudioWriter, write_audio
from lyra.cli import main
from lyra.core.errors import LyraError
from lyra_file_helpers import chunk, split, with_header

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------------------------
# Item 7: nothing is left behind when the writer cannot start
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [700_000, 768_000])
def test_a_rate_flac_cannot_hold_leaves_no_file(tmp_path, rate):
    out = tmp_path / "x.flac"
    for _ in range(2):      # and the second try says the same, not "already exists"
        with pytest.raises(LyraError, match=rf"^{out}: cannot write audio \(.*sample rate"):
            write_audio(out, torch.zeros(2, 100), rate)
        assert listing(tmp_path) == []
    write_audio(tmp_path / "x.wav", torch.zeros(2, 100), rate)        # WAV holds it
    assert sf.info(str(tmp_path / "x.wav")).samplerate == rate


def test_a_rate_beyond_768_khz_is_refused_before_any_file(tmp_path):
    with pytest.raises(LyraError, match=r"x\.wav: sample rate 2100000000 Hz is not one Lyra handles"):
        AudioWriter(tmp_path / "x.wav", 2_100_000_000, 2)
    assert listing(tmp_path) == []


def test_a_failure_inside_enter_removes_the_temporary(tmp_path, monkeypatch):
    """Whatever fails once the temporary exists (here libsndfile opening it), it is removed."""
    real = writing.soundfile.SoundFile

    def failing(target, *args, **kwargs):
        if isinstance(target, int):                       # the temporary's descriptor
            raise RuntimeError("Error : simulated failure")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(writing.soundfile, "SoundFile", failing)
    with pytest.raises(LyraError, match="cannot write audio"):
        with AudioWriter(tmp_path / "x.wav", 44100, 2):
            pass
    assert listing(tmp_path) == []


def test_decode_to_flac_at_a_768_khz_source_rate_leaves_nothing(tmp_path, capsys):
    ckpt = small_checkpoint(tmp_path / "ck.pt")
    assert main(["encode", "-c", str(ckpt), str(write_wav(tmp_path / "a.wav", 8000)), str(tmp_path / "a.lyra")]) == 0
    capsys.readouterr()
    head, chunks = split(with_header((tmp_path / "a.lyra").read_bytes(), relink=True, source_sample_rate=768_000))
    frames, samples, _ = struct.unpack_from("<QQQ", chunks[-1], 8)
    source = -(-samples * 768_000 // 44100)                   # what maps onto `samples`
    chunks[-1] = chunk(b"END ", struct.pack("<QQQ", frames, samples, source) + chunks[-1][8 + 24:-4])
    (tmp_path / "k.lyra").write_bytes(head + b"".join(chunks))
    before = listing(tmp_path)
    for extra in ([], ["--stream"], []):
        code = main(["decode", "-c", str(ckpt), str(tmp_path / "k.lyra"), str(tmp_path / "k.flac"), "--original-rate", *extra])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and err.startswith(f"lyra: error: {tmp_path / 'k.flac'}: cannot write audio"), err
        assert listing(tmp_path) == before


# ---------------------------------------------------------------------------------------
# Item 11: resampling checks its output size before allocating
# ---------------------------------------------------------------------------------------
def test_resampling_a_1_hz_file_up_is_refused_before_allocating():
    x = torch.zeros(2, 50_000)                               # 100 kB of 16-bit stereo at 1 Hz
    with pytest.raises(LyraError, match=r"^r1\.wav: cannot resample 50,000 samples from 1 Hz to 44100 Hz"):
        resample(x, 1, 44100, "r1.wav")
    check_resample((2, 3000), 1, 44100)                      # small enough: fine
    check_resample((2, 10 ** 9), 48000, 44100)               # long, but not grown: fine
    check_resample((2, MAX_GROWN_VALUES), 8000, 768000)      # 96 times: the most any audio needs
    with pytest.raises(LyraError, match="sample rate 0 Hz is not one Lyra handles"):
        check_resample((1, 10), 0, 44100)


def test_lyra_eval_of_a_crafted_1_hz_wav_is_one_line(tmp_path):
    """Before: 17.6 GB allocated by the resampling to the metric rate, before any length check."""
    path = tmp_path / "r1.wav"
    sf.write(path, np.zeros((50_000, 2), dtype=np.float32), 1, subtype="PCM_16")
    done = lyra("eval", path, path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"lyra: error: {path}: cannot resample 50,000 samples from 1 Hz"), done.stderr


def test_an_audio_file_beyond_768_khz_is_refused_when_opened(tmp_path, capsys):
    path = tmp_path / "m.wav"
    sf.write(path, np.zeros(1000, dtype=np.float32), 1_000_000)
    from lyra.audio.reading import open_audio

    with pytest.raises(LyraError, match=rf"^{path}: sample rate 1000000 Hz is not one Lyra handles"):
        open_audio(path)


# ---------------------------------------------------------------------------------------
# Item 13: too short for the STFT metrics
# ---------------------------------------------------------------------------------------
def test_metrics_of_audio_too_short_for_the_stft_are_an_error():
    from lyra.eval.metrics import mel_distance, stft_distance

    for metric in (stft_distance, mel_distance):
        with pytest.raises(LyraError, match="too short to measure: 1024 samples, and the STFT metrics need at least 1025"):
            metric(torch.zeros(2, 1024), torch.zeros(2, 1024))
        assert torch.isfinite(metric(torch.randn(2, 1025), torch.randn(2, 1025)))


@pytest.mark.parametrize("frames", [1, 512, 1024])
def test_lyra_eval_of_a_file_too_short_is_one_line_naming_it(tmp_path, capsys, frames):
    path = tmp_path / "short.wav"
    sf.write(path, np.full((frames, 2), 0.1, dtype=np.float32), 44100)
    assert main(["eval", str(path), str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lyra: error: {path}: too short to measure"), err


def test_a_streamed_wav_too_long_for_its_header_says_unknown_size():
    """A WAV header holds 32-bit sizes: 4 GiB and more of known length is written as "unknown"
    (0xFFFFFFFF, as ffmpeg does), not a struct error."""
    import io

    from lyra.audio.writing import _WavStream

    for frames, size in [(1000, 4000), (2 ** 30, 0xFFFFFFFF)]:
        f = io.BytesIO()
        _WavStream(f, 44100, 2, "PCM_16", frames)
        assert struct.unpack_from("<I", f.getvalue(), 40)[0] == size
