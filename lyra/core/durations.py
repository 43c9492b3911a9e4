"""Durations as people read them: the one formatter every message, progress line and
summary uses.

    format_duration(4.25)              '4.2 s'         (under a minute: seconds)
    format_duration(3723)              '1:02:03'       (h:mm:ss, or m:ss under an hour)
    format_duration(83.5, millis=True) '1:23.500'      (a position in a file: m:ss.mmm)
"""

from __future__ import annotations


def format_duration(seconds: float, millis: bool = False) -> str:
    """`seconds` as ``4.2 s`` below a minute, else ``m:ss`` / ``h:mm:ss``; with `millis`, always
    a clock with milliseconds (``m:ss.mmm``, ``h:mm:ss.mmm``): a position in audio."""
    seconds = max(float(seconds), 0.0)
    if not millis and seconds < 59.95:   # (59.96 s reads 1:00, not 60.0 s)
        return f"{seconds:.1f} s"
    whole = seconds if millis else float(int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    tail = f"{secs:06.3f}" if millis else f"{int(secs):02d}"
    if hours:
        return f"{int(hours)}:{int(minutes):02d}:{tail}"
    return f"{int(minutes)}:{tail}"
