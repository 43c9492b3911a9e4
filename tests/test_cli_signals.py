"""SIGINT, SIGTERM and SIGHUP to a running `lyra encode` / `lyra decode`: the temporary output is
removed, one line is printed, and the exit status is 128 + the signal.

Each test makes the process provably mid-write without any timing: its input is a pipe the
test holds open (so it can never finish), and the signal is sent only once inotify has reported
the temporary output file in OUT's folder. The process is then blocked reading the pipe inside
libsndfile or Python, where a plain Python signal handler would never run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import CreatedFiles, default_signal_actions, lyra_env, lyra_executable, write_wav
from lyra.cli import main

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's"),
              pytest.mark.usefixtures("one_thread_per_module")]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    ckpt, wav, latents = folder / "small.pt", folder / "in.wav", folder / "in.lyra"
    write_wav(wav, 3 * 44100)
    assert main(["init-checkpoint", str(ckpt), "--small"]) == 0
    assert main(["encode", str(wav), str(latents), "-c", str(ckpt), "--stream", "--chunk-seconds", "0.5"]) == 0
    return {"ckpt": ckpt, "wav": wav, "lyra": latents}


def interrupt_mid_write(tmp_path: Path, files: dict[str, Path], command: str, signum: int) -> tuple[int, str, list[str]]:
    """Start `lyra COMMAND --stream - OUT` with part of its input, send `signum` once the
    temporary output exists; (exit status, stderr, names left in OUT's folder)."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("x.lyra" if command == "encode" else "x.wav")
    data = (files["wav"] if command == "encode" else files["lyra"]).read_bytes()
    part = data[:32 * 1024] if command == "encode" else data[:len(data) // 2]   # fits in a pipe's buffer
    created = CreatedFiles(out_dir)
    proc = subprocess.Popen([lyra_executable(), command, "--stream", "-", str(out), "-c", str(files["ckpt"]),
                             "--chunk-seconds", "0.5", "--device", "cpu"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=lyra_env(),
                            preexec_fn=default_signal_actions(signum))
    try:
        proc.stdin.write(part)         # the rest never comes: the process cannot finish
        proc.stdin.flush()
        temporary = created.wait_for(lambda name: name.startswith(f".{out.name}."), proc)
        assert (out_dir / temporary).exists()
        proc.send_signal(signum)
        status = proc.wait(timeout=120)          # only bounds a broken run; it ends at once
        return status, proc.stderr.read().decode(), sorted(p.name for p in out_dir.iterdir())
    finally:
        created.close()
        proc.kill()
        proc.stdin.close()
        proc.wait()


@pytest.mark.parametrize("command, signum", [
    ("encode", signal.SIGTERM), ("encode", signal.SIGHUP), ("encode", signal.SIGINT), ("decode", signal.SIGTERM),
], ids=lambda v: getattr(v, "name", v))
def test_a_signal_mid_write_removes_the_temporary_file_and_exits_128_plus_signal(tmp_path, files, command, signum):
    status, err, left = interrupt_mid_write(tmp_path, files, command, signum)
    assert status == 128 + signum, err
    assert err == f"lyra: interrupted ({signal.Signals(signum).name})\n"
    assert left == []                             # no output, no temporary file


def test_an_ignored_sighup_is_left_ignored(tmp_path, files):
    """Under `nohup` SIGHUP is ignored and must stay so; SIGTERM still stops the command."""
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)   # inherited by the child, as nohup does it
    try:
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        created = CreatedFiles(out_dir)
        proc = subprocess.Popen([lyra_executable(), "encode", "--stream", "-", str(out_dir / "x.lyra"), "-c",
                                 str(files["ckpt"]), "--device", "cpu"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=lyra_env(),
                                preexec_fn=default_signal_actions(signal.SIGTERM))
    finally:
        signal.signal(signal.SIGHUP, old)
    try:
        proc.stdin.write(files["wav"].read_bytes()[:32 * 1024])
        proc.stdin.flush()
        created.wait_for(lambda name: name.startswith(".x.lyra."), proc)
        proc.send_signal(signal.SIGHUP)
        proc.send_signal(signal.SIGTERM)          # delivered after SIGHUP, which must do nothing
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        assert proc.stderr.read().decode() == "lyra: interrupted (SIGTERM)\n"
        assert os.listdir(out_dir) == []
    finally:
        created.close()
        proc.kill()
        proc.stdin.close()
        proc.wait()
