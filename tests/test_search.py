"""Search behaviour on the small real index: alignment, near-duplicates, labels, text, like-URLs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.engine import Engine, check_embeddings
from core.errors import BadQueryError
from core.index.ann import dequantize
from core.results import Query


@pytest.fixture(scope="module")
def engine(small_index_dir: Path) -> Engine:
    e = Engine(Settings(data_dir=small_index_dir))
    e.warm_up()
    return e


def _clip(engine: Engine, n_min: int = 10, skip: int = 0):
    b = engine.build
    r = engine._current().ranker
    segs = np.flatnonzero(r.seg_len >= n_min)
    sg = int(segs[skip])
    first = int(r.seg_first[sg])
    return b.segment(sg), np.asarray(b.vectors[first:first + int(r.seg_len[sg])])


def test_window_from_an_indexed_clip_comes_back_first_at_its_second(engine: Engine):
    for skip in (0, 7, 42):
        info, vec = _clip(engine, skip=skip)
        resp = engine.search(Query(kind="embeddings", embeddings=vec[3:8], top=5))
        top = resp.results[0]
        assert top.video_id == info.video_id
        assert top.start_seconds == int(info.start_seconds) + 3
        assert top.url == f"https://youtu.be/{info.video_id}?t={int(info.start_seconds) + 3}"
        assert (top.segment_start, top.segment_end) == (int(info.start_seconds), int(info.start_seconds) + 10)
        assert top.live == "unchecked" and top.source == "audioset" and 0.9 <= top.score <= 1.0
        assert len({m.video_id for m in resp.results}) == len(resp.results)  # one result per video
        assert len(resp.results) == 15  # over-fetched 3x for the liveness filter


def test_the_engine_alone_decides_how_deep_a_query_looks(engine: Engine):
    """The ranker returns the hits it is asked for; only the engine over-fetches, and only for the
    liveness filter (nothing is dropped after ranking without it)."""
    _info, vec = _clip(engine)
    hits, _ = engine._current().ranker.search(vec[:5], 7)
    assert len(hits) == 7 and len({h.segment for h in hits}) == 7
    assert len(engine.search(Query(kind="embeddings", embeddings=vec[:5], top=4, live_check=False)).results) == 4
    assert len(engine.search(Query(kind="text", text="dog barking", top=4, live_check=False)).results) == 4


def test_noisy_windows_still_find_their_clip_and_second(engine: Engine):
    rng = np.random.default_rng(3)
    r = engine._current().ranker
    ok = 0
    trials = 40
    segs = rng.choice(np.flatnonzero(r.seg_len >= 5), trials, replace=False)
    for sg in segs:
        n = int(r.seg_len[sg])
        st = int(rng.integers(0, n - 4))
        q = np.asarray(engine.build.vectors[r.seg_first[sg] + st:r.seg_first[sg] + st + 5])
        noisy = dequantize(q) + rng.normal(0, 0.25, q.shape)
        qn = np.floor((np.clip(noisy, -2, 2) + 2) * 255 / 4).astype(np.uint8)
        hits, _ = r.search(qn, 1)
        ok += hits[0].segment == sg and abs(hits[0].offset - st) <= 1
    assert ok / trials >= 0.95


def test_label_fit_prefers_segments_that_share_the_query_labels(engine: Engine):
    loaded = engine._current()
    r, names = loaded.ranker, loaded.build.label_names
    dog = names.index("Dog")
    p = np.zeros(527, np.float32)
    p[dog] = 0.9
    scores = r.label_scores(p)
    has_dog = np.array([dog in r.label_idx[r.label_ptr[i]:r.label_ptr[i + 1]] for i in range(r.n_segments)])
    assert has_dog.any()
    assert scores[has_dog].min() > scores[~has_dog].max()


def test_text_query_finds_labelled_segments(engine: Engine):
    resp = engine.search(Query(kind="text", text="dog barking", top=5))
    assert resp.query.kind == "text" and resp.results
    for m in resp.results[:5]:
        assert {"Dog", "Bark", "Bow-wow", "Yip", "Howl", "Whimper (dog)", "Canidae, dogs, wolves"} & set(m.labels)
        assert m.segment_start <= m.start_seconds < m.segment_end
    with pytest.raises(BadQueryError):
        engine.search(Query(kind="text", text="qwzxv", top=5))


def test_like_excludes_the_video_and_honours_t(engine: Engine):
    info, _vec = _clip(engine, skip=3)
    vid, s0 = info.video_id, int(info.start_seconds)
    for ref in (vid, f"https://www.youtube.com/watch?v={vid}&t={s0 + 2}s", f"https://youtu.be/{vid}?t={s0 + 2}",
                f"https://youtube.com/shorts/{vid}", f"https://www.youtube.com/embed/{vid}?start={s0}"):
        resp = engine.search(Query(kind="like", like=ref, top=5))
        assert resp.query.kind == "like" and resp.results
        assert vid not in {m.video_id for m in resp.results}
    with pytest.raises(BadQueryError, match="not in the index"):
        engine.search(Query(kind="like", like="https://youtu.be/AAAAAAAAAAA", top=5))


def test_embeddings_must_be_uint8_n_by_128():
    assert check_embeddings(np.zeros((3, 128), np.uint8)).shape == (3, 128)
    for bad in (np.zeros((3, 128), np.float32), np.zeros((3, 64), np.uint8), np.zeros((0, 128), np.uint8),
                np.zeros((2, 3, 128), np.uint8)):
        with pytest.raises(BadQueryError):
            check_embeddings(bad)


def test_reload_switches_to_a_new_build(small_index_dir: Path, bal_train_dir: Path, tmp_path: Path):
    import shutil

    from core.index import store
    from core.index.builder import build_index

    data = tmp_path / "data"
    shutil.copytree(small_index_dir, data)
    e = Engine(Settings(data_dir=data))
    n0 = e.index_size
    assert e.reload() is False
    meta = Path(store.open_current(data).manifest["sources"]["audioset"][0]).parent
    shards = sorted(bal_train_dir.glob("*.tfrecord"))[:40]
    build_index(Settings(data_dir=data, audioset_meta=_meta_dir(bal_train_dir)), audioset_dirs=shards, train_head=False)
    assert e.reload() is True
    assert e.index_size != n0
    assert meta  # the manifest names its sources


def _meta_dir(bal_train_dir: Path) -> Path:
    return bal_train_dir.parent.parent / "audioset_meta"


def test_text_query_covers_every_word_first(engine: Engine):
    """'dog barking' wants segments labelled Dog *and* Bark before ones with only dog-ish labels."""
    names = engine.build.label_names
    dog, bark = names.index("Dog"), names.index("Bark")
    csr = engine.build.segments
    ptr, idx = csr["label_ptr"], csr["label_idx"]
    both = sum(1 for i in range(len(ptr) - 1) if {dog, bark} <= set(idx[ptr[i]:ptr[i + 1]].tolist()))
    assert both >= 1, "the small index should hold a barking-dog clip"
    resp = engine.search(Query(kind="text", text="dog barking", top=min(both, 5), live_check=False))
    assert len(resp.results) == min(both, 5)
    for m in resp.results:
        assert {"Dog", "Bark"} <= set(m.labels), m.labels


def test_word_coverage_prefers_all_words_over_many_labels(audioset_meta: Path):
    """A clip labelled Dog + Bark covers 'dog barking'; one labelled Animal + Domestic animals + Dog
    carries more dog-ish weight in total but covers only one word, and must score lower."""
    from core.engine import _word_coverage
    from core.index.labels import load_labels

    labels = load_labels(audioset_meta)
    ids = {n: labels.names.index(n) for n in ("Dog", "Bark", "Animal", "Domestic animals, pets")}
    seg = np.array([0, 0, 0, 1, 1])
    idx = np.array([ids["Animal"], ids["Domestic animals, pets"], ids["Dog"], ids["Dog"], ids["Bark"]])
    many, both = _word_coverage(labels, "dog barking", seg, idx, 2)
    assert both > many and both == pytest.approx(1.0)
    assert _word_coverage(labels, "dog", seg, idx, 2) is None  # one word: the plain sum decides


def test_heard_is_the_querys_own_label_head_prediction_not_its_neighbours(engine: Engine):
    """VGGish mode: "heard" comes from the label head on the query's vectors (core.heard's policy),
    while ranking may also use the acoustic neighbours' labels."""
    from core.heard import heard

    loaded = engine._current()
    r = loaded.ranker
    assert r.params.w_knn > 0  # ranking does mix the neighbours' labels in
    _, vec = _clip(engine, skip=11)
    q = vec[2:7]
    hits, probs = r.search(q, 5)
    own = loaded.build.labelhead.predict_clip(q)
    np.testing.assert_array_equal(probs, own)
    resp = engine.search(Query(kind="embeddings", embeddings=q, top=5, live_check=False))
    assert resp.heard == heard(own, loaded.ontology)
    assert 1 <= len(resp.heard) <= 5 and all(0 <= h.score <= 1 for h in resp.heard)
