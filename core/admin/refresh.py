"""``index refresh``: re-check every indexed video, then rebuild without the dead ones, then swap.

This is orchestration, so it lives in the admin service: liveness only checks and records
(:mod:`core.liveness.recheck`), the builder only builds (:mod:`core.index.builder`); this module
decides, from the check's answers, whether a rebuild is due and runs it. Two phases with different
failure stories:

1. **Check** every indexed video whose cache entry is stale; each answer is committed at once, so
   an interrupted refresh loses nothing and the next run asks only about what is still stale.
2. **Rebuild** through the ordinary build pipeline (same sources, learned parts included) with the
   gone/private/invalid videos excluded. The builder writes a new build directory and swaps the
   current pointer atomically, so the bot keeps serving the old build until the swap and picks the
   new one up on its next ``Engine.reload()``.

One refresh at a time per data directory: the whole run holds ``refresh.lock`` (flock), so a
second one — from the CLI, the bot or the bot's refresh child — is refused with LockBusyError, and
a killed refresh releases it at once. With the Milvus store the run also holds a lease in Milvus
(:mod:`core.index.milvus_lock`), so a refresh from a process on another machine is refused too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.config import Settings
from core.index.lock import acquire_refresh_lock
from core.liveness.recheck import CheckReport, recheck
from core.progress import ProgressCallback, no_progress


@dataclass
class RefreshReport(CheckReport):
    """What a refresh did (or, with ``dry_run``, would do): the check's findings, then the rebuild's."""

    data_dir: str = ""
    dry_run: bool = False
    excluded: int = 0                # ids the rebuild was told to leave out (all known dead)
    rebuilt: bool = False
    new_build: str | None = None
    elapsed_s: float = 0.0
    build_s: float = 0.0

    @property
    def complete(self) -> bool:
        return self.stopped is None

    def to_json(self) -> dict:
        return asdict(self)


RebuildFn = Callable[..., Path]


def refresh_index(settings: Settings, *, dry_run: bool = False, progress: ProgressCallback | None = None,
                  **options) -> RefreshReport:
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
    video_ids: Iterable[str] | None = None,
    rebuild: RebuildFn | None = None,
    **check_options: Any,
) -> RefreshReport:
    """Check stale videos, then rebuild without the dead ones (see the module docstring).

    ``video_ids`` replaces the current build's ids (tools and tests that only want the check phase;
    nothing is rebuilt then). ``rebuild`` replaces ``core.index.builder.build_index`` (same signature).
    ``check_options`` go to :func:`core.liveness.recheck.recheck` (concurrency, rate_per_s, timeout_s,
    max_retries, max_retry_after_s, ttl, cache_path): how politely to ask is liveness's business.
    """
    started = time.monotonic()
    progress = progress or no_progress
    data_dir = Path(settings.data_dir)

    # Reading ids may take seconds on big indexes: off the loop (the bot's loop may be running us).
    build = None
    if video_ids is None:
        build, ids = await asyncio.to_thread(_current_ids, data_dir)
    else:
        ids = sorted(set(v for v in video_ids if v))

    lock = acquire_refresh_lock(settings)  # LockBusyError if taken here, or anywhere on a shared Milvus
    try:
        check, dead_ids = await recheck(settings, ids, include_left_out=build is not None, progress=progress,
                                        **check_options)
        report = RefreshReport(**asdict(check), data_dir=str(data_dir), dry_run=dry_run)
        if build is not None and (report.dead or report.revived) and not dry_run and report.stopped is None:
            report.excluded = len(dead_ids)
            t1 = time.monotonic()
            # The build is CPU-heavy and synchronous: run it off the loop.
            new_path = await asyncio.to_thread(_rebuild, settings, build, dead_ids, progress, rebuild)
            report.build_s = round(time.monotonic() - t1, 3)
            report.rebuilt = True
            report.new_build = str(new_path)
    finally:
        lock.release()
    report.elapsed_s = round(time.monotonic() - started, 3)
    return report


def _current_ids(data_dir: Path):
    from core.index.store import open_current  # raises IndexMissingError with a clear line

    build = open_current(data_dir)
    return build, sorted(set(build.video_ids()))


def _rebuild(settings: Settings, build, exclude: frozenset[str], progress: ProgressCallback,
             rebuild: RebuildFn | None) -> Path:
    if rebuild is None:
        from core.index.builder import build_index as rebuild
    audioset_dirs, library_dirs = _sources(build, settings)
    return rebuild(settings, audioset_dirs=audioset_dirs, library_dirs=library_dirs,
                   exclude_video_ids=exclude, progress=progress)


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
