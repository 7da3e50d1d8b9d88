"""Retrieval quality on a held-out split of bal_train, beside the seed-style baselines (JSON).

Same protocol as ``echovids eval`` (see core/evaluate.py): hold out 10 % of the clips
(fixed seed), build a real index of the rest (the label head trains on it, never on the queries),
query with one 5-second window per held-out clip, report P@5 and strict P@5 (ignoring Speech and
Music), the baselines, and the noisy near-duplicate check.

With ``--store milvus`` (or ``both``) the same split is built into a Milvus collection: a server
started here from the venv's ``milvus`` package, or ``--milvus-uri`` (both stores see the same split,
so their figures compare directly; the in-memory baselines are ScaNN-build only).

usage: python bench/quality.py [--seed 0] [--holdout 0.1] [--queries 0] [--seeds 0,1] [--store scann|milvus|both]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0", help="comma-separated split seeds (each is a separate split)")
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--queries", type=int, default=0)
    ap.add_argument("--audioset", action="append", default=[])
    ap.add_argument("--store", choices=("scann", "milvus", "both"), default="scann")
    ap.add_argument("--milvus-uri", default=None, help="an existing Milvus server (else one is started here)")
    args = ap.parse_args()
    from core.config import load_settings
    from core.evaluate import evaluate

    settings = load_settings()
    from bot import quiet

    quiet.silence(settings, "bench/quality")  # ScaNN's and LiteRT's native lines go to the debug log, as under `echovids`
    dirs = args.audioset or list(settings.audioset_dirs)
    stores = ["scann", "milvus"] if args.store == "both" else [args.store]
    out: dict = {"loadavg_start": os.getloadavg(), "splits": {}}
    server = None
    try:
        if "milvus" in stores:
            uri = args.milvus_uri
            if uri is None:
                server, uri = start_milvus()
            milvus_settings = settings.with_overrides(vector_store="milvus", milvus_uri=uri, milvus_prefix="quality")
        for seed in [int(s) for s in args.seeds.split(",")]:
            for store in stores:
                s = milvus_settings if store == "milvus" else settings.with_overrides(vector_store="scann")
                key = str(seed) if len(stores) == 1 else f"{seed}/{store}"
                out["splits"][key] = evaluate(s, dirs, seed=seed, holdout=args.holdout, max_queries=args.queries,
                                              progress=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        if server is not None:
            server.stop()
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


def start_milvus(folder: str | None = None):
    """A local standalone server from the `milvus` package (first start unpacks ~246 MB)."""
    import tempfile

    from milvus import MilvusServer, MilvusServerConfig

    server = MilvusServer(MilvusServerConfig(data_dir=folder or tempfile.mkdtemp(prefix="echovids-milvus-")))
    server.start()
    return server, f"http://127.0.0.1:{server.listen_port}"


if __name__ == "__main__":
    main()
