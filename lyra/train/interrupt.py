"""SIGINT / SIGTERM during training: note the request, finish the step, save, stop.

Inside `stop_requests()`, the first SIGINT or SIGTERM is recorded (the loop checks it after each
step, saves a checkpoint and returns); the handler then steps aside, so a second signal acts as
usual (Ctrl-C twice aborts at once; checkpoint writes are atomic, so nothing is left broken).
Handlers can only be installed in the main thread; elsewhere this does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {}

    def handler(signum: int, frame) -> None:
        request.signal = signum
        signal.signal(signum, previous[signum])

    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
