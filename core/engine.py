"""The engine facade: one object the CLI and the bot drive, whatever the query kind.

``Engine.search`` is synchronous and CPU-bound (decode → embed → search → metadata) and safe to
call from several worker threads; ``Engine.answer`` runs it in an executor and then, when asked,
lets the liveness checker drop dead videos. The current build is re-checked cheaply on every
query (``reload``), so a rebuild swapped in by ``index build``/``refresh`` is picked up without a
restart, while searches already running keep the build they started with. A build is verified
when it is loaded (``store.open_current`` falls back to the newest intact build), and the sizes of
its memory-mapped files are re-checked before every query, so a file truncated under the running
process gives a clean IndexBrokenError or a fallback, never a SIGBUS.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import BadQueryError, IndexBrokenError, IndexMissingError, ModelMissingError
from core.index import store
from core.results import Match, Query, QueryInfo, SearchResponse
from core.bridge import LabelBridge
from core.heard import Ontology
from core.heard import heard as heard_policy
from core.hit import Hit
from core.search import Ranker, without_gone
from core.youtube import parse_youtube, timestamped_url, youtube_url

if TYPE_CHECKING:
    from core.liveness import LivenessChecker

log = logging.getLogger("echovids.engine")

#: With the liveness filter on, a reply is built from this many times ``top`` matches, so that dead
#: videos (about one AudioSet link in six) can be dropped and the reply still fills.
LIVE_OVERFETCH = 3
#: Ranked hits asked for per match: the reply has one line per video, so hits on a video already
#: shown are skipped, and the rankers are asked for enough that the matches still fill.
HITS_PER_MATCH = 2


@dataclass(frozen=True)
class Depth:
    """How deep one query looks: ``matches`` built for the reply, from the best ``hits`` hits."""

    matches: int
    hits: int


def candidates_needed(top: int, live_check: bool) -> Depth:
    """The one place that decides how many candidates a query asks for; the rankers and the
    liveness filter take the numbers they are given. Without a liveness filter nothing is dropped
    after ranking, so extra matches would only cost metadata look-ups."""
    matches = max(1, int(top)) * (LIVE_OVERFETCH if live_check else 1)
    return Depth(matches=matches, hits=matches * HITS_PER_MATCH)


@dataclass
class _Loaded:
    build: store.IndexBuild
    ranker: Ranker
    bridge: LabelBridge              # label view of the build, for queries YAMNet hears
    label_mids: tuple[str, ...]
    ontology: Ontology               # the build's labels for the one "heard" policy (core.heard)
    pointer: str | None = None       # what CURRENT said when this was loaded (differs on fallback)


class Engine:
    """Facade over the current index build, the embedder and (optionally) the liveness checker."""

    def __init__(self, settings, *, checkpoint=None, pca_params=None, liveness=None, yamnet_model=None):
        self.settings = settings
        self.checkpoint = checkpoint
        self.pca_params = pca_params
        self.yamnet_model = yamnet_model
        self.liveness = liveness
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()
        self._embedder = None

    # -- the build -------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Switch to the current build if the pointer changed or the loaded build got damaged;
        True when a new build was loaded.

        Cheap when nothing changed (one small read and a few ``stat`` calls), so it runs before
        every query. Opening a build verifies it; a damaged current build is replaced by the newest
        intact one (logged at WARNING), and a loaded build whose files changed size is dropped
        before anything reads its memory maps again.
        """
        name = store.read_pointer(Path(self.settings.data_dir))
        loaded = self._loaded
        if loaded is not None and self._intact(loaded) and name in (None, loaded.pointer):
            return False  # unchanged (or the pointer vanished: keep serving what we have)
        if name is None and loaded is None:
            raise IndexMissingError(f"no index in {self.settings.data_dir}; run `echovids index build` first")
        with self._lock:
            loaded = self._loaded
            intact = loaded is not None and self._intact(loaded)
            if intact and name in (None, loaded.pointer):
                return False
            if not intact:
                self._loaded = None  # never touch a damaged build's maps again
            try:
                build = store.open_current(Path(self.settings.data_dir), self.settings)
            except IndexMissingError as err:
                if intact:
                    log.warning("keeping index build %s: the current one cannot be used (%s)",
                                loaded.build.build_id, err)
                    loaded.pointer = name
                    return False
                raise
            ranker = Ranker(build)
            _ = build.ann  # load the searcher before swapping so queries never wait on it
            ontology = Ontology.of_build(build, self.settings)
            bridge = LabelBridge.from_build(build, ontology=ontology).warm()
            self._loaded = _Loaded(build, ranker, bridge, tuple(build.label_info["mids"]), ontology,
                                   build.pointer)
            return True

    @staticmethod
    def _intact(loaded: _Loaded) -> bool:
        try:
            loaded.build.check_sizes()
        except IndexBrokenError as err:
            log.warning("%s; looking for an intact build", err)
            return False
        return True

    def _current(self) -> _Loaded:
        self.reload()
        assert self._loaded is not None
        return self._loaded

    @property
    def build(self) -> store.IndexBuild:
        return self._current().build

    @property
    def index_size(self) -> int:
        try:
            return self._current().build.size
        except IndexMissingError:
            return 0

    @property
    def manifest(self) -> dict:
        try:
            return self._current().build.manifest
        except IndexMissingError:
            return {}

    @property
    def embedder(self):
        """VGGish, loaded on first use (only audio queries need it)."""
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    from core.vggish import load_embedder

                    self._embedder = load_embedder(self.settings, self.checkpoint, self.pca_params)
        return self._embedder

    def yamnet(self):
        """The YAMNet model, or None when its file is absent (asked per query, so a ``model fetch``
        while the bot runs is picked up; ``core.yamnet`` caches the loaded model per path)."""
        from core.yamnet import load_yamnet

        try:
            return load_yamnet(self.settings, self.yamnet_model)
        except ModelMissingError:
            return None

    def warm_up(self, *, audio: bool = False) -> None:
        """Pay one-off costs now rather than on a user's query: the one warm-up entry point of
        every front end.

        Always loads the current build (searcher, label view), so a missing or broken index is
        reported now. ``audio=True`` (a long-running front end: the bot) also pays the audio
        path's costs — TensorFlow's thread policy for ``settings.workers`` concurrent queries
        (``core.vggish.model.configure_threads``), decoding's resampling kernels (numba compile),
        and the models this engine will use (VGGish and/or YAMNet, whichever are installed) with
        their first run — by answering one short tone end to end. A one-shot CLI command skips
        that: it would pay the same costs once either way.
        """
        if audio:
            from core.audio import warm_up as warm_decoder
            from core.vggish.model import configure_threads

            configure_threads(self.settings.workers)
            warm_decoder()
        self._current()
        if not audio:
            return
        import io

        import soundfile as sf

        tone = 0.1 * np.sin(np.arange(2 * 16000) * 2 * np.pi * 440 / 16000)
        wav = io.BytesIO()
        sf.write(wav, tone.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
        try:
            self.search(Query(kind="audio", audio=wav.getvalue(), top=1, live_check=False))
        except ModelMissingError:
            pass  # no audio model installed: audio queries say so; text and link queries work

    # -- queries ---------------------------------------------------------------------------------------
    def search(self, query: Query) -> SearchResponse:
        t0 = time.perf_counter()
        loaded = self._current()
        want = candidates_needed(query.top, query.live_check)
        if query.kind == "audio":
            resp = self._search_audio(loaded, query.audio, want)
        elif query.kind == "embeddings":
            vectors = check_embeddings(query.embeddings)
            resp = self._search_vectors(loaded, vectors, want, QueryInfo("embeddings", len(vectors), None))
        elif query.kind == "like":
            resp = self._search_like(loaded, query.like or "", want)
        elif query.kind == "text":
            resp = self._search_text(loaded, query.text or "", want)
        else:
            raise BadQueryError(f"unknown query kind {query.kind!r}")
        resp.elapsed_s = time.perf_counter() - t0
        resp.index_size = loaded.build.size
        return resp

    async def answer(self, query: Query, *, executor=None) -> SearchResponse:
        loop = asyncio.get_running_loop()
        resp = await loop.run_in_executor(executor, self.search, query)
        if query.live_check and self.liveness is not None:
            t0 = time.perf_counter()
            resp.results = await self.liveness.filter(resp.results, want=query.top, budget_s=self.settings.live_budget_s)
            resp.elapsed_s += time.perf_counter() - t0
        else:
            resp.results = resp.results[: query.top]
        return resp

    def search_many(self, batch, top: int, *, workers: int | None = None) -> list[SearchResponse]:
        """Several embeddings queries in one call (the ``[Q,n,128]`` CLI form), in order, trimmed to ``top``.

        Queries run on a small thread pool: ScaNN and NumPy's matrix products release the GIL,
        so two cores answer a batch nearly twice as fast.
        """
        from concurrent.futures import ThreadPoolExecutor

        self.warm_up()
        queries = [Query(kind="embeddings", embeddings=q, top=top, live_check=False) for q in batch]
        n_workers = max(1, workers or self.settings.workers)
        if n_workers == 1 or len(queries) < 4:
            responses = [self.search(q) for q in queries]
        else:
            with ThreadPoolExecutor(n_workers) as pool:
                responses = list(pool.map(self.search, queries))
        for r in responses:
            r.results = r.results[:top]
        return responses

    # -- the query kinds ---------------------------------------------------------------------------------
    def _search_audio(self, loaded: _Loaded, audio, want: Depth) -> SearchResponse:
        """VGGish (acoustic match) when its weights are present, else the YAMNet label bridge.

        YAMNet, when present, also says what was heard: it hears the audio itself, whereas the label
        head only sees VGGish's view of it. Missing models are reported before any decoding work.
        """
        from core.audio import AudioLimits, decode_audio

        if audio is None:
            raise BadQueryError("no audio given")
        embedder, missing = None, None
        try:
            embedder = self.embedder
        except ModelMissingError as err:
            missing = err
        yam = self.yamnet()
        if embedder is None and yam is None:
            raise ModelMissingError(
                f"{missing}; no YAMNet model either ({self.settings.yamnet_model(self.yamnet_model)})")
        wave = decode_audio(audio, AudioLimits.from_settings(self.settings))
        heard, probs = [], None
        if yam is not None:
            listening = yam.listen(wave.samples, loaded.label_mids, loaded.ontology)  # silent windows left out
            heard, probs = listening.heard, listening.probs
        if embedder is not None:
            vectors = np.asarray(embedder.embed(wave.samples), dtype=np.uint8)
            if len(vectors) == 0:
                raise BadQueryError("the audio is too short to embed")
            resp = self._search_vectors(loaded, vectors, want, QueryInfo("audio", len(vectors), "vggish"))
            if heard:
                resp.heard = heard
            return resp
        hits = loaded.bridge.search(probs, top=want.hits)
        info = QueryInfo("audio", max(1, int(round(wave.duration_s))), "yamnet")
        return SearchResponse(query=info, results=self._matches(loaded, hits, want), heard=heard)

    def _search_vectors(self, loaded: _Loaded, vectors: np.ndarray, want: Depth, info: QueryInfo,
                        exclude_segments: np.ndarray | None = None) -> SearchResponse:
        hits, probs = loaded.ranker.search(vectors, want.hits, exclude_segments=exclude_segments)
        heard = [] if probs is None else heard_policy(probs, loaded.ontology)  # the query's own head predictions
        return SearchResponse(query=info, results=self._matches(loaded, hits, want), heard=heard)

    def _search_like(self, loaded: _Loaded, ref: str, want: Depth) -> SearchResponse:
        video_id, t = parse_youtube(ref)
        segs = loaded.build.segments_of_video(video_id)
        if not segs:
            raise BadQueryError(f"video {video_id} is not in the index; --like works for indexed videos only")
        if t is None:
            seg = segs[0]
            lo = 0
        else:
            seg = min(segs, key=lambda s: 0 if s.start_seconds <= t < s.start_seconds + s.n_seconds
                      else min(abs(t - s.start_seconds), abs(t - s.start_seconds - s.n_seconds)))
            lo = int(np.clip(t - int(seg.start_seconds), 0, seg.n_seconds - 1))
        hi = min(seg.n_seconds, lo + 10)
        lo = max(0, min(lo, hi - 5))  # at least five seconds when the segment has them
        first = int(loaded.ranker.seg_first[seg.id])
        vectors = loaded.build.ann.vectors(np.arange(first + lo, first + hi))
        exclude = np.array([s.id for s in segs], dtype=np.int64)
        return self._search_vectors(loaded, vectors, want, QueryInfo("like", len(vectors), "vggish"),
                                    exclude_segments=exclude)

    def _search_text(self, loaded: _Loaded, text: str, want: Depth) -> SearchResponse:
        labelset = loaded.build.labelset()
        weights = labelset.match_text(text)
        r = loaded.ranker
        w = np.zeros(len(labelset), dtype=np.float64)
        for i, x in weights.items():
            w[i] = x
        per_seg = np.bincount(r.label_seg, weights=w[r.label_idx], minlength=r.n_segments)
        # Cover every word first: "dog barking" wants Dog *and* Bark, not a pile of dog-ish labels.
        coverage = _word_coverage(labelset, text, r.label_seg, r.label_idx, r.n_segments)
        if coverage is not None:
            per_seg = np.where(per_seg > 0, coverage + 0.1 * per_seg / max(per_seg.max(), 1e-9), 0.0)
        cand = np.flatnonzero(per_seg > 0)
        if len(cand) == 0:
            return SearchResponse(query=QueryInfo("text", None, None), results=[])
        cand = cand[np.argsort(-per_seg[cand], kind="stable")[:2000]]
        # Evidence per second from the stored per-row label view: where the sound is strongest.
        def evidence(c: np.ndarray):
            lens = r.seg_len[c]
            rows = np.concatenate([np.arange(r.seg_first[s], r.seg_first[s] + n) for s, n in zip(c, lens)])
            return lens, np.repeat(np.arange(len(c)), lens), loaded.build.row_label_probs(rows, len(labelset))

        cand, got = without_gone(cand, evidence)  # clips a refresh deleted after this build was loaded
        if got is None:
            return SearchResponse(query=QueryInfo("text", None, None), results=[])
        lens, owner, probs = got
        ev = probs @ w.astype(np.float32) / max(1e-6, w.sum())
        mean_ev = np.bincount(owner, weights=ev, minlength=len(cand)) / lens
        arg = np.zeros(len(cand), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        for k in range(len(cand)):
            arg[k] = int(np.argmax(ev[starts[k]:starts[k] + lens[k]]))
        label_fit = per_seg[cand] / per_seg[cand].max()
        score = np.clip(0.7 * label_fit + 0.3 * np.clip(mean_ev * 2, 0, 1), 0, 1)
        order = np.argsort(-score, kind="stable")[: want.hits]
        hits = [Hit(segment=int(cand[i]), offset=int(arg[i]), score=float(score[i])) for i in order]
        return SearchResponse(query=QueryInfo("text", None, None), results=self._matches(loaded, hits, want))

    # -- hits → contract ---------------------------------------------------------------------------------
    def _matches(self, loaded: _Loaded, hits: list[Hit], want: Depth) -> list[Match]:
        names = loaded.build.label_names
        out: list[Match] = []
        seen: set[str] = set()
        for h in hits:
            info = loaded.build.segment(h.segment)
            key = info.video_id or info.path or f"seg{info.id}"
            if key in seen:
                continue
            seen.add(key)
            second_in = int(np.clip(h.offset, 0, max(0, info.n_seconds - 1)))
            seg_start = int(round(info.start_seconds))
            start = seg_start + second_in
            labels = [names[i] if i < len(names) else f"label {i}" for i in info.labels]
            if info.source == "library":
                out.append(Match(video_id=None, start_seconds=start, url=timestamped_url(info.url, info.path, start),
                                 score=float(np.clip(h.score, 0, 1)), labels=labels, title=info.title,
                                 source="library", segment_start=seg_start, segment_end=seg_start + info.n_seconds))
            else:
                out.append(Match(video_id=info.video_id, start_seconds=start, url=youtube_url(info.video_id, start),
                                 score=float(np.clip(h.score, 0, 1)), labels=labels, source="audioset",
                                 segment_start=seg_start, segment_end=seg_start + info.n_seconds))
            if len(out) >= want.matches:
                break
        return out


def check_embeddings(value) -> np.ndarray:
    """A query's uint8 [n,128] vectors; anything else is BadQueryError (the CLI contract)."""
    arr = np.asarray(value)
    if arr.dtype != np.uint8:
        raise BadQueryError(f"embeddings must be uint8, got {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 128 or arr.shape[0] == 0:
        raise BadQueryError(f"embeddings must have shape [n,128], got {list(arr.shape)}")
    return np.ascontiguousarray(arr)


def _word_coverage(labelset, text: str, label_seg: np.ndarray, label_idx: np.ndarray,
                   n_segments: int) -> np.ndarray | None:
    """Per segment, the mean over the query's matchable words of the best label weight for that word.

    None when fewer than two words match a label (then coverage adds nothing to the plain sum).
    """
    from core.index.labels import words

    per_word = []
    for word in dict.fromkeys(words(text)):
        try:
            weights = labelset.match_text(word)
        except BadQueryError:
            continue  # a word no label knows ("the", "some") neither helps nor hurts
        w = np.zeros(len(labelset), dtype=np.float64)
        for i, x in weights.items():
            w[i] = x
        best = np.zeros(n_segments, dtype=np.float64)
        np.maximum.at(best, label_seg, w[label_idx])
        per_word.append(best)
    if len(per_word) < 2:
        return None
    return np.mean(per_word, axis=0)


def live_checker(settings) -> LivenessChecker:
    """The liveness checker a front end hands to :class:`Engine` (and closes when it stops), made
    here so the bot and the CLI reach the liveness stage only through the engine."""
    from core.liveness import LivenessChecker

    return LivenessChecker(settings)
