"""Ingest, build directories and the atomic current pointer, on real bal_train shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.errors import IndexMissingError
from core.index import store
from core.index.tfrecord import ShardError, iter_tfrecord, parse_sequence_example, read_shard


def test_reader_matches_tensorflow(bal_train_dir: Path):
    import tensorflow as tf

    shard = bal_train_dir / "--.tfrecord"
    ours = read_shard(shard, check_data_crc=True)
    theirs = [tf.train.SequenceExample.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(shard))]
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        ctx = b.context.feature
        assert a.video_id == ctx["video_id"].bytes_list.value[0].decode()
        assert a.start_time_seconds == pytest.approx(ctx["start_time_seconds"].float_list.value[0])
        assert a.labels == list(ctx["labels"].int64_list.value)
        frames = b.feature_lists.feature_list["audio_embedding"].feature
        expect = np.stack([np.frombuffer(f.bytes_list.value[0], np.uint8) for f in frames])
        np.testing.assert_array_equal(a.embeddings, expect)
    first = ours[0]
    assert (first.video_id, first.start_time_seconds, first.labels, len(first.embeddings)) == ("--cB2ZVjpnA", 30.0, [399], 10)


def test_corrupt_shards_raise_typed_errors(bal_train_dir: Path, tmp_path: Path):
    data = (bal_train_dir / "--.tfrecord").read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match="cut.tfrecord"):
        read_shard(tmp_path / "cut.tfrecord")
    flipped = bytearray(data)
    flipped[3] ^= 0xFF  # the length header: its CRC no longer matches
    (tmp_path / "flip.tfrecord").write_bytes(bytes(flipped))
    with pytest.raises(ShardError, match="checksum"):
        read_shard(tmp_path / "flip.tfrecord")
    with pytest.raises(ValueError):
        parse_sequence_example(b"\x0a\x05garbage")
    assert list(iter_tfrecord(b"")) == []


def _settings(data_dir: Path, meta: Path) -> Settings:
    return Settings(data_dir=data_dir, audioset_meta=meta)


def test_small_index_layout_and_timestamps(small_index_dir: Path, bal_train_dir: Path):
    build = store.open_current(small_index_dir)
    m = build.manifest
    assert m["counts"]["shard_files"] == 300 and m["counts"]["bad_shards"] == 0
    assert m["embedder"] == "vggish" and m["vector_dtype"] == "uint8"
    assert build.size == len(build.vectors) == len(build.row_segment) == len(build.row_second)
    assert isinstance(build.vectors, np.memmap)
    assert m["ann"]["shards"][0]["kind"] == "brute"  # small N: exact
    ids = build.video_ids()
    assert len(ids) == len(set(ids)) == m["counts"]["videos"]
    # every row maps back to its record's seconds: start_time_seconds + frame index
    from tests.index_fixtures import small_shards

    records = [r for s in small_shards(bal_train_dir) for r in read_shard(s)]
    short = next(r for r in records if len(r.embeddings) < 10)
    info = build.segments_of_video(short.video_id)[0]
    assert info.n_seconds == len(short.embeddings) and info.start_seconds == short.start_time_seconds
    first = int(build.segments["seg_first_row"][info.id])
    np.testing.assert_array_equal(build.vectors[first:first + info.n_seconds], short.embeddings)
    assert list(build.row_second[first:first + info.n_seconds]) == list(range(info.n_seconds))
    assert info.labels == short.labels
    # the per-row label view the YAMNet bridge reads
    idx, p = build.row_labels
    assert idx.shape == p.shape == (build.size, 8) and p.dtype == np.uint8
    dense = build.row_label_probs(np.arange(5))
    assert dense.shape == (5, 527) and 0 <= dense.min() and dense.max() <= 1
    probs = build.labelhead.predict(np.asarray(build.vectors[:3]))
    assert probs.shape == (3, 527) and probs.dtype == np.float32


def test_bad_shards_are_skipped_counted_and_named(bal_train_dir: Path, audioset_meta: Path, tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted(bal_train_dir.glob("*.tfrecord"))[:20]:
        shutil.copy(p, src / p.name)
    (src / "zz-truncated.tfrecord").write_bytes((bal_train_dir / "--.tfrecord").read_bytes()[:100])
    (src / "zz-garbage.tfrecord").write_bytes(b"not a tfrecord at all" * 10)
    from core.index.builder import build_index

    path = build_index(_settings(tmp_path / "data", audioset_meta), audioset_dirs=[src])
    m = json.loads((path / "manifest.json").read_text())
    assert m["counts"]["bad_shards"] == 2 and m["counts"]["shard_files"] == 22
    assert any("zz-truncated" in p for p in m["problems"]) and any("zz-garbage" in p for p in m["problems"])
    assert m["counts"]["segments"] > 50


def test_failed_build_leaves_current_untouched(bal_train_dir: Path, audioset_meta: Path, tmp_path: Path, monkeypatch):
    from core.index import ann, builder

    shards = sorted(bal_train_dir.glob("*.tfrecord"))[:15]
    settings = _settings(tmp_path / "data", audioset_meta)
    with pytest.raises(IndexMissingError):
        store.open_current(settings.data_dir)
    first = builder.build_index(settings, audioset_dirs=shards[:10], train_head=False)
    assert store.open_current(settings.data_dir).path == first

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ann, "build_ann", boom)
    with pytest.raises(RuntimeError):
        builder.build_index(settings, audioset_dirs=shards)
    current = store.open_current(settings.data_dir)
    assert current.path == first
    assert not list((settings.data_dir / "builds").glob(".tmp-*"))
    monkeypatch.undo()
    # exclusions and a rebuild from the manifest's own sources
    excluded = current.video_ids()[:3]
    second = builder.build_index(settings, exclude_video_ids=frozenset(excluded), train_head=False)
    rebuilt = store.open_current(settings.data_dir)
    assert rebuilt.path == second != first
    assert rebuilt.manifest["counts"]["excluded_records"] == 3
    assert set(excluded).isdisjoint(rebuilt.video_ids())
    assert rebuilt.manifest["sources"] == current.manifest["sources"]


def test_missing_index_is_a_clear_error(tmp_path: Path):
    with pytest.raises(IndexMissingError, match="index build"):
        store.open_current(tmp_path)
    (tmp_path / "CURRENT").write_text("nope\n")
    with pytest.raises(IndexMissingError, match="incomplete"):
        store.open_current(tmp_path)


def test_sharded_ann_matches_exact_search(small_index_dir: Path, tmp_path: Path):
    from core.index.ann import AnnIndex, build_ann, exact_search, recall_at_k

    vec = np.asarray(store.open_current(small_index_dir).vectors[:12_000])
    manifest = build_ann(vec, tmp_path / "scann", shard_rows=5_000)
    assert [s["rows"] for s in manifest["shards"]] == [4_000, 4_000, 4_000]
    ann = AnnIndex.load(tmp_path / "scann", manifest)
    q = vec[::997]
    rows, d = ann.search(q, 10)
    exact, exact_d = exact_search(vec, q, 10)
    assert recall_at_k(rows, exact, 10) == 1.0
    np.testing.assert_allclose(d, exact_d, rtol=1e-4, atol=1e-2)
    assert (rows[:, 0] == np.arange(0, 12_000, 997)).all()  # each query finds itself first


def test_shard_count_bounds_the_swap_and_the_memory():
    from core.index.ann import MAX_SWAP_SHARDS, SWAP_SHARD_ROWS, shard_count

    assert shard_count(SWAP_SHARD_ROWS) == 1
    assert shard_count(220_270) == 4                       # bal_train: four quick loads, not one slow one
    assert shard_count(MAX_SWAP_SHARDS * SWAP_SHARD_ROWS) == MAX_SWAP_SHARDS
    # beyond that the swap bound cannot be kept: only memory splits (20.8 M: 5 shards of 4.16 M)
    assert shard_count(20_800_000) == 5
    assert shard_count(20_800_000, shard_rows=1_000_000) == 21


def test_left_out_queries_take_one_second_of_distinct_segments():
    from core.index.ann import left_out_queries

    lens = np.random.default_rng(5).integers(1, 12, 3000)
    row_segment = np.repeat(np.arange(3000) * 7 + 3, lens)  # sparse keys, like a sharded Milvus build
    rows = left_out_queries(row_segment, 120, seed=0)
    assert len(rows) == 120 and (np.diff(rows) > 0).all()
    assert len(np.unique(row_segment[rows])) == 120  # one query second per left-out segment
    assert (left_out_queries(row_segment, 120, seed=0) == rows).all()
    assert not (left_out_queries(row_segment, 120, seed=1) == rows).all()
    # a small index: the queries come from a tenth of its segments, several seconds each
    few = row_segment[:lens[:300].sum()]
    small = left_out_queries(few, 200, seed=0)
    assert len(np.unique(few[small])) <= 30 and len(small) == min(200, np.isin(few, few[small]).sum())
    assert len(np.unique(small)) == len(small)


def test_milvus_tuning_truth_leaves_the_query_segments_out(bal_train_dir: Path):
    """The exact top 10 of each tuning query comes from other clips only, and Milvus is asked to
    leave the same clips out; with every clip kept a query's own seconds would lead its list."""
    from core.index.ann import exact_search
    from core.index.vectorstore_milvus import SECOND_BITS, _tuning_set, choose_nlist

    records = [r for s in sorted(bal_train_dir.glob("*.tfrecord"))[:40] for r in read_shard(s) if len(r.embeddings)]
    vectors = np.concatenate([r.embeddings for r in records])
    lens = np.array([len(r.embeddings) for r in records])
    keys = np.repeat(np.arange(len(records), dtype=np.int64) * 5 + 1, lens)
    seconds = np.arange(len(vectors)) - np.repeat(np.cumsum(lens) - lens, lens)
    q, exact_pk, _, leave_out = _tuning_set(vectors, keys, seconds, 60, seed=0)
    out = np.array([int(x) for x in leave_out[leave_out.index("[") + 1:-1].split(",")])
    assert leave_out.startswith("segment not in [") and len(q) == 60
    assert len(out) <= len(records) // 10  # most of the index stays in
    assert not np.isin(exact_pk >> SECOND_BITS, out).any()
    kept = ~np.isin(keys, out)
    first, _ = exact_search(vectors[kept], q, 1)
    first_pk = (keys[kept][first[:, 0]] << SECOND_BITS) | seconds[kept][first[:, 0]]
    assert (exact_pk[:, 0] == first_pk).all()
    # one IVF per segment: nlist follows the segment size Milvus seals at, not the collection's
    assert choose_nlist(220_270) == choose_nlist(1_000_000) == choose_nlist(20_800_000) == 1024
    assert choose_nlist(5_000) < 1024


def test_milvus_tuning_recall_counts_equally_near_rows():
    """Real clips repeat seconds exactly (silence): a different row at the exact 10th distance is a hit."""
    from core.index.vectorstore_milvus import _recall_with_ties

    exact_pk = np.arange(10)[None, :]
    exact_d = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]], np.float32)
    same = _recall_with_ties(exact_pk, exact_d, exact_pk, exact_d)
    tied = _recall_with_ties(np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 99]]), exact_d, exact_pk, exact_d)
    farther = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9.5]], np.float32)
    missed = _recall_with_ties(np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 99]]), farther, exact_pk, exact_d)
    short = _recall_with_ties(np.array([[0, 1, 2, -1, -1, -1, -1, -1, -1, -1]]),
                              np.array([[0, 1, 2] + [np.inf] * 7], np.float32), exact_pk, exact_d)
    assert [float(r[0]) for r in (same, tied, missed, short)] == [1.0, 1.0, 0.9, 0.3]


def test_int8_reranked_shards_keep_no_float_copy_and_stay_exact_enough(bal_train_dir: Path, tmp_path: Path):
    """The rows are 8-bit, so ScaNN's int8 re-ranking loses next to nothing; the float dataset it
    also writes is never loaded, so it is not kept."""
    from core.index.ann import AnnIndex, build_ann, exact_search, recall_at_k
    from core.index.tfrecord import read_shard

    vec = np.concatenate([r.embeddings for p in sorted(bal_train_dir.glob("*.tfrecord"))[:1400]
                          for r in read_shard(p)])[:66_000]
    manifest = build_ann(vec, tmp_path / "scann")
    assert [(s["kind"], s["rows"], s["int8_reorder"]) for s in manifest["shards"]] == [("ah", 33_000, True)] * 2
    for s in manifest["shards"]:
        files = {p.name for p in (tmp_path / "scann" / s["dir"]).iterdir()}
        assert "int8_dataset.npy" in files and "dataset.npy" not in files
    ann = AnnIndex.load(tmp_path / "scann", manifest)
    q = vec[::661]
    rows, d = ann.search(q, 10)
    exact, exact_d = exact_search(vec, q, 10)
    assert recall_at_k(rows, exact, 10) >= 0.95
    # each query finds itself (or an identical second) first: int8 puts a self-match at ~0.5 instead
    # of 0, while other neighbours here lie 100+ away and the ranker's similarity is exp(-d / 60)
    assert (d[:, 0] < 1.0).all() and (exact_d[:, 0] < 1e-3).all()


def test_parallel_shard_reading_keeps_order_and_reports_bad_files(bal_train_dir: Path, tmp_path: Path):
    from core.index.builder import _read_shards

    shards = sorted(bal_train_dir.glob("*.tfrecord"))[:220]
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(b"\x00" * 40)
    paths = shards[:100] + [bad] + shards[100:]
    out = list(_read_shards(paths))
    assert [p for p, _ in out] == paths
    assert isinstance(out[100][1], ShardError)
    assert [r.video_id for r in out[0][1]] == [r.video_id for r in read_shard(shards[0])]


def test_tuning_takes_a_setting_only_when_its_recall_is_surely_above_the_target():
    """A tuning sample whose mean lands on the target could fall either side of it on the next
    build: with per-query recalls and a confidence z, the tuner goes one step wider instead."""
    from core.index.ann import cheapest_reaching

    rng = np.random.default_rng(0)
    spread = {8: 0.90, 16: 0.97, 32: 0.99}  # mean recall per breadth
    per_query = {b: np.clip(m + rng.normal(0, 0.05, 200), 0, 1) for b, m in spread.items()}
    per_query = {b: v - v.mean() + spread[b] for b, v in per_query.items()}  # exact means

    plain, _ = cheapest_reaching([8, 16, 32], [100], lambda b, r: float(per_query[b].mean()), 0.97)
    sure, tried = cheapest_reaching([8, 16, 32], [100], lambda b, r: per_query[b], 0.97, confidence_z=1.645)
    assert plain[0] == 16 and sure[0] == 32
    assert [t[0] for t in tried] == [8, 16, 32] and all(len(t) == 4 and t[3] < t[2] for t in tried)
    assert tried[1][2] == 0.97 and tried[1][3] < 0.97 <= tried[2][3]
