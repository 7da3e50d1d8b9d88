"""Refresh on Milvus: delete the gone clips' rows, or rebuild a collection without them? (JSON)

Issue 10 asks refresh to drop gone videos "by rebuilding or by deleting rows, whichever measures
better; either way, atomic for readers". On all of bal_train (220 k seconds) in a local server started
here: the build (insert + index + tune), then 20 random clips deleted with one ``segment in [...]``
request (one timestamp: a search sees all of it or none of it), the time until searches no longer
return those rows, the live row count, and a rebuild of the same rows without them.

usage: .venv/bin/python bench/milvus_refresh.py   (no other Milvus server may run: etcd port 2380)
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import Settings, load_settings  # noqa: E402
from core.index import vectorstore_milvus as vm  # noqa: E402
from core.index.ann import dequantize  # noqa: E402
from core.index.tfrecord import list_shards, read_shard  # noqa: E402


def main() -> None:
    bal = Path(load_settings(dotenv=False).test_data) / "audioset_v1_embeddings" / "bal_train"
    vecs, keys, secs = [], [], []
    for s, rec in enumerate(r for sh in list_shards([bal]) for r in read_shard(sh)):
        n = len(rec.embeddings)
        if n:
            vecs.append(rec.embeddings)
            keys.append(np.full(n, s))
            secs.append(np.arange(n))
    v, k, sec = np.concatenate(vecs), np.concatenate(keys), np.concatenate(secs)
    work = Path(tempfile.mkdtemp(prefix="mvdel-"))
    from milvus import MilvusServer, MilvusServerConfig  # the `milvus` package's standalone server (as bench/search.py)

    srv = MilvusServer(MilvusServerConfig(data_dir=str(work / "srv")))
    srv.start()
    uri = f"http://127.0.0.1:{srv.listen_port}"
    out: dict = {}
    try:
        st = Settings(data_dir=work, vector_store="milvus", milvus_uri=uri, milvus_prefix="del")
        t = time.time()
        col = vm.create_collection(st, "del_full")
        vm.insert_rows(col, v, k, sec)
        man = vm.index_and_tune(st, col, len(v), v, k, sec)
        out["build_s"] = round(time.time() - t, 1)
        out["params"] = man["search"]
        rng = np.random.default_rng(0)
        gone = rng.choice(np.unique(k), 20, replace=False)
        q = dequantize(v[np.isin(k, gone)][:10])
        t = time.time()
        res = col.delete(expr=f"segment in [{','.join(map(str, gone.tolist()))}]")
        out["delete_call_ms"] = round((time.time() - t) * 1000, 1)
        out["delete_count"] = res.delete_count
        # from the delete request until a search no longer returns any gone row (Bounded consistency)
        while True:
            got = col.search(q, "vector", {"metric_type": "L2", "params": {"nprobe": 32}}, limit=5, output_fields=["segment"])
            if not any(h.entity.get("segment") in set(gone.tolist()) for hits in got for h in hits):
                break
            time.sleep(0.05)
        out["gone_from_search_ms"] = round((time.time() - t) * 1000, 1)
        out["rows_after"] = vm.count_rows(col)
        out["expected_rows"] = int(len(v) - np.isin(k, gone).sum())
        t = time.time()
        keep = ~np.isin(k, gone)
        col2 = vm.create_collection(st, "del_rebuild")
        vm.insert_rows(col2, v[keep], k[keep], sec[keep])
        vm.index_and_tune(st, col2, int(keep.sum()), v[keep], k[keep], sec[keep])
        out["rebuild_s"] = round(time.time() - t, 1)
    finally:
        srv.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
