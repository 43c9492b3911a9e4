"""What a folder job (`lyra encode DIR OUT`, `lyra decode DIR OUT`) does about what is already at
its outputs and at --manifest: the manifest never replaces one of the job's own files nor a file
that is not a manifest, its folder is checked before any work (and may be one the job creates),
and a named pipe (or any non-regular file) where an output would be is refused, --force or not,
without ever being opened; a manifest on a named pipe is written there, never read.
(issue 22, items 5 and 9)

The FIFO tests run `lyra` in a subprocess whose timeout only bounds a broken run (a hang): they
assert on the outcome, not on time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from cli_helpers import lyra, small_checkpoint, write_wav
from lyra.cli import main

pytestmark = pytest.mark.usefixtures("one_thread_per_module")
FIELDS = ["source", "duration_s", "num_samples", "sample_rate", "frames", "output"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt", seed=3)


def music(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    write_wav(folder / "a.wav", 3000, seed=1)
    write_wav(folder / "sub" / "b.wav", 2000, seed=2)
    return folder


def run(capsys, *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def without_root_powers() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: root writes any folder")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


# ---------------------------------------------------------------------------------------
# --manifest
# ---------------------------------------------------------------------------------------
def test_a_manifest_that_is_one_of_the_outputs_is_refused_even_with_force(tmp_path, capsys, ckpt):
    root, out = music(tmp_path / "music"), tmp_path / "out"
    for force in ([], ["--force"]):
        code, err = run(capsys, "encode", root, out, "-c", ckpt, "--manifest", out / "a.lyra", *force)
        assert (code, err) == (1, f"lyra: error: {out / 'a.lyra'}: --manifest is one of the job's outputs; "
                                  "give another name\n")
        assert not out.exists()                                          # before any work
    assert run(capsys, "encode", root, out, "-c", ckpt, "-q")[0] == 0
    before = (out / "sub" / "b.lyra").read_bytes()
    code, err = run(capsys, "encode", root, out, "-c", ckpt, "--manifest", out / "sub" / "b.lyra", "--force")
    assert code == 1 and "--manifest is one of the job's outputs" in err
    assert (out / "sub" / "b.lyra").read_bytes() == before
    code, err = run(capsys, "encode", root, out, "-c", ckpt, "--manifest", root / "a.wav", "--force")
    assert (code, err) == (1, f"lyra: error: {root / 'a.wav'}: --manifest is one of the job's inputs; give another name\n")
    code, err = run(capsys, "encode", root, out, "-c", ckpt, "--manifest", ckpt, "--force")
    assert (code, err) == (1, f"lyra: error: {ckpt}: --manifest is the checkpoint; give another name\n")


def test_an_existing_file_that_is_not_a_manifest_is_refused_unless_forced(tmp_path, capsys, ckpt):
    root, out = music(tmp_path / "music"), tmp_path / "out"
    notes = tmp_path / "notes.txt"
    for text in (b"my notes\n", json.dumps(FIELDS).encode() + b"\n", b"\xff\n", b"[" * 100000 + b"\n"):
        notes.write_bytes(text)
        code, err = run(capsys, "encode", root, out, "-c", ckpt, "--manifest", notes)
        assert (code, err) == (1, f"lyra: error: {notes}: already exists and is not a manifest (pass --force to "
                                  "overwrite)\n")
        assert not out.exists() and notes.read_bytes() == text
    assert run(capsys, "encode", root, out, "-c", ckpt, "--manifest", notes, "--force")[0] == 0
    assert [list(json.loads(line)) for line in notes.read_text().splitlines()] == [FIELDS, FIELDS]


def test_a_manifest_in_the_output_folder_the_job_creates_is_accepted(tmp_path, capsys, ckpt):
    root, out = music(tmp_path / "music"), tmp_path / "out"
    code, err = run(capsys, "encode", root, out, "-c", ckpt, "--manifest", out / "manifest.jsonl")
    assert code == 0, err
    assert listing(out) == ["a.lyra", "manifest.jsonl", "manifest.stats.json", "sub", "sub/b.lyra"]   # stats beside it
    assert [json.loads(line)["output"] for line in (out / "manifest.jsonl").read_text().splitlines()] == \
        [str(out / "a.lyra"), str(out / "sub" / "b.lyra")]
    code, err = run(capsys, "encode", root, out, "-c", ckpt, "--manifest", out / "manifest.jsonl")
    assert code == 0 and "skipped 2 already encoded" in err              # a rerun: the manifest is no output
    other = tmp_path / "other"
    code, err = run(capsys, "encode", root, other, "-c", ckpt, "--manifest", other / "sub" / "m.jsonl")
    assert code == 0, err                                                # a folder the job creates inside OUT
    assert len((other / "sub" / "m.jsonl").read_text().splitlines()) == 2
    code, err = run(capsys, "encode", root, tmp_path / "third", "-c", ckpt,
                    "--manifest", tmp_path / "third" / "elsewhere" / "m.jsonl")
    assert (code, err) == (1, f"lyra: error: {tmp_path / 'third' / 'elsewhere' / 'm.jsonl'}: --manifest's folder "
                              f"{tmp_path / 'third' / 'elsewhere'} does not exist\n")
    assert not (tmp_path / "third").exists()


def test_a_manifest_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, ckpt):
    prefix = without_root_powers()
    music(tmp_path / "music")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        done = subprocess.run([*prefix, *lyra_command("encode", "music", "out", "-c", ckpt, "--manifest", "ro/m.jsonl")],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert done.returncode == 1
    assert done.stderr == "lyra: error: ro/m.jsonl: --manifest cannot be written in ro (Permission denied)\n"
    assert not (tmp_path / "out").exists() and listing(tmp_path / "ro") == []


def lyra_command(*args: object) -> list[str]:
    from cli_helpers import lyra_executable

    return [lyra_executable(), *map(str, args)]


# ---------------------------------------------------------------------------------------
# Named pipes and other non-regular files
# ---------------------------------------------------------------------------------------
def test_a_named_pipe_where_an_output_would_be_is_refused_without_opening_it(tmp_path, ckpt):
    root, out = music(tmp_path / "music"), tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "a.lyra")
    for force in ([], ["--force"]):
        done = lyra("encode", root, out, "-c", ckpt, *force)
        assert done.returncode == 1
        assert done.stderr == (f"lyra: error: {out / 'a.lyra'}: already exists as a named pipe; a folder job "
                               "never replaces one (remove it)\n")
    assert listing(out) == ["a.lyra"]
    assert lyra("encode", root, tmp_path / "latents", "-c", ckpt, "-q").returncode == 0
    decoded = tmp_path / "decoded"
    (decoded / "sub").mkdir(parents=True)
    os.mkfifo(decoded / "sub" / "b.wav")
    (decoded / "a.wav").symlink_to(decoded / "sub" / "b.wav")        # a link to one: the same
    done = lyra("decode", tmp_path / "latents", decoded, "-c", ckpt, "--force")
    assert done.returncode == 1
    assert done.stderr == (f"lyra: error: {decoded / 'a.wav'}: already exists as a named pipe; a folder job "
                           "never replaces one (remove it)\n")
    (out / "a.lyra").unlink()
    (out / "a.lyra").mkdir()                                         # a folder: the same, --force or not
    code = main(["encode", str(root), str(out), "-c", str(ckpt), "--force"])
    assert code == 1 and listing(out) == ["a.lyra"]


def test_a_manifest_on_a_named_pipe_is_written_there_never_read(tmp_path, ckpt):
    root = music(tmp_path / "music")
    pipe = tmp_path / "manifest.fifo"
    os.mkfifo(pipe)
    received: list[bytes] = []

    def reader() -> None:     # opens the pipe only once lyra writes the manifest: never a writer for lyra
        with open(pipe, "rb") as f:
            received.append(f.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    done = lyra("encode", root, tmp_path / "out", "-c", ckpt, "--manifest", pipe)
    if thread.is_alive():        # lyra never wrote to the pipe: let the reader go (it sees nothing)
        with contextlib.suppress(OSError):
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    thread.join(600)                                                 # only bounds a broken run
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["source"] for line in received[0].decode().splitlines()] == \
        [str(root / "a.wav"), str(root / "sub" / "b.wav")]
    assert pipe.is_fifo()
