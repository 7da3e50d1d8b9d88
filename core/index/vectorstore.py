"""The vector store: the one seam between ranking and whatever engine holds the per-second vectors.

In the spirit of ann-benchmarks' ``BaseANN``: a build hands the store batches of uint8 vectors with
the (segment, second) each one belongs to; a query asks for the k nearest indexed seconds of a batch
of query vectors; the store reports its size and the recall settings it tuned at build time. The
ranker (``core.search``) and the builder only talk to this interface, so a second backend is a new
module, not an edit everywhere.

Rows: every indexed second has a dense row id ``seg_first[segment] + second`` (``segments.npz``
holds ``seg_first_row``); the store may keep rows in memory (ScaNN, memory-mapped) or far away
(Milvus), but the ids mean the same in both.

Implementations: ``scann`` (embedded, the default; ``core.index.vectorstore_scann``) and
``milvus`` (a Milvus server or cluster; ``core.index.vectorstore_milvus``). A build records which
store it was written to (``manifest["ann"]["store"]``), so opening a build never depends on the
current configuration's choice, only on where to reach the server.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STORES = ("scann", "milvus")


@dataclass
class RowBatch:
    """A run of indexed seconds: ``vectors`` uint8 [n,128]; ``segment`` and ``second`` int [n]."""

    vectors: np.ndarray
    segment: np.ndarray
    second: np.ndarray


@dataclass
class Neighbours:
    """k nearest indexed seconds per query vector, best first: arrays [Q, k].

    ``distance`` is squared L2 between dequantized vectors (``q*4/255-2``), the same in every store.
    """

    segment: np.ndarray
    second: np.ndarray
    distance: np.ndarray


@dataclass
class BuildContext:
    """What a store needs to write one build: where, who, and the per-segment row layout."""

    settings: Any
    out_dir: Path                    # the build's (temporary) folder
    build_id: str
    seg_first: np.ndarray            # int64 [S] first dense row of each segment
    seg_len: np.ndarray              # int32 [S]
    options: dict = field(default_factory=dict)   # store-specific (Milvus: adopt a sharded ingest)
    progress: Callable[[int, int | None], None] = lambda done, total: None


class VectorStore(abc.ABC):
    """An opened build's vectors: search, fetch by row, size, recall settings."""

    kind: str = ""

    # -- writing a build -------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def build(cls, batches: Iterable[RowBatch], ctx: BuildContext) -> dict:
        """Index all batches (rows in dense-row order); returns the manifest's ``ann`` section.

        The result must name the store (``"store": kind``) and the recall settings chosen. Nothing
        is visible to readers yet: :meth:`publish` runs after the build folder is committed.
        """

    @classmethod
    def publish(cls, settings: Any, ann: dict) -> None:
        """Make a committed build the one readers of the store see (the Milvus alias); a no-op for
        stores that live inside the build folder."""

    @classmethod
    def discard(cls, settings: Any, ann: dict) -> None:
        """Drop what :meth:`build` wrote when the build is abandoned after it (nothing for ScaNN:
        the build folder is removed)."""

    # -- reading ---------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def open(cls, build: Any, settings: Any) -> VectorStore:
        """Open the store of ``build`` (a ``core.index.store.IndexBuild``)."""

    @abc.abstractmethod
    def search(self, queries_u8: np.ndarray, k: int, *,
               exclude_segments: np.ndarray | None = None) -> Neighbours:
        """k nearest indexed seconds for each query vector (uint8 [Q,128]).

        ``exclude_segments`` may be applied inside the store (Milvus: a scalar filter, so k
        non-excluded hits come back) or not at all (ScaNN): callers still drop excluded segments.
        """

    @abc.abstractmethod
    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """uint8 [len(rows),128]: the stored vectors of dense row ids, in the order asked."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Number of indexed seconds."""

    @abc.abstractmethod
    def recall_settings(self) -> dict:
        """The search parameters in use and the recall@10 they were tuned to at build time."""

    def tune(self, **params: Any) -> None:
        """Override search parameters (benchmarks, experiments); names are store-specific."""
        raise NotImplementedError(f"{self.kind} store has no tunable parameters")

    def close(self) -> None:
        """Release connections or searchers; the object is unusable afterwards."""


def batches_of(vectors: np.ndarray, seg_first: np.ndarray, seg_len: np.ndarray,
               rows_per_batch: int = 50_000) -> Iterator[RowBatch]:
    """Cut an in-memory [N,128] array (rows in segment order) into row batches."""
    row_segment = np.repeat(np.arange(len(seg_len), dtype=np.int64), seg_len)
    row_second = np.arange(len(vectors), dtype=np.int64) - np.repeat(np.asarray(seg_first, np.int64), seg_len)
    for lo in range(0, len(vectors), rows_per_batch):
        hi = min(len(vectors), lo + rows_per_batch)
        yield RowBatch(vectors[lo:hi], row_segment[lo:hi], row_second[lo:hi])


def store_class(kind: str) -> type[VectorStore]:
    """The implementation named ``kind`` (imported lazily: pymilvus is only loaded when used)."""
    if kind == "scann":
        from core.index.vectorstore_scann import ScannStore

        return ScannStore
    if kind == "milvus":
        from core.index.vectorstore_milvus import MilvusStore

        return MilvusStore
    raise ValueError(f"unknown vector store {kind!r} (expected one of {', '.join(STORES)})")


def open_store(build: Any, settings: Any | None = None) -> VectorStore:
    """Open the store a build was written to (``IndexBuild.store_kind``: ``scann`` for builds that
    predate the field)."""
    if settings is None:
        from core.config import load_settings

        settings = load_settings()
    return store_class(build.store_kind).open(build, settings)
