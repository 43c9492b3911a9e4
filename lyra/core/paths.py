"""What is at a path, for the readers and writers that treat a regular file, a folder and a
stream (a pipe, ``<(...)``, a device, a socket: read or written in place, front to back, never
replaced, never sought in) differently; and the one check of an input file's path."""

from __future__ import annotations

import errno
import os
import stat
from typing import Literal

from lyra.core.errors import LyraError

FileKind = Literal["missing", "directory", "file", "stream"]
# The errors `pathlib.Path.exists` takes to mean "nothing there"; any other propagates.
_NOTHING_THERE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def file_kind(path: str | os.PathLike) -> FileKind:
    """"file" (a regular file), "directory", "stream" (a character or block device, FIFO or
    socket) or "missing", links followed, exactly as `Path.exists`, `is_dir`, `is_file` and
    `is_fifo` and the like see it: an `OSError` other than "nothing there" propagates."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno not in _NOTHING_THERE:
            raise
        return "missing"
    except ValueError:   # a name the OS cannot take (a NUL byte)
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "stream"


def input_kind(path: str | os.PathLike, what: str) -> Literal["file", "stream"]:
    """The kind of an input to read, `what` naming it ("an audio file"): a missing path or a
    folder is a `LyraError` ("PATH: no such file", "PATH: is a directory, not WHAT")."""
    kind = file_kind(path)
    if kind == "missing":
        raise LyraError(f"{path}: no such file")
    if kind == "directory":
        raise LyraError(f"{path}: is a directory, not {what}")
    return kind
