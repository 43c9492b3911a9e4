"""File names that are not UTF-8 (b"\\xff.wav", which Python holds as "\\udcff.wav") in folder
encode, single encode, decode and eval: a clean run whatever standard output's encoding, never
an internal error; and `lyra eval` of a crafted low-rate file: checked against the reference's
length before it is resampled (a 200 KB WAV at 1 Hz asked for 17.6 GB), and a rate it cannot
resample is an error naming the file. (issue 22, item 13: file names; item 11: eval's part)
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cli_helpers import lyra, lyra_env, small_checkpoint, write_wav
from lyra.cli import main
from lyra.core.errors import LyraError

pytestmark = pytest.mark.usefixtures("one_thread_per_module")
ODD = os.fsdecode(b"\xff\xfe-take.wav")          # "\udcff\udcfe-take.wav": not UTF-8
STRICT = lyra_env(PYTHONIOENCODING="utf-8:strict")   # a standard output that refuses surrogates


def write_odd(path: Path, frames: int) -> Path:
    """A short stereo WAV at any name (soundfile cannot open a name that is not UTF-8 itself)."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(frames)
    sf.write(buffer, rng.uniform(-0.3, 0.3, (frames, 2)).astype(np.float32), 44100, format="WAV", subtype="PCM_16")
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", seed=3)


def test_folder_encode_and_decode_take_any_file_name(tmp_path, capsys, ckpt):
    music = tmp_path / "music"
    (music / ODD[:2]).mkdir(parents=True)                            # a folder with such a name too
    write_odd(music / ODD, 3000)
    write_odd(music / ODD[:2] / "b.wav", 2000)
    assert main(["encode", str(music), str(tmp_path / "latents"), "-c", str(ckpt),
                 "--manifest", str(tmp_path / "m.jsonl")]) == 0, capsys.readouterr().err
    assert "2 files written" in capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [os.fsencode(r["output"]) for r in records] == [
        os.fsencode((tmp_path / "latents" / ODD).with_suffix(".lyra")),
        os.fsencode(tmp_path / "latents" / ODD[:2] / "b.lyra")]
    assert [os.fsencode(r["output"]) for r in records][0].endswith(b"/\xff\xfe-take.lyra")
    assert main(["decode", str(tmp_path / "latents"), str(tmp_path / "decoded"), "-c", str(ckpt)]) == 0
    assert sorted(os.listdir(os.fsencode(tmp_path / "decoded"))) == [b"\xff\xfe", b"\xff\xfe-take.wav"]


def test_single_encode_and_eval_print_any_file_name(tmp_path, ckpt):
    src = write_odd(tmp_path / ODD, 3000)
    done = lyra("encode", src, tmp_path / "x.lyra", "-c", ckpt, env=STRICT)
    assert done.returncode == 0 and done.stderr.startswith(f"{tmp_path / 'x.lyra'}: 2 frames"), done.stderr
    done = lyra("encode", src, tmp_path / (ODD + ".lyra"), "-c", ckpt, env=STRICT)      # an odd OUT too
    assert done.returncode == 0 and len(done.stderr.splitlines()) == 1, done.stderr
    done = lyra("eval", src, src, env=STRICT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[1].startswith(str(tmp_path / "\\xff\\xfe-take.wav"))
    folder = tmp_path / "music"
    folder.mkdir()
    write_odd(folder / ODD, 3000)
    write_wav(folder / "plain.wav", 3000)
    done = lyra("eval", folder, folder, env=STRICT)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.decode().splitlines()[1:3]] == ["plain.wav", "\\xff\\xfe-take.wav"]
    done = lyra("eval", folder, "-c", ckpt, "--json", env=STRICT)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["files"]) == ["plain.wav", ODD]


def test_eval_checks_a_low_rate_file_against_the_reference_before_resampling_it(tmp_path, monkeypatch):
    import lyra.audio.resample as resampling
    from lyra.eval.compare import compare_files

    ref = write_wav(tmp_path / "ref.wav", 20000, channels=1)
    low = tmp_path / "low.wav"
    sf.write(low, np.zeros((2000, 1), np.float32), 1)              # 2000 "seconds": 88.2 M samples at 44.1 kHz
    calls = []
    real = resampling.resample
    monkeypatch.setattr(resampling, "resample",
                        lambda x, orig, new, *rest: calls.append((orig, new)) or real(x, orig, new, *rest))
    with pytest.raises(LyraError) as caught:
        compare_files(ref, low)
    assert str(caught.value) == f"{low}: 88200000 samples at 44100 Hz, but {ref} has 20000"
    assert calls == []                                               # refused before resampling


def test_eval_names_a_file_whose_rate_it_cannot_resample(tmp_path, ckpt):
    odd = tmp_path / "odd.wav"
    sf.write(odd, np.zeros((3000, 2), np.float32), 44099)           # 44099:44100, too irregular a ratio
    for args in (["eval", odd, odd], ["eval", odd, "-c", ckpt]):
        done = lyra(*args)
        assert done.returncode == 1 and done.stdout == b""
        assert re.fullmatch(f"lyra: error: {re.escape(str(odd))}: cannot resample [^\n]*44099 Hz[^\n]*\n",
                            done.stderr), done.stderr
