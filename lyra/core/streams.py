"""Exact reads and writes on pipes and raw files, which may move fewer bytes per call than asked.

`read_upto` calls a read until it has `n` bytes or the input has ended, so fewer than `n` means
"the end came first", never "not arrived yet"; it takes the read call itself (``f.read``, or
``lambda k: os.read(fd, k)`` for a descriptor). `write_all` writes every byte or raises the
`OSError` (``BrokenPipeError``, ENOSPC) that a raw writer (``python -u``'s stdout,
``buffering=0``) only reports on the call after a short write.

    magic = read_upto(f.read, 9)          # 9 bytes, or fewer only at the end of the input
    write_all(sys.stdout.buffer, data)
"""

from __future__ import annotations

import errno
import select
from typing import BinaryIO, Callable


def read_upto(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to `n` bytes from `read` (called until it has them or returns nothing): fewer only
    at the end of the input."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        more = read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def write_all(f: BinaryIO, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of `data` to `f` or raise `OSError`; a short count is retried."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        try:
            n = f.write(view[done:])
        except BlockingIOError as exc:   # a buffered writer on a non-blocking descriptor
            done += exc.characters_written
            _wait_writable(f)
            continue
        if n is None:                    # a raw writer on a non-blocking descriptor
            _wait_writable(f)
            continue
        if n <= 0:
            raise OSError(errno.EIO, "the output accepted no bytes")
        done += n


def _wait_writable(f: BinaryIO) -> None:
    try:
        fd = f.fileno()
    except (AttributeError, OSError, ValueError):
        raise OSError(errno.EAGAIN, "the output is not ready for writing") from None
    select.select([], [fd], [])
