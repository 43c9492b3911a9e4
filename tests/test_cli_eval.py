"""`lyra eval` on folders with bad pairs, at any sample rate, and with --downmix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cli_helpers import lyra, write_wav
from lyra.cli import main
from lyra.eval.metrics import mel_distance, si_sdr, stft_distance

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def noisy_copy(src: Path, dst: Path, seed: int = 1, noise: float = 0.01) -> Path:
    data, rate = sf.read(src, dtype="float32", always_2d=True)
    data = data + noise * np.random.default_rng(seed).standard_normal(data.shape).astype(np.float32)
    sf.write(dst, data, rate, subtype="FLOAT")
    return dst


def test_a_folder_with_failing_pairs_reports_each_and_measures_the_rest(tmp_path):
    """Through the entry point: a missing match, an unreadable reference and a 96 kHz pair
    (once "80 mel bands are too many for fft_size 512 at 96000 Hz") among good pairs."""
    ref, deg = tmp_path / "ref", tmp_path / "deg"
    ref.mkdir()
    deg.mkdir()
    write_wav(ref / "a.wav", 20000)
    write_wav(ref / "hi.wav", 40000, rate=96000)
    write_wav(ref / "lonely.wav", 20000)                  # no match in deg/
    (ref / "junk.wav").write_text("not audio")
    noisy_copy(ref / "a.wav", deg / "a.wav")
    noisy_copy(ref / "hi.wav", deg / "hi.wav")
    write_wav(deg / "junk.wav", 20000)
    done = lyra("eval", ref, deg)
    assert done.returncode == 1
    table = done.stdout.decode().splitlines()
    assert table[0].split()[0] == "file" and [line.split()[0] for line in table[1:]] == ["a.wav", "hi.wav", "mean"]
    errors = [line for line in done.stderr.splitlines() if line.startswith("lyra:")]   # not the progress bar
    assert errors[0].startswith(f"lyra: error: {ref / 'junk.wav'}: not a readable audio file")
    assert errors[1] == f"lyra: error: {deg}: no file matching lonely.wav (looked for {deg / 'lonely'}.*)"
    assert errors[2:] == ["lyra: error: 2 of 4 files failed; the others were measured"]
    assert "Traceback" not in done.stderr


def test_json_lists_the_failures(tmp_path, capsys):
    ref, deg = tmp_path / "ref", tmp_path / "deg"
    ref.mkdir()
    deg.mkdir()
    write_wav(ref / "a.wav", 20000)
    write_wav(ref / "b.wav", 20000)
    noisy_copy(ref / "a.wav", deg / "a.wav")
    assert main(["eval", str(ref), str(deg), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert list(report["files"]) == ["a.wav"] and report["mean"] == report["files"]["a.wav"]
    assert list(report["failed"]) == ["b.wav"] and "no file matching b.wav" in report["failed"]["b.wav"]


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 96000, 192000])
def test_metrics_work_at_any_rate_and_are_measured_at_44k1(tmp_path, capsys, rate):
    ref = write_wav(tmp_path / "ref.wav", rate // 2, rate=rate)
    deg = noisy_copy(ref, tmp_path / "deg.wav")
    assert main(["eval", str(ref), str(deg), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["mean"]
    import torchaudio.functional

    x, y = (torchaudio.functional.resample(torch.from_numpy(sf.read(p, dtype="float32", always_2d=True)[0].T.copy()),
                                           rate, 44100) for p in (ref, deg))
    assert got["si_sdr_db"] == pytest.approx(float(si_sdr(x, y)), abs=1e-3)
    assert got["stft_distance"] == pytest.approx(float(stft_distance(x, y)), rel=1e-4)
    assert got["mel_distance"] == pytest.approx(float(mel_distance(x, y)), rel=1e-4)
    # The library function takes any rate too, resampling to 44.1 kHz itself.
    xr, yr = (torch.from_numpy(sf.read(p, dtype="float32", always_2d=True)[0].T.copy()) for p in (ref, deg))
    assert float(mel_distance(xr, yr, sample_rate=rate)) == pytest.approx(got["mel_distance"], rel=1e-4)


def test_downmix_compares_a_multichannel_reference_with_encode_downmix_output(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    assert main(["init-checkpoint", str(ckpt), "--small"]) == 0
    six = write_wav(tmp_path / "six.wav", 20000, channels=6)
    assert main(["encode", str(six), str(tmp_path / "six.lyra"), "-c", str(ckpt), "--downmix"]) == 0
    assert main(["decode", str(tmp_path / "six.lyra"), str(tmp_path / "back.wav"), "-c", str(ckpt),
                 "--subtype", "FLOAT"]) == 0
    capsys.readouterr()

    assert main(["eval", str(six), str(tmp_path / "back.wav")]) == 1
    err = capsys.readouterr().err
    assert "back.wav: has 2 channels" in err and "pass --downmix" in err
    assert main(["eval", str(six), str(tmp_path / "back.wav"), "--downmix", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["mean"]
    x = torch.from_numpy(sf.read(six, dtype="float32", always_2d=True)[0].T.copy()).mean(0, keepdim=True).expand(2, -1)
    y = torch.from_numpy(sf.read(tmp_path / "back.wav", dtype="float32", always_2d=True)[0].T.copy())
    assert got["si_sdr_db"] == pytest.approx(float(si_sdr(x, y)), abs=1e-3)
    assert got["mel_distance"] == pytest.approx(float(mel_distance(x, y)), rel=1e-4)
