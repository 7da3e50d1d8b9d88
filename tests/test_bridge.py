"""The label bridge: ranking by labels, timestamps at the strongest second, the build's file layout,
and the whole offline path (synthesized audio → YAMNet → bridge over real bal_train segments)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from core.bridge import LabelBridge, query_profile
from core.errors import BadQueryError
from core.hit import Hit

SPEECH, MUSIC, DOG, BARK, CAT = 0, 137, 74, 75, 81  # AudioSet indices (class_labels_indices.csv)


def _bridge(probs: np.ndarray, row_segment, row_second, seg_labels, **kw) -> LabelBridge:
    """The bridge over dense per-second probabilities ``[N, labels]``, kept as the top-8 view a build
    stores (uint16 label ids, uint8 probability x 255: core.labelhead.top_k_view's layout)."""
    k = min(8, probs.shape[1])
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    p = np.round(np.clip(np.take_along_axis(probs, top, 1), 0, 1) * 255).astype(np.uint8)
    ptr = np.concatenate([[0], np.cumsum([len(x) for x in seg_labels])]).astype(np.int64)
    flat = np.array([c for x in seg_labels for c in x], dtype=np.int64)
    return LabelBridge(row_segment, row_second, ptr, flat, top.astype(np.uint16), p, n_labels=probs.shape[1], **kw)


def _toy(n_speech: int = 30) -> tuple[LabelBridge, list[list[int]]]:
    """Segments: 0 dog+bark, 1 cat, 2 music, then `n_speech` speech-only ones; 4 seconds each.

    Per-second probabilities are what a label head would predict: the dog barks loudest at second 2.
    """
    seg_labels = [[DOG, BARK], [CAT], [MUSIC]] + [[SPEECH]] * n_speech
    n_seg = len(seg_labels)
    probs = np.zeros((n_seg * 4, 527), np.float32)
    probs[0:4, DOG] = [0.3, 0.5, 0.9, 0.4]
    probs[0:4, BARK] = [0.1, 0.4, 0.8, 0.2]
    probs[0:4, SPEECH] = 0.2
    probs[4:8, CAT] = [0.7, 0.8, 0.6, 0.5]
    probs[8:12, MUSIC] = [0.9, 0.2, 0.9, 0.95]
    probs[12:, SPEECH] = np.linspace(0.5, 0.95, n_speech * 4)
    row_segment = np.repeat(np.arange(n_seg, dtype=np.int32), 4)
    row_second = np.tile(np.arange(4, dtype=np.int16), n_seg)
    return _bridge(probs, row_segment, row_second, seg_labels), seg_labels


def _profile(**labels: float) -> np.ndarray:
    v = np.zeros(527, np.float32)
    for name, p in labels.items():
        v[globals()[name.upper()]] = p
    return v


def test_rare_label_beats_ubiquitous_speech_and_is_timestamped_at_its_peak():
    bridge, _ = _toy()
    # A voice note of someone talking while a dog barks: Speech is stronger than Dog.
    hits = bridge.search(_profile(speech=0.7, dog=0.5, bark=0.4), top=5)
    assert isinstance(hits[0], Hit)
    assert hits[0].segment == 0, hits[:3]
    assert hits[0].offset == 2  # the bark peaks at second 2
    assert 0 < hits[0].score <= 1
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # The rest are speech segments (they share Speech), the louder speech first.
    assert {h.segment for h in hits[1:]} <= set(range(3, 33))
    assert hits[1].segment == 32 and hits[1].offset == 3


def test_each_family_finds_its_own_segment():
    bridge, seg_labels = _toy()
    assert bridge.search(_profile(cat=0.8), top=1)[0].segment == 1
    music = bridge.search(_profile(music=0.9), top=3)
    assert music[0].segment == 2 and music[0].offset == 3
    assert len(music) == 1  # nothing else shares a label: no filler with score 0
    assert all(SPEECH in seg_labels[h.segment] for h in bridge.search(_profile(speech=0.9), top=10))


def test_per_window_probabilities_are_pooled():
    bridge, _ = _toy()
    # A cat for three windows of a six-window note: "top" keeps each label's best three (the heard profile).
    windows = np.stack([_profile(cat=0.9), _profile(cat=0.7), _profile(cat=0.8)] + [_profile(speech=0.1)] * 3)
    np.testing.assert_allclose(query_profile(windows, "top"), _profile(cat=0.8, speech=0.1), rtol=1e-6)
    np.testing.assert_allclose(query_profile(windows), windows.mean(0))
    np.testing.assert_allclose(query_profile(windows, "max"), windows.max(0))
    assert bridge.search(windows, top=1)[0].segment == 1


def test_over_labelled_segments_do_not_win_by_carrying_everything():
    seg_labels = [[DOG], list(range(40, 120))]  # segment 1 carries 80 labels, Dog among them
    probs = np.zeros((2, 527), np.float32)
    probs[0, DOG] = 0.8
    probs[1, 40:48] = 0.5
    probs[1, DOG] = 0.5
    b = _bridge(probs, np.array([0, 1]), np.array([0, 0]), seg_labels)
    assert b.search(_profile(dog=0.8), top=2)[0].segment == 0


def test_exclude_segments_and_top():
    bridge, _ = _toy()
    hits = bridge.search(_profile(dog=0.8, bark=0.6), top=3, exclude_segments=[0])
    assert 0 not in [h.segment for h in hits]
    assert len(bridge.search(_profile(speech=0.9), top=7)) == 7
    assert bridge.search(_profile(speech=0.9), top=0) == []


def test_without_a_row_view_clip_labels_still_rank():
    ptr = np.array([0, 1, 3, 4])  # segments: Speech; Dog, Bark; Music
    b = LabelBridge(np.repeat([0, 1, 2], 2), np.tile([0, 1], 3), ptr, np.array([SPEECH, DOG, BARK, MUSIC]))
    hits = b.search(_profile(dog=0.6, bark=0.5), top=3)
    assert hits[0].segment == 1 and hits[0].offset == 0  # no seconds to choose from: the start


def test_rows_need_not_be_grouped_by_segment():
    probs = np.zeros((6, 527), np.float32)
    probs[:, DOG] = [0.2, 0.1, 0.9, 0.3, 0.1, 0.2]
    row_segment = np.array([0, 1, 0, 1, 0, 1])
    row_second = np.array([0, 0, 1, 1, 2, 2])
    b = _bridge(probs, row_segment, row_second, [[DOG], [DOG]])
    hits = b.search(_profile(dog=0.9), top=2)
    assert [(h.segment, h.offset) for h in hits] == [(0, 1), (1, 1)]  # row 2 is segment 0's second 1


def test_segments_without_clip_labels_are_reached_through_their_seconds():
    probs = np.zeros((6, 527), np.float32)
    probs[0:3, CAT] = [0.6, 0.9, 0.5]  # segment 0: a library file with no labels, cat-like seconds
    probs[3:6, SPEECH] = 0.9
    b = _bridge(probs, np.repeat([0, 1], 3), np.tile([0, 1, 2], 2), [[], [SPEECH]])
    hit = b.search(_profile(cat=0.8), top=2)
    assert [(h.segment, h.offset) for h in hit] == [(0, 1)]


def test_bad_label_vectors_are_bad_queries():
    bridge, _ = _toy()
    with pytest.raises(BadQueryError):
        bridge.search(np.zeros(521, np.float32))
    with pytest.raises(BadQueryError):
        bridge.search(np.full(527, np.nan, np.float32))
    with pytest.raises(BadQueryError):
        bridge.search(np.zeros((0, 527), np.float32))
    assert bridge.search(np.zeros(527, np.float32)) == []  # nothing heard: nothing to match


def test_concurrent_first_queries_prepare_once_and_agree():
    bridge, _ = _toy(200)
    expected_bridge, _ = _toy(200)
    q = _profile(speech=0.7, dog=0.4)
    expected = expected_bridge.search(q, top=10)
    out: list[list[Hit]] = []
    threads = [threading.Thread(target=lambda: out.append(bridge.search(q, top=10))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(out) == 6 and all(o == expected for o in out)


# -- the build's own file layout (core.index.store) -------------------------------------------------
def test_from_build_reads_the_store_layout(tmp_path: Path):
    """Arrays written with the names and dtypes core.index.store documents, opened by IndexBuild."""
    from core.index.store import IndexBuild

    bridge_ref, seg_labels = _toy(5)
    build = tmp_path / "build"
    build.mkdir()
    n_seg = len(seg_labels)
    np.save(build / "row_segment.npy", np.repeat(np.arange(n_seg, dtype=np.int32), 4))
    np.save(build / "row_second.npy", np.tile(np.arange(4, dtype=np.int16), n_seg))
    ptr = np.zeros(n_seg + 1, np.int64)
    ptr[1:] = np.cumsum([len(x) for x in seg_labels])
    np.savez(build / "segments.npz", seg_first_row=np.arange(n_seg) * 4, seg_len=np.full(n_seg, 4),
             seg_start=np.zeros(n_seg), label_ptr=ptr, label_idx=np.concatenate(seg_labels).astype(np.int32))
    idx, p = bridge_ref._row_idx, bridge_ref._row_p
    np.save(build / "row_labels_idx.npy", np.asarray(idx, np.uint16))
    np.save(build / "row_labels_p.npy", np.asarray(p, np.uint8))
    (build / "manifest.json").write_text(json.dumps({"counts": {"vectors": n_seg * 4}}))
    names = [f"label {i}" for i in range(527)]
    names[SPEECH], names[MUSIC] = "Speech", "Music"
    (build / "labels.json").write_text(json.dumps({"names": names, "mids": [f"/m/{i}" for i in range(527)]}))
    b = LabelBridge.from_build(IndexBuild(build))
    assert b.ubiquitous.tolist() == [SPEECH, MUSIC]  # the build's names say which labels are everywhere
    q = _profile(speech=0.7, dog=0.5, bark=0.4)
    assert b.search(q, top=5) == bridge_ref.search(q, top=5)
    # A build without the label view still answers by clip labels.
    (build / "row_labels_idx.npy").unlink()
    (build / "row_labels_p.npy").unlink()
    assert LabelBridge.from_build(IndexBuild(build)).search(q, top=1)[0].segment == 0


# -- the whole offline path on real data -------------------------------------------------------------
@pytest.fixture(scope="module")
def index_bridge(small_index_dir: Path):
    """The bridge over the shared small real index (core.index.builder over ~300 bal_train shards)."""
    from core.index.store import open_current

    build = open_current(small_index_dir)
    assert build.row_labels is not None, "the builder stores the per-second label view"
    return LabelBridge.from_build(build).warm(), build


@pytest.fixture(scope="module")
def yamnet(tmp_path_factory: pytest.TempPathFactory, yamnet_model_path: Path, audioset_meta: Path):
    from core.yamnet import YamnetModel

    return YamnetModel(yamnet_model_path, audioset_labels_path=audioset_meta / "class_labels_indices.csv")


def _family(audioset_meta: Path, root: str) -> set[int]:
    from core.index.labels import load_labels

    return load_labels(audioset_meta).family(root)


@pytest.mark.parametrize("kind,root", [("speech", "Speech"), ("chords", "Music")])
def test_synthesized_audio_finds_segments_of_its_family(kind, root, index_bridge, yamnet, audioset_meta,
                                                        tmp_path: Path):
    """The offline path without VGGish: real audio → YAMNet → the build's label space → bridge."""
    from core.audio import decode_audio
    from tests.media import make_voice_note

    if kind == "speech":
        path = make_voice_note(tmp_path / "note.ogg", seconds=6.0, kind="speech")
    else:
        from tests.test_yamnet import CHORDS

        path = tmp_path / "chords.wav"
        subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", CHORDS, str(path)], check=True, capture_output=True, timeout=60)
    samples = decode_audio(path).samples
    family = _family(audioset_meta, root)
    assert yamnet.heard(samples)[0].label in {yamnet.audioset_names[i] for i in family}
    bridge, build = index_bridge
    probs = yamnet.audioset_scores(samples, label_mids=build.labelset().mids)
    hits = bridge.search(probs, top=5)
    assert len(hits) == 5
    infos = [build.segment(h.segment) for h in hits]
    assert all(family & set(info.labels) for info in infos), [info.labels for info in infos]
    for h, info in zip(hits, infos):
        assert 0 <= h.offset < info.n_seconds


# -- the ontology rules (core.heard.Ontology given to the bridge) -----------------------------------
def _ontology(ambiguous: tuple[int, ...] = ()):
    from core.heard import Ontology

    names = [f"label {i}" for i in range(527)]
    names[DOG], names[BARK], names[CAT] = "Dog", "Bark", "Cat"
    return Ontology.from_children(names, {DOG: [BARK]}, ambiguous)


def _dog_bark_cat_index() -> tuple[list[list[int]], np.ndarray, np.ndarray, np.ndarray]:
    """Segment 0 is labelled Dog only, segment 1 Bark only, segment 2 Cat; then speech fillers."""
    seg_labels = [[DOG], [BARK], [CAT]] + [[SPEECH]] * 20
    probs = np.zeros((len(seg_labels) * 2, 527), np.float32)
    for s, labs in enumerate(seg_labels):
        probs[2 * s:2 * s + 2, labs] = 0.8
    row_segment = np.repeat(np.arange(len(seg_labels), dtype=np.int32), 2)
    row_second = np.tile(np.arange(2, dtype=np.int16), len(seg_labels))
    return seg_labels, probs, row_segment, row_second


def test_family_idf_counts_segments_labelled_with_a_descendant():
    seg_labels, probs, rs, rsec = _dog_bark_cat_index()
    plain = _bridge(probs, rs, rsec, seg_labels).warm()
    bridge = _bridge(probs, rs, rsec, seg_labels, ontology=_ontology()).warm()
    # Dog's document frequency counts the Bark segment too (a bark is a dog sound), so Dog is the
    # commoner, less telling label; leaves are unchanged.
    assert plain.idf[DOG] == plain.idf[BARK]
    assert bridge.idf[DOG] < bridge.idf[BARK] == plain.idf[BARK]
    # Equal confidence in the parent and the child: the segment with the child comes first.
    hits = bridge.search(_profile(dog=0.5, bark=0.5), top=2)
    assert [h.segment for h in hits] == [1, 0]


def test_ambiguous_labels_weigh_nothing():
    seg_labels, probs, rs, rsec = _dog_bark_cat_index()
    bridge = _bridge(probs, rs, rsec, seg_labels, ontology=_ontology(ambiguous=(CAT,)))
    hits = bridge.search(_profile(cat=0.9, dog=0.3), top=3)
    assert hits[0].segment == 0 and 2 not in {h.segment for h in hits}
    with pytest.raises(ValueError):
        _bridge(probs[:, :500], rs, rsec, seg_labels, ontology=_ontology())


def test_a_label_implies_its_ancestors():
    seg_labels, probs, rs, rsec = _dog_bark_cat_index()
    given = _bridge(probs, rs, rsec, seg_labels, ontology=_ontology(), implied=False)
    implied = _bridge(probs, rs, rsec, seg_labels, ontology=_ontology())
    # A query for "Dog": the segment labelled only "Bark" is a dog sound too.
    assert [h.segment for h in given.search(_profile(dog=0.8), top=3)] == [0]
    assert {h.segment for h in implied.search(_profile(dog=0.8), top=3)} == {0, 1}


def test_damping_counts_the_implied_labels_too():
    """A segment labelled only with a child must not outrank one labelled with the parent and the
    query's own child just because the ancestors it implies came free of damping."""
    from core.heard import Ontology

    YIP = 76
    names = [f"label {i}" for i in range(527)]
    onto = Ontology.from_children(names, {DOG: [BARK, YIP]})
    seg_labels = [[YIP], [DOG, BARK]] + [[SPEECH]] * 20
    probs = np.zeros((len(seg_labels) * 2, 527), np.float32)
    for s, labs in enumerate(seg_labels):
        probs[2 * s:2 * s + 2, labs] = 0.8
    bridge = _bridge(probs, np.repeat(np.arange(len(seg_labels)), 2), np.tile([0, 1], len(seg_labels)),
                     seg_labels, ontology=onto)
    hits = bridge.search(_profile(dog=0.9, bark=0.1), top=2)
    assert [h.segment for h in hits] == [1, 0]
