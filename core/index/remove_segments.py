"""A build minus some segments, derived from the current one without rebuilding its vector store.

For a refresh on Milvus (``core.admin.refresh``): deleting the gone clips' rows from the collection
the current build names takes well under a second where a rebuild takes a minute per 220 k seconds
(``bench/milvus_refresh.py``). The data directory's per-segment files must change with the rows, so
this writes a new build directory — the same temporary-folder, verify, rename and ``CURRENT`` swap
as every build (:func:`core.index.store.commit_build`) — that:

* keeps the segment **numbering**: Milvus row ids are ``segment_key << 16 | second`` and each row
  carries its ``segment``; renumbering would break them. ``segments.npz`` keeps every array's
  length (rows stay where they were), only the removed segments' label lists become empty, so no
  label ranking (the ranker's candidates, ``--text``, the YAMNet bridge) can pick them;
* drops the removed segments from ``segments.sqlite`` (``video_ids()``, ``--like``, ``status``,
  metadata look-ups never see them);
* lists every segment removed so far in ``removed_segments.npy`` (cumulative over refreshes), which
  the ranker excludes outright (a search may still see deleted rows for a moment);
* copies the rest (labels, label head, sharded segment keys) and writes a manifest that names the
  **same** collection and records what was removed (``refresh`` and ``ann.deleted``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np

from core import __version__
from core.index import store

#: Files of a remote-store build copied unchanged (hard-linked when the file system allows).
_COPIED = ("labels.json", "labelhead.npz", "segment_keys.npy")


def derive_without(data_dir: Path, build: store.IndexBuild, segments: np.ndarray,
                   video_ids: list[str]) -> tuple[Path, str, dict]:
    """Write ``builds/.tmp-<id>``: ``build`` without ``segments`` (dense ids; ``video_ids`` are
    their videos, recorded in the manifest). Returns (temporary folder, build id, manifest); the
    caller commits it with :func:`core.index.store.commit_build` or discards it."""
    t0 = time.time()
    segments = np.unique(np.asarray(segments, np.int64))
    removed = np.union1d(build.removed_segments, segments)
    tmp, build_id = store.new_build_dir(data_dir)
    try:
        for name in _COPIED:
            src = build.path / name
            if src.is_file():
                _link_or_copy(src, tmp / name)
        seg = build.segments
        lens = np.asarray(seg["seg_len"], np.int64)
        ptr, idx = np.asarray(seg["label_ptr"], np.int64), np.asarray(seg["label_idx"])
        counts = np.diff(ptr)
        keep_entry = np.repeat(~np.isin(np.arange(len(lens)), removed), counts)
        counts[removed] = 0
        new_ptr = np.zeros_like(ptr)
        new_ptr[1:] = np.cumsum(counts)
        arrays = {k: seg[k] for k in seg}
        arrays["label_ptr"], arrays["label_idx"] = new_ptr, idx[keep_entry]
        np.savez(tmp / "segments.npz", **arrays)
        np.save(tmp / store.REMOVED_SEGMENTS, removed)

        shutil.copyfile(build.path / "segments.sqlite", tmp / "segments.sqlite")
        con = sqlite3.connect(tmp / "segments.sqlite")
        try:
            con.execute("CREATE TEMP TABLE gone(id INTEGER PRIMARY KEY)")
            con.executemany("INSERT INTO gone VALUES (?)", ((int(s),) for s in removed.tolist()))
            con.execute("DELETE FROM segments WHERE id IN (SELECT id FROM gone)")
            con.commit()
            live = con.execute("SELECT COUNT(*), COUNT(DISTINCT video_id), "
                               "SUM(source = 'audioset'), SUM(source = 'library') FROM segments").fetchone()
            con.execute("VACUUM")
        finally:
            con.close()

        old = build.manifest
        manifest = json.loads(json.dumps(old))  # a deep copy of plain JSON
        removed_rows = int(lens[removed].sum())
        counts_m = dict(old.get("counts") or {})
        counts_m.update({"vectors": int(lens.sum()) - removed_rows, "segments": int(live[0]),
                         "audioset_segments": int(live[2] or 0), "library_segments": int(live[3] or 0),
                         "videos": int(live[1]), "removed_segments": int(len(removed))})
        ann = dict(old["ann"])
        ann["deleted"] = {"segments": int(len(removed)), "rows": removed_rows}
        manifest.update({
            "build_id": build_id,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "code_version": __version__,
            "counts": counts_m,
            "ann": ann,
            "refresh": {"method": "delete", "from_build": build.build_id,
                        "removed_segments": int(len(segments)), "removed_rows": int(lens[segments].sum()),
                        "removed_video_ids": sorted(video_ids)},
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        })
        manifest["build_seconds"] = round(time.time() - t0, 2)
        manifest["stage_seconds"] = {"derive": manifest["build_seconds"]}
        manifest["files"] = store.record_files(tmp)
        (tmp / store.MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    except BaseException:
        store.discard_build(tmp)  # never the store's discard: the collection is the current one's
        raise
    return tmp, build_id, manifest


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link when possible: builds never modify a finished file, and removing the old build
    later only drops its own link."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
