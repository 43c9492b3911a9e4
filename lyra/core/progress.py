"""The one progress display of the toolkit: training, folder jobs and single long files.

    with Progress("encoding song.wav", total=51.0, unit="s") as bar:
        bar.advance(chunk_seconds)                  # done since the last call, in `unit`
        bar.log("a line of its own")                # printed above the bar

On a terminal (standard error, or `stream`) it is a `rich` line redrawn in place, fitted to the
terminal's width (cut with an ellipsis, never wrapped):

    encoding song.wav ━━━━━━━━╺━━━━━━━━━━━ 12.5 s/51.0 s  3.1x real-time  4.0 s elapsed, ETA 12.4 s  3/10 files

Elsewhere (a log file, a pipe, CI) nothing is drawn: `log` still prints its lines plainly, and
`line()` gives the progress as one plain line for a caller that logs it now and then. With
``quiet=True`` nothing at all is printed. Whatever ends the ``with`` block (Ctrl-C included)
leaves the last state on its own line, and the cursor is never left hidden.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

from lyra.core.durations import format_duration


class Progress:
    """A progress line on a terminal; nothing (but `log` lines) elsewhere; nothing when quiet.

    `total`: the amount of work in `unit` (None: unknown, a spinner and the time elapsed).
    `rate`: (label, scale) to show the speed as ``speed * scale label`` instead of the unit's
    own rate, e.g. training's ``("audio-s/s", audio_seconds_per_step)``.
    `draw=False`: never draw, even on a terminal (a caller that prints `line()` now and then).
    """

    def __init__(self, description: str, total: Optional[float] = None, unit: str = "s",
                 quiet: bool = False, stream: Optional[TextIO] = None,
                 rate: Optional[tuple[str, float]] = None, draw: bool = True) -> None:
        from rich.console import Console

        self.description, self.unit, self.quiet = description, unit, quiet
        self.total, self.completed = total, 0.0
        self.fields: dict[str, Any] = {}
        self.rate = rate or (("x real-time", 1.0) if unit == "s" else (f"{unit}/s", 1.0))
        self.console = Console(file=stream if stream is not None else sys.stderr, highlight=False)
        self.enabled = draw and not quiet and self.console.is_terminal     # (as `draws` says)
        self._started_at = time.perf_counter()
        self._started_from = 0.0
        self._rich: Any = None
        self._task: Any = None

    # -- the context -------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        self._started_at, self._started_from = time.perf_counter(), self.completed
        if self.enabled:
            self._rich = _rich_progress(self.console, self.rate, self.unit, sys_stderr=self.console.file is sys.stderr)
            self._task = self._rich.add_task(self.description, total=self.total, completed=self.completed,
                                             fields=dict(self.fields))
            self._rich.start()
            self.console.show_cursor(True)   # a signal may end the process at once (os._exit)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the display (its last state stays on its own line); safe to call twice."""
        bar, self._rich = self._rich, None
        if bar is not None:
            try:
                bar.stop()
            finally:
                self.console.show_cursor(True)

    # -- reporting ---------------------------------------------------------------------
    def advance(self, amount: float) -> None:
        """`amount` more done (in `unit`) since the last call."""
        self.update(completed=self.completed + amount)

    def update(self, completed: Optional[float] = None, total: Optional[float] = None, **fields: Any) -> None:
        """Set what is done (absolute, in `unit`), the total if it became known, and the extra
        fields shown after the rate (numbers as ``name value``, texts as they are)."""
        if completed is not None:
            self.completed = float(completed)
        if total is not None:
            self.total = float(total)
        self.fields.update(fields)
        if self._rich is not None:
            self._rich.update(self._task, completed=self.completed, total=self.total, fields=dict(self.fields))

    def line(self) -> str:
        """The progress as one plain line (for logs, where nothing is drawn): what the bar
        shows but the bar, with the rate and ETA averaged since the start."""
        done = self.completed - self._started_from
        elapsed = time.perf_counter() - self._started_at
        task = _Snapshot(self.completed, self.total, done / elapsed if done > 0 and elapsed > 0 else None,
                         elapsed, self.fields)
        shown, fields = line_parts(task, self.unit, self.rate)
        return f"{self.description} {shown}" + (f"  {fields}" if fields else "")

    def log(self, text: str) -> None:
        """A line of its own above the bar (or plainly, not on a terminal); nothing when quiet."""
        if self.quiet:
            return
        if self._rich is not None:
            self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:
            self.console.file.write(text + "\n")
            self.console.file.flush()


def draws(quiet: bool = False, stream: Optional[TextIO] = None) -> bool:
    """Whether a `Progress` on `stream` (standard error by default) would draw: not quiet and
    on a terminal. For a caller that must decide before it makes one (another process's)."""
    from rich.console import Console

    return not quiet and Console(file=stream if stream is not None else sys.stderr).is_terminal


# ---------------------------------------------------------------------------------------
# The rich display
# ---------------------------------------------------------------------------------------
def amount(value: Optional[float], unit: str) -> str:
    """`value` in `unit` as the display shows it: durations for "s", else a count."""
    if value is None:
        return "?"
    return format_duration(value) if unit == "s" else f"{value:g}"


class _Snapshot:
    """The few attributes of a rich task that `line_parts` reads, for `Progress.line`."""

    def __init__(self, completed: float, total: Optional[float], speed: Optional[float], elapsed: float,
                 fields: dict[str, Any]) -> None:
        self.completed, self.total, self.speed, self.elapsed = completed, total, speed, elapsed
        self.fields = {"fields": fields}
        self.finished = total is not None and completed >= total
        self.time_remaining = (None if total is None or not speed else max(total - completed, 0.0) / speed)


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def describe_fields(fields: dict[str, Any]) -> str:
    """``loss 2.31 lr 0.0001 3/10 files``: numbers with their name (3 significant digits),
    texts as they are."""
    parts = []
    for name, value in fields.items():
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, float):
            parts.append(f"{name} {value:.3g}")
        else:
            parts.append(f"{name} {value}")
    return " ".join(parts)


def line_parts(task: Any, unit: str, rate: tuple[str, float]) -> tuple[str, str]:
    """The text after the bar, in two parts: what must show (amount, rate, times) and the
    fields, which give way first when the terminal is narrow."""
    done = amount(task.completed, unit)
    count = "" if unit == "s" else f" {unit}"
    shown = f"{done}{count}" if task.total is None else f"{done}/{amount(task.total, unit)}{count}"
    label, scale = rate
    speed = task.speed
    value = "?" if not speed else _number(speed * scale)
    shown += f"  {value}x real-time" if label == "x real-time" else f"  {value} {label}"
    shown += f"  {format_duration(task.elapsed or 0.0)} elapsed"
    if task.total is not None:
        left = task.time_remaining
        shown += ", done" if task.finished else f", ETA {'?' if left is None else format_duration(left)}"
    return shown, describe_fields(task.fields.get("fields", {}))


def _rich_progress(console: Any, rate: tuple[str, float], unit: str, sys_stderr: bool) -> Any:
    """A one-line `rich.progress.Progress` on `console`, fitted to its width at every redraw
    (the terminal may be resized): the bar gives way first (down to 5 cells), then the fields,
    then the description (down to 8); what is left is cut with an ellipsis."""
    from rich.progress import ProgressColumn
    from rich.progress import Progress as RichProgress
    from rich.progress_bar import ProgressBar
    from rich.spinner import Spinner
    from rich.table import Column
    from rich.text import Text

    spinner = Spinner("dots")

    class Line(ProgressColumn):
        def render(self, task: Any) -> Text:
            width = console.width
            shown, fields = line_parts(task, unit, rate)
            head = task.description if task.total is not None else f"{spinner.render(task.get_time())} {task.description}"
            room = width - len(shown) - 2                      # two separating spaces
            desc = min(len(head), max(8, min(24, room - 11)))  # the description up to 24 cells,
            bar = 5                                            # a bar of 5, the fields,
            left = room - desc - 1 - bar
            kept = min(len(fields) + 2 if fields else 0, max(left, 0))
            left -= kept
            grow = min(15, max(left, 0))                       # then a bar of 20,
            bar, left = bar + grow, left - grow
            desc += min(len(head) - desc, max(left, 0))        # then the whole description
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(Text(head, overflow="ellipsis"))
            line.truncate(desc, overflow="ellipsis", pad=True)
            line.append(" ")
            pulse = task.total is None
            drawn = ProgressBar(total=task.total, completed=max(0.0, task.completed), width=bar, pulse=pulse,
                                animation_time=task.get_time())
            for segment in console.render(drawn, console.options.update(width=bar)):
                line.append(segment.text, segment.style)
            line.append(" " + shown)
            if kept > 3:
                line.append("  " + (fields if len(fields) <= kept - 2 else fields[:kept - 3] + "…"))
            line.truncate(width, overflow="ellipsis")
            return line

    return RichProgress(
        Line(table_column=Column(no_wrap=True, overflow="ellipsis")),
        console=console, refresh_per_second=4,
        speed_estimate_period=600.0,      # (the last 1,000 updates at most): slow training steps still get an ETA
        redirect_stdout=False,            # stdout may carry data (``lyra decode x.lyra -``)
        redirect_stderr=sys_stderr,       # a warning printed meanwhile goes above the bar
    )
