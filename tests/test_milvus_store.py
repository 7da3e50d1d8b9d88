"""The Milvus vector store against a real Milvus server (started by the ``milvus_uri`` fixture).

Small indexes (a few thousand seconds of bal_train) keep these quick; the same code path serves
millions (see bench/search.py --store milvus).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.engine import Engine
from core.index import store
from core.index.ann import dequantize, exact_search, recall_at_k
from core.index.tfrecord import read_shard
from core.results import Query

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _settings(data: Path, meta: Path, uri: str, prefix: str = "t") -> Settings:
    return Settings(data_dir=data, audioset_meta=meta, vector_store="milvus", milvus_uri=uri, milvus_prefix=prefix)


def _rows(shards: list[Path]) -> np.ndarray:
    """All indexed seconds of these shards in build order (ground truth, read independently)."""
    return np.concatenate([r.embeddings for s in shards for r in read_shard(s) if len(r.embeddings)])


def _pm():
    from core.index.vectorstore_milvus import _pymilvus, connect

    return _pymilvus(), connect


@pytest.fixture(scope="module")
def shards(bal_train_dir: Path) -> list[Path]:
    return sorted(bal_train_dir.glob("*.tfrecord"))[:90]


@pytest.fixture(scope="module")
def milvus_index(tmp_path_factory, shards, audioset_meta: Path, milvus_uri: str) -> Settings:
    from core.index.builder import build_index

    settings = _settings(tmp_path_factory.mktemp("mdata"), audioset_meta, milvus_uri, prefix="main")
    build_index(settings, audioset_dirs=shards[:60])
    return settings


def test_build_keeps_no_rows_locally_and_recall_matches_exact(milvus_index: Settings, shards):
    build = store.open_current(milvus_index.data_dir, milvus_index)
    ann = build.manifest["ann"]
    assert ann["store"] == "milvus" and ann["index"]["index_type"] == "SCANN"
    assert ann["tuned_recall_at_10"] >= 0.95
    assert not (build.path / "vectors.npy").exists() and not (build.path / "row_segment.npy").exists()
    vectors = _rows(shards[:60])
    assert build.size == ann["rows"] == len(vectors)
    # the stored bytes come back exactly (float32 dequantized → requantized)
    rows = np.array([0, 7, len(vectors) // 2, len(vectors) - 1])
    np.testing.assert_array_equal(build.ann.vectors(rows), vectors[rows])
    # recall@10 of held-out-ish queries (noisy indexed seconds) against exact search
    rng = np.random.default_rng(3)
    picks = rng.choice(len(vectors), 80, replace=False)
    x = np.clip(dequantize(vectors[picks]) + rng.normal(0, 0.4, (80, 128)).astype(np.float32), -2, 2)
    q = np.floor((x + 2) * (255 / 4)).astype(np.uint8)
    exact_rows, exact_d = exact_search(vectors, q, 10)
    hits = build.ann.search(q, 10)
    first = build.segments["seg_first_row"]
    got_rows = first[hits.segment] + hits.second
    assert recall_at_k(got_rows, exact_rows, 10) >= 0.95
    np.testing.assert_allclose(hits.distance[:, 0], exact_d[:, 0], rtol=1e-3, atol=1e-2)


def test_engine_answers_with_the_same_contract(milvus_index: Settings):
    engine = Engine(milvus_index)
    build = engine.build
    seg = build.segment(5)
    first = int(build.segments["seg_first_row"][5])
    q = build.ann.vectors(np.arange(first, first + min(5, seg.n_seconds)))
    resp = engine.search(Query(kind="embeddings", embeddings=q, top=3, live_check=False))
    top = resp.results[0]
    assert top.video_id == seg.video_id and top.start_seconds == int(seg.start_seconds)
    assert resp.heard, "the label head's view of the query"
    text = engine.search(Query(kind="text", text="dog barking", top=3, live_check=False))
    assert text.results and any("Dog" in r.labels or "Bark" in r.labels for r in text.results)


def test_like_excludes_the_video_inside_milvus(milvus_index: Settings):
    engine = Engine(milvus_index)
    build = engine.build
    video = build.segment(3).video_id
    ids = np.array([s.id for s in build.segments_of_video(video)])
    first = int(build.segments["seg_first_row"][ids[0]])
    q = build.ann.vectors(np.arange(first, first + 3))
    hits = build.ann.search(q, 20, exclude_segments=ids)
    assert not np.isin(hits.segment, ids).any() and np.isfinite(hits.distance).all()
    resp = engine.search(Query(kind="like", like=video, top=5, live_check=False))
    assert resp.results and video not in {r.video_id for r in resp.results}


def test_alias_switch_is_seen_by_a_running_engine(tmp_path: Path, shards, audioset_meta: Path, milvus_uri: str):
    from core.index.builder import build_index
    from core.index.vectorstore_milvus import alias_name, current_collection

    pm, connect = _pm()
    settings = _settings(tmp_path / "data", audioset_meta, milvus_uri, prefix="swap")
    build_index(settings, audioset_dirs=shards[:20], train_head=False)
    engine = Engine(settings)
    first = engine.build.manifest["ann"]["collection"]
    assert current_collection(settings) == first
    # a video only the second build holds
    new_rec = next(r for r in read_shard(shards[40]) if len(r.embeddings) >= 5)
    q = np.asarray(new_rec.embeddings[:5])
    before = engine.search(Query(kind="embeddings", embeddings=q, top=3, live_check=False))
    assert new_rec.video_id not in {r.video_id for r in before.results}

    build_index(settings, audioset_dirs=shards[20:45], train_head=False)
    second = store.open_current(settings.data_dir, settings).manifest["ann"]["collection"]
    assert second != first and current_collection(settings) == second
    assert alias_name(settings) in pm.utility.list_aliases(second, using=connect(settings))
    after = engine.search(Query(kind="embeddings", embeddings=q, top=3, live_check=False))
    assert after.results[0].video_id == new_rec.video_id
    assert pm.utility.has_collection(first, using=connect(settings)), "one build of grace for readers"

    build_index(settings, audioset_dirs=shards[45:60], train_head=False)
    assert not pm.utility.has_collection(first, using=connect(settings)), "older collections are dropped"
    assert pm.utility.has_collection(second, using=connect(settings))


def test_two_engines_share_one_server(tmp_path: Path, milvus_index: Settings, shards, audioset_meta: Path,
                                      milvus_uri: str):
    from core.index.builder import build_index

    other = _settings(tmp_path / "other", audioset_meta, milvus_uri, prefix="other")
    build_index(other, audioset_dirs=shards[60:90], train_head=False)
    engines = {"main": Engine(milvus_index), "other": Engine(other)}
    expect = {}
    for name, engine in engines.items():
        b = engine.build
        first = int(b.segments["seg_first_row"][2])
        expect[name] = (b.ann.vectors(np.arange(first, first + 4)), b.segment(2).video_id)
    answers: dict[tuple[str, int], str] = {}

    def ask(name: str, i: int) -> None:
        q, _ = expect[name]
        resp = engines[name].search(Query(kind="embeddings", embeddings=q, top=1, live_check=False))
        answers[(name, i)] = resp.results[0].video_id

    threads = [threading.Thread(target=ask, args=(n, i)) for n in engines for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (name, _i), video in answers.items():
        assert video == expect[name][1]
    assert len(answers) == 8


_KILLABLE_SLICE = r"""
import sys
from core.config import load_settings
from core.index import milvus_ingest, vectorstore_milvus
from core.progress import ProgressEvent

settings = load_settings(dotenv=False)
pending = milvus_ingest.open_pending(settings, [sys.argv[1]])
real_insert = vectorstore_milvus.insert_rows
files = [0]

def half_then_hang(collection, vectors, keys, seconds, **kw):
    files[0] += 1
    if files[0] <= 3:
        return real_insert(collection, vectors, keys, seconds, **kw)
    half = max(1, len(vectors) // 2)        # the 4th file: half its rows reach Milvus, then the kill
    real_insert(collection, vectors[:half], keys[:half], seconds[:half], **kw)
    print("half-sent", flush=True)
    sys.stdin.read()                         # wait here until killed

milvus_ingest.insert_rows = half_then_hang
milvus_ingest.ingest_slice(settings, pending, 1, 2)
"""


def test_sharded_build_resumes_after_a_kill(tmp_path: Path, shards, audioset_meta: Path, milvus_uri: str):
    from core.index.milvus_ingest import PENDING

    src = tmp_path / "src"
    src.mkdir()
    for s in shards[:16]:
        os.symlink(s, src / s.name)
    data = tmp_path / "data"
    env = dict(os.environ, ECHOVIDS_VECTOR_STORE="milvus", ECHOVIDS_MILVUS_URI=milvus_uri,
               ECHOVIDS_MILVUS_PREFIX="slices", ECHOVIDS_DATA_DIR=str(data), ECHOVIDS_AUDIOSET_META=str(audioset_meta))
    victim = subprocess.Popen([sys.executable, "-c", _KILLABLE_SLICE, str(src)], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "half-sent"  # a real event: the 4th file is half in Milvus
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    victim.stdin.close()
    victim.stdout.close()
    parts = sorted(p.name for p in (data / PENDING / "parts").glob("*.npz"))
    assert len(parts) == 3, parts  # files 0, 2, 4 of slice 1/2 are recorded; the half-sent one is not

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot.cli", "index", "build", "--audioset", str(src), *args],
                              cwd=ROOT, env=env, capture_output=True, text=True)

    r = cli("--shard", "2/2")
    assert r.returncode == 0, r.stderr
    assert "still running" in r.stderr and not (data / "CURRENT").exists()
    r = cli("--finalize")
    assert r.returncode == 1 and "not ingested yet" in r.stderr
    r = cli("--shard", "1/2")  # resumes: skips the 3 recorded files, re-sends the half-sent one, publishes
    assert r.returncode == 0, r.stderr
    assert "already done" in r.stderr and "3 already done" in r.stderr
    build = store.open_current(data, _settings(data, audioset_meta, milvus_uri, prefix="slices"))
    expected = _rows(sorted(src.glob("*.tfrecord")))
    assert build.size == len(expected)
    from core.index.vectorstore_milvus import count_rows, open_collection

    collection = open_collection(build.settings, build.manifest["ann"]["collection"])
    assert count_rows(collection) == len(expected), "no row inserted twice"
    np.testing.assert_array_equal(build.ann.vectors(np.arange(len(expected))), expected)
    assert not (data / PENDING).exists()
    engine = Engine(build.settings)
    q = expected[100:104]
    resp = engine.search(Query(kind="embeddings", embeddings=q, top=1, live_check=False))
    assert resp.results[0].score >= 0.9  # the clip itself (near-duplicate)
