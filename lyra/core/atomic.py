"""Atomic output files: written beside the target, fsynced, renamed into place on success.

    with atomic_write(path) as f:      # f is a binary file object in path's directory
        f.write(data)

On any exception, Ctrl-C included, the temporary file is removed and `path` is untouched:
a crash never leaves a half-written output. ``path == "-"`` writes to standard output.

Every temporary file in use is recorded, so that a process stopped by a signal can remove
them all before it exits (`remove_temporaries`), and an error never names one: an `OSError`
about a temporary file is re-raised naming the output the caller asked for.

`refuse_to_replace` is the command line's overwrite rule: an existing output is only replaced
when the user passed ``--force``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

from lyra.core.errors import LyraError
from lyra.core.paths import file_kind

# Temporary files that exist (or are being created) -> the output each one becomes.
_LIVE: dict[Path, Path] = {}
_LOCK = threading.Lock()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[BinaryIO]:
    """`path` as a binary file object to write (see the module doc); ``-`` is standard output."""
    if str(path) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with _replacing(Path(path), suffix or ".tmp") as (fd, target):
        # The open descriptor, not the name: a temporary removed by a signal is not re-created.
        with open(target, "wb") if fd is None else os.fdopen(fd, "wb", closefd=False) as f:
            yield f


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Like `atomic_write`, for writers that want a file name (soundfile, torch.save): the name
    to write (a temporary with `path`'s suffix unless `suffix` is given)."""
    path = Path(path)
    with _replacing(path, suffix or path.suffix) as (_, target):
        yield target


@contextlib.contextmanager
def _replacing(path: Path, suffix: str) -> Iterator[tuple[int | None, Path]]:
    """What both of the above do: a new temporary file beside `path` (its open descriptor and
    its name), fsynced and renamed onto `path` when the block succeeds, removed when it fails;
    an error names `path`, not the temporary. A device or FIFO (``/dev/null``) is written in
    place, renaming onto it would replace it: (None, `path`)."""
    if _is_device(path):
        yield None, path
        return
    directory = _check_target(path)
    fd, tmp = _new_temporary(path, directory, suffix)
    try:
        try:
            yield fd, tmp
            os.fsync(fd)          # the file's data, whichever descriptor or name wrote it
        finally:
            os.close(fd)
        _commit(tmp, path)
    except BaseException as exc:
        _discard(tmp)
        _raise_naming(exc, tmp, path)
        raise
    _fsync_directory(directory)


def refuse_to_replace(path: str | os.PathLike) -> None:
    """Raise `LyraError` if writing `path` would replace an existing file (the CLI calls this
    for every output unless ``--force`` was given). ``-`` and devices/FIFOs, written in place,
    are never refused."""
    if str(path) == "-":
        return
    path = Path(path)
    if path.is_dir():
        raise LyraError(f"{path}: is a directory; give a file name for the output")
    if (path.exists() or path.is_symlink()) and not _is_device(path):
        raise LyraError(f"{path}: already exists (pass --force to overwrite it)")


def remove_temporaries(hold: bool = False) -> list[Path]:
    """Delete every temporary file in use; returns their outputs' paths.

    With ``hold=True`` the registry stays locked afterwards, so no new temporary file can be
    created: for a process about to exit (`os._exit`) from another thread than the writer's.
    """
    _LOCK.acquire()
    try:
        for tmp in list(_LIVE):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        outputs = list(_LIVE.values())
        _LIVE.clear()
        return outputs
    finally:
        if not hold:
            _LOCK.release()


def _check_target(path: Path) -> Path:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise LyraError(f"{path}: output directory {directory} does not exist")
    if path.is_dir():
        raise LyraError(f"{path}: is a directory; give a file name for the output")
    return directory


def _new_temporary(path: Path, directory: Path, suffix: str) -> tuple[int, Path]:
    """Create ``.NAME.XXXXXXXX<suffix>`` beside `path` (like `tempfile.mkstemp`), recorded before
    it exists, so that no moment has a temporary file that `remove_temporaries` would miss."""
    with _LOCK:
        for _ in range(100):
            tmp = directory / f".{path.name}.{secrets.token_hex(4)}{suffix}"
            _LIVE[tmp] = path
            try:
                return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), tmp
            except FileExistsError:
                del _LIVE[tmp]
            except OSError as exc:
                del _LIVE[tmp]
                raise LyraError(f"{path}: cannot create the output file ({exc.strerror})") from None
    raise LyraError(f"{path}: cannot create a temporary file beside it (every name tried exists)")


def _commit(tmp: Path, path: Path) -> None:
    os.chmod(tmp, _default_mode())  # a new file gets 0666 & ~umask (O_EXCL made it 0600)
    with _LOCK:
        os.replace(tmp, path)
        _LIVE.pop(tmp, None)


def _discard(tmp: Path) -> None:
    with _LOCK:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _LIVE.pop(tmp, None)


def _raise_naming(exc: BaseException, tmp: Path, path: Path) -> None:
    """An OSError about the temporary file is re-raised about `path`: users never see the
    temporary name (`.out.wav.1a2b3c4d.wav: No space left on device`)."""
    if isinstance(exc, OSError) and str(tmp) in (exc.filename, exc.filename2):
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _is_device(path: Path) -> bool:
    """An existing character/block device, FIFO or socket: not a file to replace."""
    return file_kind(path) == "stream"


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
