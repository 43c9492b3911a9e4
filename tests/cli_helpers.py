"""Running the installed `lyra` entry point as users do, and waiting for files deterministically."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
import torch


def lyra_executable() -> str:
    """The `lyra` console script installed beside this interpreter (what `make test` builds)."""
    beside = Path(sys.executable).with_name("lyra")
    found = str(beside) if beside.exists() else shutil.which("lyra")
    assert found, "the `lyra` entry point is not installed (pip install -e .)"
    return found


def small_checkpoint(path: Path, seed: int | None = None) -> Path:
    """A demo-size checkpoint with random weights, made by `lyra init-checkpoint --small` in process."""
    from lyra.cli import main

    assert main(["init-checkpoint", str(path), "--small", *(["--seed", str(seed)] if seed is not None else [])]) == 0
    return path


def default_signal_actions(*signums: int) -> Callable[[], None]:
    """A `preexec_fn` that gives the child the default action for `signums`, whatever this test
    run inherited: under `nohup` SIGHUP is ignored, and a shell without job control starts
    background jobs with SIGINT ignored; ignored signals stay ignored across exec."""
    def reset() -> None:
        for signum in signums:
            signal.signal(signum, signal.SIG_DFL)

    return reset


def lyra_env(**extra: str) -> dict[str, str]:
    """The environment for a `lyra` subprocess: one torch thread (CI has 2 shared cores),
    buffered stdout (as a plain shell gives), and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "LYRA_DEBUG")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def lyra(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None,
         stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run `lyra ARGS...`; stdout as bytes, stderr as text."""
    done = subprocess.run([lyra_executable(), *map(str, args)], input=stdin, capture_output=True,
                          cwd=cwd, env=env or lyra_env(), timeout=600)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout,
                                       done.stderr.decode(errors="replace"))


def lyra_many(commands: Sequence[Sequence[object]], cwd: Path | None = None,
              env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Run several `lyra` commands at once (each one mostly waits for torch to import)."""
    procs = [subprocess.Popen([lyra_executable(), *map(str, args)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env or lyra_env())
             for args in commands]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err.decode(errors="replace")))
    return results


def run_on_pty(args: Sequence[object], cwd: Path | None = None, env: dict[str, str] | None = None,
               columns: int = 100) -> tuple[int, str]:
    """Run `lyra ARGS...` with stdin, stdout and stderr on a pseudo-terminal `columns` wide, as
    in a terminal window; its exit status and everything it wrote (stdout and stderr mixed, with
    the terminal's escape codes and carriage returns). Reads until the terminal reports EOF,
    which on Linux is EIO once the last process holding it has ended: no timing involved."""
    master, slave = open_terminal(columns)
    try:
        proc = subprocess.Popen([lyra_executable(), *map(str, args)], stdin=slave, stdout=slave, stderr=slave,
                                cwd=cwd, env=terminal_env(env), start_new_session=True)
    finally:
        os.close(slave)                     # the child's copies are the only ones left
    return proc.wait(), read_terminal(master)


def open_terminal(columns: int = 100) -> tuple[int, int]:
    """A pseudo-terminal (master, slave) `columns` wide and 24 rows high."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return master, slave


def terminal_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default `lyra_env()`) as a terminal window gives it: the window size decides."""
    env = dict(env or lyra_env())
    for name in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    env["TERM"] = "xterm-256color"
    return env


def read_terminal(master: int, seen: Callable[[bytes], None] | None = None) -> str:
    """Everything written to the terminal of `master` until EOF (EIO once no process holds it),
    then close it; `seen(output_so_far)` is called after each read (to act on what appeared)."""
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 600)   # only bounds a broken run
            assert ready, f"lyra wrote nothing for 600 s; so far: {out.decode(errors='replace')}"
            try:
                data = os.read(master, 1 << 16)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            out += data
            if seen is not None:
                seen(out)
    finally:
        os.close(master)
    return out.decode(errors="replace")


ANSI_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def screen_lines(output: str) -> list[str]:
    """What a terminal would show of `output`, roughly: escape codes removed, and each line
    split at carriage returns too (every redraw of a progress line is one entry)."""
    return re.split(r"\r\n|\r|\n", ANSI_ESCAPE.sub("", output))


def write_wav(path: Path, frames: int, channels: int = 2, rate: int = 44100, subtype: str = "PCM_16",
              seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / rate
    x = 0.3 * np.sin(2 * np.pi * (220.0 + 110.0 * np.arange(channels)) * t) + 0.02 * rng.standard_normal((frames, channels))
    sf.write(path, x.astype(np.float32), rate, subtype=subtype)
    return path


def read(path: Path) -> tuple[torch.Tensor, int]:
    """An audio file as float32 [C, T], and its sample rate."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return torch.from_numpy(data.T.copy()), rate


class CreatedFiles:
    """Linux inotify on one folder: `wait_for(...)` blocks until a file whose name matches is
    created there, or the process it watches ends (then it fails with that process's stderr).

    It is armed when constructed, so create it before starting the process that makes the file.
    """

    _IN_CREATE = 0x100
    _EVENT = struct.Struct("iIII")   # wd, mask, cookie, len; then `len` bytes of name

    def __init__(self, folder: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, os.fsencode(folder), self._IN_CREATE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder} failed")

    def wait_for(self, match: Callable[[str], bool], proc: subprocess.Popen, limit_s: float = 600) -> str:
        """The first created name that `match`es. `limit_s` only bounds a broken run."""
        said = b""
        while True:
            ready, _, _ = select.select([self.fd, proc.stderr], [], [], limit_s)
            assert ready, f"nothing happened; stderr so far: {said.decode()}"
            if proc.stderr in ready:
                more = os.read(proc.stderr.fileno(), 1 << 16)
                said += more
                if not more:           # stderr closed: the process ended before the file appeared
                    proc.wait()
                    raise AssertionError(f"lyra ended ({proc.returncode}) first: {said.decode()}")
                continue
            data = os.read(self.fd, 1 << 16)
            offset = 0
            while offset < len(data):
                _, _, _, size = self._EVENT.unpack_from(data, offset)
                offset += self._EVENT.size
                name = data[offset:offset + size].rstrip(b"\0").decode()
                offset += size
                if match(name):
                    return name

    def close(self) -> None:
        os.close(self.fd)
