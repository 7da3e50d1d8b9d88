"""Retrieval quality on a held-out split of bal_train, beside the seed-style baselines (JSON).

Same protocol as ``echovids eval`` (see core/evaluate.py): hold out 10 % of the clips
(fixed seed), build a real index of the rest (the label head trains on it, never on the queries),
query with one 5-second window per held-out clip, report P@5 and strict P@5 (ignoring Speech and
Music), the baselines, and the noisy near-duplicate check.

usage: python bench/quality.py [--seed 0] [--holdout 0.1] [--queries 0] [--seeds 0,1]
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
    args = ap.parse_args()
    from core.config import load_settings
    from core.evaluate import evaluate

    settings = load_settings()
    dirs = args.audioset or list(settings.audioset_dirs)
    out: dict = {"loadavg_start": os.getloadavg(), "splits": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        out["splits"][str(seed)] = evaluate(settings, dirs, seed=seed, holdout=args.holdout, max_queries=args.queries,
                                            progress=lambda m: print(m, file=sys.stderr, flush=True))
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
