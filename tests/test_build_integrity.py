"""Corrupt builds (issue 11 #4) and stale temporaries (#9).

A build is verified when it becomes current and whenever it is opened (sizes and digests from the
manifest, format version); a broken current build falls back to the newest intact one with a
warning, and with none intact the error is IndexBrokenError. Files truncated *while* serving must
give a clean error or a fallback, never a SIGBUS: those scenarios run in a child process, so a
SIGBUS would show as the child's signal exit instead of killing the test run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.errors import IndexBrokenError, IndexMissingError
from core.index import store

PROJECT_ROOT = Path(__file__).resolve().parent.parent
OLDER = "20000101T000000-older0"  # sorts before any real build id


def private_copy(small_index_dir: Path, dst: Path, *, with_older: bool) -> tuple[Path, Path, Path | None]:
    """(data dir, current build, older intact build or None): a copy the test may damage."""
    shutil.copytree(small_index_dir, dst, symlinks=True, ignore=shutil.ignore_patterns("liveness.sqlite*"))
    current = store.current_path(dst)
    older = None
    if with_older:
        older = dst / store.BUILDS / OLDER
        shutil.copytree(current, older)
    return dst, current, older


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def test_manifest_records_format_sizes_and_digests(small_index_dir: Path):
    build = store.open_current(small_index_dir)
    m = build.manifest
    assert m["format"] == store.FORMAT_VERSION == 2
    files = m["files"]
    assert {"vectors.npy", "segments.sqlite", "row_segment.npy", "scann/0/dataset.npy"} <= set(files)
    assert store.BUILDING_LOCK not in files and store.MANIFEST not in files
    for rel, rec in files.items():
        assert (build.path / rel).stat().st_size == rec["size"]
    assert store.verify_build(build.path)["build_id"] == build.build_id
    assert not build.is_fallback


@pytest.mark.parametrize("damage", ["vectors", "scann", "sqlite", "flipped byte", "format"])
def test_broken_current_build_falls_back_to_the_newest_intact_one(small_index_dir, tmp_path, caplog, damage):
    data, current, older = private_copy(small_index_dir, tmp_path / "data", with_older=True)
    if damage == "vectors":
        truncate(current / "vectors.npy", 1000)
    elif damage == "scann":
        truncate(current / "scann" / "0" / "dataset.npy", 4096)
    elif damage == "sqlite":
        truncate(current / "segments.sqlite", 4096)
    elif damage == "flipped byte":  # same size, different content: only the digest sees it
        with open(current / "row_second.npy", "r+b") as f:
            f.seek(200)
            byte = f.read(1)
            f.seek(200)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        manifest = json.loads((current / "manifest.json").read_text())
        manifest["format"] = 99
        (current / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="echovids.index"):
        build = store.open_current(data)
    assert build.path == older and build.is_fallback and build.pointer == current.name
    assert any(r.levelno == logging.WARNING and "serving the older build" in r.getMessage() for r in caplog.records)
    assert store.read_pointer(data) == current.name  # nothing rewritten: a rebuild repairs it


def test_no_intact_build_is_index_broken_error(small_index_dir, tmp_path):
    data, current, _ = private_copy(small_index_dir, tmp_path / "data", with_older=False)
    truncate(current / "scann" / "0" / "dataset.npy", 4096)
    with pytest.raises(IndexBrokenError, match="broken"):
        store.open_current(data)
    from core.engine import Engine

    with pytest.raises(IndexBrokenError):  # start-up: a typed error, never a traceback crash loop
        Engine(Settings(data_dir=data)).warm_up()


def test_cli_truncated_scann_dataset_is_one_line_not_a_traceback(small_index_dir, tmp_path):
    data, current, _ = private_copy(small_index_dir, tmp_path / "data", with_older=False)
    truncate(current / "scann" / "0" / "dataset.npy", 4096)
    q = tmp_path / "q.npy"
    np.save(q, np.zeros((3, 128), np.uint8))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    run = subprocess.run([sys.executable, "-m", "bot.cli", "search", "--embeddings", str(q), "--index", str(data),
                          "--no-live-check", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("echovids: the current index")


def test_index_status_says_when_it_serves_a_fallback(small_index_dir, tmp_path, capsys):
    from bot.cli import main
    from bot.cogs.moderation import status_embed
    from core.admin import Admin
    from core.config import Settings

    data, current, older = private_copy(small_index_dir, tmp_path / "data", with_older=True)
    truncate(current / "vectors.npy", 1000)
    assert main(["index", "status", "--index", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"WARNING: the current build {current.name} is broken" in out and f"serving {OLDER}" in out
    assert main(["index", "status", "--index", str(data), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["current"] == OLDER and status["fallback"]["current"] == current.name
    embed = status_embed(Admin(Settings(data_dir=data)).status(), None)
    fields = {f.name: f.value for f in embed.fields}
    assert current.name in fields["⚠️ Fallback build"] and OLDER in fields["⚠️ Fallback build"]


def test_a_build_that_fails_verification_never_becomes_current(bal_train_dir, audioset_meta, tmp_path, monkeypatch):
    from core.index import builder

    settings = Settings(data_dir=tmp_path / "data", audioset_meta=audioset_meta)
    shards = sorted(bal_train_dir.glob("*.tfrecord"))[:10]
    first = builder.build_index(settings, audioset_dirs=shards, train_head=False)
    real = store.record_files

    def short_write(build_dir):  # as if a file lost its tail after being recorded
        files = real(build_dir)
        truncate(Path(build_dir) / "vectors.npy", 500)
        return files

    monkeypatch.setattr(store, "record_files", short_write)
    with pytest.raises(IndexBrokenError, match="vectors.npy"):
        builder.build_index(settings, audioset_dirs=shards, train_head=False)
    assert store.open_current(settings.data_dir).path == first
    assert not list((settings.data_dir / store.BUILDS).glob(".tmp-*"))


SERVING = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
import numpy as np
from core.config import Settings
from core.engine import Engine
from core.errors import EchoVidsError
from core.results import Query

engine = Engine(Settings(data_dir=Path({data!r})))
engine.warm_up()
vectors = np.array(engine.build.vectors[100:105])  # a copy: the query must not live in the map
first = engine.search(Query(kind="embeddings", embeddings=vectors, top=3, live_check=False))
print("before", engine.build.build_id, len(first.results), flush=True)
with open({victim!r}, "r+b") as f:
    f.truncate(128)          # the file shrinks under the running process's memory map
try:
    again = engine.search(Query(kind="embeddings", embeddings=vectors, top=3, live_check=False))
    print("after", engine.build.build_id, len(again.results), flush=True)
except EchoVidsError as err:
    print("error", type(err).__name__, err, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("with_older", [True, False], ids=["fallback", "no-fallback"])
def test_vectors_truncated_while_serving_never_sigbus(small_index_dir, tmp_path, with_older):
    data, current, older = private_copy(small_index_dir, tmp_path / "data", with_older=with_older)
    script = SERVING.format(root=str(PROJECT_ROOT), data=str(data), victim=str(current / "vectors.npy"))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode != -signal.SIGBUS, "SIGBUS: a memory map was read past the file's end"
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith(f"before {current.name} ")
    if with_older:
        assert lines[1].startswith(f"after {OLDER} ") and int(lines[1].split()[-1]) > 0
        assert "serving the older build" in run.stderr
    else:
        assert lines[1].startswith("error IndexBrokenError")


# -- stale temporaries (#9) -------------------------------------------------------------------------

HOLDER = """
import sys
sys.path.insert(0, {root!r})
from core.index import store
tmp, _ = store.new_build_dir({data!r})
print(tmp, flush=True)
sys.stdin.read()      # hold the build's lock until the test closes our stdin
"""


def test_stale_temporaries_go_but_a_running_builds_folder_stays(tmp_path):
    data = tmp_path / "data"
    # A build still running in another process (started first: every build start cleans up).
    running = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(PROJECT_ROOT), data=str(data))],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        running_tmp = Path(running.stdout.readline().strip())
        # A build that was killed: its folder and lock file remain, the lock itself died with it.
        killed = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(PROJECT_ROOT), data=str(data))],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        killed_tmp = Path(killed.stdout.readline().strip())
        (killed_tmp / "vectors.npy").write_bytes(b"\0" * 4096)
        killed.kill()
        killed.wait()
        killed.stdin.close()
        killed.stdout.close()
        assert killed_tmp.is_dir() and running_tmp.is_dir()
        # An old folder from before build locks (no lock file), and a fresh one (maybe just made).
        legacy, fresh = data / store.BUILDS / ".tmp-legacy", data / store.BUILDS / ".tmp-fresh"
        legacy.mkdir()
        fresh.mkdir()
        old = os.stat(legacy).st_mtime - store.LOCKLESS_TMP_AGE_S - 60
        os.utime(legacy, (old, old))

        mine, _ = store.new_build_dir(data)  # what every build does first
        assert not killed_tmp.exists() and not legacy.exists()
        assert running_tmp.is_dir() and fresh.is_dir() and mine.is_dir()
        store.discard_build(mine)
    finally:
        running.stdin.close()
        running.wait(timeout=30)
        running.stdout.close()
    store.remove_stale_temporaries(data)  # its writer is gone now
    assert not running_tmp.exists()


def test_build_removes_stale_temporaries_before_ingesting(tmp_path, audioset_meta):
    """The clean-up runs at the start of a build, even one that then fails on its sources."""
    from core.index import builder

    stale = tmp_path / "data" / store.BUILDS / ".tmp-20200101T000000-dead00"
    stale.mkdir(parents=True)
    (stale / store.BUILDING_LOCK).write_text("12345\n")
    (tmp_path / "empty").mkdir()
    with pytest.raises(builder.BuildError, match="no .tfrecord files"):
        builder.build_index(Settings(data_dir=tmp_path / "data", audioset_meta=audioset_meta),
                            audioset_dirs=[tmp_path / "empty"])
    assert not stale.exists()


def test_missing_pointer_is_still_index_missing(tmp_path):
    with pytest.raises(IndexMissingError, match="index build"):
        store.open_current(tmp_path)
