"""Atomic output files: written beside the target, fsynced, renamed into place on success.

    with atomic_write(path) as f:      # f is a binary file object in path's directory
        f.write(data)

On any exception, Ctrl-C included, the temporary file is removed and `path` is untouched:
a crash never leaves a half-written output. ``path == "-"`` writes to standard output.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from lyra.errors import LyraError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[BinaryIO]:
    if str(path) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path = Path(path)
    if _is_device(path):   # /dev/null, a FIFO: written in place (renaming onto it would replace it)
        with open(path, "wb") as f:
            yield f
        return
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise LyraError(f"{path}: output directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    except OSError as exc:
        raise LyraError(f"{path}: cannot create output file ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; a new file gets 0666 & ~umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Like `atomic_write`, for writers that want a file name (soundfile, torch.save)."""
    path = Path(path)
    if _is_device(path):
        yield path
        return
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise LyraError(f"{path}: output directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; a new file gets 0666 & ~umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _is_device(path: Path) -> bool:
    """An existing character/block device, FIFO or socket: not a file to replace."""
    return path.is_char_device() or path.is_block_device() or path.is_fifo() or path.is_socket()


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
