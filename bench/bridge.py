"""How well and how fast the label bridge ranks bal_train segments; prints JSON.

    .venv/bin/python bench/bridge.py [--queries 500] [--epochs 4] [--cache /tmp/echovids-bridge-bench]

Split: segments whose ``crc32(video_id) % 10 == 0`` are held out (about 10 %); the rest form the
index. A label head (core.labelhead) is trained on the index rows only, its top-8 view is the
index's per-second label view (as a build stores it), and each held-out query is simulated from the
head on that segment's own vectors (the "VGGish path without an ANN"), then ranked by the bridge.

P@5: share of the top 5 results sharing at least one clip label with the query segment.
Strict P@5: the same ignoring Speech and Music (queries labelled only with those are skipped).
The YAMNet part runs the real model on synthesized audio and reports the share of the top 5 whose
labels fall in the expected family.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bridge import LabelBridge  # noqa: E402
from core.index.labels import load_labels, ubiquitous_ids  # noqa: E402
from core.labelhead import LabelHead, top_k_view, train_label_head  # noqa: E402

SHARED = Path(os.environ.get("ECHOVIDS_TEST_DATA", ROOT.parent / "shared" / "data")).resolve()


@functools.cache
def ubiquitous() -> frozenset[int]:
    """Label ids the strict precision ignores, in class_labels_indices.csv order (the release's)."""
    return frozenset(ubiquitous_ids(load_labels(SHARED / "audioset_meta").names))


def load_bal_train(cache: Path) -> dict[str, np.ndarray]:
    f = cache / "bal_train.npz"
    if f.is_file():
        with np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from core.index.tfrecord import list_shards, read_shard

    vecs, seg_of_row, sec, ptr, labs, vids = [], [], [], [0], [], []
    s = 0
    for shard in list_shards([SHARED / "audioset_v1_embeddings" / "bal_train"]):
        for rec in read_shard(shard):
            n = len(rec.embeddings)
            if n == 0:
                continue
            vecs.append(rec.embeddings)
            seg_of_row.append(np.full(n, s, np.int32))
            sec.append(np.arange(n, dtype=np.int16))
            labs.extend(rec.labels)
            ptr.append(len(labs))
            vids.append(rec.video_id)
            s += 1
    data = {
        "vectors": np.concatenate(vecs), "row_segment": np.concatenate(seg_of_row), "row_second": np.concatenate(sec),
        "label_ptr": np.array(ptr, np.int64), "label_idx": np.array(labs, np.int64), "video_ids": np.array(vids),
    }
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, **data)
    return data


def subset(data: dict, segs: np.ndarray) -> dict:
    """Rows and CSR labels of the given segments, renumbered 0..len(segs)-1."""
    ptr, lab = data["label_ptr"], data["label_idx"]
    keep = np.zeros(len(ptr) - 1, bool)
    keep[segs] = True
    rows = keep[data["row_segment"]]
    new_id = np.full(len(ptr) - 1, -1, np.int64)
    new_id[segs] = np.arange(len(segs))
    labels = [lab[ptr[s]:ptr[s + 1]] for s in segs]
    nptr = np.zeros(len(segs) + 1, np.int64)
    nptr[1:] = np.cumsum([len(x) for x in labels])
    return {
        "vectors": data["vectors"][rows], "row_segment": new_id[data["row_segment"][rows]].astype(np.int32),
        "row_second": data["row_second"][rows], "label_ptr": nptr,
        "label_idx": np.concatenate(labels) if labels else np.zeros(0, np.int64), "labels": labels,
    }


def precision(hits_labels: list[np.ndarray], truth: set[int], strict: bool) -> float | None:
    t = truth - ubiquitous() if strict else truth
    if not t:
        return None
    if not hits_labels:
        return 0.0
    return float(np.mean([bool(t & (set(h.tolist()) - (ubiquitous() if strict else set()))) for h in hits_labels[:5]]
                         + [False] * (5 - min(5, len(hits_labels)))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "echovids-bridge-bench")
    ap.add_argument("--no-yamnet", action="store_true")
    ap.add_argument("--no-full", action="store_true")
    ap.add_argument("--evaluate-split", action="store_true",
                    help="instead: core.evaluate's split and 5 s windows, a real build, bridge vs core.search")
    args = ap.parse_args()
    out: dict = {"load_avg_start": os.getloadavg()[0]}
    if args.evaluate_split:
        out["evaluate_split"] = same_split_as_evaluate(args.queries)
        out["load_avg_end"] = os.getloadavg()[0]
        print(json.dumps(out, indent=1))
        return

    t = time.time()
    data = load_bal_train(args.cache)
    out["load_s"] = round(time.time() - t, 1)
    n_seg = len(data["label_ptr"]) - 1
    held = np.array([zlib.crc32(v.encode()) % 10 == 0 for v in data["video_ids"]])
    index = subset(data, np.flatnonzero(~held))
    query = subset(data, np.flatnonzero(held))
    out["split"] = {"segments": n_seg, "index_segments": int((~held).sum()), "index_rows": len(index["vectors"]),
                    "held_out_segments": int(held.sum()), "rule": "crc32(video_id) % 10 == 0 held out"}

    head_file = args.cache / f"head_e{args.epochs}.npz"
    t = time.time()
    if head_file.is_file():
        head = LabelHead.load(head_file)
    else:
        row_labels = [index["labels"][s].tolist() for s in index["row_segment"]]
        head = train_label_head(index["vectors"], row_labels, epochs=args.epochs)
        head.save(head_file)
    out["head_train_s"] = round(time.time() - t, 1)
    t = time.time()
    idx, p = top_k_view(head, index["vectors"], k=8)
    out["topk_view_s"] = round(time.time() - t, 1)

    rng = np.random.default_rng(0)
    qsegs = rng.choice(len(query["labels"]), size=min(args.queries, len(query["labels"])), replace=False)
    q_probs = []
    for s in qsegs:
        rows = np.flatnonzero(query["row_segment"] == s)
        q_probs.append(head.predict(query["vectors"][rows]))
    truths = [set(query["labels"][s].tolist()) for s in qsegs]

    def evaluate(bridge: LabelBridge, probs_list, name: str, pool: str = "mean") -> dict:
        bridge.warm()
        p5, s5, times = [], [], []
        for probs, truth in zip(probs_list, truths):
            t0 = time.perf_counter()
            hits = bridge.search(probs, top=5, pool=pool)
            times.append(time.perf_counter() - t0)
            hl = [index["labels"][h.segment] for h in hits]
            a, b = precision(hl, truth, False), precision(hl, truth, True)
            p5.append(a)
            if b is not None:
                s5.append(b)
        return {"name": name, "p_at_5": round(float(np.mean(p5)), 4), "strict_p_at_5": round(float(np.mean(s5)), 4),
                "strict_queries": len(s5), "search_ms_p50": round(float(np.median(times)) * 1e3, 2),
                "search_ms_p90": round(float(np.percentile(times, 90)) * 1e3, 2)}

    args_common = (index["row_segment"], index["row_second"], index["label_ptr"], index["label_idx"], idx, p)
    onto = bench_ontology()
    t = time.time()
    default = LabelBridge(*args_common, ontology=onto).warm()
    out["bridge_prepare_s"] = round(time.time() - t, 2)
    results = [evaluate(default, q_probs, "default (mean pooling, ontology: family idf, ambiguous labels 0;"
                                          " clip labels → 150 candidates → 0.95 label + 0.05 geo row)")]
    plain = LabelBridge(*args_common)
    results.append(evaluate(plain, q_probs, "before issue 13: mean pooling, no ontology", pool="mean"))
    results.append(evaluate(plain, q_probs, "top-3 pooling, no ontology", pool="top"))
    results.append(evaluate(default, q_probs, "top-3 pooling, ontology", pool="top"))
    variants = {
        "labels only (ties by index order)": dict(label_weight=1.0),
        "label 0.85 + geo": dict(label_weight=0.85),
        "label 0.5 + geo": dict(label_weight=0.5),
        "label 0.95 + presence": dict(row_mode="presence"),
        "label 0.95 + cosine": dict(row_mode="cosine"),
        "no idf": dict(idf_power=0.0),
        "idf 1.5": dict(idf_power=1.5),
        "label-count damping 0": dict(label_count_power=0.0),
        "share rule (core.search) + geo": dict(label_mode="share"),
        "candidates 50": dict(candidates=50),
        "candidates 400": dict(candidates=400),
    }
    for name, kw in variants.items():
        results.append(evaluate(LabelBridge(*args_common, ontology=onto, **kw), q_probs, name))
    # Reference points: random segments, and a perfect label profile (the query's true labels).
    rand_p5, rand_s5 = [], []
    for truth in truths:
        hl = [index["labels"][s] for s in rng.choice(len(index["labels"]), 5, replace=False)]
        rand_p5.append(precision(hl, truth, False))
        v = precision(hl, truth, True)
        if v is not None:
            rand_s5.append(v)
    results.append({"name": "random segments", "p_at_5": round(float(np.mean(rand_p5)), 4),
                    "strict_p_at_5": round(float(np.mean(rand_s5)), 4)})
    oracle = []
    for truth in truths:
        v = np.zeros(527, np.float32)
        v[list(truth)] = 1.0
        oracle.append(v)
    results.append(evaluate(default, oracle, "oracle profile (true labels)"))
    out["quality"] = results

    # Scale: the same bridge over all 220k bal_train rows (index + held-out), timing only.
    if args.no_full:
        print(json.dumps(out, indent=1))
        return
    t = time.time()
    idx_all, p_all = top_k_view(head, data["vectors"], k=8)
    full = LabelBridge(data["row_segment"], data["row_second"], data["label_ptr"], data["label_idx"], idx_all, p_all)
    full.warm()
    prep = time.time() - t
    times = []
    for probs in q_probs[:200]:
        t0 = time.perf_counter()
        full.search(probs, top=15)
        times.append(time.perf_counter() - t0)
    out["full_bal_train"] = {"rows": int(len(data["vectors"])), "segments": n_seg,
                             "prepare_s_incl_topk": round(prep, 2),
                             "search_top15_ms_p50": round(float(np.median(times)) * 1e3, 2),
                             "search_top15_ms_p90": round(float(np.percentile(times, 90)) * 1e3, 2),
                             "search_top15_ms_max": round(float(np.max(times)) * 1e3, 2)}

    if not args.no_yamnet:
        out["yamnet_queries"] = yamnet_queries(default, index["labels"])
    out["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))


def bench_ontology():
    """AudioSet's labels and ontology from the shared meta folder (what the engine gives the bridge)."""
    from core.heard import Ontology

    meta = SHARED / "audioset_meta"
    return Ontology.from_labelset(load_labels(meta), meta / "ontology.json")


def same_split_as_evaluate(max_queries: int, seed: int = 0, holdout: float = 0.1) -> dict:
    """B's protocol (core.evaluate): seeded 10 % hold-out, a real build of the rest, one 5 s
    window per held-out clip. Compares core.search's ranking (ANN votes + label head) with the bridge
    fed the head's per-second probabilities of the same window (what a YAMNet query would give if
    YAMNet agreed with the head)."""
    from core.config import Settings
    from core.engine import Engine
    from core.index.builder import build_index
    from core.evaluate import load_records, make_windows, precision, split

    records = load_records([SHARED / "audioset_v1_embeddings" / "bal_train"])
    train_idx, query_idx = split(records, seed, holdout)
    held = frozenset(records[i].video_id for i in query_idx)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="echovids-bridge-eval-") as tmp:
        settings = Settings(data_dir=Path(tmp), audioset_meta=SHARED / "audioset_meta")
        t = time.time()
        build_index(settings, audioset_dirs=[SHARED / "audioset_v1_embeddings" / "bal_train"], exclude_video_ids=held)
        out["build_s"] = round(time.time() - t, 1)
        engine = Engine(settings)
        engine.warm_up()
        loaded = engine._current()
        build, ranker = loaded.build, loaded.ranker
        ignore = set(ubiquitous_ids(build.label_names))
        seg_labels = [set(ranker.label_idx[ranker.label_ptr[i]:ranker.label_ptr[i + 1]].tolist())
                      for i in range(ranker.n_segments)]
        windows = make_windows(records, query_idx, seed)[: max_queries or None]
        bridge = LabelBridge.from_build(build, ontology=loaded.ontology).warm()
        plain = LabelBridge.from_build(build).warm()
        share = LabelBridge.from_build(build, label_mode="share").warm()
        as_given = LabelBridge.from_build(build, ontology=loaded.ontology, implied=False).warm()
        head = build.labelhead
        methods = {
            "core.search (ANN votes + label head)": lambda q: [h.segment for h in ranker.search(q, 15)[0]],
            "bridge (head per-second probs)": lambda q: [h.segment for h in bridge.search(head.predict(q), 15)],
            "bridge, top-3 pooling (left out)": lambda q: [h.segment for h in bridge.search(head.predict(q), 15, pool="top")],
            "bridge before issue 13 (no ontology)": lambda q: [h.segment for h in plain.search(head.predict(q), 15)],
            "bridge, share rule": lambda q: [h.segment for h in share.search(head.predict(q), 15)],
            "bridge, labels as given (no implied ancestors)": lambda q: [h.segment for h in as_given.search(head.predict(q), 15)],
        }
        below = loaded.ontology.descendants
        for name, fn in methods.items():
            p_all, p_strict, p_inst, times = [], [], [], []
            for i, _s, q in windows:
                t0 = time.perf_counter()
                segs = _distinct_videos(fn(q), build)[:5]
                times.append(time.perf_counter() - t0)
                res = [seg_labels[s] for s in segs] + [set()] * (5 - len(segs))
                ql = set(records[i].labels)
                p_all.append(precision(res, ql, set(), 5))
                # a result labelled with a more specific kind of a query label (Electric guitar for Guitar)
                p_inst.append(precision(res, ql.union(*(below[c] for c in ql if c < len(below))), set(), 5))
                if ql - ignore:
                    p_strict.append(precision(res, ql, ignore, 5))
            out[name] = {"p_at_5": round(float(np.mean(p_all)), 4), "strict_p_at_5": round(float(np.mean(p_strict)), 4),
                         "instance_p_at_5": round(float(np.mean(p_inst)), 4),
                         "queries": len(windows), "strict_queries": len(p_strict),
                         "ms_p50": round(float(np.median(times)) * 1e3, 2)}
    out["protocol"] = {"seed": seed, "holdout": holdout, "window_seconds": 5,
                       "note": "results deduplicated per video, as the engine does"}
    return out


def _distinct_videos(segs: list[int], build) -> list[int]:
    seen, out = set(), []
    for s in segs:
        v = build.segment(s).video_id
        if v not in seen:
            seen.add(v)
            out.append(s)
    return out


def yamnet_queries(bridge: LabelBridge, seg_labels: list[np.ndarray]) -> dict:
    """Synthesized audio → YAMNet → bridge: share of the top 5 in the expected label family."""
    from core.yamnet import YamnetModel

    meta = SHARED / "audioset_meta"
    labels = load_labels(meta)
    names = labels.names
    model = YamnetModel(SHARED / "yamnet" / "yamnet.tflite", audioset_labels_path=meta / "class_labels_indices.csv")
    fam = {
        "speech": labels.family("Speech"),
        "music (chord sequence)": labels.family("Music"),
        "white noise": labels.family("Noise") | {names.index("Static")},
        "1 kHz tone": {names.index(n) for n in ("Beep, bleep", "Sine wave", "Chirp tone", "Dial tone", "Busy signal",
                                                 "Telephone", "Alarm", "Whistle", "Ping", "Electronic tuner")},
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _synth(Path(tmp)).items():
            samples = _decode16k(path)
            t0 = time.perf_counter()
            listening = model.listen(samples)  # what the engine does: silent windows left out
            probs = listening.probs
            t1 = time.perf_counter()
            hits = bridge.search(probs, top=5)
            t2 = time.perf_counter()
            share = np.mean([bool(fam[name] & set(seg_labels[h.segment].tolist())) for h in hits]) if hits else 0.0
            out[name] = {"heard": [f"{h.label} {h.score:.2f}" for h in listening.heard],
                         "top5_in_family": round(float(share), 2), "yamnet_ms": round((t1 - t0) * 1e3, 1),
                         "bridge_ms": round((t2 - t1) * 1e3, 2), "seconds": round(len(samples) / 16000, 2),
                         "top5_labels": [[names[i] for i in seg_labels[h.segment]][:3] for h in hits]}
    return out


def _synth(tmp: Path) -> dict[str, Path]:
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)  # noqa: E731
    files = {"speech": tmp / "speech.wav", "music (chord sequence)": tmp / "chord.wav",
             "white noise": tmp / "noise.wav", "1 kHz tone": tmp / "tone.wav"}
    run("espeak-ng", "-w", str(files["speech"]), "The quick brown fox jumps over the lazy dog. "
        "This is a voice note for the sound alike bot, recorded on a quiet afternoon.")
    chord = ("aevalsrc='exp(-2*mod(t,1))*0.15*(sin(2*PI*if(lt(t,1),261.6,if(lt(t,2),349.2,if(lt(t,3),392,261.6)))*t)"
             "+sin(2*PI*if(lt(t,1),329.6,if(lt(t,2),440,if(lt(t,3),493.9,329.6)))*t)"
             "+sin(2*PI*if(lt(t,1),392,if(lt(t,2),523.3,if(lt(t,3),587.3,392)))*t))':d=8:s=16000")
    run("ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", chord, str(files["music (chord sequence)"]))
    run("ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "anoisesrc=color=white:duration=5:amplitude=0.3",
        "-ar", "16000", str(files["white noise"]))
    run("ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=1000:duration=5", "-ar", "16000",
        str(files["1 kHz tone"]))
    return files


def _decode16k(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", "16000", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.float32)


if __name__ == "__main__":
    main()
