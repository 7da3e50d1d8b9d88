"""The ``scann`` vector store: ScaNN searchers serialized inside the build folder (the default).

The rows live beside them as memory-mapped arrays (``vectors.npy``, ``row_segment.npy``,
``row_second.npy``), so a hit's (segment, second) and any row's vector are one array lookup away.
The ScaNN specifics (configuration by N, sharding, tuning) stay in ``core.index.ann``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from core.index import ann as scann_ann
from core.index.ann import DEFAULT_SHARD_ROWS, AnnIndex
from core.index.vectorstore import BuildContext, Neighbours, RowBatch, VectorStore


class ScannStore(VectorStore):
    kind = "scann"

    def __init__(self, ann: AnnIndex, row_segment: np.ndarray, row_second: np.ndarray, vectors: np.ndarray):
        self.ann = ann
        self.row_segment = row_segment
        self.row_second = row_second
        self._vectors = vectors
        self._overrides: dict = {}

    @classmethod
    def build(cls, batches: Iterable[RowBatch], ctx: BuildContext, *, shard_rows: int | None = None) -> dict:
        parts = [b.vectors for b in batches]
        # One batch (the builder's whole in-memory array) is used as is: no copy at full scale.
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
        ann = scann_ann.build_ann(vectors, ctx.out_dir / "scann", shard_rows=shard_rows or DEFAULT_SHARD_ROWS,
                        on_shard=ctx.progress)
        return {"store": cls.kind, **ann}

    @classmethod
    def open(cls, build: Any, settings: Any) -> ScannStore:
        ann = AnnIndex.load(build.path / "scann", build.manifest.get("ann", {}))
        return cls(ann, build.row_segment, build.row_second, build.vectors)

    def search_rows(self, queries_u8: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Global row ids and squared-L2 distances [Q,k] (what ScaNN itself answers)."""
        return self.ann.search(queries_u8, k, **self._overrides)

    def search(self, queries_u8: np.ndarray, k: int, *,
               exclude_segments: np.ndarray | None = None) -> Neighbours:
        rows, d = self.search_rows(queries_u8, k)
        flat = rows.ravel()
        seg = self.row_segment[flat].astype(np.int64).reshape(rows.shape)
        sec = self.row_second[flat].astype(np.int64).reshape(rows.shape)
        return Neighbours(seg, sec, d)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._vectors[np.asarray(rows)])

    @property
    def size(self) -> int:
        return int(sum(s["rows"] for s in self.ann.shards))

    def recall_settings(self) -> dict:
        return {"store": self.kind,
                "shards": [{k: s.get(k) for k in ("kind", "rows", "num_leaves", "leaves_to_search", "reorder",
                                                  "tuned_recall_at_10")} for s in self.ann.shards],
                **self._overrides}

    def tune(self, *, leaves: int | None = None, reorder: int | None = None) -> None:
        self._overrides = {k: v for k, v in (("leaves", leaves), ("reorder", reorder)) if v}

    def close(self) -> None:
        self.ann = None  # type: ignore[assignment]
