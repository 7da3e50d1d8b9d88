"""A terminal progress bar for long engine jobs (build, refresh, download).

The engine reports :class:`core.progress.ProgressEvent`; this turns them into one self-rewriting
line on stderr with rate and ETA, or plain periodic lines when stderr is not a terminal (CI logs,
pipes) so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from bot.formatting import progress_line
from core.progress import ProgressEvent


class TerminalProgress:
    """A :data:`core.progress.ProgressCallback` that draws :func:`bot.formatting.progress_line`."""

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
        return progress_line(event, elapsed, width=self.width, full="#", empty="-")
