"""Admission and scheduling of search jobs: a bounded worker pool, a capped queue, per-user cooldowns,
and a separate bound for attachment downloads.

Why here and not in the cogs: decoding, embedding and searching are CPU-heavy and run in threads;
without a bound, a burst of voice notes would queue unbounded work (and memory), starve the event
loop of the GIL and make every reply late. So every request is *admitted* first — synchronously,
before the interaction is deferred, so a refusal can be an immediate ephemeral reply — then waits
for a slot. Heavy steps inside a job run on :attr:`JobPool.executor`, a pool of ``workers``
threads, which is what bounds the CPU work.

Downloads are network waits, not CPU work, and a slow or stalled CDN must not make everybody else
"busy": a search with an attachment is admitted as a *download* (its own bound, ``downloads`` at
once plus ``max_download_queue`` waiting) and takes a place in the CPU queue only once its bytes
are here. The two bounds together still cap the work and memory held at any moment.

When the bot is told to stop, :meth:`JobPool.stop_admitting` closes admission: every new request
is refused with reason ``"stopping"`` while the ones in flight finish.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Refused(Exception):
    """The job was not admitted; ``retry_after`` says when trying again makes sense."""

    def __init__(self, reason: str, retry_after: float):
        super().__init__(reason)
        self.reason = reason  # "busy", "cooldown" or "stopping"
        self.retry_after = retry_after


@dataclass
class Ticket:
    """Proof of admission; hand it back to :meth:`JobPool.run` (or :meth:`JobPool.cancel`).

    ``stage`` is ``"download"`` (admitted to fetch its attachment, no CPU-queue place yet),
    ``"queued"`` (holds a CPU-queue place) or ``"done"``.
    """

    user_id: int
    stage: str = "queued"

    @property
    def used(self) -> bool:
        return self.stage == "done"


class JobPool:
    """``concurrency`` jobs in flight, ``workers`` threads for their CPU work, at most ``max_queued``
    waiting; one job per user per ``cooldown_s``.

    Jobs in flight default to twice the threads: part of a job is waiting on the network (live
    checks on YouTube, up to the live budget), and meanwhile another job can use the CPU. The
    thread count alone bounds CPU work, so this never oversubscribes the machine.
    """

    def __init__(self, workers: int = 2, *, concurrency: int | None = None, max_queued: int | None = None,
                 cooldown_s: float = 3.0, downloads: int | None = None, max_download_queue: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.workers = max(1, int(workers))
        self.concurrency = max(1, int(concurrency)) if concurrency is not None else 2 * self.workers
        self.max_queued = max_queued if max_queued is not None else self.workers * 8
        #: Downloads at once, and admitted downloads waiting for one of those slots.
        self.downloads = max(1, int(downloads)) if downloads is not None else 4 * self.workers
        self.max_download_queue = (max(0, int(max_download_queue)) if max_download_queue is not None
                                   else 4 * self.downloads)
        self.cooldown_s = cooldown_s
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="echovids-job")
        self._clock = clock
        self._slots = asyncio.Semaphore(self.concurrency)
        self._download_slots = asyncio.Semaphore(self.downloads)
        self._pending = 0          # holding a CPU-queue place, not finished (waiting or running)
        self._running = 0
        self._fetching = 0         # admitted downloads, waiting for a slot or downloading
        self._downloading = 0
        self._admitting = True
        self._next_allowed: dict[int, float] = {}
        self._avg_job_s = 1.0      # running estimate for "try again in N s"
        self.completed = 0

    # -- admission (synchronous: answerable before deferring) -----------------------------
    def admit(self, user_id: int, *, download: bool = False) -> Ticket:
        """Admit a search now or refuse it. ``download``: it must fetch an attachment first, so it
        takes a download place, and its CPU-queue place only when :meth:`downloading` ends."""
        now = self._clock()
        if not self._admitting:
            raise Refused("stopping", 60.0)
        wait = self._next_allowed.get(user_id, 0.0) - now
        if wait > 0:
            raise Refused("cooldown", wait)
        if self._pending >= self.concurrency + self.max_queued:
            raise Refused("busy", self.estimated_wait())
        if download and self._fetching >= self.downloads + self.max_download_queue:
            raise Refused("busy", self.estimated_wait())
        if download:
            self._fetching += 1
        else:
            self._pending += 1
        self._next_allowed[user_id] = now + self.cooldown_s
        if len(self._next_allowed) > 10_000:  # forget users whose cooldown is long over
            self._next_allowed = {u: t for u, t in self._next_allowed.items() if t > now}
        return Ticket(user_id, stage="download" if download else "queued")

    @asynccontextmanager
    async def downloading(self, ticket: Ticket) -> AsyncIterator[None]:
        """Hold one of the ``downloads`` slots while the body runs; if it succeeds, the ticket
        moves to the CPU queue (a place taken even past the cap: it was admitted already, and the
        download bound caps how many can arrive this way)."""
        if ticket.stage != "download":
            raise RuntimeError(f"ticket is {ticket.stage}, not admitted for a download")
        async with self._download_slots:
            self._downloading += 1
            try:
                yield
            finally:
                self._downloading -= 1
        ticket.stage = "queued"
        self._fetching -= 1
        self._pending += 1

    def cancel(self, ticket: Ticket) -> None:
        """Give back an admitted place that will not be used (the defer or the download failed)."""
        if ticket.stage == "queued":
            self._pending -= 1
        elif ticket.stage == "download":
            self._fetching -= 1
        ticket.stage = "done"

    def stop_admitting(self) -> None:
        """Refuse every new request from now on (the bot is stopping); those admitted go on."""
        self._admitting = False

    @property
    def downloads_in_progress(self) -> int:
        return self._downloading

    def estimated_wait(self) -> float:
        """Seconds until a queue place frees up, from the average job time (at least 1)."""
        ahead = max(1, self._pending - self.concurrency + 1)
        return max(1.0, math.ceil(ahead * self._avg_job_s / self.concurrency))

    @property
    def queued(self) -> int:
        return max(0, self._pending - self._running)

    @property
    def running(self) -> int:
        return self._running

    # -- running ----------------------------------------------------------------------------
    async def run(self, ticket: Ticket, job: Callable[[], Awaitable[T]]) -> T:
        """Wait for a slot, run ``job()``, free the slot whatever happens."""
        if ticket.stage != "queued":
            raise RuntimeError(f"ticket is {ticket.stage}, not queued for the CPU")
        ticket.stage = "done"
        try:
            async with self._slots:
                self._running += 1
                start = self._clock()
                try:
                    return await job()
                finally:
                    self._running -= 1
                    spent = self._clock() - start
                    self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * spent
                    self.completed += 1
        finally:
            self._pending -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class LoopLagMonitor:
    """Measures how late the event loop wakes up: the bot's health figure while jobs run.

    A sleeper asks for ``interval`` seconds and records how much longer it actually took; a busy or
    GIL-starved loop shows up as lag (heartbeats and other users' replies would be late by as much).
    """

    def __init__(self, interval: float = 0.02, keep: int = 20_000):
        self.interval = interval
        self.keep = keep
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="echovids-lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            lag = loop.time() - before - self.interval
            self.samples.append(max(0.0, lag))
            if len(self.samples) > self.keep:
                del self.samples[: self.keep // 2]

    def reset(self) -> None:
        self.samples.clear()

    def percentile(self, q: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        idx = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[idx]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
