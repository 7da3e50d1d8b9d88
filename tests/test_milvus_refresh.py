"""``index refresh`` on a Milvus build deletes the gone clips' rows in place (issue 10), against a real
Milvus server (the ``milvus_uri`` fixture) and the fake YouTube oEmbed endpoint.

One index goes through the whole life: a refresh that deletes, one killed between its pointer swap
and its delete (the next refresh finishes the delete), and one where a left-out video plays again
(that needs rows inserted: a rebuild).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from core.admin import Admin
from core.admin.refresh import refresh_index
from core.config import Settings
from core.engine import Engine
from core.errors import BadQueryError, RowsGoneError
from core.index import store
from core.liveness.cache import LivenessCache
from core.liveness.oembed import OEmbedResult
from core.results import Query
from core.search import Ranker
from tests.fakes.oembed_server import GONE, LIVE, PRIVATE, FakeOEmbed

pytestmark = pytest.mark.slow


def _rows_of(build: store.IndexBuild, segs: list[int]) -> np.ndarray:
    first, lens = build.segments["seg_first_row"], build.segments["seg_len"]
    return np.concatenate([np.arange(first[s], first[s] + lens[s]) for s in segs])


def _clip_vectors(build: store.IndexBuild, seg: int) -> np.ndarray:
    first = int(build.segments["seg_first_row"][seg])
    return build.ann.vectors(np.arange(first, first + min(5, int(build.segments["seg_len"][seg]))))


def test_refresh_on_milvus_deletes_rows_in_place(tmp_path: Path, bal_train_dir: Path, audioset_meta: Path,
                                                 milvus_uri: str, monkeypatch):
    from core.index.builder import build_index
    from core.index.vectorstore_milvus import count_rows, current_collection, open_collection, rows_of_segments

    with FakeOEmbed() as fake:
        settings = Settings(data_dir=tmp_path / "data", audioset_meta=audioset_meta, vector_store="milvus",
                            milvus_uri=milvus_uri, milvus_prefix="refresh", youtube_oembed_url=fake.url)
        build_index(settings, audioset_dirs=sorted(bal_train_dir.glob("*.tfrecord"))[:40])
        engine = Engine(settings)  # a running reader: it reloads the current build before each query
        old = engine.build
        collection = old.manifest["ann"]["collection"]
        total = count_rows(open_collection(settings, collection))
        videos = old.video_ids()
        assert len(videos) > 30 and total == old.size
        dead = [videos[2], videos[9]]
        fake.script(dead[0], GONE)
        fake.script(dead[1], PRIVATE)
        dead_segs = [s.id for v in dead for s in old.segments_of_video(v)]
        dead_rows = int(old.segments["seg_len"][dead_segs].sum())
        probe = _clip_vectors(old, dead_segs[0])  # the dead clip's own seconds: a near-duplicate query
        before = engine.search(Query(kind="embeddings", embeddings=probe, top=3, live_check=False))
        assert before.results[0].video_id == dead[0]

        report = refresh_index(settings, rate_per_s=None, concurrency=16)
        assert report.dead == 2 and report.rebuilt and report.method == "delete" and report.method_reason is None
        assert report.deleted_segments == len(dead_segs) and report.deleted_rows == dead_rows
        assert report.to_json()["method"] == "delete"

        new = store.open_current(settings.data_dir, settings)
        assert str(new.path) == report.new_build and new.path != old.path
        # the same collection and alias, now without the dead clips' rows
        assert new.manifest["ann"]["collection"] == collection == current_collection(settings)
        assert new.manifest["refresh"]["removed_video_ids"] == sorted(dead)
        assert new.manifest["ann"]["deleted"] == {"segments": len(dead_segs), "rows": dead_rows}
        assert rows_of_segments(open_collection(settings, collection), dead_segs) == 0
        assert count_rows(open_collection(settings, collection)) == total - dead_rows == new.size
        # segment numbering is unchanged: a live clip's row ids and metadata are the same
        live_seg = next(s for s in range(10) if s not in dead_segs)
        assert new.segment(live_seg) == old.segment(live_seg)
        np.testing.assert_array_equal(_clip_vectors(new, live_seg), _clip_vectors(old, live_seg))
        # every way in ignores the dead clips
        assert set(new.video_ids()) == set(videos) - set(dead)
        assert all(not new.segments_of_video(v) for v in dead)
        assert Admin(settings).status().videos == len(videos) - 2
        after = engine.search(Query(kind="embeddings", embeddings=probe, top=10, live_check=False))
        assert engine.build.path == new.path  # the running engine reloaded
        assert after.results and not {r.video_id for r in after.results} & set(dead)
        with pytest.raises(BadQueryError, match="not in the index"):
            engine.search(Query(kind="like", like=dead[0], top=5, live_check=False))
        like = engine.search(Query(kind="like", like=videos[0], top=10, live_check=False))
        assert like.results and not {r.video_id for r in like.results} & (set(dead) | {videos[0]})
        dead_labels = [new.label_names[i] for i in old.segment(dead_segs[0]).labels]
        text = engine.search(Query(kind="text", text=dead_labels[0], top=20, live_check=False))
        assert not {r.video_id for r in text.results} & set(dead)
        bridge = engine._current().bridge
        profile = np.zeros(len(new.label_names), np.float32)
        profile[old.segment(dead_segs[0]).labels] = 1.0
        assert not {h.segment for h in bridge.search(profile, top=50)} & set(dead_segs)

        # A reader that opened the old build before the delete: its label candidates still name the
        # dead clips, whose rows are gone. Once the deletion reaches its (Bounded) reads, fetching
        # them says which clips are gone, and its searches leave them out instead of failing.
        stale = store.IndexBuild(old.path, settings)
        deadline = time.monotonic() + 120
        while True:
            try:
                stale.ann.vectors(_rows_of(stale, dead_segs[:1]))
            except RowsGoneError as err:
                assert err.segments == dead_segs[:1]
                break
            stale.ann._cache.clear()
            assert time.monotonic() < deadline, "the deletion never reached a Bounded read"
            time.sleep(0.1)
        hits, _ = Ranker(stale).search(probe, 20)
        assert hits and not {h.segment for h in hits} & set(dead_segs)

        # -- killed between the pointer swap and the delete: the next refresh finishes the delete --
        import core.index.vectorstore_milvus as vm

        more = [videos[4]]
        more_segs = [s.id for v in more for s in new.segments_of_video(v)]
        cache = LivenessCache.for_data_dir(settings.data_dir)
        cache.put(OEmbedResult(more[0], "live"), now=time.time() - 30 * 86400)  # stale again
        fake.script(more[0], GONE)

        class Killed(Exception):
            pass

        def killed(*args, **kwargs):
            raise Killed

        monkeypatch.setattr(vm, "delete_segments", killed)
        with pytest.raises(Killed):
            refresh_index(settings, rate_per_s=None, concurrency=16)
        monkeypatch.undo()
        swapped = store.open_current(settings.data_dir, settings)
        assert swapped.path != new.path and more[0] not in swapped.video_ids()
        assert rows_of_segments(open_collection(settings, collection), more_segs) > 0  # the rows are still there
        probe2 = _clip_vectors(new, more_segs[0])
        got = engine.search(Query(kind="embeddings", embeddings=probe2, top=10, live_check=False))
        assert engine.build.path == swapped.path
        assert not {r.video_id for r in got.results} & set(dead + more)  # the build excludes them

        repair = refresh_index(settings, rate_per_s=None, concurrency=16)
        assert repair.dead == 0 and not repair.rebuilt and repair.method == "delete"
        assert repair.deleted_rows == int(new.segments["seg_len"][more_segs].sum())
        assert rows_of_segments(open_collection(settings, collection), dead_segs + more_segs) == 0
        assert store.open_current(settings.data_dir, settings).path == swapped.path
        again = refresh_index(settings, rate_per_s=None, concurrency=16)
        assert again.method is None and again.deleted_rows == 0  # nothing left to do

        # -- a left-out video plays again: its rows must come back, so this one is a rebuild --
        cache.put(OEmbedResult(dead[0], "gone"), now=time.time() - 90 * 86400)
        fake.script(dead[0], LIVE)
        back = refresh_index(settings, rate_per_s=None, concurrency=16)
        assert back.revived == 1 and back.rebuilt and back.method == "rebuild"
        assert "play again" in back.method_reason
        rebuilt = store.open_current(settings.data_dir, settings)
        assert rebuilt.manifest["ann"]["collection"] != collection
        assert current_collection(settings) == rebuilt.manifest["ann"]["collection"]
        assert dead[0] in rebuilt.video_ids() and not set(rebuilt.video_ids()) & {dead[1], more[0]}
        assert not len(rebuilt.removed_segments)
        back_hit = engine.search(Query(kind="embeddings", embeddings=probe, top=3, live_check=False))
        assert back_hit.results[0].video_id == dead[0]
        cache.close()
