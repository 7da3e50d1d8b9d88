"""The CLI contract end to end (real subprocesses) on the small real index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.index import store

ROOT = Path(__file__).resolve().parent.parent


def echovids(*args: str, data_dir: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    env.pop("ECHOVIDS_DATA_DIR", None)
    argv = [sys.executable, "-m", "bot.cli", *args]
    if data_dir is not None:
        argv += ["--index", str(data_dir)]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("echovids:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def clip(small_index_dir: Path):
    b = store.open_current(small_index_dir)
    seg = b.segment(11)
    first = int(b.segments["seg_first_row"][seg.id])
    return seg, np.asarray(b.vectors[first:first + seg.n_seconds])


def test_embeddings_one_query_and_a_batch(small_index_dir: Path, clip, tmp_path: Path):
    seg, vec = clip
    one = tmp_path / "one.npy"
    np.save(one, vec[2:7])
    p = echovids("search", "--embeddings", str(one), "--json", "--no-live-check", data_dir=small_index_dir)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["query"] == {"kind": "embeddings", "seconds": 5, "model": None}
    r0 = out["results"][0]
    assert r0["video_id"] == seg.video_id and r0["start_seconds"] == int(seg.start_seconds) + 2
    assert set(r0) >= {"video_id", "start_seconds", "url", "score", "labels", "live", "title", "source",
                       "segment_start", "segment_end"}
    assert len(out["results"]) == 5 and r0["live"] == "unchecked"

    batch = tmp_path / "batch.npy"
    np.save(batch, np.stack([vec[0:5], vec[5:10], vec[1:6]]))
    p = echovids("search", "--embeddings", str(batch), "--top", "3", "--no-live-check", data_dir=small_index_dir)
    assert p.returncode == 0, p.stderr
    outs = json.loads(p.stdout)
    assert isinstance(outs, list) and len(outs) == 3
    assert [o["results"][0]["start_seconds"] - int(seg.start_seconds) for o in outs] == [0, 5, 1]
    assert all(len(o["results"]) == 3 for o in outs)


def test_bad_input_and_missing_index_are_one_line_errors(small_index_dir: Path, tmp_path: Path):
    f32 = tmp_path / "f.npy"
    np.save(f32, np.zeros((3, 128), np.float32))
    p = echovids("search", "--embeddings", str(f32), data_dir=small_index_dir)
    assert p.returncode != 0 and "uint8" in _error_line(p)
    shape = tmp_path / "s.npy"
    np.save(shape, np.zeros((3, 64), np.uint8))
    p = echovids("search", "--embeddings", str(shape), data_dir=small_index_dir)
    assert p.returncode != 0 and "shape" in _error_line(p)
    p = echovids("search", "--text", "dog", data_dir=tmp_path / "empty")
    assert p.returncode != 0 and "index build" in _error_line(p)
    p = echovids("search", "--like", "https://vimeo.com/1", data_dir=small_index_dir)
    assert p.returncode != 0 and "YouTube" in _error_line(p)
    p = echovids("search", str(tmp_path / "nope.ogg"), data_dir=small_index_dir)
    assert p.returncode != 0 and "not found" in _error_line(p)


def test_like_text_and_status(small_index_dir: Path, clip):
    seg, _ = clip
    url = f"https://www.youtube.com/watch?v={seg.video_id}&t=1m{int(seg.start_seconds) % 60}s"
    p = echovids("search", "--like", url, "--json", "--no-live-check", data_dir=small_index_dir)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["query"]["kind"] == "like" and out["results"]
    assert seg.video_id not in {r["video_id"] for r in out["results"]}

    p = echovids("search", "--text", "dog barking", "--top", "3", "--no-live-check", data_dir=small_index_dir)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("https://youtu.be/") == 3

    p = echovids("index", "status", "--json", data_dir=small_index_dir)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["manifest"]["counts"]["shard_files"] == 300 and st["size_bytes"] > 0
    p = echovids("index", "status", data_dir=small_index_dir)
    assert p.returncode == 0 and "vectors" in p.stdout

    before = store.read_pointer(small_index_dir)
    p = echovids("index", "build", "--if-missing", data_dir=small_index_dir)
    assert p.returncode == 0 and store.read_pointer(small_index_dir) == before
