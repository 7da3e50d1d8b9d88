"""``echovids index refresh [--index DIR] [--dry-run] [--progress-json]``: re-check liveness, rebuild, swap.

The engine does the work (:func:`core.liveness.refresh.refresh_index`); this front end draws the
progress bar on stderr and prints a short summary on stdout. Ctrl-C is safe: every answer already
received is in the cache, and the next run continues from there.

``--progress-json`` is for programs, above all the bot: ``/index refresh`` runs this command as a
child process (a rebuild inside the serving process once took the bot down, issue 11) and reads
one JSON object per stdout line: ``{"event": "progress", "stage", "done", "total", "unit",
"detail"}`` (at most a few per second), then ``{"event": "report", ...RefreshReport fields}``.
Failures still end as one ``echovids: ...`` line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from bot.terminal.progress import TerminalProgress
from core.config import Settings
from core.errors import BadQueryError
from core.liveness.refresh import RefreshReport, refresh_index
from core.progress import ProgressEvent

STATE_ORDER = ("live", "unembeddable", "gone", "private", "invalid", "unknown")


def run(args: argparse.Namespace, settings: Settings) -> int:
    dry_run = bool(getattr(args, "dry_run", False))
    rate = getattr(args, "rate", 10.0)
    concurrency = getattr(args, "concurrency", 8)
    timeout = getattr(args, "timeout", 10.0)
    as_json = bool(getattr(args, "progress_json", False))
    if concurrency < 1 or rate is None or rate < 0:
        raise BadQueryError("--concurrency must be at least 1 and --rate 0 or more")
    if timeout is None or timeout <= 0:
        raise BadQueryError("--timeout must be more than 0 seconds")
    if getattr(args, "bot_child", False):
        # Started by the bot: give way to it on the CPU (the rebuild must not slow replies down)
        # and never outlive it.
        os.nice(10)
        _exit_when_stdin_closes()
    progress = JsonProgress(sys.stdout) if as_json else TerminalProgress()
    report = refresh_index(settings, dry_run=dry_run, progress=progress,
                           rate_per_s=rate or None, concurrency=concurrency, timeout_s=timeout)
    if as_json:
        progress.flush()
        print(json.dumps({"event": "report", **report.to_json()}), flush=True)
    else:
        print(summary(report))
    if report.stopped:
        print(f"echovids: refresh stopped early: {report.stopped}", file=sys.stderr)
        return 1
    return 0


class JsonProgress:
    """One JSON line per progress event on ``stream``, throttled per stage (the check phase reports
    every answer, thousands a second), always passing the first and the last event of a stage."""

    def __init__(self, stream, min_interval_s: float = 0.25, clock=time.monotonic):
        self.stream = stream
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._lock = threading.Lock()  # the build reports from worker threads
        self._stage: str | None = None
        self._last = float("-inf")
        self._pending: ProgressEvent | None = None

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            now = self.clock()
            finished = event.total is not None and event.done >= event.total
            if event.stage == self._stage and not finished and now - self._last < self.min_interval_s:
                self._pending = event
                return
            self._stage, self._last, self._pending = event.stage, now, None
            self._write(event)

    def flush(self) -> None:
        with self._lock:
            if self._pending is not None:
                self._write(self._pending)
                self._pending = None

    def _write(self, event: ProgressEvent) -> None:
        self.stream.write(json.dumps({"event": "progress", "stage": event.stage, "done": event.done,
                                      "total": event.total, "unit": event.unit, "detail": event.detail}) + "\n")
        self.stream.flush()


def _exit_when_stdin_closes() -> None:
    """For a child of the bot: when the parent dies (even by SIGKILL) our stdin pipe closes; then
    stop this process and its pool workers (our process group) rather than run on as an orphan."""

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        try:
            if os.getpgrp() == os.getpid():  # our own group (the bot starts us as a session leader)
                os.killpg(os.getpgrp(), signal.SIGTERM)
            else:
                os.kill(os.getpid(), signal.SIGTERM)
        except OSError:
            os._exit(143)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def summary(report: RefreshReport) -> str:
    """The end-of-run summary a moderator reads (also reused by the bot's refresh command)."""
    lines = []
    fresh = report.indexed - report.stale
    lines.append(f"{report.indexed:,} indexed videos: {report.stale:,} needed a check, {fresh:,} were fresh in the cache")
    if report.checked or report.stale:
        parts = [f"{report.states[s]:,} {s}" for s in STATE_ORDER if report.states.get(s)]
        rate = report.checked / report.check_s if report.check_s > 0 else 0.0
        lines.append(f"checked {report.checked:,} in {report.check_s:.1f} s ({rate:.1f}/s): "
                     + (", ".join(parts) if parts else "nothing"))
    dead = ", ".join(f"{n:,} {s}" for s, n in sorted(report.dead_by_state.items()))
    lines.append(f"{report.dead:,} indexed videos no longer play" + (f" ({dead})" if dead else ""))
    if report.revived:
        lines.append(f"{report.revived:,} videos left out by an earlier refresh play again"
                     + (" and would come back" if report.dry_run else " and are back in the index"))
    if report.unknown:
        lines.append(f"{report.unknown:,} could not be checked (kept in the index; a refresh after a few minutes asks again)")
    if report.dry_run:
        if report.dead or report.revived:
            lines.append(f"dry run: a refresh would rebuild the index without these {report.dead:,} videos"
                         + (f" (e.g. {', '.join(report.dead_sample[:3])})" if report.dead_sample else ""))
        else:
            lines.append("dry run: the index would stay as it is")
    elif report.rebuilt:
        lines.append(f"rebuilt without {report.excluded:,} dead videos in {report.build_s:.1f} s; "
                     f"now current: {report.new_build}")
    elif report.stopped:
        lines.append("index unchanged (checks incomplete)")
    else:
        lines.append("index unchanged: every indexed video still plays or is unknown")
    return "\n".join(lines)
