"""Outputs: no command replaces an existing output (even a read-only one) without --force, and
an error about an output names the path the user gave, never a temporary file."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from cli_helpers import lyra_env, lyra_executable, lyra_many, write_wav
from lyra.cli import main

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    ckpt, wav, latents = folder / "small.pt", folder / "in.wav", folder / "in.lyra"
    write_wav(wav, 20000)
    assert main(["init-checkpoint", str(ckpt), "--small"]) == 0
    assert main(["encode", str(wav), str(latents), "-c", str(ckpt)]) == 0
    return {"ckpt": ckpt, "wav": wav, "lyra": latents}


def writers(inputs: dict[str, Path], folder: Path) -> dict[str, tuple[Path, list[object]]]:
    """Each writing command: (its output, its arguments)."""
    c = ["-c", inputs["ckpt"], "--device", "cpu"]
    return {
        "encode": (folder / "x.lyra", ["encode", inputs["wav"], folder / "x.lyra", *c]),
        "decode": (folder / "x.wav", ["decode", inputs["lyra"], folder / "x.wav", *c]),
        "init-checkpoint": (folder / "m.pt", ["init-checkpoint", folder / "m.pt", "--small"]),
        "config init": (folder / "run.toml", ["config", "init", folder / "run.toml", "--small"]),
    }


def test_every_writer_refuses_an_existing_output_unless_forced(tmp_path, inputs):
    commands = writers(inputs, tmp_path)
    for out, _ in commands.values():
        out.write_bytes(b"precious")
        out.chmod(stat.S_IRUSR)                                  # read-only: refused all the same
    refused = dict(zip(commands, lyra_many([args for _, args in commands.values()])))
    for name, (out, _) in commands.items():
        done = refused[name]
        assert done.returncode == 1, (name, done.stderr)
        assert done.stderr == f"lyra: error: {out}: already exists (pass --force to overwrite it)\n", name
        assert out.read_bytes() == b"precious"
    forced = dict(zip(commands, lyra_many([[*args, "--force"] for _, args in commands.values()])))
    for name, (out, _) in commands.items():
        assert forced[name].returncode == 0, (name, forced[name].stderr)
        assert out.read_bytes() != b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "run.toml", "x.lyra", "x.wav"]   # no temporaries


def test_a_folder_with_existing_outputs_is_refused_before_any_work(tmp_path, inputs, capsys):
    music = tmp_path / "music"
    music.mkdir()
    for name in ("a", "b", "c"):
        write_wav(music / f"{name}.wav", 3000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.lyra").write_bytes(b"precious")
    assert main(["encode", str(music), str(out), "-c", str(inputs["ckpt"])]) == 1
    # (a folder encode resumes: complete .lyra outputs are skipped, but a file that is not one is refused)
    assert capsys.readouterr().err == \
        f"lyra: error: {out / 'b.lyra'}: already exists and is not a .lyra file (pass --force to overwrite)\n"
    assert sorted(p.name for p in out.iterdir()) == ["b.lyra"]                     # nothing else written
    assert main(["encode", str(music), str(out), "-c", str(inputs["ckpt"]), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.lyra", "b.lyra", "c.lyra"]
    assert (out / "b.lyra").read_bytes() != b"precious"


def test_a_device_is_not_an_existing_output(inputs, capsys):
    assert main(["encode", str(inputs["wav"]), os.devnull, "-c", str(inputs["ckpt"])]) == 0


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("not the demo's")
    assert main(["demo", "--out", str(tmp_path), "--steps", "1"]) == 1
    assert "was not made by `lyra demo` (no .lyra-demo file in it); pass --force" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


# ---------------------------------------------------------------------------------------
# Errors name the user's path
# ---------------------------------------------------------------------------------------
def test_a_directory_as_out_is_named_as_given(tmp_path, inputs):
    """Not `.outdir.ocl5p5p0.tmp: Is a directory`; --force does not make a folder a file."""
    outdir, wavdir = tmp_path / "outdir", tmp_path / "outdir.wav"
    outdir.mkdir()
    wavdir.mkdir()
    c = ["-c", inputs["ckpt"], "--device", "cpu"]
    encode, decode = lyra_many([["encode", inputs["wav"], outdir, *c, "--force"],
                                ["decode", inputs["lyra"], wavdir, *c]])
    assert encode.returncode == decode.returncode == 1
    assert encode.stderr == f"lyra: error: {outdir}: is a directory; give a file name for the output\n"
    assert decode.stderr == f"lyra: error: {wavdir}: is a directory; give a file name for the output\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["outdir", "outdir.wav"]   # nothing left behind


def _limit_file_size() -> None:
    """In the child: files may not grow past 400 bytes (EFBIG, like a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400, 400))


def test_a_failed_write_names_the_output_and_the_cause_and_leaves_nothing(tmp_path, inputs):
    out = tmp_path / "x.lyra"
    done = subprocess.run([lyra_executable(), "encode", str(inputs["wav"]), str(out), "-c", str(inputs["ckpt"]),
                           "--dtype", "float32"], capture_output=True, text=True, env=lyra_env(),
                          preexec_fn=_limit_file_size, timeout=600)
    assert done.returncode == 1
    assert done.stderr == f"lyra: error: {out}: File too large\n"
    assert list(tmp_path.iterdir()) == []
