"""Reading a given number of bytes from a stream that may deliver fewer per call.

A pipe, a socket or standard input returns whatever has arrived so far: ``read(n)`` may give
back fewer than `n` bytes long before the end. `read_upto` keeps asking until it has `n`
bytes or the input has ended, so fewer than `n` bytes means "the end came first", never
"not arrived yet". It takes the read call itself, so it serves a file object
(``f.read``) and a bare descriptor (``lambda k: os.read(fd, k)``) alike; the mirror image
for writing is `lyra.fullwrite.write_all`.

    magic = read_upto(f.read, 9)          # 9 bytes, or fewer only at the end of the input
"""

from __future__ import annotations

from typing import Callable


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
