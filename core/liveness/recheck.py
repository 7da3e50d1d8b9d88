"""Re-check many indexed videos and record every answer: the check half of ``index refresh``.

Liveness only asks and records; deciding to rebuild (and holding the refresh lock while doing it)
is the admin service's job (:mod:`core.admin.refresh`), so this module never drives the builder.

Each answer is committed to the liveness cache the moment it arrives, so an interrupted run
(Ctrl-C, a kill, a reboot) loses nothing and the next one asks only about what is still stale:
nothing is checked twice. The check uses its own polite client (bounded concurrency, rate limit,
Retry-After honoured for everyone). Every SQLite call runs off the event loop (writes on one writer
thread): another process holding the cache's write lock delays the writes, never the loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.config import Settings
from core.liveness.cache import CACHE_FILENAME, TTL, LivenessCache
from core.liveness.oembed import DEAD_STATES, DEFAULT_CONCURRENCY, DEFAULT_RATE_PER_S, OEmbedClient
from core.progress import ProgressCallback, ProgressEvent, no_progress

#: A refresh waits longer per request than a query may: it wants an answer, not speed.
RECHECK_TIMEOUT_S = 10.0
RECHECK_RETRIES = 3


@dataclass
class CheckReport:
    """What one re-check of a set of videos found (the check fields of a refresh report)."""

    indexed: int = 0                 # unique videos asked about (a build's videos)
    stale: int = 0                   # of those (and of the left-out ones), how many needed a check
    checked: int = 0                 # checks completed this run
    requests: int = 0                # HTTP requests sent (retries included)
    states: dict[str, int] = field(default_factory=dict)  # answers of this run, by state
    dead: int = 0                    # of ``indexed``, how many are now known gone/private/invalid
    dead_by_state: dict[str, int] = field(default_factory=dict)
    dead_sample: list[str] = field(default_factory=list)  # a few of them, for the summary
    unknown: int = 0                 # videos still without an answer (retried next run)
    revived: int = 0                 # videos an earlier refresh left out that play again
    stopped: str | None = None       # why the check stopped early, if it did
    check_s: float = 0.0


async def recheck(
    settings: Settings,
    ids: list[str],
    *,
    include_left_out: bool = False,
    progress: ProgressCallback | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate_per_s: float | None = DEFAULT_RATE_PER_S,
    timeout_s: float = RECHECK_TIMEOUT_S,
    max_retries: int = RECHECK_RETRIES,
    max_retry_after_s: float = 300.0,
    ttl: TTL | None = None,
    cache_path: Path | None = None,
) -> tuple[CheckReport, frozenset[str]]:
    """Ask about every stale id in ``ids`` and record the answers; return the report and every id
    the cache now knows to be dead (in ``ids`` or not: what a rebuild should leave out).

    ``include_left_out`` also asks about dead videos that are no longer in ``ids`` (an earlier
    refresh left them out) once their answer expires, so a video that comes back can re-enter.
    """
    progress = progress or no_progress
    report = CheckReport(indexed=len(ids))
    # One thread does every write (answers keep their order); reads go to the default pool.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refresh-cache-writer")
    loop = asyncio.get_running_loop()
    path = Path(cache_path) if cache_path else Path(settings.data_dir) / CACHE_FILENAME
    cache = await loop.run_in_executor(writer, lambda: LivenessCache(path, ttl=ttl or TTL()))
    try:
        left_out: set[str] = set()
        if include_left_out:
            left_out = await asyncio.to_thread(lambda: cache.dead_ids() - set(ids))
        stale = await asyncio.to_thread(cache.stale_ids, ids + sorted(left_out))
        report.stale = len(stale)
        client = OEmbedClient(settings.youtube_oembed_url, concurrency=concurrency, rate_per_s=rate_per_s,
                              timeout_s=timeout_s, max_retry_after_s=max_retry_after_s)
        t0 = time.monotonic()
        try:
            await _check_all(client, cache, stale, report, progress, concurrency, max_retries, writer)
        finally:
            report.requests = client.requests_sent
            report.check_s = round(time.monotonic() - t0, 3)
            await client.close()

        latest, dead_ids = await asyncio.to_thread(lambda: (cache.get_many(ids), frozenset(cache.dead_ids())))
        dead = {vid: e.state for vid, e in latest.items() if e.state in DEAD_STATES}
        report.dead = len(dead)
        report.dead_by_state = dict(Counter(dead.values()))
        report.dead_sample = sorted(dead)[:10]
        report.unknown = sum(1 for vid in ids if vid not in latest or latest[vid].state == "unknown")
        report.revived = len(left_out - dead_ids)
    finally:
        await loop.run_in_executor(writer, cache.close)
        writer.shutdown(wait=False)
    return report, dead_ids


async def _check_all(
    client: OEmbedClient,
    cache: LivenessCache,
    stale: list[str],
    report: CheckReport,
    progress: ProgressCallback,
    concurrency: int,
    max_retries: int,
    writer: ThreadPoolExecutor,
) -> None:
    """A fixed pool of workers over a queue (not one task per video: indexes hold millions)."""
    total = len(stale)
    progress(ProgressEvent("check", 0, total, "videos"))
    if not stale:
        return
    it = iter(stale)
    counts: Counter[str] = Counter()

    async def worker() -> None:
        for vid in it:  # a shared iterator: each id is taken by exactly one worker
            if report.stopped:
                return
            result = await client.check(vid, retries=max_retries, wait_backoff=True)
            if not result.asked:
                # The server asked for a pause longer than we wait: stop asking, keep what we
                # have (the next run resumes here). This id was not asked, so it is not stored.
                report.stopped = (
                    f"YouTube asked us to wait {client.backoff_remaining():.0f} s; "
                    "run `echovids index refresh` again later (answers so far are kept)"
                )
                return
            # Committed before the next question: an interruption after this line loses nothing.
            # On the writer thread: a busy database (another process writing) waits there.
            await asyncio.get_running_loop().run_in_executor(writer, _put_patiently, cache, result)
            counts[result.state] += 1
            report.checked += 1
            report.states = dict(counts)
            progress(ProgressEvent("check", report.checked, total, "videos", _detail(counts)))

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, total)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()


#: How long one answer may wait for another process to release the cache's write lock.
WRITE_PATIENCE_S = 300.0


def _put_patiently(cache: LivenessCache, result, patience_s: float = WRITE_PATIENCE_S) -> None:
    """``cache.put`` that outlasts a long write lock held elsewhere (each try waits the cache's
    busy timeout): a refresh must not lose an answer because the bot or a tool was writing."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            cache.put(result)
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() > deadline:
                raise


def _detail(counts: Counter[str]) -> str:
    dead = sum(counts[s] for s in DEAD_STATES)
    return f"{dead} dead, {counts['unknown']} unknown"
