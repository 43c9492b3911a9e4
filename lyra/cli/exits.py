"""How a `lyra` command ends: its exit status and the one line it prints when it fails.

    0        success
    1        an error: one line ``lyra: error: ...`` on stderr naming the file, key or value
    2        a usage error (typer's usage message; also `lyra` alone, after printing the help)
    130/129/143  interrupted by SIGINT (Ctrl-C) / SIGHUP / SIGTERM (128 + the signal number):
             one line ``lyra: interrupted (SIGTERM)``; temporary files are removed
    141      standard output was closed by its reader (``lyra decode x.lyra - | head -c 1000``):
             silently, as a process killed by SIGPIPE would end

A command that prints while standard output is closed (``lyra info x.lyra >&-``) or not
writable fails with status 1 and one line saying so, instead of printing nowhere.

`guarded(command)` wraps every command (see `lyra.cli.app`). An exception that is not a
`LyraError` still prints one line, with its type, and says that ``LYRA_DEBUG=1`` shows the
traceback; under ``LYRA_DEBUG=1`` every error prints its traceback first. A Python warning
raised while a command runs prints as one line ``lyra: warning: ...``.

Signals: while a command runs, SIGINT, SIGTERM and SIGHUP (those not ignored at start, as
``nohup`` ignores SIGHUP) stop it at once, even inside a long model call or a blocking read: a
watcher thread removes every temporary output (`lyra.core.atomic.remove_temporaries`), prints the
line and exits. Commands that train (`lyra train`, `lyra demo`) stop gracefully instead: the
training loop finishes its step and saves a checkpoint (see `lyra.train.interrupt`); outside
the loop a signal raises `Interrupted`, which unwinds (removing temporaries) to the same line.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import re
import signal
import sys
import threading
import traceback
import warnings
from typing import Any, Callable, Iterator

import typer

from lyra.core.errors import LyraError

DEBUG_ENV = "LYRA_DEBUG"
BROKEN_PIPE_STATUS = 128 + 13     # as if killed by SIGPIPE, which Python ignores
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(BaseException):
    """A signal stopped a command (raised in the main thread; not an `Exception`, so that no
    ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def guarded(command: Callable[..., Any], graceful_signals: bool = False) -> Callable[..., Any]:
    """`command` with Lyra's endings: errors, interruptions and a closed stdout become an exit
    status and at most one line (see the module doc)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        failing_stdout()
        try:
            with handled_signals(graceful_signals), one_line_warnings():
                return command(*args, **kwargs)
        except (typer.Exit, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - every ending is decided here
            code = _ending(exc)
        raise typer.Exit(code)

    return run


def _ending(exc: BaseException) -> int:
    """Print what `exc` means for the user; the exit status."""
    if isinstance(exc, Interrupted):
        return interrupted(exc.signum)
    if isinstance(exc, KeyboardInterrupt):
        return interrupted(signal.SIGINT)
    if _broken_pipe(exc):
        _silence_stdout()
        return BROKEN_PIPE_STATUS
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    _say(f"lyra: error: {error_line(exc, debug)}")
    if _stdout_closed(exc):
        _silence_stdout()             # what is still buffered must not fail again at exit
    return 1


def failed_outside_command(exc: BaseException) -> int:
    """For `lyra.cli.main`: typer itself failed (or ``--version`` could not print); the line
    and the exit status."""
    _say(f"lyra: error: {error_line(exc)}")
    if _stdout_closed(exc):
        _silence_stdout()
    return 1


def error_line(exc: BaseException, debug: bool = False) -> str:
    """`exc` as one line: a `LyraError`'s message; an `OSError`'s file and cause; anything
    else's type and message, marked unexpected. All but the first point to the traceback."""
    if _stdout_closed(exc):        # also a LyraError raised from it ("-: Bad file descriptor")
        return STDOUT_CLOSED
    if isinstance(exc, LyraError):
        return _one_line(str(exc))
    if isinstance(exc, OSError) and exc.strerror:
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        text = f"{names}: {exc.strerror}" if names else exc.strerror
    else:
        text = f"unexpected {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    hint = "the traceback is above" if debug else f"{DEBUG_ENV}=1 shows the traceback"
    return f"{_one_line(text)} ({hint})"


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Python warnings raised while a command runs, each as one line ``lyra: warning: ...``
    (not the file, line number and source line a library user gets)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        _say(f"lyra: warning: {_one_line(str(message))}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def interrupted(signum: int) -> int:
    """Remove temporary outputs, print the line, return 128 + `signum`."""
    from lyra.core.atomic import remove_temporaries

    remove_temporaries()
    _say(f"lyra: interrupted ({signal.Signals(signum).name})")
    return 128 + signum


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _say(line: str) -> None:
    if sys.stderr is None:            # started with stderr closed: print() would use stdout
        return
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# A closed standard output
# ---------------------------------------------------------------------------------------
STDOUT_CLOSED = ("<stdout>: standard output is closed or not writable, so the output is lost "
                 "(to discard it, redirect it to /dev/null)")


class _ClosedStdout(io.BufferedIOBase):
    """`sys.stdout.buffer` for a process started with file descriptor 1 closed: every write
    fails as a write to a closed descriptor does (EBADF), until the failure has been reported
    (`_silence_stdout`); an empty one succeeds (click probes streams so)."""

    discard = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(memoryview(data))
        if size and not self.discard:
            raise OSError(errno.EBADF, "standard output is closed")
        return size


def failing_stdout() -> None:
    """If the process started with standard output closed (Python then sets `sys.stdout` to
    None, and click prints nowhere), make writing to it fail instead; and hold descriptor 1
    open on /dev/null, or the next file opened would become it (and receive any C library's
    output)."""
    if sys.stdout is not None:
        return
    try:
        os.fstat(1)
    except OSError:
        with contextlib.suppress(OSError):
            fd = os.open(os.devnull, os.O_WRONLY)
            if fd != 1:
                os.dup2(fd, 1)
                os.close(fd)
    sys.stdout = io.TextIOWrapper(_ClosedStdout(), encoding="utf-8", write_through=True)


def _stdout_closed(exc: BaseException | None) -> bool:
    """`exc`, or an exception it was raised from, is a write to a standard output that is
    closed or open only for reading (EBADF)."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno == errno.EBADF and exc.filename is None:
            return _stdout_unwritable()
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _stdout_unwritable() -> bool:
    if isinstance(getattr(sys.stdout, "buffer", None), _ClosedStdout):
        return True
    try:
        import fcntl

        flags = fcntl.fcntl(1, fcntl.F_GETFL)
    except (ImportError, OSError):
        return True
    return flags & os.O_ACCMODE == os.O_RDONLY


def _broken_pipe(exc: BaseException | None) -> bool:
    """`exc`, or an exception it was raised from, is a write into a pipe nobody reads."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, BrokenPipeError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null: Python's flush at exit would otherwise print a second
    BrokenPipeError (the recipe in the `signal` module's documentation)."""
    if isinstance(getattr(sys.stdout, "buffer", None), _ClosedStdout):
        sys.stdout.buffer.discard = True
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# ---------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def handled_signals(graceful: bool = False) -> Iterator[None]:
    """Within: SIGINT/SIGTERM/SIGHUP end the command as the module doc says. Handlers can only
    be installed in the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    ours = [s for s in SIGNALS if previous[s] is not signal.SIG_IGN]
    with contextlib.nullcontext() if graceful else _watcher():
        handler = _raise_once(ours) if graceful else _note
        for s in ours:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s in ours:
                signal.signal(s, previous[s])


def _note(signum: int, frame: Any) -> None:
    """The Python-level handler while a watcher thread acts on the signal (see `_watcher`)."""


def _raise_once(signals: list[int]) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        for s in signals:          # one interruption: let the unwinding finish undisturbed
            signal.signal(s, _note)
        raise Interrupted(signum)

    return handler


@contextlib.contextmanager
def _watcher() -> Iterator[None]:
    """A thread woken through `signal.set_wakeup_fd` whenever a handled signal arrives: it
    removes temporary outputs, prints the line and exits the process, whatever the main
    thread is doing (a long model call or a blocking read would delay a Python handler)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        err = os.dup(2)   # the line must get out even while fd 2 is briefly silenced
    except OSError:
        err = -1
    thread = threading.Thread(target=_watch, args=(read_end, err), name="lyra-signals", daemon=True)
    thread.start()
    old = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old)
        os.write(write_end, b"\0")       # not a signal number: the watcher returns
        thread.join()
        for fd in (read_end, write_end, err):
            if fd >= 0:
                os.close(fd)


def _watch(read_end: int, err: int) -> None:
    while data := os.read(read_end, 64):
        for signum in data:
            if signum == 0:
                return
            if signum in SIGNALS and signal.getsignal(signum) is _note:
                _exit_now(signum, err)


def _exit_now(signum: int, err: int) -> None:
    from lyra.core.atomic import remove_temporaries

    remove_temporaries(hold=True)    # and no new temporary file from here on
    if err >= 0:
        # On a terminal, over a progress bar's line (back to its start, cleared), not after it.
        start = "\r\x1b[K" if os.isatty(err) else ""
        with contextlib.suppress(OSError):
            os.write(err, f"{start}lyra: interrupted ({signal.Signals(signum).name})\n".encode())
    os._exit(128 + signum)
