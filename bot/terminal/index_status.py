"""``echovids index status``: what the current build holds, from its manifest.

The build is opened the checked way (verified; a broken current build falls back to the newest
intact one), and a fallback is said first, in the text and in ``--json`` (``fallback``).
"""

from __future__ import annotations

import json


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def run(args, settings) -> int:
    from core.index import store

    build = store.open_current(settings.data_dir)
    m = build.manifest
    size = build.disk_bytes()
    fallback = None
    if build.fallback_reason:
        fallback = {"current": build.pointer, "serving": build.build_id, "reason": build.fallback_reason}
    if args.json:
        print(json.dumps({"data_dir": str(settings.data_dir), "current": build.build_id, "path": str(build.path),
                          "size_bytes": size, "fallback": fallback, "manifest": m}, indent=2))
        return 0
    c = m.get("counts", {})
    if fallback:
        print(f"WARNING: the current build {fallback['current']} is broken ({fallback['reason']}); "
              f"serving {fallback['serving']} until a rebuild (echovids index build / refresh)")
    print(f"current build   {build.build_id}  ({build.path})")
    print(f"built at        {m.get('built_at')}  in {m.get('build_seconds')} s  (code {m.get('code_version')})")
    stages = m.get("stage_seconds") or {}
    if stages:
        print("build stages    " + ", ".join(f"{k} {v:.1f}s" for k, v in stages.items()))
    print(f"vectors         {c.get('vectors', 0):,}")
    print(f"segments        {c.get('segments', 0):,}  ({c.get('audioset_segments', 0):,} AudioSet, "
          f"{c.get('library_segments', 0):,} library; {c.get('videos', 0):,} videos)")
    print(f"size on disk    {_human_bytes(size)}")
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
