"""A command that prints, run with standard output closed (``lyra info x.lyra >&-``) or open
only for reading (issue 22, item 8): exit status 1 and one line saying so, never exit 0 with
the output lost, nor an internal-error line for ``decode/encode -``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cli_helpers import lyra_env, lyra_executable, small_checkpoint, write_wav
from lyra.cli import main
from lyra.cli.exits import STDOUT_CLOSED

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def _close_stdout() -> None:
    os.close(1)


def run_all(commands: list[list[object]], cwd: Path, closed: bool) -> list[subprocess.CompletedProcess]:
    """Each command at once, with stdout closed (`closed`) or open read-only; stderr as text."""
    procs = []
    for args in commands:
        if closed:
            procs.append(subprocess.Popen([lyra_executable(), *map(str, args)], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, env=lyra_env(),
                                          preexec_fn=_close_stdout))
        else:
            with open(os.devnull, "rb") as read_only:
                procs.append(subprocess.Popen([lyra_executable(), *map(str, args)], stdin=subprocess.DEVNULL,
                                              stdout=read_only, stderr=subprocess.PIPE, cwd=cwd, env=lyra_env()))
    results = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, b"", err.decode(errors="replace")))
    return results


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("closed_stdout")
    small_checkpoint(folder / "ck.pt")
    write_wav(folder / "a.wav", 4000)
    assert main(["encode", "-c", str(folder / "ck.pt"), str(folder / "a.wav"), str(folder / "a.lyra")]) == 0
    (folder / "empty.toml").write_text("")
    return folder


PRINTING = [["info", "a.lyra"], ["info", "--json", "a.lyra"], ["eval", "a.wav", "a.wav"],
            ["config", "show", "empty.toml"], ["model-info", "--small"], ["plugins"], ["--version"],
            ["decode", "-c", "ck.pt", "a.lyra", "-"], ["encode", "-c", "ck.pt", "a.wav", "-", "--stream"]]


@pytest.mark.parametrize("args", PRINTING, ids=" ".join)
def test_printing_with_stdout_closed_is_an_error(files, capsys, monkeypatch, args):
    """In process, as Python starts with fd 1 closed: `sys.stdout` is None (click then prints
    nowhere)."""
    monkeypatch.chdir(files)
    capsys.readouterr()
    monkeypatch.setattr("sys.stdout", None)
    assert main(args) == 1
    assert capsys.readouterr().err == f"lyra: error: {STDOUT_CLOSED}\n"


def test_the_installed_cli_with_stdout_closed_or_read_only(files):
    commands = [["info", "a.lyra"], ["decode", "-c", "ck.pt", "a.lyra", "-"]]
    read_only = [["--version"], ["info", "--json", "a.lyra"]]
    for args, done in zip(commands + read_only, run_all(commands, files, True) + run_all(read_only, files, False)):
        assert done.returncode == 1, (args, done.returncode, done.stderr)
        assert done.stderr == f"lyra: error: {STDOUT_CLOSED}\n", (args, done.stderr)


def test_a_command_that_prints_nothing_still_succeeds_with_stdout_closed(files):
    """Only printing fails: a decode to a file, whose summary goes to stderr, is fine."""
    (done,) = run_all([["decode", "-c", "ck.pt", "a.lyra", "out.wav"]], files, closed=True)
    assert done.returncode == 0, done.stderr
    assert (files / "out.wav").stat().st_size > 44
