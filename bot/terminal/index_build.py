"""``echovids index build``: build a new index from AudioSet TFRecords and/or a library, swap it in."""

from __future__ import annotations

import sys

from bot.terminal.progress import TerminalProgress
from core.admin import Admin


def run(args, settings) -> int:
    admin = Admin(settings)
    if getattr(args, "if_missing", False) and (current := admin.current()) is not None:
        print(f"index present: {current.counts.get('vectors', 0):,} vectors in {current.path} "
              "(use `echovids index build` to rebuild)", file=sys.stderr)
        return 0
    if getattr(args, "shard", None) or getattr(args, "finalize", False):
        return _sharded(args, admin)
    build = admin.build(audioset_dirs=args.audioset, library_dirs=args.library, progress=TerminalProgress())
    c = build.counts
    print(f"built {build.path.name}: {c['vectors']:,} vectors, {c['segments']:,} segments "
          f"({c['audioset_segments']:,} AudioSet, {c['library_segments']:,} library) "
          f"in {build.manifest['build_seconds']:.1f}s; now current in {settings.data_dir}")
    if c["bad_shards"] or c["library_errors"]:
        print(f"skipped {c['bad_shards']} bad shard(s) and {c['library_errors']} library file(s):", file=sys.stderr)
        for p in build.manifest.get("problems", [])[:10]:
            print(f"  {p}", file=sys.stderr)
    return 0


def _sharded(args, admin: Admin) -> int:
    """One slice of a parallel Milvus ingest (``--shard K/N``), and/or the final verify-and-publish."""
    if args.library:
        print("echovids: --shard ingests AudioSet input only; build --library without --shard", file=sys.stderr)
        return 2
    run = admin.build_slices(audioset_dirs=args.audioset, shard=args.shard, progress=TerminalProgress())
    if (done := run.ingested) is not None:
        print(f"slice {done['slice']}: {done['ingested_now']} file(s) ingested now ({done['rows_now']:,} rows), "
              f"{done['already_done']} already done; {done['files_missing_overall']} file(s) missing overall",
              file=sys.stderr)
    if run.published is None:
        if args.finalize and run.missing:
            print(f"echovids: {run.missing} input file(s) are not ingested yet; run the remaining --shard slices",
                  file=sys.stderr)
            return 1
        print("other slices are still running (or finalizing); the last one to finish publishes the index",
              file=sys.stderr)
        return 0
    c = run.published.counts
    print(f"built {run.published.path.name}: {c['vectors']:,} vectors, {c['segments']:,} segments from "
          f"{c['shard_files']:,} files by slices; now current in {admin.data_dir}")
    return 0
