"""Admission and scheduling of search jobs: a bounded worker pool, a capped queue, per-user cooldowns.

Why here and not in the cogs: decoding, embedding and searching are CPU-heavy and run in threads;
without a bound, a burst of voice notes would queue unbounded work (and memory), starve the event
loop of the GIL and make every reply late. So every request is *admitted* first — synchronously,
before the interaction is deferred, so a refusal can be an immediate ephemeral reply — then waits
for a slot. Heavy steps inside a job run on :attr:`JobPool.executor`, a pool of ``workers``
threads, which is what bounds the CPU work.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Refused(Exception):
    """The job was not admitted; ``retry_after`` says when trying again makes sense."""

    def __init__(self, reason: str, retry_after: float):
        super().__init__(reason)
        self.reason = reason  # "busy" or "cooldown"
        self.retry_after = retry_after


@dataclass
class Ticket:
    """Proof of admission; hand it back to :meth:`JobPool.run` (or :meth:`JobPool.cancel`)."""

    user_id: int
    admitted_at: float
    used: bool = False


class JobPool:
    """``concurrency`` jobs in flight, ``workers`` threads for their CPU work, at most ``max_queued``
    waiting; one job per user per ``cooldown_s``.

    Jobs in flight default to twice the threads: part of a job is waiting on the network (live
    checks on YouTube, up to the live budget), and meanwhile another job can use the CPU. The
    thread count alone bounds CPU work, so this never oversubscribes the machine.
    """

    def __init__(self, workers: int = 2, *, concurrency: int | None = None, max_queued: int | None = None,
                 cooldown_s: float = 3.0, clock: Callable[[], float] = time.monotonic):
        self.workers = max(1, int(workers))
        self.concurrency = max(1, int(concurrency)) if concurrency is not None else 2 * self.workers
        self.max_queued = max_queued if max_queued is not None else self.workers * 8
        self.cooldown_s = cooldown_s
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="echovids-job")
        self._clock = clock
        self._slots = asyncio.Semaphore(self.concurrency)
        self._pending = 0          # admitted, not finished (waiting or running)
        self._running = 0
        self._next_allowed: dict[int, float] = {}
        self._avg_job_s = 1.0      # running estimate for "try again in N s"
        self.completed = 0

    # -- admission (synchronous: answerable before deferring) -----------------------------
    def admit(self, user_id: int) -> Ticket:
        now = self._clock()
        wait = self._next_allowed.get(user_id, 0.0) - now
        if wait > 0:
            raise Refused("cooldown", wait)
        if self._pending >= self.concurrency + self.max_queued:
            raise Refused("busy", self.estimated_wait())
        self._pending += 1
        self._next_allowed[user_id] = now + self.cooldown_s
        if len(self._next_allowed) > 10_000:  # forget users whose cooldown is long over
            self._next_allowed = {u: t for u, t in self._next_allowed.items() if t > now}
        return Ticket(user_id, now)

    def cancel(self, ticket: Ticket) -> None:
        """Give back an admitted slot that will not be used (e.g. the defer itself failed)."""
        if not ticket.used:
            ticket.used = True
            self._pending -= 1

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
        if ticket.used:
            raise RuntimeError("ticket already used")
        ticket.used = True
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
