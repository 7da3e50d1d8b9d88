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
