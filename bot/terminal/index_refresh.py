"""``echovids index refresh [--index DIR] [--dry-run] [--progress-json]``: re-check liveness, rebuild, swap.

The admin service does the work (:meth:`core.admin.Admin.refresh`); this front end draws the
progress bar on stderr and prints the summary (:mod:`bot.refresh_summary`) on stdout. Ctrl-C is safe: every answer already
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
from pathlib import Path

from bot.refresh_summary import summary
from bot.terminal.progress import TerminalProgress
from core.admin import Admin
from core.config import Settings
from core.errors import BadQueryError
from core.progress import ProgressEvent


def give_way_on_cpu(nice: int) -> None:
    """Run below the bot's CPU priority, as a whole session.

    ``os.nice`` alone does not do it under Linux's autogroup scheduling (on by default in most
    distributions' kernels, and on this machine): the child runs in a session of its own, hence
    an autogroup of its own, and the scheduler shares the CPU between autogroups first, equally,
    whatever the nice values inside them — measured, the niced rebuild still took a full core
    from the bot while its loop stalled. The autogroup's own nice value (``/proc/self/autogroup``,
    see sched(7)) makes the session, pool workers included, give way.
    """
    os.nice(nice)
    try:
        Path("/proc/self/autogroup").write_text(f"{nice}\n")
    except OSError:
        pass  # no autogroup (another OS, or a kernel without it): os.nice is all there is


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
        give_way_on_cpu(10)
        _exit_when_stdin_closes()
    progress = JsonProgress(sys.stdout) if as_json else TerminalProgress()
    report = Admin(settings).refresh(dry_run=dry_run, progress=progress,
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

