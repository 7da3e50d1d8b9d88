"""A terminal progress bar for long engine jobs (build, refresh, download).

The engine reports :class:`core.progress.ProgressEvent`; this turns them into one self-rewriting
line on stderr with rate and ETA, or plain periodic lines when stderr is not a terminal (CI logs,
pipes) so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from core.progress import ProgressEvent


def _human(n: float, unit: str) -> str:
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB"):
            if abs(n) < 1024 or suffix == "GiB":
                return f"{n:.1f} {suffix}" if suffix != "B" else f"{int(n)} B"
            n /= 1024
    return f"{int(n):,} {unit}"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TerminalProgress:
    """A :data:`core.progress.ProgressCallback` that draws ``stage [####    ] 42% rate ETA``."""

    def __init__(self, stream: TextIO | None = None, width: int = 28, min_interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._stage: str | None = None
        self._start = 0.0
        self._last_draw = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if event.stage != self._stage:
            if self._stage is not None and self.tty:
                self.stream.write("\n")
            self._stage, self._start, self._last_draw = event.stage, now, 0.0
        finished = event.total is not None and event.done >= event.total
        interval = self.min_interval if self.tty else 5.0
        if not finished and now - self._last_draw < interval:
            return
        self._last_draw = now
        line = self.render(event, now - self._start)
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def render(self, event: ProgressEvent, elapsed: float) -> str:
        rate = event.done / elapsed if elapsed > 0 else 0.0
        rate_text = f"{_human(rate, event.unit)}/s" if rate else ""
        if event.total:
            frac = min(1.0, event.done / event.total)
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            eta = (event.total - event.done) / rate if rate > 0 else 0
            text = (f"{event.stage:<10} [{bar}] {frac:4.0%} {_human(event.done, event.unit)}"
                    f"/{_human(event.total, event.unit)} {rate_text} ETA {_duration(eta)}")
        else:
            text = f"{event.stage:<10} {_human(event.done, event.unit)} {rate_text} {_duration(elapsed)}"
        if event.detail:
            text += f"  {event.detail}"
        return text
