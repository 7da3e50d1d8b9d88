"""The liveness cache: TTL per state, WAL, and concurrent readers beside a writer process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.liveness.cache import DAY, TTL, LivenessCache
from core.liveness.oembed import OEmbedResult

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_roundtrip_and_wal(tmp_path):
    cache = LivenessCache.for_data_dir(tmp_path)
    cache.put(OEmbedResult("aaaaaaaaaaa", "live", "A title", "A channel", 200))
    entry = cache.get("aaaaaaaaaaa")
    assert (entry.state, entry.title, entry.channel) == ("live", "A title", "A channel")
    assert entry.fresh()
    assert cache.get("bbbbbbbbbbb") is None
    cache.close()
    assert (tmp_path / "liveness.sqlite").exists()
    mode = sqlite3.connect(tmp_path / "liveness.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_ttl_per_state(tmp_path):
    cache = LivenessCache(tmp_path / "c.sqlite")
    now = 1_000_000.0
    states = ["live", "unembeddable", "private", "gone", "invalid", "unknown"]
    cache.put_many([OEmbedResult(f"video_{s:<5}"[:11], s) for s in states], now=now)
    entries = {e.state: e for e in cache.get_many(f"video_{s:<5}"[:11] for s in states).values()}
    ttl = TTL()
    for state, entry in entries.items():
        assert entry.expires_at - entry.checked_at == ttl.of(state)
    # the orders of magnitude: live days, gone/private weeks, unknown minutes
    assert 1 * DAY <= ttl.live < 14 * DAY
    assert ttl.gone >= 7 * DAY and ttl.private >= 7 * DAY
    assert 60 <= ttl.unknown <= 3600
    # an hour later only "unknown" has expired
    assert {e.state for e in entries.values() if not e.fresh(now + 3600)} == {"unknown"}
    assert {e.state for e in entries.values() if not e.fresh(now + 8 * DAY)} == {"unknown", "live", "unembeddable"}


def test_unknown_keeps_what_we_knew(tmp_path):
    cache = LivenessCache(tmp_path / "c.sqlite")
    cache.put(OEmbedResult("aaaaaaaaaaa", "live", "Title", "Chan"))
    cache.put(OEmbedResult("aaaaaaaaaaa", "unknown", detail="timeout"))
    entry = cache.get("aaaaaaaaaaa")
    assert entry.state == "unknown" and entry.title == "Title" and entry.channel == "Chan"


def test_unknown_after_retry_after_lives_at_least_that_long(tmp_path):
    cache = LivenessCache(tmp_path / "c.sqlite", ttl=TTL(unknown=60))
    cache.put(OEmbedResult("aaaaaaaaaaa", "unknown", retry_after=3600), now=0)
    assert cache.get("aaaaaaaaaaa").expires_at == 3600


def test_stale_and_dead_ids(tmp_path):
    cache = LivenessCache(tmp_path / "c.sqlite")
    now = time.time()
    cache.put_many([OEmbedResult("fresh_live1", "live"), OEmbedResult("gone_vid_01", "gone"),
                    OEmbedResult("private_vid", "private")], now=now)
    cache.put(OEmbedResult("old_live_01", "live"), now=now - 30 * DAY)
    cache.put(OEmbedResult("unknown_vid", "unknown"), now=now - 3600)
    ids = ["fresh_live1", "gone_vid_01", "private_vid", "old_live_01", "unknown_vid", "never_asked"]
    assert cache.stale_ids(ids, now=now) == ["old_live_01", "unknown_vid", "never_asked"]
    assert cache.dead_ids() == {"gone_vid_01", "private_vid"}


def test_threads_each_get_a_connection(tmp_path):
    cache = LivenessCache(tmp_path / "c.sqlite")
    errors: list[BaseException] = []

    def write(start):
        try:
            for i in range(start, start + 200):
                cache.put(OEmbedResult(f"v{i:010d}", "live"))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.count() == 800


WRITER = """
import sys
sys.path.insert(0, {root!r})
from core.liveness.cache import LivenessCache
from core.liveness.oembed import OEmbedResult
cache = LivenessCache({path!r})
for i in range(1500):
    cache.put(OEmbedResult(f"w{{i:010d}}", "gone" if i % 3 == 0 else "live", f"title {{i}}"))
print("done")
"""


def test_readers_beside_a_writer_process(tmp_path):
    """The bot reads while `index refresh` (another process) writes: no reader error, no lost write.

    The reader's busy timeout is zero, so a read that had to wait for the writer would fail at once
    with "database is locked": that WAL readers never wait is checked without timing anything."""
    path = tmp_path / "liveness.sqlite"
    LivenessCache(path).close()  # schema (and WAL mode) in place before the writer starts
    cache = LivenessCache(path, busy_timeout_s=0)
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(PROJECT_ROOT), path=str(path))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads, errors = 0, []
    ids = [f"w{i:010d}" for i in range(0, 1500, 7)]
    while writer.poll() is None:
        try:
            got = cache.get_many(ids)
            assert all(e.title for e in got.values())
        except Exception as err:  # noqa: BLE001
            errors.append(err)
        reads += 1
    out, err = writer.communicate()
    assert writer.returncode == 0, err
    assert out.strip() == "done"
    assert not errors
    assert reads > 0
    assert cache.count() == 1500
    assert len(cache.dead_ids()) == 500


def test_a_reader_never_waits_for_an_open_write_transaction(tmp_path):
    """A writer holds its transaction open (uncommitted): a reader with no patience at all still
    reads, and sees the last committed state."""
    import sqlite3

    path = tmp_path / "liveness.sqlite"
    LivenessCache(path).put(OEmbedResult("aaaaaaaaaaa", "live"))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE checks SET state = 'gone'")
    try:
        reader = LivenessCache(path, busy_timeout_s=0)
        assert reader.get("aaaaaaaaaaa").state == "live"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
