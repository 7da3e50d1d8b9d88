"""``echovids index refresh``: re-check every indexed video, then rebuild without the dead ones.

Two phases with different failure stories:

1. **Check** every indexed video whose cache entry is stale. Each answer is committed to the
   liveness cache the moment it arrives, so an interrupted refresh (Ctrl-C, a kill, a reboot) loses
   nothing and the next run asks only about what is still stale: nothing is checked twice.
2. **Rebuild** through the ordinary build pipeline (same sources, learned parts included) with the
   gone/private/invalid videos excluded. The builder writes a new build directory and swaps the
   current pointer atomically, so the bot keeps serving the old build until the swap and picks the
   new one up on its next ``Engine.reload()``.

The bot may run meanwhile: the cache is WAL SQLite (its readers never wait), and the check phase
uses its own polite client (bounded concurrency, rate limit, Retry-After honoured for everyone).
Every SQLite call runs off the event loop (writes on one writer thread): another process holding
the cache's write lock delays the writes, never the loop. One refresh at a time per data
directory: the whole run holds ``refresh.lock`` (flock), so a second one — from the CLI, the bot or
the bot's refresh child — is refused with LockBusyError, and a killed refresh releases it at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.config import Settings
from core.index.lock import FileLock, REFRESH_LOCK
from core.liveness.cache import CACHE_FILENAME, TTL, LivenessCache
from core.liveness.oembed import (
    DEAD_STATES,
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE_PER_S,
    OEmbedClient,
)
from core.progress import ProgressCallback, ProgressEvent, no_progress

#: Refresh waits longer per request than a query may: it wants an answer, not speed.
REFRESH_TIMEOUT_S = 10.0
REFRESH_RETRIES = 3


@dataclass
class RefreshReport:
    """What a refresh did (or, with ``dry_run``, would do)."""

    data_dir: str
    dry_run: bool
    indexed: int = 0                 # unique videos in the current build
    stale: int = 0                   # of those, how many needed a check this run
    checked: int = 0                 # checks completed this run
    requests: int = 0                # HTTP requests sent (retries included)
    states: dict[str, int] = field(default_factory=dict)  # answers of this run, by state
    dead: int = 0                    # indexed videos now known gone/private/invalid
    dead_by_state: dict[str, int] = field(default_factory=dict)
    dead_sample: list[str] = field(default_factory=list)  # a few of them, for the summary
    unknown: int = 0                 # indexed videos still without an answer (retried next run)
    excluded: int = 0                # ids the rebuild was told to leave out (all known dead)
    revived: int = 0                 # videos an earlier refresh left out that play again
    rebuilt: bool = False
    old_build: str | None = None
    new_build: str | None = None
    stopped: str | None = None       # why the check phase stopped early, if it did
    elapsed_s: float = 0.0
    check_s: float = 0.0
    build_s: float = 0.0

    @property
    def complete(self) -> bool:
        return self.stopped is None

    def to_json(self) -> dict:
        return asdict(self)


RebuildFn = Callable[..., Path]


def refresh_index(
    settings: Settings,
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    **options,
) -> RefreshReport:
    """Blocking refresh for the CLI or a worker thread (it runs its own event loop).

    From inside a running loop use :func:`arefresh_index` instead. ``options`` are those of
    :func:`arefresh_index` (concurrency, rate, tests' hooks).
    """
    return asyncio.run(arefresh_index(settings, dry_run=dry_run, progress=progress, **options))


async def arefresh_index(
    settings: Settings,
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate_per_s: float | None = DEFAULT_RATE_PER_S,
    timeout_s: float = REFRESH_TIMEOUT_S,
    max_retries: int = REFRESH_RETRIES,
    max_retry_after_s: float = 300.0,
    ttl: TTL | None = None,
    cache_path: Path | None = None,
    video_ids: Iterable[str] | None = None,
    rebuild: RebuildFn | None = None,
) -> RefreshReport:
    """Check stale videos, then rebuild without the dead ones (see the module docstring).

    ``video_ids`` replaces the current build's ids (tools and tests that only want the check phase;
    nothing is rebuilt then unless a build is also current). ``rebuild`` replaces
    ``core.index.builder.build_index`` (same signature).
    """
    started = time.monotonic()
    progress = progress or no_progress
    data_dir = Path(settings.data_dir)
    report = RefreshReport(data_dir=str(data_dir), dry_run=dry_run)

    # Reading ids and the cache may take seconds on big indexes: off the loop, because the bot
    # runs refreshes inside its own event loop.
    build = None
    if video_ids is None:
        build, ids = await asyncio.to_thread(_current_ids, data_dir)
        report.old_build = str(build.path)
    else:
        ids = sorted(set(v for v in video_ids if v))
    report.indexed = len(ids)

    lock = FileLock(data_dir / REFRESH_LOCK, "an index refresh").acquire()  # LockBusyError if taken
    try:
        return await _locked_refresh(settings, report, build, ids, started, progress, dry_run=dry_run,
                                     concurrency=concurrency, rate_per_s=rate_per_s, timeout_s=timeout_s,
                                     max_retries=max_retries, max_retry_after_s=max_retry_after_s, ttl=ttl,
                                     cache_path=cache_path, rebuild=rebuild)
    finally:
        lock.release()


async def _locked_refresh(settings: Settings, report: RefreshReport, build, ids: list[str], started: float,
                          progress: ProgressCallback, *, dry_run: bool, concurrency: int,
                          rate_per_s: float | None, timeout_s: float, max_retries: int,
                          max_retry_after_s: float, ttl: TTL | None, cache_path: Path | None,
                          rebuild: RebuildFn | None) -> RefreshReport:
    data_dir = Path(settings.data_dir)
    # One thread does every write (answers keep their order); reads go to the default pool.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refresh-cache-writer")
    loop = asyncio.get_running_loop()
    cache = await loop.run_in_executor(
        writer, lambda: LivenessCache(Path(cache_path) if cache_path else data_dir / CACHE_FILENAME, ttl=ttl or TTL()))
    try:
        # Videos an earlier refresh left out are not in the build any more; ask about them again
        # once their answer expires, so a video that comes back re-enters the index.
        left_out: set[str] = set()
        if build is not None:
            left_out = await asyncio.to_thread(lambda: cache.dead_ids() - set(ids))
        stale = await asyncio.to_thread(cache.stale_ids, ids + sorted(left_out))
        report.stale = len(stale)
        client = OEmbedClient(
            settings.youtube_oembed_url,
            concurrency=concurrency,
            rate_per_s=rate_per_s,
            timeout_s=timeout_s,
            max_retry_after_s=max_retry_after_s,
        )
        t0 = time.monotonic()
        try:
            await _check_all(client, cache, stale, report, progress, concurrency, max_retries, writer)
        finally:
            report.requests = client.requests_sent
            report.check_s = round(time.monotonic() - t0, 3)
            await client.close()

        latest, exclude = await asyncio.to_thread(lambda: (cache.get_many(ids), frozenset(cache.dead_ids())))
        dead = {vid: e.state for vid, e in latest.items() if e.state in DEAD_STATES}
        report.dead = len(dead)
        report.dead_by_state = dict(Counter(dead.values()))
        report.dead_sample = sorted(dead)[:10]
        report.unknown = sum(1 for vid in ids if vid not in latest or latest[vid].state == "unknown")
        report.revived = len(left_out - exclude)
    finally:
        await loop.run_in_executor(writer, cache.close)
        writer.shutdown(wait=False)

    if build is not None and (dead or report.revived) and not dry_run and report.stopped is None:
        report.excluded = len(exclude)
        t1 = time.monotonic()
        # The build is CPU-heavy and synchronous: run it off the loop.
        new_path = await asyncio.to_thread(_rebuild, settings, build, exclude, progress, rebuild)
        report.build_s = round(time.monotonic() - t1, 3)
        report.rebuilt = True
        report.new_build = str(new_path)
    report.elapsed_s = round(time.monotonic() - started, 3)
    return report


def _current_ids(data_dir: Path):
    from core.index.store import open_current  # raises IndexMissingError with a clear line

    build = open_current(data_dir)
    return build, sorted(set(build.video_ids()))


async def _check_all(
    client: OEmbedClient,
    cache: LivenessCache,
    stale: list[str],
    report: RefreshReport,
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


def _rebuild(settings: Settings, build, exclude: frozenset[str], progress: ProgressCallback,
             rebuild: RebuildFn | None) -> Path:
    if rebuild is None:
        from core.index.builder import build_index as rebuild
    audioset_dirs, library_dirs = _sources(build, settings)
    return rebuild(
        settings,
        audioset_dirs=audioset_dirs,
        library_dirs=library_dirs,
        exclude_video_ids=exclude,
        progress=progress,
    )


def _sources(build, settings: Settings) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The folders the current build was made from (its manifest), so the rebuild indexes the same
    data minus the dead videos. Falls back to the configured AudioSet folders."""
    manifest = getattr(build, "manifest", None) or {}
    sources = manifest.get("sources") or {}
    audioset: list[str] = []
    library: list[str] = []
    if isinstance(sources, dict):
        audioset = list(sources.get("audioset") or sources.get("audioset_dirs") or [])
        library = list(sources.get("library") or sources.get("library_dirs") or [])
    elif isinstance(sources, list):
        for s in sources:
            if isinstance(s, dict):
                kind = s.get("kind") or s.get("type") or "audioset"
                path = s.get("path") or s.get("dir")
                if path:
                    (library if kind == "library" else audioset).append(path)
            elif isinstance(s, str):
                audioset.append(s)

    def paths(items: list) -> tuple[Path, ...]:
        out = []
        for item in items:
            p = item.get("path") if isinstance(item, dict) else item
            if p:
                out.append(Path(p))
        return tuple(out)

    a, lib = paths(audioset), paths(library)
    if not a and not lib:
        a = tuple(settings.audioset_dirs)
    return a, lib
