"""Writing all of a buffer, or failing: the one way Lyra's stream writers put bytes out.

A raw file object (``sys.stdout.buffer`` under ``PYTHONUNBUFFERED=1`` or ``python -u``, an
unbuffered ``open(..., buffering=0)``) may write fewer bytes than asked: into a pipe whose
reader just went away, onto a disk that just filled up. Its ``write`` then returns the count,
and the error only comes with the next call. `write_all` makes that next call, so the caller
either wrote everything or gets the `OSError` (``BrokenPipeError`` for a closed pipe, ENOSPC
for a full disk). Buffered file objects already behave so; for them it is one call.

    write_all(sys.stdout.buffer, data)
"""

from __future__ import annotations

import errno
import select
from typing import BinaryIO


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
