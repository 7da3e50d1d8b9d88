"""``echovids index status``: what the current build holds, from :meth:`core.admin.Admin.status`.

The admin service opens the build the checked way (verified; a broken current build falls back to
the newest intact one); a fallback is said first, in the text and in ``--json`` (``fallback``).
"""

from __future__ import annotations

import json

from bot.formatting import size
from core.admin import Admin


def run(args, settings) -> int:
    status = Admin(settings).status()
    m = status.manifest
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
        return 0
    c = status.counts
    fallback = status.fallback
    if fallback:
        print(f"WARNING: the current build {fallback['current']} is broken ({fallback['reason']}); "
              f"serving {fallback['serving']} until a rebuild (echovids index build / refresh)")
    print(f"current build   {status.build_id}  ({status.path})")
    print(f"built at        {m.get('built_at')}  in {m.get('build_seconds')} s  (code {m.get('code_version')})")
    stages = m.get("stage_seconds") or {}
    if stages:
        print("build stages    " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()))
    print(f"vectors         {c.get('vectors', 0):,}")
    print(f"segments        {c.get('segments', 0):,}  ({c.get('audioset_segments', 0):,} AudioSet, "
          f"{c.get('library_segments', 0):,} library; {c.get('videos', 0):,} videos)")
    print(f"size on disk    {size(status.disk_bytes)}")
    if status.live_share is not None:
        print(f"live share      {status.live_share:.0%} still on YouTube ({status.checked:,} of {status.videos:,} "
              f"videos checked)")
    print(f"embedder        {m.get('embedder')}  PCA sha256 {m.get('pca_sha256') or 'n/a'}")
    print(f"metric          {m.get('metric')}")
    ann = m.get("ann", {})
    shards = ann.get("shards", [])
    kinds = ", ".join(sorted({s['kind'] for s in shards}))
    tuned = ", ".join(f"leaves {s.get('leaves_to_search')}/{s.get('num_leaves')} reorder {s.get('reorder')}"
                      for s in shards if s.get("kind") == "ah")
    if ann.get("store") == "milvus":
        print(f"milvus          collection {ann.get('collection')} (alias {ann.get('alias')}), "
              f"{ann.get('index', {}).get('index_type')} nlist {ann.get('index', {}).get('nlist')}, "
              f"nprobe {ann.get('search', {}).get('nprobe')} reorder_k {ann.get('search', {}).get('reorder_k')}, "
              f"recall@10 {ann.get('tuned_recall_at_10')}")
        deleted = ann.get("deleted") or {}
        if deleted.get("segments"):
            print(f"deleted         {deleted['segments']:,} clips ({deleted.get('rows', 0):,} seconds) removed in place "
                  f"by refreshes (same collection)")
    else:
        print(f"scann           {len(shards)} shard(s), {kinds}" + (f" ({tuned})" if tuned else ""))
    lh = m.get("labelhead")
    print(f"label head      {'mlp, hidden ' + str(lh['hidden']) if lh else 'none'}")
    src = m.get("sources", {})
    for d in src.get("audioset", []):
        print(f"source audioset {d}")
    for d in src.get("library", []):
        print(f"source library  {d}")
    print(f"skipped         {c.get('bad_shards', 0)} bad shard(s), {c.get('skipped_records', 0)} empty record(s), "
          f"{c.get('excluded_records', 0)} excluded, {c.get('library_errors', 0)} library error(s)")
    for p in m.get("problems", [])[:10]:
        print(f"  problem: {p}")
    return 0
