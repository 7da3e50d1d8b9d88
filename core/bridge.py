"""The label bridge: find indexed seconds whose *labels* sound like the query.

When a query arrives as AudioSet label probabilities — per-window YAMNet scores (no VGGish weights
needed) or the build's label head applied to VGGish vectors — it can be matched against the index
without any acoustic vector: every indexed segment has clip labels (ground truth from AudioSet, or a
library file's), and every indexed second has label probabilities predicted by the label head at
build time (stored as a top-K view: ``uint16 [N, K]`` label ids and ``uint8 [N, K]`` probability×255).

A segment's score mixes two views of the same question, "does this sound like the query?":

* **clip labels** — the share of the query's (idf-weighted) label mass that the segment's labels
  cover, damped for segments that carry many labels (a segment labelled with everything would
  otherwise match everything);
* **per-second profile** — cosine between the query profile and each second's predicted label
  probabilities, both idf-weighted; its best second gives the timestamp of the result.

idf weighting: AudioSet is dominated by Speech and Music, so a raw profile of "Speech 0.6, Dog 0.5,
Bark 0.4" would rank any talking over the dog. Weighting a label by its rarity among indexed
segments (smoothed ``log(S/df)``) keeps the rare, telling labels in charge.

The class takes plain arrays so it can be built from a build directory (:meth:`LabelBridge.from_build`)
or from test data, and it never touches SQLite: results are (segment, second, row, score) and the
caller (the engine) turns them into :class:`core.results.Match` with the segment metadata.
Per-label posting lists are built once (~0.2 s at bal_train scale, 5 bytes per stored label) so a
query touches only the rows that carry one of its labels.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import BadQueryError
from core.results import Heard
from core.yamnet import heard_from_scores

__all__ = ["BridgeHit", "LabelBridge", "query_profile", "heard_from_scores", "heard_from_probs"]

N_LABELS = 527
#: Query labels considered (by weighted mass); the tail of 527 sigmoids is noise.
QUERY_LABELS = 12
#: Query labels below this share of the top label's weight are dropped.
QUERY_MIN_RELATIVE = 0.02
#: Mix of the clip-label score and the best per-second cosine (see module docstring).
LABEL_WEIGHT = 0.5
#: Segments carrying many labels are damped by ``len(labels) ** -LABEL_COUNT_POWER``.
LABEL_COUNT_POWER = 0.25
#: idf exponent applied on each side (query and row) of the cosine.
IDF_POWER = 1.0
#: Per-second score: geometric mean of presence and cosine ("geo"), or either alone (see _row_scores).
ROW_MODE = "geo"


@dataclass(frozen=True)
class BridgeHit:
    """One ranked segment, timestamped at its strongest second."""

    segment: int
    #: Second within the segment (``row_second`` of the best row; 0 when the build has no row view).
    second: int
    #: Row of the best second (-1 when the build has no row view).
    row: int
    score: float
    label_score: float
    row_score: float


def query_profile(probs: np.ndarray, pool: str = "mean") -> np.ndarray:
    """One ``[527]`` profile from per-window/per-second label probabilities ``[n, 527]`` (or ``[527]``)."""
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[0] == 0:
        raise BadQueryError(f"label probabilities must be [n, labels], got shape {np.shape(probs)}")
    if not np.isfinite(p).all():
        raise BadQueryError("label probabilities contain NaN or infinity")
    p = np.clip(p, 0.0, 1.0)
    return p.max(axis=0) if pool == "max" else p.mean(axis=0)


def heard_from_probs(probs: np.ndarray, names: Sequence[str], top: int = 5, **kw: Any) -> list[Heard]:
    """"Heard" from AudioSet-indexed probabilities (e.g. the label head on a query's VGGish vectors)."""
    return heard_from_scores(np.clip(np.asarray(probs, dtype=np.float32), 0, 1), names, top=top, **kw)


class LabelBridge:
    """Rank indexed segments by label agreement with a query profile.

    Arguments (all plain arrays; memory-mapped ones are fine):

    * ``row_segment`` int ``[N]`` — segment id of each row; ``row_second`` int ``[N]`` — its second.
    * ``seg_label_ptr`` ``[S+1]`` / ``seg_label_idx`` — CSR of each segment's clip labels.
    * ``row_label_idx`` uint16 ``[N, K]`` / ``row_label_p`` uint8 ``[N, K]`` (×255) or float — the
      per-second top-K label view; both ``None`` when the build has none (clip labels only).
    """

    def __init__(
        self,
        row_segment: np.ndarray,
        row_second: np.ndarray,
        seg_label_ptr: np.ndarray,
        seg_label_idx: np.ndarray,
        row_label_idx: np.ndarray | None = None,
        row_label_p: np.ndarray | None = None,
        *,
        n_labels: int = N_LABELS,
        label_weight: float = LABEL_WEIGHT,
        label_count_power: float = LABEL_COUNT_POWER,
        idf_power: float = IDF_POWER,
        query_labels: int = QUERY_LABELS,
        row_mode: str = ROW_MODE,
    ):
        self.n_labels = int(n_labels)
        self.row_segment = np.asarray(row_segment)
        self.row_second = np.asarray(row_second)
        self.n_rows = int(self.row_segment.shape[0])
        if self.row_second.shape[0] != self.n_rows:
            raise ValueError("row_segment and row_second differ in length")
        ptr = np.asarray(seg_label_ptr, dtype=np.int64)
        self.seg_label_ptr = ptr
        self.seg_label_idx = np.asarray(seg_label_idx, dtype=np.int64)
        self.n_segments = int(ptr.shape[0] - 1)
        self.label_weight = float(label_weight)
        self.label_count_power = float(label_count_power)
        self.idf_power = float(idf_power)
        self.query_labels = int(query_labels)
        if row_mode not in ("geo", "cosine", "presence"):
            raise ValueError(f"row_mode must be geo, cosine or presence, not {row_mode!r}")
        self.row_mode = row_mode
        if (row_label_idx is None) != (row_label_p is None):
            raise ValueError("row_label_idx and row_label_p go together")
        self._row_view = (row_label_idx, row_label_p) if row_label_idx is not None else None
        self._lock = threading.Lock()
        self._ready = False

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_build(cls, build: Any, **kw: Any) -> LabelBridge:
        """From a :class:`core.index.store.IndexBuild` (``row_segment``, ``row_second``,
        ``segments['label_ptr'/'label_idx']``, ``row_labels``)."""
        seg = build.segments
        view = build.row_labels
        idx, p = view if view is not None else (None, None)
        return cls(build.row_segment, build.row_second, seg["label_ptr"], seg["label_idx"], idx, p, **kw)

    @classmethod
    def from_dense(
        cls,
        row_probs: np.ndarray,
        row_segment: np.ndarray,
        row_second: np.ndarray,
        seg_labels: Sequence[Sequence[int]],
        *,
        k: int = 8,
        **kw: Any,
    ) -> LabelBridge:
        """From dense per-row probabilities ``[N, 527]`` (kept as the same top-K view a build stores)."""
        probs = np.asarray(row_probs, dtype=np.float32)
        k = min(k, probs.shape[1])
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(probs, top, 1)
        ptr = np.zeros(len(seg_labels) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(x) for x in seg_labels])
        flat = np.fromiter((int(c) for x in seg_labels for c in x), dtype=np.int64, count=int(ptr[-1]))
        q = np.round(np.clip(vals, 0, 1) * 255).astype(np.uint8)
        return cls(row_segment, row_second, ptr, flat, top.astype(np.uint16), q, n_labels=probs.shape[1], **kw)

    def _prepare(self) -> None:
        """Inverted lists (label → segments, label → rows with probability) and idf; built once."""
        with self._lock:
            if self._ready:
                return
            n_lab, S = self.n_labels, self.n_segments
            counts = np.diff(self.seg_label_ptr)
            seg_of_entry = np.repeat(np.arange(S, dtype=np.int32), counts)
            labs = self.seg_label_idx
            ok = (labs >= 0) & (labs < n_lab)
            labs, seg_of_entry = labs[ok], seg_of_entry[ok]
            order = np.argsort(labs, kind="stable")
            self._lab_segs = seg_of_entry[order]
            self._lab_seg_ptr = np.searchsorted(labs[order], np.arange(n_lab + 1))
            df = np.diff(self._lab_seg_ptr).astype(np.float64)
            self.idf = (np.log((S + 1.0) / (df + 1.0)) + 1.0).astype(np.float32)
            self._seg_damp = (np.maximum(counts, 1).astype(np.float32) ** -self.label_count_power).astype(np.float32)

            # Runs of consecutive rows with one segment: max per run with reduceat.
            rs = np.asarray(self.row_segment, dtype=np.int64)
            if self.n_rows:
                self._run_starts = np.flatnonzero(np.r_[True, rs[1:] != rs[:-1]])
                self._run_seg = rs[self._run_starts]
            else:
                self._run_starts = self._run_seg = np.zeros(0, dtype=np.int64)
            self._runs_unique = len(np.unique(self._run_seg)) == len(self._run_seg)
            self._runs_sorted = self._runs_unique and _is_sorted(self._run_seg)

            if self._row_view is not None:
                idx, p = self._row_view
                idx = np.asarray(idx)
                K = idx.shape[1]
                pf = np.asarray(p, dtype=np.float32)
                if np.asarray(p).dtype == np.uint8:
                    pf = pf / 255.0
                w = self.idf ** self.idf_power
                lab = idx.reshape(-1).astype(np.int64)
                val = pf.reshape(-1)
                keep = (val > 0) & (lab < n_lab)
                rows = np.repeat(np.arange(self.n_rows, dtype=np.int32), K)[keep]
                lab, val = lab[keep], val[keep]
                weighted = val * w[lab]
                norms = np.zeros(self.n_rows, dtype=np.float64)
                np.add.at(norms, rows, weighted.astype(np.float64) ** 2)
                self._row_inv_norm = np.where(norms > 0, 1.0 / np.sqrt(np.maximum(norms, 1e-30)), 0.0).astype(np.float32)
                order = np.argsort(lab, kind="stable")
                self._post_rows = rows[order]
                self._post_val = val[order].astype(np.float32)
                self._post_ptr = np.searchsorted(lab[order], np.arange(n_lab + 1))
            self._ready = True

    def warm(self) -> LabelBridge:
        """Build the inverted lists now (start-up) instead of on the first query."""
        self._prepare()
        return self

    # -- search -------------------------------------------------------------------------------
    def search(
        self,
        probs: np.ndarray,
        top: int = 15,
        *,
        pool: str = "mean",
        exclude_segments: Sequence[int] | np.ndarray | None = None,
    ) -> list[BridgeHit]:
        """The ``top`` best segments for label probabilities ``[n, 527]`` (per window/second) or ``[527]``."""
        self._prepare()
        profile = query_profile(probs, pool)
        if profile.shape[0] != self.n_labels:
            raise BadQueryError(f"label probabilities have {profile.shape[0]} labels, the index has {self.n_labels}")
        if self.n_segments == 0 or top <= 0:
            return []
        weights = profile * self.idf ** self.idf_power
        labels = np.argsort(-weights, kind="stable")[: self.query_labels]
        labels = labels[weights[labels] > max(float(weights[labels[0]]) * QUERY_MIN_RELATIVE, 1e-6)]
        if labels.size == 0:
            return []
        qw = weights[labels]

        # Clip labels: share of the query's weighted mass covered, damped by label count.
        label_score = np.zeros(self.n_segments, dtype=np.float32)
        for c, wc in zip(labels, qw):
            segs = self._lab_segs[self._lab_seg_ptr[c]:self._lab_seg_ptr[c + 1]]
            label_score[segs] += wc
        label_score *= self._seg_damp / float(qw.sum())

        # Per-second cosine, idf on both sides.
        if self._row_view is not None and self.n_rows:
            acc = self._row_scores(labels, qw)
            run_max = np.maximum.reduceat(acc, self._run_starts)
            seg_row = np.zeros(self.n_segments, dtype=np.float32)
            if self._runs_unique:
                seg_row[self._run_seg] = run_max
            else:
                np.maximum.at(seg_row, self._run_seg, run_max)
            score = self.label_weight * label_score + (1.0 - self.label_weight) * seg_row
        else:
            acc = None
            seg_row = np.zeros(self.n_segments, dtype=np.float32)
            score = label_score

        if exclude_segments is not None and len(exclude_segments):
            score = score.copy()
            score[np.asarray(exclude_segments, dtype=np.int64)] = -1.0
        top = min(int(top), self.n_segments)
        cand = np.argpartition(-score, top - 1)[:top]
        cand = cand[np.lexsort((cand, -score[cand]))]
        hits = []
        for s in cand:
            if score[s] <= 0:
                break
            row, second = self._best_row(int(s), acc)
            hits.append(BridgeHit(int(s), second, row, float(score[s]), float(label_score[s]), float(seg_row[s])))
        return hits

    def _row_scores(self, labels: np.ndarray, qw: np.ndarray) -> np.ndarray:
        """Per-row score in [0, 1] for query labels ``labels`` with idf-weighted weights ``qw``.

        ``presence`` = share of the query's weight present at that second (Σ w·p / Σ w): how
        strongly the query's sounds are there. ``cosine`` = idf-weighted profile cosine: whether the
        second is *only* that (purity). Cosine alone cannot place the timestamp — a second with Dog
        0.2 and nothing else has the same profile as one with Dog 0.9 — and presence alone favours
        busy seconds, so the default is their geometric mean.
        """
        presence = np.zeros(self.n_rows, dtype=np.float32) if self.row_mode != "cosine" else None
        cosine = np.zeros(self.n_rows, dtype=np.float32) if self.row_mode != "presence" else None
        idf_w = self.idf ** self.idf_power
        for c, wc in zip(labels, qw):
            lo, hi = self._post_ptr[c], self._post_ptr[c + 1]
            rows, vals = self._post_rows[lo:hi], self._post_val[lo:hi]
            if presence is not None:
                presence[rows] += wc * vals
            if cosine is not None:
                cosine[rows] += (wc * idf_w[c]) * vals
        if presence is not None:
            presence /= float(qw.sum())
        if cosine is not None:
            cosine *= self._row_inv_norm / float(np.sqrt((qw.astype(np.float64) ** 2).sum()))
            np.clip(cosine, 0.0, 1.0, out=cosine)
        if self.row_mode == "presence":
            return presence
        if self.row_mode == "cosine":
            return cosine
        presence *= cosine
        return np.sqrt(presence, out=presence)

    def _best_row(self, seg: int, acc: np.ndarray | None) -> tuple[int, int]:
        if acc is None:
            return -1, 0
        i = int(np.searchsorted(self._run_seg, seg)) if self._runs_sorted else None
        if i is not None and i < len(self._run_seg) and self._run_seg[i] == seg:
            lo = int(self._run_starts[i])
            hi = int(self._run_starts[i + 1]) if i + 1 < len(self._run_starts) else self.n_rows
            rows = np.arange(lo, hi)
        else:
            rows = np.flatnonzero(np.asarray(self.row_segment) == seg)
            if rows.size == 0:
                return -1, 0
        best = int(rows[int(np.argmax(acc[rows]))])
        return best, int(self.row_second[best])


def _is_sorted(a: np.ndarray) -> bool:
    return bool(a.size < 2 or (a[1:] >= a[:-1]).all())
