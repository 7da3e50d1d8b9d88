"""The label bridge: find indexed seconds whose *labels* sound like the query.

When a query arrives as AudioSet label probabilities — per-window YAMNet scores (no VGGish weights
needed) or the build's label head applied to VGGish vectors — it can be matched against the index
without any acoustic vector: every indexed segment has clip labels (ground truth from AudioSet, or a
library file's), and every indexed second has label probabilities predicted by the label head at
build time (stored as a top-K view: ``uint16 [N, K]`` label ids and ``uint8 [N, K]`` probability×255).

Two stages, because the measurements (bench/bridge.py) say clip labels rank best and per-second
probabilities are what place the timestamp:

1. **clip labels**, over every segment — the share of the query's (idf-weighted) label mass that the
   segment's labels cover, damped for segments that carry many labels (a segment labelled with
   everything would otherwise match everything). The best ``candidates`` segments go on.
2. **per-second profile**, over the candidates' seconds only — geometric mean of *presence* (how much
   of the query's weight is predicted at that second) and *cosine* (whether the second is only that);
   it breaks the many ties among segments with the same label set, and its best second is the
   result's timestamp.

idf weighting: AudioSet is dominated by Speech and Music, so a raw profile of "Speech 0.6, Dog 0.5,
Bark 0.4" would rank any talking over the dog. Weighting a label by its rarity among indexed
segments (smoothed ``log(S/df)``) keeps the rare, telling labels in charge.

With the ontology (``ontology=``, the engine always passes the build's), three more rules, each
for a reason that does not depend on a data set (measured on real recordings, bench/real_audio.py,
and on AudioSet's held-out split, bench/bridge.py; README "Quality"):

* **idf counts a label's family**: a segment labelled "Light engine (high frequency)" is an engine
  sound even when not also labelled "Engine", so a label's document frequency is the number of
  segments carrying it *or any descendant*. On a balanced index (bal_train: ~60 clips for every
  leaf) plain idf cannot tell "Engine" from "Chainsaw"; the family count can.
* **ambiguous labels weigh nothing** (``ontology.json``'s ``blacklist``: "Patter", "Clatter"...).
* **a label implies its ancestors** (``implied``): a segment labelled "Crackle" is a "Fire" sound and
  a "Natural sound" whether or not its raters also ticked those, so stage 1 counts the ancestors of
  its labels as its labels, and its damping counts the same closed set (else a segment labelled
  only "Yip" would get "Dog", "Domestic animals" and "Animal" free and outrank one labelled "Dog,
  Bark, Domestic animals, Animal"). Measured: esc10_dev P@5 0.668 → 0.746 and the worst class
  (crackling fire, whose recordings YAMNet scores as Fire and Crackle but also as a dozen other
  things) 0.19 → 0.60. On AudioSet's held-out split (bench/bridge.py --evaluate-split, 2,216
  queries) exact-label P@5 / strict P@5 fall 0.624 / 0.361 → 0.600 / 0.349 while *instance* P@5 —
  a result counts when it carries a query label or a more specific kind of one, Electric guitar
  for Guitar — rises 0.655 → 0.664: the change returns more specific kinds of the query's sounds,
  which an exact label match calls a miss. The VGGish path (core.search) does not use the bridge.

Tried and left out because they cost AudioSet precision (bench/bridge.py --evaluate-split, 2,216
held-out queries) more than they gained on real recordings: weighting labels by ontology
specificity, ``(1 + descendants) ** -0.5`` (esc10_dev P@5 0.62 → 0.70 but AudioSet 0.63 → 0.51:
it turns a Music query into a query for one genre), and discounting an ancestor when a descendant
is confident in the query (esc10_dev +0.03, AudioSet −0.03 / strict −0.006).

The class takes plain arrays so it can be built from a build directory (:meth:`LabelBridge.from_build`)
or from test data, and it never touches SQLite: results are :class:`core.hit.Hit` (segment, its
strongest second, score) and the caller (the engine) turns them into :class:`core.results.Match`.
Stage 1 walks per-label segment lists (built once), stage 2 reads ~candidates × 10 rows of the
top-K view, so a query costs a few milliseconds whatever the number of indexed seconds; the bridge
keeps no per-row copy of its own (the top-K view stays memory-mapped).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import BadQueryError
from core.heard import Ontology, clip_scores
from core.hit import Hit
from core.index.labels import ubiquitous_ids

__all__ = ["LabelBridge", "query_profile"]

N_LABELS = 527
#: Query labels considered (by weighted mass); the tail of 527 sigmoids is noise.
QUERY_LABELS = 12
#: Query labels below this share of the top label's weight are dropped.
QUERY_MIN_RELATIVE = 0.02
#: Mix of the clip-label score and the best per-second score (see module docstring).
LABEL_WEIGHT = 0.95
#: Segments taken from stage 1 (clip labels) into stage 2 (per-second scores), and at least
#: RERANK_PER_HIT per hit asked for. This is re-ranking depth, not over-fetch: the bridge returns
#: the ``top`` hits it is asked for (the engine alone decides how many a query needs).
#: 100, 400 and 1000 measured the same P@5 on bal_train (bench/bridge.py); fewer is faster.
CANDIDATES = 150
RERANK_PER_HIT = 4
#: A segment without clip labels (rare: library files get the head's confident labels at build)
#: takes the labels whose mean per-second probability reaches this.
PSEUDO_LABEL_MIN = 0.3
#: Segments carrying many labels are damped by ``len(labels) ** -LABEL_COUNT_POWER``.
LABEL_COUNT_POWER = 0.25
#: idf exponent applied on each side (query and row) of the cosine.
IDF_POWER = 1.0
#: Per-second score: geometric mean of presence and cosine ("geo"), or either alone (see _row_scores).
ROW_MODE = "geo"


def query_profile(probs: np.ndarray, pool: str = "mean") -> np.ndarray:
    """One ``[527]`` profile from per-window/per-second label probabilities ``[n, 527]`` (or ``[527]``).

    ``mean`` (default): results should sound like the note as a whole, its dominant sound first.
    ``top`` is :func:`core.heard.clip_scores` (each label's mean over its best three windows, what
    the "heard" line reads, where a short bark must not fade) and ``max`` the single best window;
    both were measured for ranking and left out: top-3 cost AudioSet P@5 0.624 → 0.613 (2,216
    held-out queries) for no gain on real recordings (esc10_dev 0.668 → 0.665), max lost on both.
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[0] == 0:
        raise BadQueryError(f"label probabilities must be [n, labels], got shape {np.shape(probs)}")
    if not np.isfinite(p).all():
        raise BadQueryError("label probabilities contain NaN or infinity")
    p = np.clip(p, 0.0, 1.0)
    if pool == "max":
        return p.max(axis=0)
    if pool == "mean":
        return p.mean(axis=0)
    return clip_scores(p)


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
        label_mode: str = "coverage",
        candidates: int = CANDIDATES,
        ontology: Ontology | None = None,
        ubiquitous: Sequence[int] = (),
        implied: bool = True,
    ):
        self.n_labels = int(n_labels)
        self.row_segment = np.asarray(row_segment)
        self.row_second = np.asarray(row_second)
        self.n_rows = int(self.row_segment.shape[0])
        if self.row_second.shape[0] != self.n_rows:
            raise ValueError("row_segment and row_second differ in length")
        self.seg_label_ptr = np.asarray(seg_label_ptr, dtype=np.int64)
        self.seg_label_idx = np.asarray(seg_label_idx, dtype=np.int64)
        self.n_segments = int(self.seg_label_ptr.shape[0] - 1)
        self.label_weight = float(label_weight)
        self.label_count_power = float(label_count_power)
        self.idf_power = float(idf_power)
        self.query_labels = int(query_labels)
        self.candidates = int(candidates)
        if row_mode not in ("geo", "cosine", "presence"):
            raise ValueError(f"row_mode must be geo, cosine or presence, not {row_mode!r}")
        if label_mode not in ("coverage", "share"):
            raise ValueError(f"label_mode must be coverage or share, not {label_mode!r}")
        self.row_mode, self.label_mode = row_mode, label_mode
        if (row_label_idx is None) != (row_label_p is None):
            raise ValueError("row_label_idx and row_label_p go together")
        if ontology is not None and len(ontology) != self.n_labels:
            raise ValueError(f"the ontology has {len(ontology)} labels, the bridge {self.n_labels}")
        self.ontology = ontology
        #: with an ontology, a segment's labels imply their ancestors (stage 1; see the module docstring)
        self.implied = bool(implied)
        #: label ids the "share" rule ignores in its strict half (core.index.labels.UBIQUITOUS)
        self.ubiquitous = np.asarray(ubiquitous, dtype=np.int64)
        self._row_idx = row_label_idx
        self._row_p = row_label_p
        self._lock = threading.Lock()
        self._ready = False

    @property
    def has_row_view(self) -> bool:
        return self._row_idx is not None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_build(cls, build: Any, **kw: Any) -> LabelBridge:
        """From a :class:`core.index.store.IndexBuild` (``row_segment``, ``row_second``,
        ``segments['label_ptr'/'label_idx']``, ``row_labels``)."""
        seg = build.segments
        if getattr(build, "store_kind", "scann") != "scann":
            # A remote vector store keeps no per-row arrays here: one pseudo-row per segment, clip labels only.
            n_seg = len(seg["seg_len"])
            return cls(np.arange(n_seg), np.zeros(n_seg, np.int64), seg["label_ptr"], seg["label_idx"], **kw)
        view = build.row_labels
        idx, p = view if view is not None else (None, None)
        kw.setdefault("ubiquitous", ubiquitous_ids(build.label_names))
        return cls(build.row_segment, build.row_second, seg["label_ptr"], seg["label_idx"], idx, p, **kw)

    def _prepare(self) -> None:
        """Label → segments lists, idf, and segment → rows; built once, on first use or :meth:`warm`."""
        with self._lock:
            if self._ready:
                return
            n_lab, S = self.n_labels, self.n_segments
            rs = np.asarray(self.row_segment, dtype=np.int64)
            if self.n_rows and not _is_sorted(rs):
                self._row_order = np.argsort(rs, kind="stable")
                rs_sorted = rs[self._row_order]
            else:
                self._row_order = None
                rs_sorted = rs
            self._seg_row_ptr = np.searchsorted(rs_sorted, np.arange(S + 1))

            ptr, labs = self.seg_label_ptr, self.seg_label_idx
            counts = np.diff(ptr)
            seg_of_entry = np.repeat(np.arange(S, dtype=np.int64), counts)
            extra_seg, extra_lab = self._pseudo_labels(np.flatnonzero(counts == 0))
            seg_of_entry = np.concatenate([seg_of_entry, extra_seg])
            labs = np.concatenate([labs, extra_lab])
            counts = counts + np.bincount(extra_seg, minlength=S)
            ok = (labs >= 0) & (labs < n_lab)
            labs, seg_of_entry = labs[ok], seg_of_entry[ok]
            if self.implied and self.ontology is not None:
                seg_of_entry, labs = self._with_ancestors(seg_of_entry, labs)
                counts = np.bincount(seg_of_entry, minlength=S)  # damping counts what a segment *is*
            order = np.argsort(labs, kind="stable")
            self._lab_segs = seg_of_entry[order]
            self._lab_seg_ptr = np.searchsorted(labs[order], np.arange(n_lab + 1))
            # For the "share" rule: entries grouped by segment.
            by_seg = np.argsort(seg_of_entry, kind="stable")
            self._entry_seg, self._entry_lab = seg_of_entry[by_seg], labs[by_seg]
            self._entry_ubiquitous = np.isin(self._entry_lab, self.ubiquitous)
            df = np.diff(self._lab_seg_ptr).astype(np.float64)
            if self.ontology is not None:
                df = self._family_df(df)
            self.idf = (np.log((S + 1.0) / (df + 1.0)) + 1.0).astype(np.float32)
            self._idf_w = (self.idf ** self.idf_power).astype(np.float32)
            if self.ontology is not None:
                self._idf_w[[i for i in self.ontology.ambiguous if i < n_lab]] = 0.0
            self._seg_damp = (np.maximum(counts, 1).astype(np.float32) ** -self.label_count_power).astype(np.float32)
            self._ready = True

    def _with_ancestors(self, seg: np.ndarray, labs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(segment, label) entries plus every ontology ancestor of each label, without repeats."""
        extra_s, extra_l = [seg], [labs]
        ancestors = self.ontology.ancestors
        for lab in np.unique(labs).tolist():
            above = ancestors[lab] if lab < len(ancestors) else ()
            up = np.array(sorted(a for a in above if a < self.n_labels), dtype=np.int64)
            if up.size:
                segs = seg[labs == lab]
                extra_s.append(np.repeat(segs, up.size))
                extra_l.append(np.tile(up, segs.size))
        key = np.unique(np.concatenate(extra_s) * self.n_labels + np.concatenate(extra_l))
        return key // self.n_labels, key % self.n_labels

    def _family_df(self, df: np.ndarray) -> np.ndarray:
        """Segments carrying each label or one of its ontology descendants (see the module docstring)."""
        out = df.copy()
        for label, below in enumerate(self.ontology.descendants):
            fam = [c for c in below if c < self.n_labels]
            if fam:
                segs = [self._lab_segs[self._lab_seg_ptr[c]:self._lab_seg_ptr[c + 1]] for c in [label, *fam]]
                out[label] = np.unique(np.concatenate(segs)).size
        return out

    def _candidate_rows(self, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All rows of the candidate segments and, for each, its position in ``cand``."""
        lo = self._seg_row_ptr[cand]
        lens = self._seg_row_ptr[cand + 1] - lo
        total = int(lens.sum())
        owner = np.repeat(np.arange(len(cand)), lens)
        pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)
        rows = pos if self._row_order is None else self._row_order[pos]
        return rows.astype(np.int64), owner

    def _rows_of(self, seg: int) -> np.ndarray:
        lo, hi = int(self._seg_row_ptr[seg]), int(self._seg_row_ptr[seg + 1])
        return np.arange(lo, hi) if self._row_order is None else self._row_order[lo:hi]

    def _pseudo_labels(self, unlabelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels for segments that have none, from their seconds' predicted probabilities."""
        segs: list[int] = []
        labs: list[int] = []
        if not self.has_row_view or unlabelled.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        for s in unlabelled.tolist():
            rows = self._rows_of(s)
            if rows.size == 0:
                continue
            mean = self._dense_rows(rows).mean(axis=0)
            chosen = np.flatnonzero(mean >= PSEUDO_LABEL_MIN)
            if chosen.size == 0:
                chosen = np.array([int(np.argmax(mean))])
            segs.extend([s] * len(chosen))
            labs.extend(chosen.tolist())
        return np.array(segs, np.int64), np.array(labs, np.int64)

    def _view(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(self._row_idx[rows], dtype=np.int64)
        raw = np.asarray(self._row_p[rows])
        p = raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float32)
        return np.minimum(idx, self.n_labels - 1), np.where(idx < self.n_labels, p, 0.0).astype(np.float32)

    def _dense_rows(self, rows: np.ndarray) -> np.ndarray:
        idx, p = self._view(rows)
        out = np.zeros((len(rows), self.n_labels), dtype=np.float32)
        np.put_along_axis(out, idx, p, axis=1)
        return out

    def warm(self) -> LabelBridge:
        """Build the lists now (start-up) instead of on the first query."""
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
    ) -> list[Hit]:
        """The ``top`` best segments for label probabilities ``[n, 527]`` (per window/second) or ``[527]``."""
        self._prepare()
        profile = query_profile(probs, pool)
        if profile.shape[0] != self.n_labels:
            raise BadQueryError(f"label probabilities have {profile.shape[0]} labels, the index has {self.n_labels}")
        if self.n_segments == 0 or top <= 0:
            return []
        weights = profile * self._idf_w
        labels = np.argsort(-weights, kind="stable")[: self.query_labels]
        labels = labels[weights[labels] > max(float(weights[labels[0]]) * QUERY_MIN_RELATIVE, 1e-6)]
        if labels.size == 0:
            return []
        qw = weights[labels].astype(np.float32)

        # Stage 1: clip labels over every segment.
        if self.label_mode == "share":
            label_score = self._share_scores(profile, labels)
        else:
            label_score = np.zeros(self.n_segments, dtype=np.float32)
            for c, wc in zip(labels, qw):
                label_score[self._lab_segs[self._lab_seg_ptr[c]:self._lab_seg_ptr[c + 1]]] += wc
            label_score *= self._seg_damp / float(qw.sum())
        if exclude_segments is not None and len(exclude_segments):
            label_score[np.asarray(exclude_segments, dtype=np.int64)] = 0.0
        n_cand = min(max(self.candidates, int(top) * RERANK_PER_HIT), self.n_segments)
        cand = np.argpartition(-label_score, n_cand - 1)[:n_cand]
        cand = cand[label_score[cand] > 0]
        if cand.size == 0:
            return []

        # Stage 2: per-second scores over the candidates' rows.
        ls = label_score[cand]
        seg_row = np.zeros(len(cand), dtype=np.float32)
        best_row = np.full(len(cand), -1, dtype=np.int64)
        if self.has_row_view and self.n_rows:
            rows, owner = self._candidate_rows(cand)
            if rows.size:
                row_score = self._row_scores(rows, labels, qw)
                # Best row per candidate: sort by (candidate, -score), take each candidate's first.
                order = np.lexsort((-row_score, owner))
                first = np.ones(order.size, dtype=bool)
                first[1:] = owner[order][1:] != owner[order][:-1]
                winners = order[first]
                seg_row[owner[winners]] = row_score[winners]
                best_row[owner[winners]] = rows[winners]
            score = self.label_weight * ls + (1.0 - self.label_weight) * seg_row
        else:
            score = ls
        order = np.lexsort((cand, -score))[: int(top)]
        hits = []
        for k in order:
            r = int(best_row[k])  # -1 when the build has no row view: then the segment's start
            second = int(self.row_second[r]) if r >= 0 else 0
            hits.append(Hit(segment=int(cand[k]), offset=second, score=float(score[k])))
        return hits

    def _share_scores(self, profile: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Chance that the segment shares one of the query's labels, ``1 - Π(1 - p_l)`` over its
        labels, mixed 40/60 with the same ignoring the ubiquitous labels (core.search's rule, kept
        as a measured alternative)."""
        p = np.zeros(self.n_labels, dtype=np.float64)
        p[labels] = np.clip(profile[labels], 0, 0.999)
        contrib = np.log1p(-p)[np.clip(self._entry_lab, 0, self.n_labels - 1)]
        any_ = 1 - np.exp(np.bincount(self._entry_seg, weights=contrib, minlength=self.n_segments))
        strict_c = np.where(self._entry_ubiquitous, 0.0, contrib)
        strict = 1 - np.exp(np.bincount(self._entry_seg, weights=strict_c, minlength=self.n_segments))
        return (0.4 * any_ + 0.6 * strict).astype(np.float32)

    def _row_scores(self, rows: np.ndarray, labels: np.ndarray, qw: np.ndarray) -> np.ndarray:
        """Per-row score in [0, 1] for query labels ``labels`` with idf-weighted weights ``qw``.

        ``presence`` = share of the query's weight present at that second (Σ w·p / Σ w): how
        strongly the query's sounds are there. ``cosine`` = idf-weighted profile cosine: whether the
        second is *only* that (purity). Cosine alone cannot place the timestamp — a second with Dog
        0.2 and nothing else has the same profile as one with Dog 0.9 — and presence alone favours
        busy seconds, so the default is their geometric mean.
        """
        if rows.size == 0:
            return np.zeros(0, dtype=np.float32)
        idx, p = self._view(rows)
        wq = np.zeros(self.n_labels, dtype=np.float32)
        wq[labels] = qw
        presence = (wq[idx] * p).sum(axis=1) / float(qw.sum())
        if self.row_mode == "presence":
            return presence.astype(np.float32)
        rv = self._idf_w[idx] * p
        norm = np.sqrt((rv * rv).sum(axis=1)) * float(np.sqrt((qw.astype(np.float64) ** 2).sum()))
        cosine = np.where(norm > 0, (wq[idx] * rv).sum(axis=1) / np.maximum(norm, 1e-12), 0.0)
        cosine = np.clip(cosine, 0.0, 1.0)
        if self.row_mode == "cosine":
            return cosine.astype(np.float32)
        return np.sqrt(presence * cosine).astype(np.float32)


def _is_sorted(a: np.ndarray) -> bool:
    return bool(a.size < 2 or (a[1:] >= a[:-1]).all())
