"""libsndfile's rough edges, for the readers and writers: its errors in one line of its own
words, and its C libraries' chatter on file descriptor 2 silenced."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import soundfile

from lyra.core.errors import first_line


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C libraries' chatter) for the duration; Python's own
    sys.stderr is unaffected if it is not fd 2 (as under pytest's capture)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def error_reason(exc: BaseException) -> str:
    """libsndfile's own words for `exc` (its ``error_string``), else its message's first line."""
    reason = (getattr(exc, "error_string", None) or first_line(exc)).strip().rstrip(".")
    if reason.startswith("File does not exist or is not a regular file"):
        return "unrecognised or damaged audio data"   # libsndfile's message after a failed MP3 probe
    return reason or type(exc).__name__


def write_error_reason(exc: BaseException, sink: object) -> str:
    """Why libsndfile could not write: for its generic "System error", the OS's own message
    (disk full, file too large), which libsndfile keeps per file."""
    reason = error_reason(exc)
    if getattr(exc, "code", None) == 2 and isinstance(sink, soundfile.SoundFile):   # SFE_SYSTEM
        with contextlib.suppress(Exception):   # (soundfile has no public call for it)
            detail = soundfile._ffi.string(soundfile._snd.sf_strerror(sink._file)).decode()
            reason = detail.split(":", 1)[-1].strip().rstrip(".") or reason
    return reason
