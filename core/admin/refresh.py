"""``index refresh``: re-check every indexed video, then drop the dead ones and swap (rebuild, or
delete in place on Milvus).

This is orchestration, so it lives in the admin service: liveness only checks and records
(:mod:`core.liveness.recheck`), the builder only builds (:mod:`core.index.builder`); this module
decides, from the check's answers, whether a rebuild is due and runs it. Two phases with different
failure stories:

1. **Check** every indexed video whose cache entry is stale; each answer is committed at once, so
   an interrupted refresh loses nothing and the next run asks only about what is still stale.
2. **Drop** the gone/private/invalid videos, one of two ways (``RefreshReport.method``):

   * ``"rebuild"`` — the ordinary build pipeline (same sources, learned parts included) with those
     videos excluded. The builder writes a new build directory and swaps the current pointer
     atomically, so the bot keeps serving the old build until the swap and picks the new one up on
     its next ``Engine.reload()``. Always used for ScaNN builds, and on Milvus when a video an
     earlier refresh left out plays again (its rows must be inserted: a new collection is built).
   * ``"delete"`` — on Milvus, when videos only went away: their rows are deleted from the
     collection the current build names (one request, ~0.3 s, against ~1 min per 220 k seconds to
     rebuild; ``bench/milvus_refresh.py``). See :func:`_drop_in_place` for the order of the steps,
     which is what keeps readers and crashes safe.

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
    rebuilt: bool = False            # a new build is current (made either way: see ``method``)
    new_build: str | None = None
    #: How dead videos were dropped: "rebuild" (a new index/collection) or "delete" (Milvus rows
    #: deleted in place, a derived build made current); None when nothing was dropped.
    method: str | None = None
    method_reason: str | None = None  # why a Milvus build was rebuilt rather than deleted from
    deleted_segments: int = 0        # "delete": clips whose rows were deleted
    deleted_rows: int = 0            # "delete": rows (seconds) Milvus reported deleted
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
    """Check stale videos, then drop the dead ones: a rebuild, or on Milvus a delete in place (see the
    module docstring).

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
        if build is not None and _pointer(data_dir) != build.pointer:
            # another refresh or build finished while we read: work from what is current now
            build, ids = await asyncio.to_thread(_current_ids, data_dir)
        check, dead_ids = await recheck(settings, ids, include_left_out=build is not None, progress=progress,
                                        **check_options)
        report = RefreshReport(**asdict(check), data_dir=str(data_dir), dry_run=dry_run)
        if build is not None and (report.dead or report.revived):
            report.method, report.method_reason = _method(build, report)
        if build is not None and not dry_run and report.stopped is None and build.store_kind == "milvus":
            # A refresh killed between its swap and its delete left rows the current build no
            # longer lists: finish that delete now (one count query when there is nothing to do).
            await asyncio.to_thread(_finish_delete, settings, build, report)
        if build is not None and (report.dead or report.revived) and not dry_run and report.stopped is None:
            report.excluded = len(dead_ids)
            t1 = time.monotonic()
            # Both ways block (files, SQLite, Milvus calls; the build is CPU-heavy): off the loop.
            if report.method == "delete":
                new_path = await asyncio.to_thread(_drop_in_place, settings, build, dead_ids, progress, report,
                                                   lock.confirm)
            else:
                new_path = await asyncio.to_thread(_rebuild, settings, build, dead_ids, progress, rebuild,
                                                   lock.confirm)
            report.build_s = round(time.monotonic() - t1, 3)
            report.rebuilt = True
            report.new_build = str(new_path)
    finally:
        lock.release()
    report.elapsed_s = round(time.monotonic() - started, 3)
    return report


def _method(build, report: RefreshReport) -> tuple[str, str | None]:
    if build.store_kind != "milvus":
        return "rebuild", None
    if report.revived:
        return "rebuild", (f"{report.revived:,} videos left out earlier play again: their rows must be inserted, "
                           "so a new collection is built")
    return "delete", None


def _drop_in_place(settings: Settings, build, dead: frozenset[str], progress: ProgressCallback,
                   report: RefreshReport, confirm: Callable[[], None] = lambda: None) -> Path:
    """Milvus: delete the dead videos' rows from the current collection; returns the new build.

    The order, and why (readers reload the current build before every query; a search that is
    already running keeps the build it started with):

    1. **Derive** the new build directory (``core.index.remove_segments``): the current one minus
       the dead segments, same collection, same segment numbering; written as ``.tmp-`` and
       verified. A crash here leaves an abandoned ``.tmp-`` folder (removed by the next build) and
       nothing else changed: the next refresh starts over.
    2. **Swap** ``CURRENT`` to it (``commit_build``: the same atomic rename and pointer replace as
       every build; the alias does not move, it already names the collection). From here every new
       query loads a build that no longer lists the dead clips and excludes them outright, so the
       rows still in Milvus can no longer be returned.
    3. **Delete** their rows in ONE request (one timestamp: a search sees all of it or none) and
       wait until a Strong-consistency count of them is 0. A crash between 2 and 3 leaves rows the
       current build ignores; the next refresh finds them (:func:`_finish_delete`) and deletes them.

    Deleting first would let every reader still on the old build (all of them, until the swap, and
    any other process until its next query) rank dead clips whose rows are gone. The other way
    round, only a query that was already running on the old build when the delete lands can meet a
    deleted clip; it leaves that clip out (``core.search.Ranker`` on ``RowsGoneError``) instead of
    failing. The old build directory names the same collection: the grace-period clean-up
    (``vectorstore_milvus.drop_superseded``) only drops collections other than the current alias
    target and the one it replaced, so the shared collection stays until two later *rebuilds*.
    """
    from core.index import store
    from core.index.remove_segments import derive_without
    from core.index.vectorstore_milvus import delete_segments
    from core.progress import ProgressEvent

    data_dir = Path(settings.data_dir)
    ids = sorted(v for v in set(build.video_ids()) & set(dead))
    segs = sorted(s.id for v in ids for s in build.segments_of_video(v))
    progress(ProgressEvent("derive", 0, 1, "builds", f"{len(segs):,} clips of {len(ids):,} videos"))
    tmp, build_id, manifest = derive_without(data_dir, build, segs, ids)
    try:
        confirm()  # still our lock (LockLostError if a stall let another refresh take it): then swap
        final = store.commit_build(data_dir, tmp, build_id)
    except BaseException:
        store.discard_build(tmp)
        raise
    progress(ProgressEvent("derive", 1, 1, "builds", build_id))
    progress(ProgressEvent("delete", 0, len(segs), "clips"))
    new = store.IndexBuild(final, settings)
    report.deleted_rows += delete_segments(settings, manifest["ann"]["collection"], _keys(new, segs))
    report.deleted_segments += len(segs)
    progress(ProgressEvent("delete", len(segs), len(segs), "clips", f"{report.deleted_rows:,} rows"))
    return final


def _finish_delete(settings: Settings, build, report: RefreshReport) -> None:
    """Delete rows of segments the current build lists as removed, if any are still in Milvus."""
    from core.index.vectorstore_milvus import delete_segments, milvus_errors, open_collection, rows_of_segments

    removed = build.removed_segments
    if not len(removed):
        return
    keys = _keys(build, removed.tolist())
    name = build.manifest["ann"]["collection"]
    with milvus_errors("counting rows"):
        left = rows_of_segments(open_collection(settings, name), keys)
    if left:
        report.method = report.method or "delete"
        report.deleted_rows += delete_segments(settings, name, keys)
        report.deleted_segments += len(removed)


def _keys(build, segments: list[int]) -> list[int]:
    """Milvus ``segment`` keys of dense segment ids (a sharded ingest's keys are sparse)."""
    import numpy as np

    from core.index.vectorstore_milvus import segment_keys_of

    keys = segment_keys_of(build)
    if keys is None:
        return [int(s) for s in segments]
    return keys[np.asarray(segments, np.int64)].astype(np.int64).tolist()


def _pointer(data_dir: Path) -> str | None:
    from core.index.store import read_pointer

    return read_pointer(data_dir)


def _current_ids(data_dir: Path):
    from core.index.store import open_current  # raises IndexMissingError with a clear line

    build = open_current(data_dir)
    return build, sorted(set(build.video_ids()))


def _rebuild(settings: Settings, build, exclude: frozenset[str], progress: ProgressCallback,
             rebuild: RebuildFn | None, confirm: Callable[[], None] = lambda: None) -> Path:
    if rebuild is None:
        from core.index.builder import build_index as rebuild
    audioset_dirs, library_dirs = _sources(build, settings)
    return rebuild(settings, audioset_dirs=audioset_dirs, library_dirs=library_dirs,
                   exclude_video_ids=exclude, progress=progress, before_commit=confirm)


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
