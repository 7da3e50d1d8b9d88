"""Refresh on Milvus: the drop step `index refresh` runs (delete in place) vs a rebuild without the clips (JSON)

Issue 10 asks refresh to drop gone videos "by rebuilding or by deleting rows, whichever measures
better; either way, atomic for readers". On all of bal_train (220 k seconds) in a local server started
here: the ordinary build pipeline (``build_index``, label head included) on Milvus, then 20 random
videos dropped the way ``index refresh`` does it on Milvus (``core.admin.refresh._drop_in_place``:
derive the build directory without them, swap ``CURRENT``, delete their rows in one
``segment in [...]`` request and wait for a Strong count of 0), timed per step; the time until a
Bounded search (what readers use) no longer returns those rows; and, for comparison, the rebuild a
refresh would otherwise run (``build_index`` with the 20 videos excluded: new collection, index,
tune, alias).

usage: .venv/bin/python bench/milvus_refresh.py   (no other Milvus server may run: etcd port 2380)
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.admin.refresh import RefreshReport, _drop_in_place  # noqa: E402
from core.config import Settings, load_settings  # noqa: E402
from core.index import store  # noqa: E402
from core.index import vectorstore_milvus as vm  # noqa: E402
from core.index.ann import dequantize  # noqa: E402
from core.index.builder import build_index  # noqa: E402


def main() -> None:
    shared = Path(load_settings(dotenv=False).test_data)
    bal = shared / "audioset_v1_embeddings" / "bal_train"
    work = Path(tempfile.mkdtemp(prefix="mvref-"))
    from milvus import MilvusServer, MilvusServerConfig  # the `milvus` package's standalone server (as bench/search.py)

    srv = MilvusServer(MilvusServerConfig(data_dir=str(work / "srv")))
    srv.start()
    uri = f"http://127.0.0.1:{srv.listen_port}"
    out: dict = {}
    try:
        st = Settings(data_dir=work / "data", audioset_meta=shared / "audioset_meta", vector_store="milvus",
                      milvus_uri=uri, milvus_prefix="ref")
        t = time.time()
        build_index(st, audioset_dirs=[bal])
        out["build_s"] = round(time.time() - t, 1)
        build = store.open_current(st.data_dir, st)
        out["rows"] = build.size
        out["params"] = build.manifest["ann"]["search"]
        rng = np.random.default_rng(0)
        gone = sorted(rng.choice(build.video_ids(), 20, replace=False).tolist())
        segs = sorted(s.id for v in gone for s in build.segments_of_video(v))
        probe = build.ann.vectors(np.concatenate([
            np.arange(build.segments["seg_first_row"][s], build.segments["seg_first_row"][s] + 1) for s in segs]))
        collection = vm.open_collection(st, build.manifest["ann"]["collection"])

        marks: dict[str, float] = {}

        def progress(e) -> None:  # the drop step's own events: derive 0/1, derive 1/1 (swapped), delete 0/N, N/N
            marks.setdefault(f"{e.stage}_{e.done}", time.time())

        report = RefreshReport()
        t = time.time()
        new_path = _drop_in_place(st, build, frozenset(gone), progress, report)
        end = time.time()
        delete_sent = marks["delete_0"]
        out["drop_step_ms"] = round((end - t) * 1000, 1)
        out["derive_and_swap_ms"] = round((marks["derive_1"] - t) * 1000, 1)
        out["delete_until_strong_count_0_ms"] = round((end - delete_sent) * 1000, 1)
        out["deleted_clips"], out["deleted_rows"] = report.deleted_segments, report.deleted_rows
        # from the delete request until a Bounded search (what readers use) no longer returns a gone row
        gone_keys = set(segs)
        while True:
            got = collection.search(dequantize(probe), "vector", {"metric_type": "L2", "params": {"nprobe": 32}},
                                    limit=5, output_fields=["segment"])
            if not any(h.entity.get("segment") in gone_keys for hits in got for h in hits):
                break
            time.sleep(0.05)
        out["gone_from_bounded_search_ms"] = round((time.time() - delete_sent) * 1000, 1)
        out["rows_after"] = vm.count_rows(collection)
        out["expected_rows"] = build.size - report.deleted_rows
        out["same_collection"] = store.IndexBuild(new_path).manifest["ann"]["collection"] == collection.name \
            == vm.current_collection(st)
        t = time.time()
        build_index(st, audioset_dirs=[bal], exclude_video_ids=frozenset(gone))
        out["rebuild_s"] = round(time.time() - t, 1)
        out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        srv.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
