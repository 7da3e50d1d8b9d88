"""``echovids index build``: build a new index from AudioSet TFRecords and/or a library, swap it in."""

from __future__ import annotations

import sys

from bot.terminal.progress import TerminalProgress
from core.errors import IndexMissingError


def run(args, settings) -> int:
    from core.index import store

    if getattr(args, "if_missing", False):
        try:
            build = store.open_current(settings.data_dir)
        except IndexMissingError:
            pass
        else:
            print(f"index present: {build.size:,} vectors in {build.path} (use `echovids index build` to rebuild)",
                  file=sys.stderr)
            return 0
    if getattr(args, "shard", None) or getattr(args, "finalize", False):
        return _sharded(args, settings)
    from core.index.builder import build_index

    path = build_index(settings, audioset_dirs=args.audioset, library_dirs=args.library, progress=TerminalProgress())
    build = store.IndexBuild(path)
    c = build.manifest["counts"]
    print(f"built {path.name}: {c['vectors']:,} vectors, {c['segments']:,} segments "
          f"({c['audioset_segments']:,} AudioSet, {c['library_segments']:,} library) "
          f"in {build.manifest['build_seconds']:.1f}s; now current in {settings.data_dir}")
    if c["bad_shards"] or c["library_errors"]:
        print(f"skipped {c['bad_shards']} bad shard(s) and {c['library_errors']} library file(s):", file=sys.stderr)
        for p in build.manifest.get("problems", [])[:10]:
            print(f"  {p}", file=sys.stderr)
    return 0


def _sharded(args, settings) -> int:
    """One slice of a parallel Milvus ingest (``--shard K/N``), and/or the final verify-and-publish."""
    from core.index import milvus_ingest

    if args.library:
        print("echovids: --shard ingests AudioSet input only; build --library without --shard", file=sys.stderr)
        return 2
    pending = milvus_ingest.open_pending(settings, args.audioset or settings.audioset_dirs)
    if args.shard:
        k, n = milvus_ingest.parse_slice(args.shard)
        done = milvus_ingest.ingest_slice(settings, pending, k, n, progress=TerminalProgress())
        print(f"slice {done['slice']}: {done['ingested_now']} file(s) ingested now ({done['rows_now']:,} rows), "
              f"{done['already_done']} already done; {done['files_missing_overall']} file(s) missing overall",
              file=sys.stderr)
    path = milvus_ingest.finalize(settings, pending, progress=TerminalProgress())
    if path is None:
        missing = len(pending.missing())
        if args.finalize and missing:
            print(f"echovids: {missing} input file(s) are not ingested yet; run the remaining --shard slices",
                  file=sys.stderr)
            return 1
        print("other slices are still running (or finalizing); the last one to finish publishes the index",
              file=sys.stderr)
        return 0
    from core.index.store import IndexBuild

    c = IndexBuild(path).manifest["counts"]
    print(f"built {path.name}: {c['vectors']:,} vectors, {c['segments']:,} segments from {c['shard_files']:,} "
          f"files by slices; now current in {settings.data_dir}")
    return 0
