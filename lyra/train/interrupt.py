"""SIGINT / SIGTERM during training: note the request, finish the step, save, stop.

Inside `stop_requests()`, the first SIGINT or SIGTERM is recorded (the loop checks it after each
step, and with grad_accum > 1 before each micro-batch, where the unfinished step is undone; it
saves a checkpoint of the last completed step and returns). A stop is idempotent: once one is
requested, further SIGINTs and SIGTERMs change nothing, until the run has saved and returned.
Under torchrun one Ctrl-C reaches each worker twice (from the terminal and again from the
agent), and the second must not interrupt the checkpoint being written. To abort without
saving, send SIGKILL.

"Until the run has returned": the run saves its final checkpoint after the loop, so once a stop
has been requested the handlers stay in place past the ``with`` block, for as long as the
`StopRequest` is held (the function that holds it returns, and CPython releases it), and then
the previous handlers come back. Without a stop request they come back as the block ends.

A signal the process ignores (``nohup``, background jobs of a shell without job control) stays
ignored. Handlers can only be installed in the main thread; elsewhere this does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import weakref
from typing import Any, Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether a stop was requested, and by which signal (the first one)."""

    def __init__(self, noted: list[int]) -> None:
        self._noted = noted   # shared with the handler, which must not hold this object

    @property
    def signal(self) -> int | None:
        return self._noted[0] if self._noted else None

    def __bool__(self) -> bool:
        return bool(self._noted)


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    noted: list[int] = []
    request = StopRequest(noted)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if not noted:
            noted.append(signum)
        # else: a stop is under way; another signal (Ctrl-C twice, torchrun's agent) changes nothing

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    ours = [sig for sig in SIGNALS if previous[sig] is not signal.SIG_IGN]
    for sig in ours:
        signal.signal(sig, handler)
    restore = _restorer(handler, {sig: previous[sig] for sig in ours})
    stopping = False
    try:
        yield request
        stopping = bool(noted)
    finally:
        if stopping:   # the caller saves and returns: keep absorbing signals while it holds `request`
            weakref.finalize(request, restore)
        else:
            restore()


def _restorer(handler: Callable[[int, Any], None], previous: dict[int, Any]) -> Callable[[], None]:
    """Put `previous` back for each signal still handled by `handler` (not one somebody has
    taken over since)."""
    def restore() -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, old in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, signal.SIG_DFL if old is None else old)

    return restore
