"""The official-release fallback: download once, verify, extract only the wanted split."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from core.audioset_release import ensure_split, extract_split
from core.errors import DownloadError
from core.index.tfrecord import read_shard
from tests.test_fetch import server  # noqa: F401  (the local HTTP file server fixture)


def _release(bal_train_dir: Path, names: list[str]) -> bytes:
    """A tarball in the release's layout holding real bal_train shards (and decoys)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("bal_train", "eval"):
            for name in names:
                tar.add(bal_train_dir / name, arcname=f"audioset_v1_embeddings/{split}/{name}")
        evil = tarfile.TarInfo("audioset_v1_embeddings/bal_train/../../escape.tfrecord")
        payload = (bal_train_dir / names[0]).read_bytes()
        evil.size = len(payload)
        tar.addfile(evil, io.BytesIO(payload))
    return buf.getvalue()


def test_downloads_once_verifies_and_extracts_the_split(server, tmp_path, bal_train_dir):  # noqa: F811
    names = sorted(p.name for p in bal_train_dir.glob("*.tfrecord"))[:5]
    body = _release(bal_train_dir, names)
    server.files["features.tar.gz"] = body
    url = server.base + "/features.tar.gz"
    sha = hashlib.sha256(body).hexdigest()

    out = ensure_split(tmp_path, "bal_train", url=url, sha256=sha)
    extracted = sorted(p.name for p in out.glob("*.tfrecord"))
    assert set(names) <= set(extracted)
    assert not (tmp_path.parent / "escape.tfrecord").exists() and not (tmp_path / "escape.tfrecord").exists()
    # The extracted shards are the real records, byte for byte.
    assert read_shard(out / names[0])[0].video_id == read_shard(bal_train_dir / names[0])[0].video_id
    requests = len(server.requests)
    assert ensure_split(tmp_path, "bal_train", url=url, sha256=sha) == out
    assert len(server.requests) == requests, "a completed split must not be downloaded again"


def test_checksum_mismatch_extracts_nothing(server, tmp_path, bal_train_dir):  # noqa: F811
    names = sorted(p.name for p in bal_train_dir.glob("*.tfrecord"))[:2]
    server.files["features.tar.gz"] = _release(bal_train_dir, names)
    with pytest.raises(DownloadError, match="checksum"):
        ensure_split(tmp_path, url=server.base + "/features.tar.gz", sha256="0" * 64)
    assert not (tmp_path / "audioset" / "bal_train").exists()


def test_archive_without_the_split_is_a_clear_error(tmp_path):
    tarball = tmp_path / "x.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("audioset_v1_embeddings/eval/a.tfrecord")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DownloadError, match="no bal_train"):
        extract_split(tarball, "bal_train", tmp_path / "out")


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(DownloadError, match="unknown AudioSet split"):
        ensure_split(tmp_path, "test")


def test_build_with_nothing_configured_falls_back_to_the_release(monkeypatch, tmp_path, audioset_meta, capsys):
    """No sources, nothing bundled: the builder asks for the official release (here a closed local
    port stands in for being offline) and the user learns in one line what to set instead."""
    from bot.cli import main

    monkeypatch.setattr("core.audioset_release.RELEASE_URL", "http://127.0.0.1:9/features.tar.gz")
    monkeypatch.setenv("ECHOVIDS_TEST_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("ECHOVIDS_AUDIOSET_META", str(audioset_meta))
    monkeypatch.delenv("ECHOVIDS_AUDIOSET_DIR", raising=False)
    assert main(["index", "build", "--index", str(tmp_path / "data")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("echovids:")]
    assert len(err) == 1 and "cannot reach http://127.0.0.1:9/features.tar.gz" in err[0]
    assert "ECHOVIDS_AUDIOSET_DIR" in err[0] and "--audioset DIR" in err[0]
