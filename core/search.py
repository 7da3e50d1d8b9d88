"""From query seconds to ranked (video, start second) answers.

Two kinds of evidence are combined, because each alone is weak in a known way:

* **Acoustic, time-aligned.** Every query second asks the ANN for its nearest indexed seconds;
  each hit votes for the alignment "query second 0 ≙ second ``j - i`` of segment s". Votes from
  different query seconds that agree on (segment, offset) add up, so a result is a place in a
  video where the *sequence* sounds alike, not a bag of seconds. Candidates are then re-scored
  exactly over all offsets. A near-duplicate (the query was cut from an indexed clip, even with
  noise) gets a distance far below any genuine neighbour and is put first.
* **Labels.** The build's label head predicts the query's AudioSet label probabilities; every
  indexed segment is scored by the chance that it shares a label with the query
  (``1 - Π(1 - p_l)`` over its known labels), once over all labels and once ignoring the
  ubiquitous Speech/Music, so a segment must share the *specific* sound to rank high.

The final score in [0, 1] mixes the label fit with the aligned acoustic similarity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from core.errors import RowsGoneError
from core.hit import Hit
from core.index.ann import dequantize
from core.index.labels import ubiquitous_ids
from core.index.vectorstore import Neighbours, VectorStore

T = TypeVar("T")

#: Mean squared-L2 distance per aligned second below which a match is taken as the same audio.
#: Genuine different-clip neighbours sit above ~30 (1st percentile on bal_train); the same clip
#: with Gaussian noise σ=0.25 (dequantized units) sits near 8.
NEAR_DUP_DISTANCE = 22.0


@dataclass
class SearchParams:
    ann_k: int = 60                  # ANN neighbours per query second
    label_candidates: int = 120      # segments taken from the label ranking
    acoustic_candidates: int = 60    # segments taken from the aligned votes
    tau: float = 60.0                # distance scale of exp(-d/tau) acoustic similarity
    w_acoustic: float = 0.15         # weight of acoustic similarity in the final score
    w_strict: float = 0.6            # weight of the label fit ignoring Speech/Music
    w_knn: float = 0.3               # weight of the acoustic neighbours' labels in the query's label probabilities


def without_gone(cand: np.ndarray, fetch: Callable[[np.ndarray], T]) -> tuple[np.ndarray, T | None]:
    """``fetch(cand)``, retried without the clips a :class:`RowsGoneError` names, as
    ``(candidates kept, result)``; the result is None when no candidate is left.

    A build opened before a refresh deleted rows in place (Milvus) may still name deleted clips
    among its candidates: leaving them out beats failing the query, and the next query reloads the
    build that no longer lists them. An error naming none of the candidates is raised as it is.
    """
    while True:
        try:
            return cand, fetch(cand)
        except RowsGoneError as gone:
            keep = ~np.isin(cand, gone.segments)
            if keep.all():
                raise
            cand = cand[keep]
            if len(cand) == 0:
                return cand, None


class Ranker:
    """Search over one opened build (``core.index.store.IndexBuild``); thread-safe (read-only)."""

    def __init__(self, build, params: SearchParams | None = None):
        self.build = build
        self.params = params or SearchParams()
        seg = build.segments
        self.seg_first = seg["seg_first_row"]
        self.seg_len = seg["seg_len"]
        self.seg_start = seg["seg_start"]
        self.label_ptr = seg["label_ptr"]
        self.label_idx = seg["label_idx"].astype(np.int64)
        self.n_segments = len(self.seg_len)
        self.label_seg = np.repeat(np.arange(self.n_segments), np.diff(self.label_ptr))
        self.head = build.labelhead
        names = build.label_names
        self.store: VectorStore = build.ann
        self.ubiquitous = np.array(ubiquitous_ids(names), dtype=np.int64)
        self.label_is_ubiquitous = np.isin(self.label_idx, self.ubiquitous)
        # Segments a refresh deleted in place (Milvus): never candidates, even while a search can
        # still see their rows (the deletion becomes visible to searches a moment after it is sent).
        removed = getattr(build, "removed_segments", None)
        self.removed = None
        if removed is not None and len(removed):
            self.removed = np.zeros(self.n_segments, bool)
            self.removed[np.asarray(removed, np.int64)] = True

    # -- label evidence -------------------------------------------------------------------------
    def query_label_probs(self, q_u8: np.ndarray) -> np.ndarray | None:
        if self.head is None:
            return None
        return self.head.predict_clip(q_u8)

    def label_scores(self, p: np.ndarray) -> np.ndarray:
        """Per segment: chance of sharing a label, mixing 'any label' and 'ignoring Speech/Music'."""
        logq = np.log1p(-np.clip(p, 0, 0.999)).astype(np.float64)
        contrib = logq[self.label_idx]
        any_ = 1 - np.exp(np.bincount(self.label_seg, weights=contrib, minlength=self.n_segments))
        strict_contrib = np.where(self.label_is_ubiquitous, 0.0, contrib)
        strict = 1 - np.exp(np.bincount(self.label_seg, weights=strict_contrib, minlength=self.n_segments))
        w = self.params.w_strict
        return ((1 - w) * any_ + w * strict).astype(np.float32)

    # -- acoustic evidence --------------------------------------------------------------------------
    def knn_label_probs(self, hits: Neighbours, exclude: np.ndarray | None) -> np.ndarray:
        """Label distribution of the query's acoustic neighbours (similarity-weighted)."""
        seg = hits.segment.ravel()
        w = np.exp(-np.maximum(hits.distance.ravel(), 0) / self.params.tau)
        if exclude is not None:
            w = np.where(exclude[seg], 0.0, w)
        counts = np.diff(self.label_ptr)[seg]
        lab = self.label_idx[np.repeat(self.label_ptr[seg], counts) + _ranges(counts)]
        p = np.bincount(lab, weights=np.repeat(w, counts), minlength=len(self.build.label_names))
        return (p / max(w.sum(), 1e-9)).astype(np.float32)

    def vote(self, q_u8: np.ndarray, exclude: np.ndarray | None, ann_hits: Neighbours | None = None) -> dict[int, float]:
        """Time-aligned voting over ANN hits: segment → best summed similarity over offsets."""
        n = len(q_u8)
        hits = ann_hits if ann_hits is not None else self.store.search(q_u8, self.params.ann_k)
        seg, sec, d = hits.segment, hits.second, hits.distance
        off = sec - np.arange(n)[:, None]
        sim = np.exp(-np.maximum(d, 0) / self.params.tau)
        key = seg * 65536 + (off + 32768)
        # one vote per (query second, key): keep the best
        qi = np.repeat(np.arange(n), seg.shape[1])
        flat_key = key.ravel()
        flat_sim = sim.ravel()
        order = np.lexsort((-flat_sim, flat_key, qi))
        k_sorted, q_sorted = flat_key[order], qi[order]
        first = np.ones(len(order), bool)
        first[1:] = (k_sorted[1:] != k_sorted[:-1]) | (q_sorted[1:] != q_sorted[:-1])
        keys, inv = np.unique(k_sorted[first], return_inverse=True)
        totals = np.bincount(inv, weights=flat_sim[order][first])
        best: dict[int, float] = {}
        segs = keys // 65536
        for s, t in zip(segs.tolist(), totals.tolist()):
            if exclude is not None and exclude[s]:
                continue
            if t > best.get(s, 0.0):
                best[s] = t
        return best

    def align(self, q_u8: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact alignment in chunks, so long library files never blow up memory."""
        if len(segments) == 0:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        order = np.argsort(self.seg_len[segments], kind="stable")
        out_off = np.zeros(len(segments), np.int64)
        out_d = np.zeros(len(segments))
        out_s = np.zeros(len(segments))
        lo = 0
        budget = 40_000  # rows gathered per chunk
        while lo < len(order):
            hi = lo + 1
            while hi < len(order) and (hi + 1 - lo) * int(self.seg_len[segments[order[hi]]]) <= budget:
                hi += 1
            idx = order[lo:hi]
            o, d, s = self._align_chunk(q_u8, segments[idx])
            out_off[idx], out_d[idx], out_s[idx] = o, d, s
            lo = hi
        return out_off, out_d, out_s

    def _align_chunk(self, q_u8: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact best alignment of the query against each segment.

        Returns (offset, mean distance per aligned second, acoustic similarity in [0,1]).
        Offsets run from -(n-1) to len-1; only overlapping seconds count, and a partial overlap
        is penalised by averaging the similarity over the query's length. A near-duplicate needs
        the overlap to cover most of the query (one shared second is not evidence).
        """
        q = dequantize(q_u8)
        n = len(q)
        lens = self.seg_len[segments]
        lmax = int(lens.max())
        rows = self.seg_first[segments][:, None] + np.arange(lmax)[None, :]
        valid = np.arange(lmax)[None, :] < lens[:, None]
        rows = np.where(valid, rows, self.seg_first[segments][:, None])
        x = dequantize(self.store.vectors(rows.ravel())).reshape(len(segments), lmax, -1)
        cross = (x.reshape(-1, x.shape[2]) @ q.T).reshape(len(segments), lmax, n).transpose(0, 2, 1)
        d = (q * q).sum(1)[None, :, None] - 2 * cross + (x * x).sum(2)[:, None, :]  # [S, n, L]
        d = np.where(valid[:, None, :], np.maximum(d, 0), np.inf)
        n_off = lmax + n - 1                       # offsets -(n-1) .. lmax-1
        pad = np.full((len(segments), n, lmax + 2 * (n - 1)), np.inf, dtype=np.float32)
        pad[:, :, n - 1:n - 1 + lmax] = d
        qi = np.arange(n)[:, None]
        dd = pad[:, qi, qi + np.arange(n_off)[None, :]]  # [S, n, offsets]: query second i vs i+o
        finite = np.isfinite(dd)
        sim = np.where(finite, np.exp(-np.where(finite, dd, 0) / self.params.tau), 0).sum(1) / n
        cover = finite.sum(1)
        need = min(n, 3)
        mean_d = np.where(finite, dd, 0).sum(1) / np.maximum(cover, 1)
        mean_d = np.where(cover >= need, mean_d, np.inf)
        best = np.argmax(sim, axis=1)
        return best - (n - 1), mean_d.min(1), np.clip(sim[np.arange(len(segments)), best], 0, 1)

    # -- the whole query ---------------------------------------------------------------------------
    def search(self, q_u8: np.ndarray, top: int, *, exclude_segments: np.ndarray | None = None,
               probs: np.ndarray | None = None) -> tuple[list[Hit], np.ndarray | None]:
        """The ``top`` best hits and the query's *own* label probabilities (the head's, or ``probs``): the
        neighbours' labels mixed in below help ranking, but "heard" must describe the query alone."""
        q_u8 = np.ascontiguousarray(q_u8, dtype=np.uint8)
        p = probs if probs is not None else self.query_label_probs(q_u8)
        own = p
        exclude = self.removed  # read-only below; copied only when this query adds its own exclusions
        if exclude_segments is not None and len(exclude_segments):
            exclude = np.zeros(self.n_segments, bool) if exclude is None else exclude.copy()
            exclude[exclude_segments] = True
        ann_hits = self.store.search(q_u8, self.params.ann_k, exclude_segments=exclude_segments)
        votes = self.vote(q_u8, exclude, ann_hits)
        if p is not None and probs is None and self.params.w_knn > 0:
            p = (1 - self.params.w_knn) * p + self.params.w_knn * self.knn_label_probs(ann_hits, exclude)
        acoustic_ids = np.array(sorted(votes, key=votes.get, reverse=True)[: self.params.acoustic_candidates],
                                dtype=np.int64)
        if p is not None:
            lab = self.label_scores(p)
            if exclude is not None:
                lab = np.where(exclude, -1, lab)
            m = min(self.params.label_candidates, self.n_segments)
            label_ids = np.argpartition(-lab, m - 1)[:m]
            cand = np.unique(np.concatenate([label_ids, acoustic_ids]))
        else:
            lab = None
            cand = acoustic_ids
        if exclude is not None:
            cand = cand[~exclude[cand]]
        if len(cand) == 0:
            return [], own
        cand, aligned = without_gone(cand, lambda c: self.align(q_u8, c))
        if aligned is None:
            return [], own
        off, dist, ac = aligned
        ls = lab[cand] if lab is not None else np.zeros(len(cand), np.float32)
        w = self.params.w_acoustic if lab is not None else 1.0
        score = (1 - w) * ls + w * ac
        near = dist < NEAR_DUP_DISTANCE
        score = np.where(near, 0.9 + 0.1 * np.exp(-dist / NEAR_DUP_DISTANCE), 0.9 * score)
        order = np.argsort(-score, kind="stable")
        hits = [Hit(segment=int(cand[i]), offset=int(off[i]), score=float(score[i])) for i in order[:top]]
        return hits, own


def _ranges(counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..c0-1, 0..c1-1, ...]."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts
