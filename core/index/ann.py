"""ScaNN behind a small interface: build from uint8 vectors, serialize, load, search.

Why this shape: the configuration depends on N (exact brute force is both fastest and exact for
small N; partitioning + anisotropic hashing + reordering beyond), and at full AudioSet scale one
ScaNN build would need more memory than the machine has, so rows are split into shards of at most
``shard_rows`` vectors, each built and serialized on its own, searched side by side and merged.
Shards are also kept small enough to load quickly (``SWAP_SHARD_ROWS``): loading holds the GIL, and
a bot swapping in a refreshed build must not stall its event loop. Vectors are searched as
dequantized float32 (``q*4/255-2``) under squared L2, re-ranked on ScaNN's int8 copy.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEFAULT_SHARD_ROWS = 4_500_000
BRUTE_FORCE_BELOW = 30_000
#: ScaNN loads a shard's searcher in one C++ call that holds the GIL, so a serving process that
#: swaps in a refreshed build stalls its event loop for as long as its largest shard takes to load
#: (int8 re-ranking, 2-core AVX2: ~0.3 µs a row warm, 66 ms for all of bal_train in one piece,
#: 12–20 ms a piece in four). Rows are therefore split into shards of about this many ...
SWAP_SHARD_ROWS = 64_000
#: ... as long as that takes no more than this many, because every shard adds one searcher call to
#: each query (bal_train, 10 query seconds at k=60: 2.1 ms in one shard, 3.1 ms in four). Beyond
#: that (over ~1 M rows) the bound cannot be kept anyway, so only memory decides the shards.
MAX_SWAP_SHARDS = 16


def dequantize(q: np.ndarray) -> np.ndarray:
    """Inverse of the VGGish post-processor's clip-and-scale: uint8 → float32 in [-2, 2]."""
    return np.asarray(q, dtype=np.float32) * np.float32(4.0 / 255.0) - np.float32(2.0)


def _scann():
    """Import ScaNN's pybind API without dragging in TensorFlow when it is not loaded yet.

    ``import scann`` tries ``import tensorflow`` (for its TF ops, unused here) and costs ~2.5 s;
    hiding TensorFlow for that one import keeps CLI start-up fast. If TF is already loaded this
    is a plain import.
    """
    if "scann" in sys.modules:
        from scann import scann_ops_pybind

        return scann_ops_pybind
    hide = "tensorflow" not in sys.modules
    if hide:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        import scann  # noqa: F401
        from scann import scann_ops_pybind
    finally:
        if hide:
            sys.modules.pop("tensorflow", None)
    return scann_ops_pybind


def choose_config(n: int) -> dict:
    """ScaNN parameters for a shard of n vectors (leaves ≈ √n; reorder depth from measured recall)."""
    if n < BRUTE_FORCE_BELOW:
        return {"kind": "brute", "n": n}
    leaves = int(min(4000, max(64, round(math.sqrt(n)))))
    return {
        "kind": "ah",
        "n": n,
        "num_leaves": leaves,
        "leaves_to_search": max(8, leaves // 12),
        "reorder": 400 if n < 2_000_000 else 600,  # defaults; tune_shard replaces both by measurement
        "training_sample_size": int(min(n, 100_000)),
        # The rows are 8-bit already, so re-ranking on ScaNN's int8 copy loses next to nothing, and
        # that copy is a quarter of the float one: a quarter of the serving memory, and a load
        # (which holds the GIL in ScaNN's C++ loader while a refreshed build is swapped in) of
        # ~60 ms instead of ~320 ms for all of bal_train.
        "int8_reorder": True,
    }


TARGET_RECALL = 0.97


def noisy_queries(vectors_u8: np.ndarray, n: int, seed: int, sigmas: tuple[float, ...]) -> np.ndarray:
    """Up to ``n`` indexed seconds (uint8) with Gaussian noise added in dequantized units, the
    ``sigmas`` taken in turn: the recall-tuning queries of every vector store."""
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(vectors_u8), min(n, len(vectors_u8)), replace=False))
    x = dequantize(vectors_u8[picks])
    sigma = np.array(sigmas)[np.arange(len(x)) % len(sigmas)][:, None]
    x = np.clip(x + rng.normal(0, 1, x.shape).astype(np.float32) * sigma, -2, 2)
    return np.floor((x + 2) * (255 / 4)).astype(np.uint8)


def left_out_queries(row_segment: np.ndarray, n: int, seed: int, *, max_share: float = 0.1) -> np.ndarray:
    """Rows to query for a "leave-segment-out" recall check: one random second of each of ``n``
    random segments (clips); in an index of fewer than ``n / max_share`` segments, ``n`` seconds
    of a ``max_share`` of them, so that most of the index stays in.

    Searched with their segments left out (of the index's answer and of the exact ground truth
    alike), indexed seconds stand for a user's new recording of a sound like the indexed ones: the
    neighbours are other clips, never the near-identical seconds of the query's own clip that make
    noisy copies of indexed seconds easier than genuinely new queries.
    """
    row_segment = np.asarray(row_segment)
    rng = np.random.default_rng(seed)
    segs, count = np.unique(row_segment, return_counts=True)
    order = np.argsort(row_segment, kind="stable")  # rows of each segment, together
    picked = np.sort(rng.choice(len(segs), min(n, max(1, int(len(segs) * max_share))), replace=False))
    start = np.searchsorted(row_segment[order], segs[picked])
    if len(picked) >= n:
        return np.sort(order[start + rng.integers(0, count[picked])])
    rows = order[np.concatenate([np.arange(a, a + c) for a, c in zip(start, count[picked])])]
    return np.sort(rng.choice(rows, min(n, len(rows)), replace=False))


def cheapest_reaching(breadths, reorders, recall: Callable[[int, int], float | np.ndarray],
                      target: float, *, confidence_z: float = 0.0,
                      ) -> tuple[tuple[int, int, float] | None, list[tuple[float, ...]]]:
    """The first (breadth, reorder, recall) that reaches ``target``, trying breadths (leaves or lists
    searched) from the cheapest and, within each, deeper re-ranking first; None when none does.
    Also every setting tried: (breadth, reorder, recall) rounded to 4 places, plus the lower bound
    when there is one. The build-time tuner of both vector stores.

    ``recall`` gives the mean recall, or each tuning query's recall; with per-query values and a
    ``confidence_z``, a setting reaches the target only when the one-sided lower confidence bound
    of its mean does (mean − z·s/√n). A sample's mean that lands right on the target is a coin toss
    between two settings, and the build would pick either from one run to the next.
    """
    tried: list[tuple[float, ...]] = []
    for breadth in breadths:
        for reorder in reorders:
            got = recall(breadth, reorder)
            if np.ndim(got):
                per_query = np.asarray(got, np.float64)
                rec = float(per_query.mean())
                spread = float(per_query.std(ddof=1)) if per_query.size > 1 else 0.0
                bound = rec - confidence_z * spread / math.sqrt(max(1, per_query.size))
                tried.append((breadth, reorder, round(rec, 4), round(bound, 4)))
            else:
                rec = bound = float(got)
                tried.append((breadth, reorder, round(rec, 4)))
            if bound >= target:
                return (breadth, reorder, rec), tried
    return None, tried


def tune_shard(searcher, vectors_u8: np.ndarray, config: dict, *, queries: int = 120, seed: int = 0) -> dict:
    """Pick the cheapest (leaves_to_search, reorder) whose recall@10 against exact search is ≥ 0.97.

    Queries are indexed seconds with Gaussian noise (half σ=0.25, half σ=0.6 in dequantized units),
    so they sit between near-duplicates and genuinely new sounds.
    """
    q = noisy_queries(vectors_u8, queries, seed, (0.25, 0.6))
    exact, _ = exact_search(vectors_u8, q, 10)
    qf = dequantize(q)
    leaves = config["num_leaves"]

    def recall(lts: int, reorder: int) -> float:
        rows, _ = searcher.search_batched(qf, final_num_neighbors=10, leaves_to_search=lts,
                                          pre_reorder_num_neighbors=reorder)
        return recall_at_k(rows, exact, 10)

    best, tried = cheapest_reaching([max(4, leaves // frac) for frac in (64, 32, 16, 8, 4)],
                                    (150, 300, 600, 1000), recall, TARGET_RECALL)
    if best is None:
        best = tried[-1]  # the deepest setting tried
    return {"leaves_to_search": int(best[0]), "reorder": int(best[1]), "tuned_recall_at_10": round(float(best[2]), 4),
            "tuning_queries": int(len(q))}


def build_shard(vectors_u8: np.ndarray, out_dir: Path, config: dict, k: int = 100) -> dict:
    sp = _scann()
    data = dequantize(vectors_u8)
    if config["kind"] == "brute":
        b = sp.builder(data, k, "squared_l2").score_brute_force()
    else:
        from scann import ReorderType

        b = (sp.builder(data, k, "squared_l2")
             .tree(num_leaves=config["num_leaves"], num_leaves_to_search=config["leaves_to_search"],
                   training_sample_size=config["training_sample_size"])
             .score_ah(2, anisotropic_quantization_threshold=0.2)
             .reorder(config["reorder"], quantize=ReorderType.INT8 if config.get("int8_reorder") else ReorderType.FLOAT32))
    b.set_n_training_threads(os.cpu_count() or 1)
    searcher = b.build()
    del data
    tuned = tune_shard(searcher, vectors_u8, config) if config["kind"] == "ah" else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    searcher.serialize(str(out_dir), relative_path=True)
    del searcher
    _drop_unlisted_assets(out_dir)
    return tuned


def _drop_unlisted_assets(out_dir: Path) -> None:
    """Delete serialized arrays the searcher never loads.

    With int8 re-ranking ScaNN still writes the float ``dataset.npy`` (4 bytes a dimension) but
    lists only the int8 copy in ``scann_assets.pbtxt``, the file its loader follows; keeping it
    would only cost disk and checksum time on every open.
    """
    assets = out_dir / "scann_assets.pbtxt"
    if not assets.is_file():
        return
    listed = set(re.findall(r'asset_path:\s*"([^"]+)"', assets.read_text()))
    unused = out_dir / "dataset.npy"
    if listed and unused.name not in listed and unused.exists():
        unused.unlink()


def shard_count(n: int, shard_rows: int = DEFAULT_SHARD_ROWS) -> int:
    """Shards for n rows: enough to fit memory (``shard_rows``), and for a short swap (see
    ``SWAP_SHARD_ROWS``) when that takes at most ``MAX_SWAP_SHARDS``."""
    for_memory = math.ceil(n / shard_rows)
    for_swap = math.ceil(n / SWAP_SHARD_ROWS)
    return max(1, for_memory, for_swap if for_swap <= MAX_SWAP_SHARDS else 1)


def build_ann(vectors_u8: np.ndarray, out_dir: Path, *, shard_rows: int = DEFAULT_SHARD_ROWS,
              on_shard: Callable[[int, int], None] | None = None) -> dict:
    """Build the searcher(s) for all rows; returns the ``ann`` section of the manifest."""
    n = len(vectors_u8)
    n_shards = shard_count(n, shard_rows)
    bounds = [round(i * n / n_shards) for i in range(n_shards + 1)]
    shards = []
    for i in range(n_shards):
        lo, hi = bounds[i], bounds[i + 1]
        config = choose_config(hi - lo)
        config.update(build_shard(vectors_u8[lo:hi], out_dir / str(i), config))
        shards.append({"dir": str(i), "offset": lo, "rows": hi - lo, **config})
        if on_shard:
            on_shard(i + 1, n_shards)
    return {"metric": "squared_l2", "space": "dequantized", "shards": shards}


class AnnIndex:
    """Loaded searcher(s); ``search`` returns global row ids and squared-L2 distances, best first."""

    def __init__(self, searchers: list, shards: list[dict]):
        self.searchers = searchers
        self.shards = shards
        self._pool = None
        if len(searchers) > 1:
            # ScaNN releases the GIL: shards are searched side by side on the machine's cores.
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=min(len(searchers), os.cpu_count() or 1))

    @classmethod
    def load(cls, root: Path, ann_manifest: dict) -> AnnIndex:
        sp = _scann()
        shards = ann_manifest.get("shards") or json.loads((root / "shards.json").read_text())
        searchers = [sp.load_searcher(str(root / s["dir"])) for s in shards]
        return cls(searchers, shards)

    def search(self, queries_u8: np.ndarray, k: int, *, leaves: int | None = None,
               reorder: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = dequantize(np.atleast_2d(queries_u8))

        def one(i: int):
            searcher, s = self.searchers[i], self.shards[i]
            kk = min(k, s["rows"])
            kwargs: dict = {"final_num_neighbors": kk}
            if s["kind"] == "ah":
                kwargs["leaves_to_search"] = leaves or s["leaves_to_search"]
                kwargs["pre_reorder_num_neighbors"] = max(kk, reorder or s["reorder"])
            if len(q) > 16 and self._pool is None:
                rows, d = searcher.search_batched_parallel(q, **kwargs)
            else:
                rows, d = searcher.search_batched(q, **kwargs)
            return rows.astype(np.int64) + s["offset"], d

        parts = list(self._pool.map(one, range(len(self.searchers)))) if self._pool else [one(0)]
        all_rows = [p[0] for p in parts]
        all_d = [p[1] for p in parts]
        if len(all_rows) == 1:
            return all_rows[0], all_d[0]
        rows = np.concatenate(all_rows, axis=1)
        d = np.concatenate(all_d, axis=1)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(rows, order, 1), np.take_along_axis(d, order, 1)


def exact_search(vectors_u8: np.ndarray, queries_u8: np.ndarray, k: int, chunk: int = 500_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-L2 neighbours by chunked matrix products (ground truth for recall)."""
    q = dequantize(queries_u8)
    qn = (q * q).sum(1)
    best_d = np.full((len(q), 0), np.inf, dtype=np.float32)
    best_r = np.zeros((len(q), 0), dtype=np.int64)
    for lo in range(0, len(vectors_u8), chunk):
        x = dequantize(vectors_u8[lo:lo + chunk])
        d = qn[:, None] - 2 * q @ x.T + (x * x).sum(1)[None, :]
        kk = min(k, d.shape[1])
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        best_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], 1)
        best_r = np.concatenate([best_r, part + lo], 1)
        order = np.argsort(best_d, 1)[:, :k]
        best_d, best_r = np.take_along_axis(best_d, order, 1), np.take_along_axis(best_r, order, 1)
    return best_r, best_d


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    hits = sum(len(set(a[:k]) & set(e[:k])) for a, e in zip(approx, exact))
    return hits / (len(exact) * k)
