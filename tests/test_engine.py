"""The Engine facade: audio queries through VGGish, the liveness hand-off, and own-library builds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.engine import Engine
from core.errors import ModelMissingError
from core.results import Match, Query


class FakeLiveness:
    """Stands in for core.liveness.LivenessChecker: marks every other result gone."""

    def __init__(self):
        self.calls: list[tuple[int, int, float]] = []

    async def filter(self, matches: list[Match], want: int, budget_s: float) -> list[Match]:
        self.calls.append((len(matches), want, budget_s))
        kept = [m for i, m in enumerate(matches) if i % 2 == 0]
        for m in kept:
            m.live = "live"
        return kept[:want]


def _vec(small_index_dir: Path) -> np.ndarray:
    from core.index import store

    b = store.open_current(small_index_dir)
    return np.asarray(b.vectors[20:25])


def test_answer_over_fetches_then_filters_or_trims(small_index_dir: Path):
    live = FakeLiveness()
    e = Engine(Settings(data_dir=small_index_dir, live_budget_s=0.7), liveness=live)
    q = Query(kind="embeddings", embeddings=_vec(small_index_dir), top=4)
    resp = asyncio.run(e.answer(q))
    assert live.calls == [(12, 4, 0.7)]
    assert len(resp.results) == 4 and all(m.live == "live" for m in resp.results)
    q.live_check = False
    resp = asyncio.run(e.answer(q))
    assert len(live.calls) == 1 and len(resp.results) == 4 and resp.results[0].live == "unchecked"
    assert resp.index_size == e.index_size > 0 and e.manifest["embedder"] == "vggish"


def test_audio_query_needs_the_checkpoint(small_index_dir: Path, tmp_path: Path):
    from tests.media import make_voice_note

    note = make_voice_note(tmp_path / "n.ogg", seconds=3.0)
    e = Engine(Settings(data_dir=small_index_dir), checkpoint=tmp_path / "missing.ckpt")
    with pytest.raises(ModelMissingError, match="model fetch"):
        e.search(Query(kind="audio", audio=str(note)))


@pytest.mark.slow
def test_audio_query_and_library_build(small_index_dir: Path, bal_train_dir: Path, audioset_meta: Path,
                                       vggish_checkpoint: Path, pca_params_path: Path, tmp_path: Path):
    from core.index import store
    from core.index.builder import build_index
    from tests.media import make_media, make_voice_note

    e = Engine(Settings(data_dir=small_index_dir), checkpoint=vggish_checkpoint, pca_params=pca_params_path)
    note = make_voice_note(tmp_path / "note.ogg", seconds=5.0, kind="speech")
    resp = e.search(Query(kind="audio", audio=note.read_bytes(), top=5))
    assert resp.query.kind == "audio" and resp.query.model == "vggish" and resp.query.seconds in (4, 5)
    assert len(resp.results) == 15 and all(0 <= m.score <= 1 for m in resp.results)

    lib = tmp_path / "lib"
    make_media(lib / "tone.wav", "wav", seconds=6.0, kind="tone")
    make_media(lib / "sub" / "noise.mp3", "mp3", seconds=4.0, kind="noise")
    (lib / "notes.txt").write_text("not audio")
    (lib / "library.csv").write_text("path,url,title\ntone.wav,https://www.youtube.com/watch?v=abcdefghijk,My tone\n")
    settings = Settings(data_dir=tmp_path / "data", audioset_meta=audioset_meta,
                        vggish_checkpoint_env=vggish_checkpoint, vggish_pca_params_env=pca_params_path)
    build_index(settings, audioset_dirs=sorted(bal_train_dir.glob("*.tfrecord"))[:20], library_dirs=[lib])
    b = store.open_current(settings.data_dir)
    assert b.manifest["counts"]["library_segments"] == 2
    assert b.manifest["sources"]["library"] == [str(lib.resolve())]
    seg = next(s for s in (b.segment(i) for i in range(b.manifest["counts"]["segments"])) if s.title == "My tone")
    assert seg.source == "library" and seg.video_id is None and seg.n_seconds == 6
    first = int(b.segments["seg_first_row"][seg.id])
    q = np.asarray(b.vectors[first + 1:first + 5])
    le = Engine(settings)
    top = le.search(Query(kind="embeddings", embeddings=q, top=3)).results[0]
    assert top.source == "library" and top.video_id is None and top.title == "My tone"
    # a steady tone has near-identical seconds, so any aligned second is right; the link carries it
    assert 0 <= top.start_seconds <= 2 and (top.segment_start, top.segment_end) == (0, 6)
    expect = "https://www.youtube.com/watch?v=abcdefghijk"
    assert top.url == (expect + f"&t={top.start_seconds}" if top.start_seconds else expect)
