"""The progress display: step, loss parts, KL weight, throughput and ETA.

``bar``: one line redrawn in place (a terminal); ``lines``: a plain line every `every` steps
(logs, CI); ``off``: nothing; ``auto``: a bar on a terminal, lines otherwise.

    step  1200/20000 [###.................]   6% loss 2.314 (sc 0.61 mag 1.70 kl 3.1) kl_w 2.4e-05 lr 9.8e-05  11.2 audio-s/s  ETA 1:02:13
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    def __init__(self, total: int, start: int, mode: str = "auto", every: int = 10,
                 stream: TextIO | None = None, width: int = 20) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode = mode
        self.total = total
        self.start_step = start
        self.every = every
        self.width = width
        self.started = time.perf_counter()
        self._drawn = False

    def line(self, step: int, loss: float, sc: float, mag: float, kl: float, kl_weight: float,
             lr: float, audio_per_second: float) -> str:
        done = step - self.start_step
        elapsed = time.perf_counter() - self.started
        eta = format_duration(elapsed / done * (self.total - step)) if done > 0 else "?"
        frac = step / self.total if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return (f"step {step:>{len(str(self.total))}}/{self.total} [{bar}] {100 * frac:3.0f}% "
                f"loss {loss:.4g} (sc {sc:.3g} mag {mag:.3g} kl {kl:.3g}) kl_w {kl_weight:.2g} "
                f"lr {lr:.2g} {audio_per_second:6.1f} audio-s/s ETA {eta}")

    def update(self, step: int, **fields: float) -> None:
        if self.mode == "off":
            return
        if self.mode == "bar":
            self.stream.write("\r\033[K" + self.line(step, **fields))
            self._drawn = True
        elif step % self.every == 0 or step == self.total:
            self.stream.write(self.line(step, **fields) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (validation results, checkpoints), not overwritten by the bar."""
        if self.mode == "off":
            return
        self.close()
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
