"""The one exception type a user can cause.

Every error that bad input, a bad config or a bad file can produce is a `LyraError` whose
message is one line naming the file, key or value at fault. The CLI prints it without a
traceback and exits non-zero; library callers can catch it.
"""


class LyraError(Exception):
    """A user-facing error with a one-line message."""
