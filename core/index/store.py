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
        removed_segments.npy    int64 [R] segments a refresh deleted from a remote store in place
                                (``core.index.remove_segments``): numbering kept, rows gone

A crash before the rename leaves only a ``.tmp-`` folder (removed by the next build); a crash
before the pointer swap leaves the old build current. Readers keep whatever build they opened.

Integrity: the manifest records every file's size and a BLAKE2b digest (of the whole file, or of
evenly spaced blocks plus the exact size for big files, so checking a multi-GB build costs a few
tens of MB of reads). A build is verified when it becomes current and whenever it is opened; a
current build that fails is skipped with a WARNING for the newest older build that passes
(:func:`open_current`), and :class:`~core.errors.IndexBrokenError` says so when none does. While a
build is served, :meth:`IndexBuild.check_sizes` stats the memory-mapped files before each query:
reading a map past a file's real end would kill the process with SIGBUS.
"""

from __future__ import annotations

import hashlib
import json
import logging
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

from core.errors import IndexBrokenError, IndexMissingError
from core.index.lock import FileLock, holder

log = logging.getLogger("echovids.index")

CURRENT = "CURRENT"
BUILDS = "builds"
MANIFEST = "manifest.json"
#: 2 added ``files`` (size + digest of every file). 1 (no digests) is still read, checked by structure.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
#: Held (flock) inside a ``.tmp-`` folder by the process writing it; never part of a finished build.
BUILDING_LOCK = ".building"
#: A ``.tmp-`` folder without a lock file (older code) counts as abandoned after this long.
LOCKLESS_TMP_AGE_S = 3600.0
#: Files up to this size are hashed whole; bigger ones by ``SAMPLE_BLOCKS`` blocks + exact size.
HASH_WHOLE_MAX = 32 << 20
SAMPLE_BLOCKS, SAMPLE_BLOCK = 256, 64 << 10
#: Memory-mapped (or opened by SQLite) while serving: stat'ed before each query.
SERVED_FILES = ("vectors.npy", "row_segment.npy", "row_second.npy", "row_labels_idx.npy",
                "row_labels_p.npy", "segments.sqlite")
SOURCE_AUDIOSET, SOURCE_LIBRARY = 0, 1
#: Segments removed in place by a refresh on a remote store (see IndexBuild.removed_segments).
REMOVED_SEGMENTS = "removed_segments.npy"
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


_BUILD_LOCKS: dict[Path, FileLock] = {}
_BUILD_LOCKS_GUARD = threading.Lock()


def remove_stale_temporaries(data_dir: Path) -> list[Path]:
    """Delete ``.tmp-`` folders whose writer is gone; returns what was removed.

    A live build holds a flock on ``<tmp>/.building`` for as long as it writes, so a folder whose
    lock can be taken belongs to a build that crashed or was killed (the kernel released its lock).
    Folders without a lock file come from older code or are a few microseconds old: those go only
    once they are clearly abandoned (``LOCKLESS_TMP_AGE_S``).
    """
    builds = Path(data_dir) / BUILDS
    removed: list[Path] = []
    if not builds.is_dir():
        return removed
    for tmp in builds.glob(".tmp-*"):
        lock = tmp / BUILDING_LOCK
        try:
            if not lock.exists():
                if time.time() - tmp.stat().st_mtime > LOCKLESS_TMP_AGE_S:
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed.append(tmp)
                continue
            if holder(lock) is not None:
                continue  # a running build is writing it
        except OSError:
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    for tmp in removed:
        log.info("removed the abandoned build folder %s", tmp)
    return removed


def new_build_id() -> str:
    """A fresh build id: UTC time then a random suffix, so names sort oldest to newest."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def new_build_dir(data_dir: Path) -> tuple[Path, str]:
    """A fresh temporary build folder (locked by this process) and the id it will be renamed to."""
    builds = Path(data_dir) / BUILDS
    builds.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(data_dir)
    build_id = new_build_id()
    tmp = builds / f".tmp-{build_id}"
    tmp.mkdir()
    lock = FileLock(tmp / BUILDING_LOCK, f"build {build_id}").acquire()  # a fresh file: never busy
    with _BUILD_LOCKS_GUARD:
        _BUILD_LOCKS[tmp] = lock
    return tmp, build_id


def _unlock_tmp(tmp_dir: Path) -> None:
    with _BUILD_LOCKS_GUARD:
        lock = _BUILD_LOCKS.pop(Path(tmp_dir), None)
    if lock is not None:
        lock.release()


def discard_build(tmp_dir: Path) -> None:
    """Remove an unfinished build folder (a failed build) and drop its lock."""
    shutil.rmtree(tmp_dir, ignore_errors=True)
    _unlock_tmp(tmp_dir)


def commit_build(data_dir: Path, tmp_dir: Path, build_id: str, *, keep: int = 2) -> Path:
    """Verify the finished build, rename it into place, then point CURRENT at it in one atomic step.

    A build that fails its own verification (a short write, a full disk) never becomes current:
    IndexBrokenError, and the caller discards the folder.
    """
    data_dir = Path(data_dir)
    try:
        (Path(tmp_dir) / BUILDING_LOCK).unlink()
    except FileNotFoundError:
        pass
    verify_build(tmp_dir)
    final = data_dir / BUILDS / build_id
    os.replace(tmp_dir, final)
    _unlock_tmp(tmp_dir)
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


# -- integrity ----------------------------------------------------------------------------------
def file_digest(path: Path, size: int | None = None) -> tuple[str, bool]:
    """(BLAKE2b hex digest, sampled?) of ``path``: whole file when small, else fixed blocks + size."""
    path = Path(path)
    size = path.stat().st_size if size is None else size
    h = hashlib.blake2b(digest_size=16)
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= HASH_WHOLE_MAX:
            while chunk := f.read(1 << 20):
                h.update(chunk)
            return h.hexdigest(), False
        span = size - SAMPLE_BLOCK
        for i in range(SAMPLE_BLOCKS):
            f.seek(span * i // (SAMPLE_BLOCKS - 1))
            h.update(f.read(SAMPLE_BLOCK))
    return h.hexdigest(), True


def record_files(build_dir: Path) -> dict[str, dict]:
    """Size and digest of every file of a build (the manifest's ``files``), keyed by relative path."""
    build_dir = Path(build_dir)
    out: dict[str, dict] = {}
    for p in sorted(build_dir.rglob("*")):
        rel = p.relative_to(build_dir).as_posix()
        if not p.is_file() or rel in (MANIFEST, BUILDING_LOCK):
            continue
        size = p.stat().st_size
        digest, sampled = file_digest(p, size)
        out[rel] = {"size": size, "blake2b": digest, "sampled": sampled}
    return out


def _npy_expected_size(path: Path) -> int:
    """Header length + shape × itemsize of a .npy file: what its size must be (format-1 builds)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, _fortran, dtype = np.lib.format._read_array_header(f, version)  # noqa: SLF001
        offset = f.tell()
    return offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def verify_build(path: Path, *, digests: bool = True) -> dict:
    """The build's manifest if every file is intact; IndexBrokenError naming the first fault.

    Format 2 builds: each recorded file exists with its recorded size and digest. Format 1 builds
    (no digests): every .npy holds exactly what its header promises and the SQLite file exists.
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        raise IndexBrokenError(f"build {path.name} is incomplete (no {MANIFEST})") from None
    except (OSError, ValueError) as err:
        raise IndexBrokenError(f"build {path.name} has an unreadable {MANIFEST} ({err})") from None
    fmt = manifest.get("format")
    if fmt not in READABLE_FORMATS:
        raise IndexBrokenError(f"build {path.name} has format {fmt!r}; this Echo-Vids reads formats "
                               f"{', '.join(map(str, READABLE_FORMATS))} (rebuild it)")
    files = manifest.get("files")
    if fmt >= 2:
        if not isinstance(files, dict) or not files:
            raise IndexBrokenError(f"build {path.name} lists no files in its manifest")
        for rel, want in files.items():
            f = path / rel
            try:
                size = f.stat().st_size
            except OSError:
                raise IndexBrokenError(f"build {path.name} is missing {rel}") from None
            if size != want.get("size"):
                raise IndexBrokenError(f"build {path.name}: {rel} is {size:,} bytes, the manifest says "
                                       f"{want.get('size'):,}")
            if digests and file_digest(f, size)[0] != want.get("blake2b"):
                raise IndexBrokenError(f"build {path.name}: {rel} does not match its checksum")
    else:
        for f in sorted(path.rglob("*.npy")):
            try:
                expected = _npy_expected_size(f)
            except (OSError, ValueError) as err:
                raise IndexBrokenError(f"build {path.name}: {f.relative_to(path)} is unreadable ({err})") from None
            if f.stat().st_size != expected:
                raise IndexBrokenError(f"build {path.name}: {f.relative_to(path)} is truncated")
        if not (path / "segments.sqlite").is_file():
            raise IndexBrokenError(f"build {path.name} is missing segments.sqlite")
    return manifest


def read_pointer(data_dir: Path) -> str | None:
    try:
        name = (Path(data_dir) / CURRENT).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name or None


def current_path(data_dir: Path) -> Path:
    """Where CURRENT points (not verified; :func:`open_current` is the checked way in)."""
    data_dir = Path(data_dir)
    name = read_pointer(data_dir)
    if not name:
        raise IndexMissingError(f"no index in {data_dir}; run `echovids index build` first")
    return data_dir / BUILDS / name


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

    def __init__(self, path: Path, settings=None):
        self.path = Path(path)
        self.settings = settings  # where to reach a remote vector store (None: from the environment)
        try:
            self.manifest: dict = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise IndexMissingError(f"cannot read {self.path / MANIFEST} ({err})") from None
        self._local = threading.local()
        self._ann_lock = threading.Lock()
        self._ann = None
        #: Set by :func:`open_current`: the name CURRENT held, and why it was not used (fallback).
        self.pointer: str | None = None
        self.fallback_reason: str | None = None
        files = self.manifest.get("files") if isinstance(self.manifest.get("files"), dict) else {}
        self._served_sizes: dict[str, int] = {}
        for name in SERVED_FILES:
            if name in files:
                self._served_sizes[name] = int(files[name]["size"])
            elif (self.path / name).is_file():  # format 1: what it was when opened
                self._served_sizes[name] = (self.path / name).stat().st_size

    # -- sizes and arrays ---------------------------------------------------------------
    @property
    def build_id(self) -> str:
        return self.path.name

    @property
    def size(self) -> int:
        return int(self.manifest["counts"]["vectors"])

    @property
    def is_fallback(self) -> bool:
        return self.fallback_reason is not None

    def check_sizes(self) -> None:
        """IndexBrokenError if a served file changed size since it was verified (a few stat calls).

        Called before every query: a memory map read past the end of a file truncated under it
        is a SIGBUS, which no Python code can catch.
        """
        for name, size in self._served_sizes.items():
            try:
                now = (self.path / name).stat().st_size
            except OSError:
                raise IndexBrokenError(f"build {self.build_id}: {name} disappeared while in use") from None
            if now != size:
                raise IndexBrokenError(f"build {self.build_id}: {name} changed size while in use "
                                       f"({now:,} bytes, expected {size:,})")

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
    def removed_segments(self) -> np.ndarray:
        """Sorted ids of segments a refresh removed in place (Milvus: their rows were deleted from the
        same collection, so segment numbering stays). They are gone from ``segments.sqlite`` and
        their label lists are empty; the ranker also excludes them while deleted rows may still be
        visible to searches. Empty for ordinary builds."""
        f = self.path / REMOVED_SEGMENTS
        if not f.is_file():
            return np.zeros(0, np.int64)
        return np.load(f).astype(np.int64)

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
        if view is None and self.store_kind != "scann" and self.labelhead is not None and len(rows):
            # Remote stores keep no per-row view on this machine: the head labels the fetched vectors.
            from core.labelhead import top_k_view

            idx, p = top_k_view(self.labelhead, self.ann.vectors(np.asarray(rows)))
            np.put_along_axis(out, idx.astype(np.int64), p.astype(np.float32) / 255.0, axis=1)
            return out
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
        """The build's vector store (``core.index.vectorstore``), opened on first use."""
        if self._ann is None:
            with self._ann_lock:
                if self._ann is None:
                    from core.index.vectorstore import open_store

                    self._ann = open_store(self, self.settings)
        return self._ann

    @property
    def store_kind(self) -> str:
        return (self.manifest.get("ann") or {}).get("store", "scann")

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


def _builds_newest_first(data_dir: Path) -> list[str]:
    folder = Path(data_dir) / BUILDS
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)


def open_current(data_dir: str | Path, settings=None, *, verify: bool = True) -> IndexBuild:
    """The build CURRENT points at, verified; else the newest older build that verifies.

    IndexMissingError when there is no pointer; IndexBrokenError when neither the current build
    nor any kept build is intact. A fallback is logged at WARNING and marked on the build
    (``fallback_reason``) so ``index status`` can say so. Nothing is changed on disk: the next
    good build (``index build``/``refresh``) repairs the situation. ``settings`` say where a
    remote vector store lives (None: from the environment).
    """
    data_dir = Path(data_dir)
    name = read_pointer(data_dir)
    if not name:
        raise IndexMissingError(f"no index in {data_dir}; run `echovids index build` first")
    first_problem: str | None = None
    for candidate in [name] + [b for b in _builds_newest_first(data_dir) if b != name]:
        path = data_dir / BUILDS / candidate
        try:
            if verify:
                verify_build(path)
            build = IndexBuild(path, settings)
        except IndexMissingError as err:
            if first_problem is None:
                first_problem = str(err)
            log.warning("index build %s is unusable: %s", candidate, err)
            continue
        build.pointer = name
        if candidate != name:
            build.fallback_reason = first_problem
            log.warning("the current index build %s is broken (%s); serving the older build %s",
                        name, first_problem, candidate)
        return build
    raise IndexBrokenError(f"the current index {name} is broken or incomplete ({first_problem}) and no older "
                           f"build is intact; run `echovids index build` again")
