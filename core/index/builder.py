"""The build pipeline: sources → vectors + metadata → label head → vector store → manifest → atomic swap.

Everything is written into a fresh ``builds/.tmp-<id>`` folder and only renamed and pointed at
when complete, so a failed or interrupted build never disturbs the current one. Bad shards are
skipped, counted and named in the manifest; one bad file never aborts a build.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from core import __version__
from core.errors import EchoVidsError, IndexMissingError
from core.index import store
from core.index.labels import load_labels, resolve_meta_dir
from core.index.tfrecord import ShardError, list_shards, read_shard
from core.progress import ProgressCallback, ProgressEvent, no_progress


class BuildError(EchoVidsError):
    """The build has nothing to index or its sources are unusable."""


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _read_one(path: Path):
    try:
        return path, read_shard(path)
    except ShardError as err:
        return path, err


def _read_shards(shards: list[Path]):
    """(shard, records or ShardError) in order; parsed on all cores when there are many shards.

    Parsing is pure Python (~0.3 ms a clip), so full AudioSet (2 M clips) needs the cores. The
    workers are *spawned*, never forked: a fork of a multithreaded process (the bot, TensorFlow's
    pools) inherits its locks mid-use and its asyncio signal wake-up fd, so tearing the pool down
    delivered SIGTERM to the parent's own loop (issue 11 #1). ``tests/test_process_start.py``
    keeps every process pool in core/ and bot/ off fork.
    """
    workers = min(os.cpu_count() or 1, 8)
    if len(shards) < 200 or workers < 2:
        yield from map(_read_one, shards)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_read_one, shards, chunksize=16)


def build_index(
    settings,
    *,
    audioset_dirs: Iterable[str | Path] = (),
    library_dirs: Iterable[str | Path] = (),
    exclude_video_ids: frozenset[str] | set[str] = frozenset(),
    progress: ProgressCallback | None = None,
    shard_rows: int | None = None,
    train_head: bool = True,
    read_shards: Callable[[list[Path]], Iterable] | None = None,
    store_options: dict | None = None,
    before_commit: Callable[[], None] | None = None,
) -> Path:
    """Build a new index in ``settings.data_dir`` and make it current; returns the build path.

    With neither ``audioset_dirs`` nor ``library_dirs``, the sources default to the current
    build's manifest (so a refresh rebuilds the same index) and then to
    ``settings.audioset_dirs``.

    ``read_shards`` replaces reading the TFRecords (a sharded Milvus build hands in what its slices
    already ingested); ``store_options`` go to the vector store's build (e.g. adopt that collection).
    """
    progress = progress or no_progress
    t0 = time.time()
    audioset_dirs = [Path(d) for d in audioset_dirs]
    library_dirs = [Path(d) for d in library_dirs]
    data_dir = Path(settings.data_dir)
    store.remove_stale_temporaries(data_dir)  # leftovers of killed builds (never a running one's)
    if not audioset_dirs and not library_dirs:
        try:
            prev = store.open_current(data_dir).manifest.get("sources", {})
            audioset_dirs = [Path(d) for d in prev.get("audioset", [])]
            library_dirs = [Path(d) for d in prev.get("library", [])]
        except IndexMissingError:
            pass
    if not audioset_dirs and not library_dirs:
        audioset_dirs = list(settings.audioset_dirs)
    if not audioset_dirs and not library_dirs:
        # A fresh machine with nothing configured or bundled: the official release's bal_train split
        # (downloaded once, verified; a DownloadError offline says what to set instead).
        from core.audioset_release import ensure_split

        audioset_dirs = [ensure_split(data_dir, "bal_train", progress=progress)]

    labels = load_labels(resolve_meta_dir(settings.audioset_meta, data_dir))

    # -- ingest AudioSet -------------------------------------------------------------------------
    shards = list_shards(audioset_dirs) if audioset_dirs else []
    if audioset_dirs and not shards:
        raise BuildError(f"no .tfrecord files under {', '.join(map(str, audioset_dirs))}")
    vec_parts: list[np.ndarray] = []
    segs: list[tuple] = []  # (source, video_id, start, n, labels, title, url, path)
    bad_shards: list[str] = []
    skipped_records = excluded = 0
    for i, (shard, records) in enumerate((read_shards or _read_shards)(shards)):
        if isinstance(records, ShardError):
            bad_shards.append(str(records))
            continue
        for r in records:
            if r.video_id in exclude_video_ids:
                excluded += 1
                continue
            if len(r.embeddings) == 0:
                skipped_records += 1
                continue
            good = [x for x in r.labels if 0 <= x < len(labels)]
            vec_parts.append(r.embeddings)
            segs.append((store.SOURCE_AUDIOSET, r.video_id, r.start_time_seconds, len(r.embeddings), good,
                         None, None, None))
        if (i + 1) % 50 == 0 or i + 1 == len(shards):
            progress(ProgressEvent("ingest", i + 1, len(shards), "files", f"{len(segs):,} clips"))

    # -- ingest the own library ---------------------------------------------------------------------
    library_errors: list[str] = []
    if library_dirs:
        from core.index.library import ingest_library

        items = ingest_library(settings, library_dirs, errors=library_errors,
                               on_file=lambda d, t, name: progress(ProgressEvent("embed", d, t, "files", name)))
        for it in items:
            vec_parts.append(it.embeddings)
            segs.append((store.SOURCE_LIBRARY, None, 0.0, len(it.embeddings), [], it.title, it.url, str(it.path)))
    if not segs:
        raise BuildError("the sources hold no usable clips" + (f" ({len(bad_shards)} bad shards)" if bad_shards else ""))

    vectors = np.concatenate(vec_parts) if len(vec_parts) > 1 else vec_parts[0]
    del vec_parts
    seg_len = np.array([s[3] for s in segs], dtype=np.int32)
    seg_first = np.zeros(len(segs), dtype=np.int64)
    seg_first[1:] = np.cumsum(seg_len)[:-1]
    row_segment = np.repeat(np.arange(len(segs), dtype=np.int32), seg_len)
    row_second = (np.arange(len(vectors), dtype=np.int64) - np.repeat(seg_first, seg_len)).astype(np.int16)

    stage_s = {"ingest": round(time.time() - t0, 2)}
    tmp, build_id = store.new_build_dir(data_dir)
    try:
        from core.index.vectorstore import BuildContext, RowBatch, store_class

        vstore = store_class(settings.vector_store)
        if vstore.kind == "scann":  # an embedded store keeps the rows in the build; a remote one does not
            np.save(tmp / "vectors.npy", vectors)
            np.save(tmp / "row_segment.npy", row_segment)
            np.save(tmp / "row_second.npy", row_second)
        (tmp / "labels.json").write_text(json.dumps({
            "names": labels.names, "mids": labels.mids, "descriptions": labels.descriptions,
            "children": {str(k): v for k, v in labels.children.items()}}), encoding="utf-8")

        # -- label head: trained on the indexed AudioSet clips' labels only -----------------------
        head = None
        labelled = np.array([i for i, s in enumerate(segs) if s[4]], dtype=np.int64)
        if train_head and len(labelled) >= 50:
            from core.labelhead import MAX_TRAIN_ROWS, top_k_view, train_window_head

            train_segs = labelled
            if int(seg_len[labelled].sum()) > MAX_TRAIN_ROWS:  # full AudioSet scale: a fixed-seed sample
                rng = np.random.default_rng(0)
                keep = max(50, int(len(labelled) * MAX_TRAIN_ROWS / seg_len[labelled].sum()))
                train_segs = np.sort(rng.choice(labelled, keep, replace=False))
            t_len = seg_len[train_segs].astype(np.int64)
            t_first = np.zeros(len(train_segs), dtype=np.int64)
            t_first[1:] = np.cumsum(t_len)[:-1]
            rows_l = np.concatenate([np.arange(seg_first[i], seg_first[i] + seg_len[i]) for i in train_segs])
            y = np.zeros((len(train_segs), len(labels)), dtype=np.uint8)
            for j, sg in enumerate(train_segs.tolist()):
                y[j, segs[sg][4]] = 1
            t_stage = time.time()
            # ~20 random windows per clip, capped (bal_train: 400 k windows); tiny indexes train in seconds
            samples = int(min(400_000, max(20_000, 20 * len(train_segs))))
            head = train_window_head(vectors[rows_l], t_first, t_len, y, samples=samples,
                                     on_progress=lambda d, t: progress(ProgressEvent("train", d, t, "steps")))
            del y
            head.save(tmp / "labelhead.npz")
            stage_s["label_head_training"] = round(time.time() - t_stage, 2)
            t_stage = time.time()
            progress(ProgressEvent("labels", 0, len(vectors), "vectors"))
            if vstore.kind == "scann":  # remote stores label fetched rows on demand (IndexBuild.row_label_probs)
                idx, prob = top_k_view(head, vectors)
                np.save(tmp / "row_labels_idx.npy", idx)
                np.save(tmp / "row_labels_p.npy", prob)
            progress(ProgressEvent("labels", len(vectors), len(vectors), "vectors"))
            stage_s["row_label_view"] = round(time.time() - t_stage, 2)
            # Library files carry no labels: give each its head's confident labels.
            for i, s in enumerate(segs):
                if s[0] == store.SOURCE_LIBRARY:
                    p = head.predict_clip(vectors[seg_first[i]:seg_first[i] + seg_len[i]])
                    top = [int(x) for x in np.argsort(-p)[:5] if p[x] >= 0.2] or [int(np.argmax(p))]
                    segs[i] = s[:4] + (top,) + s[5:]

        lab_ptr = np.zeros(len(segs) + 1, dtype=np.int64)
        lab_ptr[1:] = np.cumsum([len(s[4]) for s in segs])
        lab_idx = np.array([x for s in segs for x in s[4]], dtype=np.int16)
        np.savez(tmp / "segments.npz",
                 seg_first_row=seg_first, seg_len=seg_len,
                 seg_start=np.array([int(round(s[2])) for s in segs], dtype=np.int32),
                 seg_source=np.array([s[0] for s in segs], dtype=np.uint8),
                 label_ptr=lab_ptr, label_idx=lab_idx)
        store.write_segments_db(tmp / "segments.sqlite", [
            (i, store.SOURCE_NAMES[s[0]], s[1], float(s[2]), int(s[3]), int(seg_first[i]),
             ",".join(map(str, s[4])), s[5], s[6], s[7])
            for i, s in enumerate(segs)])

        # -- the vector store (ScaNN in the build folder, or a new Milvus collection) ---------------------
        progress(ProgressEvent(vstore.kind, 0, None, "shards" if vstore.kind == "scann" else "rows"))
        t_ann = time.time()
        ctx = BuildContext(settings, tmp, build_id, seg_first, seg_len, options=store_options or {},
                           progress=lambda d, t: progress(ProgressEvent(vstore.kind, d, t,
                                                                        "shards" if vstore.kind == "scann" else "rows")))
        whole = [RowBatch(vectors, row_segment, row_second)]
        ann = (vstore.build(whole, ctx, shard_rows=shard_rows) if vstore.kind == "scann"
               else vstore.build(whole, ctx))
        ann["build_seconds"] = stage_s[vstore.kind] = round(time.time() - t_ann, 2)

        pca = settings.vggish_pca_params()
        n_audioset = sum(1 for s in segs if s[0] == store.SOURCE_AUDIOSET)
        manifest = {
            "format": store.FORMAT_VERSION,
            "build_id": build_id,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": None,
            "code_version": __version__,
            "embedder": "vggish",
            "pca_sha256": _sha256(pca) if Path(pca).is_file() else None,
            "vector_dtype": "uint8",
            "metric": "squared_l2 on dequantized vectors (q*4/255-2)",
            "counts": {
                "vectors": int(len(vectors)),
                "segments": len(segs),
                "audioset_segments": n_audioset,
                "library_segments": len(segs) - n_audioset,
                "videos": len({s[1] for s in segs if s[1]}),
                "shard_files": len(shards),
                "bad_shards": len(bad_shards),
                "skipped_records": skipped_records,
                "excluded_records": excluded,
                "library_errors": len(library_errors),
            },
            "sources": {"audioset": [str(Path(d).resolve()) for d in audioset_dirs],
                        "library": [str(Path(d).resolve()) for d in library_dirs]},
            "excluded_video_ids": len(exclude_video_ids),
            "problems": (bad_shards + library_errors)[:50],
            "labelhead": None if head is None else {"kind": "mlp on window means (1-10 s)", "hidden": int(head.w1.shape[1]),
                                                     "row_label_topk": 8, "trained_on_clips": int(len(train_segs))},
            "labels": len(labels),
            "ann": ann,
        }
        manifest["build_seconds"] = round(time.time() - t0, 2)
        manifest["stage_seconds"] = stage_s
        manifest["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        manifest["files"] = store.record_files(tmp)  # sizes + digests, checked whenever it is opened
        (tmp / store.MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if before_commit is not None:
            before_commit()  # e.g. a refresh confirming it still holds its lock; raising discards the build
        final = store.commit_build(data_dir, tmp, build_id)
    except BaseException:
        store.discard_build(tmp)
        if "ann" in locals() and isinstance(ann, dict):
            vstore.discard(settings, ann)  # a remote store's pending collection must not linger
        raise
    vstore.publish(settings, ann)
    progress(ProgressEvent("done", 1, 1, "builds", f"{len(vectors):,} vectors in {time.time() - t0:.1f}s"))
    return final
