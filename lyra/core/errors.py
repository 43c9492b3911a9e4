"""The one exception type a user can cause, and how any exception becomes one line.

Every error that bad input, a bad config or a bad file can produce is a `LyraError` whose
message is one line naming the file, key or value at fault. The CLI prints it without a
traceback and exits non-zero; library callers can catch it.
"""

from __future__ import annotations


class LyraError(Exception):
    """A user-facing error with a one-line message."""


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, or its type's name when it has none: the cause a
    one-line error quotes (``f"{path}: not a readable checkpoint ({first_line(exc)})"``)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def os_error_line(exc: OSError, name: object = "?") -> str:
    """An `OSError` as one line naming its file (`name` when the error names none):
    ``out.wav: No space left on device``."""
    return f"{exc.filename or name}: {exc.strerror or exc}"


def kind_of(value: object) -> str:
    """What `value` is, as an error message says it: ``a table``, ``a string``, ``a float16
    tensor`` (``f"expected a list, got {kind_of(value)}"``)."""
    if hasattr(value, "dtype") and hasattr(value, "shape") and type(value).__name__ in ("Tensor", "Parameter"):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor"
    return {dict: "a table", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)
