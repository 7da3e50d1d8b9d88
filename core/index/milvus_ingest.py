"""``echovids index build --shard K/N``: N machines (or processes) ingest one Milvus index together.

Why this shape: the slow part of a large build is reading TFRecords and sending rows; both split
cleanly by input file. Every slice takes input files ``i`` with ``i % N == K-1`` of the sorted
list and writes their rows into one *pending* collection. Row keys are ``i << 20 | record``, so
slices never coordinate ids, and rows are written with upsert, so a file half-sent before a kill
is simply sent again (never twice). A file counts as done only once its part file exists
(``DATA_DIR/milvus-pending/parts/<i>.npz``, written atomically after the rows are in Milvus): the
part holds the file's clip metadata and vectors, which the final step needs for the label head
and for the recall check. The slice that completes the last file (or ``--finalize``) runs the
ordinary builder over the parts, adopting the pending collection: index, tune, verify, commit,
move the alias.

The data directory must be shared by the slices (a network folder, or one machine running N
processes); Milvus itself is shared through ``ECHOVIDS_MILVUS_URI``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.index.builder import BuildError, build_index
from core.index.store import new_build_id
from core.index.tfrecord import AudioSetRecord, ShardError, list_shards, read_shard
from core.index.vectorstore_milvus import collection_name, create_collection, insert_rows, milvus_errors, open_collection
from core.progress import ProgressCallback, ProgressEvent, no_progress

PENDING = "milvus-pending"
RECORD_BITS = 20


def parse_slice(text: str) -> tuple[int, int]:
    """``"K/N"`` with 1 ≤ K ≤ N → (K, N); BuildError otherwise."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise BuildError(f"--shard wants K/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise BuildError(f"--shard K/N needs 1 ≤ K ≤ N, got {text!r}")
    return k, n


@dataclass
class Pending:
    root: Path
    build_id: str
    collection: str
    sources: list[str]
    inputs: list[str]

    def part(self, i: int) -> Path:
        return self.root / "parts" / f"{i:06d}.npz"

    def missing(self) -> list[int]:
        return [i for i in range(len(self.inputs)) if not self.part(i).is_file()]


def open_pending(settings, audioset_dirs: Iterable[str | Path]) -> Pending:
    """The pending sharded build of these sources, created by whichever slice comes first."""
    if settings.vector_store != "milvus":
        raise BuildError("--shard needs ECHOVIDS_VECTOR_STORE=milvus (slices meet in one Milvus collection)")
    dirs = [str(Path(d).resolve()) for d in audioset_dirs]
    if not dirs:
        raise BuildError("--shard needs the AudioSet input (--audioset DIR or ECHOVIDS_AUDIOSET_DIR)")
    root = Path(settings.data_dir) / PENDING
    (root / "parts").mkdir(parents=True, exist_ok=True)
    state_file = root / "state.json"
    if not state_file.is_file():
        inputs = [str(p) for p in list_shards([Path(d) for d in dirs])]
        if not inputs:
            raise BuildError(f"no .tfrecord files under {', '.join(dirs)}")
        build_id = new_build_id()
        state = {"build_id": build_id, "collection": collection_name(settings, "s" + build_id),
                 "sources": dirs, "inputs": inputs, "created": time.time()}
        tmp = root / f".state.{uuid.uuid4().hex[:6]}"
        tmp.write_text(json.dumps(state), encoding="utf-8")
        try:
            os.link(tmp, state_file)  # atomic and exclusive: the first slice's state wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if state["sources"] != dirs:
        raise BuildError(f"a sharded build of {', '.join(state['sources'])} is pending in {root}; "
                         "finish it (`echovids index build --finalize`) or remove that folder")
    pending = Pending(root, state["build_id"], state["collection"], state["sources"], state["inputs"])
    with milvus_errors("creating the pending collection"):
        create_collection(settings, pending.collection, drop_existing=False)
    return pending


def ingest_slice(settings, pending: Pending, k: int, n: int, progress: ProgressCallback | None = None) -> dict:
    """Send this slice's input files that are not done yet; returns counts."""
    progress = progress or no_progress
    collection = open_collection(settings, pending.collection)
    mine = [i for i in range(len(pending.inputs)) if i % n == k - 1]
    todo = [i for i in mine if not pending.part(i).is_file()]
    rows = 0
    for j, i in enumerate(todo):
        with milvus_errors(f"ingesting {Path(pending.inputs[i]).name}"):
            rows += _ingest_file(collection, pending, i)
        progress(ProgressEvent("ingest", j + 1, len(todo), "files", f"{rows:,} rows"))
    return {"slice": f"{k}/{n}", "files": len(mine), "ingested_now": len(todo), "already_done": len(mine) - len(todo),
            "rows_now": rows, "files_missing_overall": len(pending.missing())}


def _ingest_file(collection, pending: Pending, i: int) -> int:
    path = Path(pending.inputs[i])
    try:
        records = [r for r in read_shard(path) if len(r.embeddings)]
    except ShardError as err:
        _write_part(pending.part(i), {"error": np.array(str(err))})
        return 0
    lens = np.array([len(r.embeddings) for r in records], dtype=np.int64)
    keys = (np.int64(i) << RECORD_BITS) + np.arange(len(records), dtype=np.int64)
    if len(records):
        vectors = np.concatenate([r.embeddings for r in records])
        row_keys = np.repeat(keys, lens)
        seconds = np.arange(len(vectors)) - np.repeat(np.cumsum(lens) - lens, lens)
        insert_rows(collection, vectors, row_keys, seconds, upsert=True)
    else:
        vectors = np.zeros((0, 128), np.uint8)
    label_ptr = np.zeros(len(records) + 1, dtype=np.int64)
    label_ptr[1:] = np.cumsum([len(r.labels) for r in records])
    _write_part(pending.part(i), {
        "keys": keys, "lens": lens, "vectors": vectors,
        "video_ids": np.array([r.video_id for r in records], dtype=str),
        "starts": np.array([r.start_time_seconds for r in records], dtype=np.float64),
        "ends": np.array([r.end_time_seconds for r in records], dtype=np.float64),
        "label_ptr": label_ptr,
        "labels": np.array([x for r in records for x in r.labels], dtype=np.int64)})
    return int(len(vectors))


def _write_part(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:6]}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # the file is done only once this exists


def _read_parts(pending: Pending, keys_out: list[np.ndarray]) -> Iterator[tuple[Path, object]]:
    for i, name in enumerate(pending.inputs):
        with np.load(pending.part(i)) as z:
            if "error" in z.files:
                yield Path(name), ShardError(str(z["error"]))
                continue
            lens, vectors, ptr, labels = z["lens"], z["vectors"], z["label_ptr"], z["labels"]
            keys_out.append(z["keys"])
            first = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
            records = [AudioSetRecord(str(v), float(s), float(e), labels[ptr[j]:ptr[j + 1]].tolist(),
                                      vectors[first[j]:first[j] + lens[j]])
                       for j, (v, s, e) in enumerate(zip(z["video_ids"], z["starts"], z["ends"]))]
        yield Path(name), records


def finalize(settings, pending: Pending, progress: ProgressCallback | None = None) -> Path | None:
    """Index, verify and publish the pending collection once every file is in; None if files are
    missing or another process is finalizing already."""
    if pending.missing():
        return None
    lock = pending.root / "finalizing"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return None
    os.close(fd)
    keys: list[np.ndarray] = []
    try:
        progress = progress or no_progress
        listed = [str(p) for p in list_shards([Path(d) for d in pending.sources])]
        if listed != pending.inputs:
            raise BuildError(f"the input files under {', '.join(pending.sources)} changed during the sharded build")
        path = build_index(settings, audioset_dirs=pending.sources, progress=progress,
                           read_shards=lambda _shards: _read_parts(pending, keys),
                           store_options={"adopt_collection": pending.collection,
                                          "segment_keys": _LazyKeys(keys)})
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    shutil.rmtree(pending.root, ignore_errors=True)
    return path


class _LazyKeys:
    """The segment keys, concatenated only when the store asks (after the builder read the parts)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts

    def __array__(self, dtype=None, copy=None):
        arr = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int64)
        return arr.astype(dtype or np.int64)
