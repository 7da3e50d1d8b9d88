"""Query-time liveness: only links that work, with titles, within a fixed time budget.

A reply must not wait on YouTube. The checker answers from the cache first (sub-millisecond),
checks only as many uncached candidates as can still make the reply (plus a few spares, since about
one in six AudioSet videos is gone), all in parallel, and stops at the budget: whatever has not
answered by then is kept and marked ``"unknown"``. Checks that finish after the reply still land in
the cache, so the next query about the same video is instant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.config import Settings
from core.liveness.cache import CACHE_FILENAME, TTL, LivenessCache
from core.liveness.clock import REAL_CLOCK, Clock
from core.liveness.oembed import (
    DEAD_STATES,
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_PER_S,
    DEFAULT_TIMEOUT_S,
    OEmbedClient,
    OEmbedResult,
)
from core.results import Match

#: Extra candidates checked beyond what the reply needs, as a fraction of ``want`` (≈16 % of
#: AudioSet is gone; checking spares in the same round avoids a second round trip).
SPARE_FRACTION = 0.5
MAX_BACKLOG = 256


class LivenessChecker:
    """Filters search results down to videos that still play.

    Use from one event loop (the bot's, or ``asyncio.run`` in the CLI). The SQLite cache is read on
    the loop (WAL readers never wait for the writer) and written from one worker thread, so a
    refresh holding the write lock in another process cannot stall a reply.
    """

    def __init__(
        self,
        settings: Settings,
        cache_path: Path | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_per_s: float | None = DEFAULT_RATE_PER_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ttl: TTL | None = None,
        client: OEmbedClient | None = None,
        clock: Clock = REAL_CLOCK,
    ):
        self.settings = settings
        self.clock = clock
        path = Path(cache_path) if cache_path is not None else Path(settings.data_dir) / CACHE_FILENAME
        try:
            self.cache = LivenessCache(path, ttl=ttl or TTL())
        except (OSError, sqlite3.Error):
            # A read-only data directory (e.g. an index mounted read-only) must not stop replies:
            # keep the answers in a private temporary file instead.
            fallback = Path(tempfile.gettempdir()) / f"echovids-{os.getuid()}-{CACHE_FILENAME}"
            self.cache = LivenessCache(fallback, ttl=ttl or TTL())
        self.client = client or OEmbedClient(
            settings.youtube_oembed_url, concurrency=concurrency, rate_per_s=rate_per_s, timeout_s=timeout_s,
            clock=clock,
        )
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="liveness-cache")
        self._inflight: dict[str, asyncio.Task[OEmbedResult]] = {}
        self._background: set[asyncio.Future] = set()
        self._closed = False
        #: Checks allowed in flight or queued at once (at 10 req/s, about 25 s of work).
        self.max_backlog = MAX_BACKLOG

    # -- public --------------------------------------------------------------------------------
    async def filter(self, matches: Sequence[Match], want: int, budget_s: float) -> list[Match]:
        """The first ``want`` matches whose videos still play, in order, with live/title/channel set.

        Gone, private and invalid videos are dropped and later candidates move up; videos whose
        check did not finish within ``budget_s`` are kept as ``"unknown"``; library matches (no
        video id) pass through as ``"unchecked"``.
        """
        deadline = time.monotonic() + max(0.0, budget_s)
        want = max(0, int(want))
        if want == 0 or not matches:
            return []
        ids = [m.video_id for m in matches if m.video_id]
        try:
            now = self.clock.time()
            known = {vid: e for vid, e in self.cache.get_many(ids).items() if e.fresh(now)}
        except Exception:  # a locked/corrupt cache must not fail a reply; fall back to checking
            known = {}
        states: dict[str, OEmbedResult] = {
            vid: OEmbedResult(vid, e.state, e.title, e.channel) for vid, e in known.items()  # type: ignore[arg-type]
        }
        tasks: dict[str, asyncio.Task[OEmbedResult]] = {}
        spare = max(1, math.ceil(want * SPARE_FRACTION))

        while True:
            # Walk the candidates in rank order as if every pending check will come back live: the
            # reply is settled once none of its first `want` slots waits for an answer. Candidates
            # up to `want + spare` slots deep are checked now, in parallel, so a drop rarely costs
            # a second round trip.
            slots, reply_waits = 0, False
            for m in matches:
                if slots >= want + spare:
                    break
                vid = m.video_id
                if vid:
                    known_state = states.get(vid)
                    if known_state is not None and known_state.state in DEAD_STATES:
                        continue
                    if known_state is None and vid not in tasks and vid not in self._inflight \
                            and len(self._inflight) >= self.max_backlog:
                        # YouTube answers slower than queries arrive: do not queue without end.
                        known_state = states[vid] = OEmbedResult(vid, "unknown", detail="check backlog full")
                    if known_state is None:
                        if vid not in tasks:
                            tasks[vid] = self._check_task(vid)
                        reply_waits = reply_waits or slots < want
                slots += 1
            if not reply_waits:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            pending = {t: vid for vid, t in tasks.items() if vid not in states}
            done, _ = await asyncio.wait(set(pending), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break
            for task in done:
                vid = pending[task]
                if task.cancelled() or task.exception() is not None:
                    states[vid] = OEmbedResult(vid, "unknown", detail="check failed")
                else:
                    states[vid] = task.result()
        return self._assemble(matches, want, states)

    async def drain(self) -> None:
        """Wait until every check in flight has answered and its answer is in the cache.

        What "a late answer still lands in the cache" means, as an event a test (or a tool) can
        wait on instead of sleeping.
        """
        while self._inflight or self._background:
            await asyncio.gather(*self._inflight.values(), *self._background, return_exceptions=True)

    async def close(self) -> None:
        """Stop background checks, close the HTTP session, flush and close the cache."""
        self._closed = True
        for task in list(self._inflight.values()):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.client.close()
        self._writer.submit(self.cache.close)  # the writer thread closes its own connection
        self._writer.shutdown(wait=True)
        self.cache.close()

    # -- internals -----------------------------------------------------------------------------
    def _check_task(self, video_id: str) -> asyncio.Task[OEmbedResult]:
        """A shared task per video: concurrent queries about one video send one request, and the
        task outlives the query that started it so a late answer is still cached."""
        task = self._inflight.get(video_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._check_and_store(video_id))
            self._inflight[video_id] = task
            task.add_done_callback(lambda _t, v=video_id: self._inflight.pop(v, None))
        return task

    async def _check_and_store(self, video_id: str) -> OEmbedResult:
        try:
            result = await self.client.check(video_id, retries=0, wait_backoff=False)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug or an odd aiohttp failure: unknown, never a failed reply
            return OEmbedResult(video_id, "unknown", detail=f"check failed: {type(err).__name__}")
        if not self._closed and result.asked:  # a pause teaches nothing about the video: not cached
            fut = asyncio.get_running_loop().run_in_executor(self._writer, self._store, result)
            self._background.add(fut)
            fut.add_done_callback(self._background.discard)
        return result

    def _store(self, result: OEmbedResult) -> None:
        try:
            self.cache.put(result, now=self.clock.time())
        except Exception:  # cache write trouble loses only a cache entry, never a reply
            pass

    @staticmethod
    def _assemble(matches: Sequence[Match], want: int, states: dict[str, OEmbedResult]) -> list[Match]:
        out: list[Match] = []
        for m in matches:
            if len(out) >= want:
                break
            if not m.video_id:
                out.append(dataclasses.replace(m, live="unchecked"))
                continue
            r = states.get(m.video_id)
            if r is None:
                out.append(dataclasses.replace(m, live="unknown"))  # not back within the budget
                continue
            if r.state in DEAD_STATES:
                continue
            live = r.state if r.state in ("live", "unembeddable") else "unknown"
            out.append(dataclasses.replace(m, live=live, title=r.title or m.title, channel=r.channel or m.channel))
        return out
