"""How well the engine answers *real recordings* (new audio, never in AudioSet); prints JSON.

    ECHOVIDS_DATA_DIR=/path/to/data .venv/bin/python bench/real_audio.py [FOLDER] [--top 5] [--clips N]

FOLDER is laid out like ``shared/data/esc10_dev`` (see its README): ``clips.csv`` (path, category),
``category_to_audioset.json`` (category → the AudioSet display names that count as that sound) and
the audio files. Every clip goes through one in-process :class:`core.engine.Engine` exactly as
``echovids search CLIP --json --no-live-check`` would send it (decode → model → search), so the
figures are the CLI's, without paying a process start per clip.

Measures (a clip's *names* are its category's mapped AudioSet names):

* ``p_at_5``: share of the top 5 results carrying one of the names (missing results count as misses);
* ``top1``: the first result carries one of the names;
* ``first_heard``: the first "heard" label is one of the names;
* ``heard_in_5``: one of the (at most five) "heard" labels is one of the names;
* the same per class, and the time per query (decode + model + search; p50/p95, milliseconds);
* ``overall_95ci``: each overall figure's 95 % interval over clips (mean ± 1.96 · sd / √n). On 160
  clips a first-heard figure near 0.7 is only known to about ±0.07: a change of a few clips is
  within it, which is why a rule is kept for a reason that holds beyond these clips, not for a
  difference this set cannot resolve.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(os.environ.get("ECHOVIDS_TEST_DATA", ROOT.parent / "shared" / "data")).resolve()


def load_clips(folder: Path) -> tuple[list[tuple[Path, str]], dict[str, set[str]]]:
    """(audio path, category) of every clip, and each category's AudioSet names."""
    names = {c: set(v) for c, v in json.loads((folder / "category_to_audioset.json").read_text()).items()}
    with (folder / "clips.csv").open(newline="", encoding="utf-8") as fh:
        clips = [(folder / row["path"], row["category"]) for row in csv.DictReader(fh)]
    return clips, names


def score_clip(resp, names: set[str], k: int) -> dict[str, float]:
    hits = [bool(names & set(m.labels)) for m in resp.results[:k]]
    heard = [h.label for h in resp.heard]
    return {
        "p_at_5": sum(hits) / k,
        "top1": float(bool(hits and hits[0])),
        "first_heard": float(bool(heard and heard[0] in names)),
        "heard_in_5": float(bool(names & set(heard[:5]))),
    }


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]} if rows else {}


def interval_95(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """Normal-approximation 95 % interval of each measure's mean over clips."""
    out = {}
    for key in rows[0] if rows else ():
        v = np.array([r[key] for r in rows], dtype=float)
        half = 1.96 * float(v.std(ddof=1)) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        out[key] = [round(float(v.mean()) - half, 3), round(float(v.mean()) + half, 3)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=SHARED / "esc10_dev")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--clips", type=int, default=0, help="only the first N clips (0: all)")
    ap.add_argument("--index", type=Path, default=None, help="data directory (default ECHOVIDS_DATA_DIR)")
    ap.add_argument("--misses", action="store_true", help="also list each clip's first heard label and top result labels")
    args = ap.parse_args()

    from core.config import load_settings
    from core.engine import Engine
    from core.results import Query

    settings = load_settings()
    if args.index is not None:
        settings = settings.with_overrides(data_dir=args.index)
    from bot import quiet

    quiet.silence(settings, "bench/real_audio")  # ScaNN's and LiteRT's native lines go to the debug log, as under `echovids`
    clips, names = load_clips(args.folder)
    if args.clips:
        clips = clips[: args.clips]
    out: dict = {"folder": str(args.folder), "clips": len(clips), "k": args.top, "loadavg_start": os.getloadavg()}
    engine = Engine(settings)
    t = time.perf_counter()
    engine.warm_up()
    out["warm_up_s"] = round(time.perf_counter() - t, 2)

    per_class: dict[str, list[dict[str, float]]] = {}
    times, models, detail = [], set(), []
    for i, (path, category) in enumerate(clips):
        t0 = time.perf_counter()
        resp = engine.search(Query(kind="audio", audio=str(path), top=args.top, live_check=False))
        dt = time.perf_counter() - t0
        if i:  # the first query pays one-off loading (models, numba): not a per-query figure
            times.append(dt)
        models.add(resp.query.model)
        row = score_clip(resp, names[category], args.top)
        per_class.setdefault(category, []).append(row)
        if args.misses:
            detail.append({"clip": path.name, "heard": [f"{h.label} {h.score:.2f}" for h in resp.heard],
                           "results": [m.labels[:3] for m in resp.results], "p_at_5": row["p_at_5"]})
    everything = [r for rows in per_class.values() for r in rows]
    out["model"] = sorted(str(m) for m in models)
    out["overall"] = summarise(everything)
    out["overall_95ci"] = interval_95(everything)
    out["per_class"] = {c: summarise(rows) for c, rows in sorted(per_class.items())}
    out["min_class_p_at_5"] = min((v["p_at_5"] for v in out["per_class"].values()), default=0.0)
    out["ms_per_query"] = {"p50": round(float(np.median(times)) * 1e3, 1) if times else None,
                           "p95": round(float(np.percentile(times, 95)) * 1e3, 1) if times else None}
    out["loadavg_end"] = os.getloadavg()
    if args.misses:
        out["clips_detail"] = detail
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
