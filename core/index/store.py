"""Build directories, the atomic current pointer, and opening a build for search.

Layout of ``DATA_DIR``::

    CURRENT                     name of the current build (replaced atomically with os.replace)
    builds/<build-id>/          one complete build (written as builds/.tmp-<id> and renamed when done)
        manifest.json           embedder, PCA sha256, metric, counts, sources, build time, code version
        vectors.npy             uint8 [N, 128] per-second vectors (memory-mapped at search time)
        row_segment.npy         int32 [N]   row → segment id
        row_second.npy          int16 [N]   row → second within the segment
        segments.npz            per-segment arrays the search needs in RAM (start, first row, length, labels)
        segments.sqlite         segment metadata (video id, times, labels, title, url, path)
        scann/<shard>/          serialized ScaNN searchers (one per shard of rows)
        labelhead.npz           the learned label head (core.labelhead)
        row_labels_idx.npy      uint16 [N, K] top-K label indices per row   } the per-second label view
        row_labels_p.npy        uint8  [N, K] their probabilities × 255     } (YAMNet bridge, --text)

A crash before the rename leaves only a ``.tmp-`` folder (removed by the next build); a crash
before the pointer swap leaves the old build current. Readers keep whatever build they opened.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from core.errors import IndexMissingError

CURRENT = "CURRENT"
BUILDS = "builds"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SOURCE_AUDIOSET, SOURCE_LIBRARY = 0, 1
SOURCE_NAMES = {SOURCE_AUDIOSET: "audioset", SOURCE_LIBRARY: "library"}


@dataclass
class SegmentInfo:
    id: int
    source: str
    video_id: str | None
    start_seconds: float
    n_seconds: int
    labels: list[int]
    title: str | None
    url: str | None
    path: str | None


SCHEMA = """
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    video_id TEXT,
    start_seconds REAL NOT NULL,
    n_seconds INTEGER NOT NULL,
    first_row INTEGER NOT NULL,
    labels TEXT NOT NULL,
    title TEXT,
    url TEXT,
    path TEXT
);
CREATE INDEX segments_video ON segments(video_id);
"""


def new_build_dir(data_dir: Path) -> tuple[Path, str]:
    """A fresh temporary build folder and the id it will be renamed to when complete."""
    builds = Path(data_dir) / BUILDS
    builds.mkdir(parents=True, exist_ok=True)
    for stale in builds.glob(".tmp-*"):
        # Leftovers of crashed builds; an in-progress build touches its folder at least every minute.
        try:
            if time.time() - stale.stat().st_mtime > 6 * 3600:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass
    build_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    tmp = builds / f".tmp-{build_id}"
    tmp.mkdir()
    return tmp, build_id


def commit_build(data_dir: Path, tmp_dir: Path, build_id: str, *, keep: int = 2) -> Path:
    """Rename the finished build into place, then point CURRENT at it in one atomic step."""
    data_dir = Path(data_dir)
    final = data_dir / BUILDS / build_id
    os.replace(tmp_dir, final)
    pointer_tmp = data_dir / f".{CURRENT}.{uuid.uuid4().hex[:6]}"
    pointer_tmp.write_text(build_id + "\n", encoding="utf-8")
    with open(pointer_tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(pointer_tmp, data_dir / CURRENT)
    _prune(data_dir, keep=keep)
    return final


def _prune(data_dir: Path, keep: int) -> None:
    """Drop old builds beyond ``keep`` (the current one always stays; open readers keep their mmaps)."""
    current = read_pointer(data_dir)
    builds = sorted((p for p in (data_dir / BUILDS).iterdir() if p.is_dir() and not p.name.startswith(".")),
                    key=lambda p: p.name)
    for old in builds[:-keep] if keep > 0 else builds:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def read_pointer(data_dir: Path) -> str | None:
    try:
        name = (Path(data_dir) / CURRENT).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name or None


def current_path(data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    name = read_pointer(data_dir)
    if not name:
        raise IndexMissingError(f"no index in {data_dir}; run `echovids index build` first")
    path = data_dir / BUILDS / name
    if not (path / MANIFEST).is_file():
        raise IndexMissingError(f"the current index {path} is incomplete; run `echovids index build` again")
    return path


def write_segments_db(path: Path, rows: list[tuple]) -> None:
    """rows: (id, source, video_id, start_seconds, n_seconds, first_row, labels_csv, title, url, path)."""
    con = sqlite3.connect(path)
    try:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO segments VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        con.commit()
    finally:
        con.close()


class IndexBuild:
    """One finished build, opened read-only. Arrays are memory-mapped; the searcher loads lazily."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.manifest: dict = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise IndexMissingError(f"cannot read {self.path / MANIFEST} ({err})") from None
        self._local = threading.local()
        self._ann_lock = threading.Lock()
        self._ann = None

    # -- sizes and arrays ---------------------------------------------------------------
    @property
    def build_id(self) -> str:
        return self.path.name

    @property
    def size(self) -> int:
        return int(self.manifest["counts"]["vectors"])

    @cached_property
    def vectors(self) -> np.ndarray:
        return np.load(self.path / "vectors.npy", mmap_mode="r")

    @cached_property
    def row_segment(self) -> np.ndarray:
        return np.load(self.path / "row_segment.npy", mmap_mode="r")

    @cached_property
    def row_second(self) -> np.ndarray:
        return np.load(self.path / "row_second.npy", mmap_mode="r")

    @cached_property
    def segments(self) -> dict[str, np.ndarray]:
        """seg_first_row, seg_len, seg_start, seg_source, label_ptr, label_idx (CSR of clip labels)."""
        with np.load(self.path / "segments.npz") as z:
            return {k: z[k] for k in z.files}

    @cached_property
    def row_labels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(uint16 [N,K] label indices, uint8 [N,K] probability×255) or None if the build has none."""
        idx, p = self.path / "row_labels_idx.npy", self.path / "row_labels_p.npy"
        if not idx.is_file():
            return None
        return np.load(idx, mmap_mode="r"), np.load(p, mmap_mode="r")

    def row_label_probs(self, rows: np.ndarray, n_labels: int = 527) -> np.ndarray:
        """Dense float32 [len(rows), n_labels] label probabilities rebuilt from the top-K view."""
        view = self.row_labels
        out = np.zeros((len(rows), n_labels), dtype=np.float32)
        if view is None:
            return out
        idx, p = view
        r = np.asarray(rows)
        np.put_along_axis(out, idx[r].astype(np.int64), p[r].astype(np.float32) / 255.0, axis=1)
        return out

    @cached_property
    def label_info(self) -> dict:
        """Label names, mids, descriptions and ontology children saved with the build."""
        return json.loads((self.path / "labels.json").read_text(encoding="utf-8"))

    @property
    def label_names(self) -> list[str]:
        return self.label_info["names"]

    def labelset(self):
        from core.index.labels import LabelSet

        info = self.label_info
        return LabelSet(info["names"], info["mids"], info.get("descriptions", []),
                        {int(k): v for k, v in info.get("children", {}).items()})

    @cached_property
    def labelhead(self):
        from core.labelhead import LabelHead

        f = self.path / "labelhead.npz"
        return LabelHead.load(f) if f.is_file() else None

    # -- ANN --------------------------------------------------------------------------------
    @property
    def ann(self):
        if self._ann is None:
            with self._ann_lock:
                if self._ann is None:
                    from core.index.ann import AnnIndex

                    self._ann = AnnIndex.load(self.path / "scann", self.manifest.get("ann", {}))
        return self._ann

    # -- SQLite metadata ------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{self.path / 'segments.sqlite'}?mode=ro", uri=True, check_same_thread=False)
            self._local.con = con
        return con

    def segment(self, seg_id: int) -> SegmentInfo:
        row = self._db().execute(
            "SELECT id, source, video_id, start_seconds, n_seconds, labels, title, url, path FROM segments WHERE id=?",
            (int(seg_id),),
        ).fetchone()
        if row is None:
            raise KeyError(seg_id)
        return _info(row)

    def segments_of_video(self, video_id: str) -> list[SegmentInfo]:
        rows = self._db().execute(
            "SELECT id, source, video_id, start_seconds, n_seconds, labels, title, url, path FROM segments "
            "WHERE video_id=? ORDER BY start_seconds",
            (video_id,),
        ).fetchall()
        return [_info(r) for r in rows]

    def video_ids(self) -> list[str]:
        """Unique AudioSet video ids in this build (library files have none)."""
        return [r[0] for r in self._db().execute(
            "SELECT DISTINCT video_id FROM segments WHERE video_id IS NOT NULL ORDER BY video_id")]

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def _info(row: tuple) -> SegmentInfo:
    labels = [int(x) for x in row[5].split(",") if x]
    return SegmentInfo(int(row[0]), row[1], row[2], float(row[3]), int(row[4]), labels, row[6], row[7], row[8])


def open_current(data_dir: str | Path) -> IndexBuild:
    """The build CURRENT points at; IndexMissingError when there is none."""
    return IndexBuild(current_path(Path(data_dir)))
