"""``index refresh``: complete, resumable (nothing lost, nothing asked twice), polite, and atomic."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.config import Settings
from core.liveness.cache import LivenessCache
from core.liveness.oembed import OEmbedResult
from core.admin.refresh import refresh_index
from core.progress import ProgressEvent
from tests.fakes.oembed_server import GONE, INVALID, LIVE, PRIVATE, RESET, UNEMBEDDABLE, FakeOEmbed, error, ratelimit

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def ids(n: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i:010d}"[:11] for i in range(n)]


@pytest.fixture
def fake():
    with FakeOEmbed() as server:
        yield server


def settings_for(data_dir: Path, fake: FakeOEmbed) -> Settings:
    return Settings(data_dir=data_dir, youtube_oembed_url=fake.url)


def test_check_phase_states_and_second_run_is_free(fake, tmp_path):
    vids = ids(40)
    fake.script(vids[0], GONE)
    fake.script(vids[1], PRIVATE)
    fake.script(vids[2], INVALID)
    fake.script(vids[3], UNEMBEDDABLE)
    fake.script(vids[4], error(503), error(502), RESET)  # never recovers: unknown after retries
    fake.script(vids[5], error(503))
    fake.script(vids[6], error(500), error(500), LIVE)  # recovers on the last retry
    events: list[ProgressEvent] = []
    report = refresh_index(settings_for(tmp_path, fake), dry_run=True, progress=events.append,
                           video_ids=vids, rate_per_s=None, max_retries=2, concurrency=4)
    assert report.indexed == 40 and report.stale == 40 and report.checked == 40
    assert report.states == {"live": 34, "gone": 1, "private": 1, "invalid": 1, "unembeddable": 1, "unknown": 2}
    assert report.dead == 3 and report.dead_by_state == {"gone": 1, "private": 1, "invalid": 1}
    assert report.unknown == 2 and not report.rebuilt and report.stopped is None
    assert fake.requests[vids[6]] == 3 and fake.requests[vids[5]] == 3  # retried, then gave up
    # progress: one "check" stage that counts to the total
    checks = [e for e in events if e.stage == "check"]
    assert checks[0].done == 0 and checks[-1].done == checks[-1].total == 40 and checks[-1].unit == "videos"
    assert [e.done for e in checks] == sorted(e.done for e in checks)

    fake.reset_counts()
    again = refresh_index(settings_for(tmp_path, fake), dry_run=True, video_ids=vids, rate_per_s=None,
                          max_retries=0)
    # every answer is fresh (even "unknown", for minutes): nothing to ask
    assert again.stale == 0 and fake.total_requests == 0
    assert again.dead == 3


def test_long_retry_after_stops_politely(fake, tmp_path):
    vids = ids(30)
    fake.script(vids[0], ratelimit("3600"))
    report = refresh_index(settings_for(tmp_path, fake), video_ids=vids, rate_per_s=None, concurrency=1,
                           max_retry_after_s=5)
    assert report.stopped and "wait 3600 s" in report.stopped
    assert fake.total_requests == 1  # nothing more asked while YouTube said wait
    assert not report.rebuilt


CHILD = """
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from core.config import Settings
from core.admin.refresh import refresh_index
vids = [f"v{{i:010d}}"[:11] for i in range({n})]
def progress(e):
    print(e.done, flush=True)
refresh_index(Settings(data_dir=Path({data!r}), youtube_oembed_url={url!r}), video_ids=vids,
              rate_per_s=None, concurrency=4, progress=progress, dry_run=True)
print("finished", flush=True)
"""


def test_killed_refresh_resumes_without_loss_or_repeats(fake, tmp_path):
    """SIGKILL mid-check (no chance to clean up), then resume: every answer the killed run reported
    is kept, and the resumed run asks exactly the videos without an answer, once each."""
    n = 200
    vids = ids(n)
    fake.latency_s = 0.02
    for v in vids[::9]:
        fake.script(v, GONE)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=str(PROJECT_ROOT), n=n, data=str(tmp_path), url=fake.url)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while sum(fake.completed.values()) < 60 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    out, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err
    assert "finished" not in out
    reported = max((int(x) for x in out.split()), default=0)
    first_run = dict(fake.requests)

    cache = LivenessCache.for_data_dir(tmp_path)
    answered = set(cache.get_many(vids))
    assert 30 <= len(answered) < n  # killed mid-way (answers in flight at the kill are simply not there)
    assert len(answered) >= reported  # nothing the killed run reported as done was lost
    assert all(first_run.get(v) == 1 for v in answered)

    fake.reset_counts()
    report = refresh_index(settings_for(tmp_path, fake), video_ids=vids, rate_per_s=None, concurrency=4,
                           dry_run=True)
    assert report.stale == n - len(answered) == report.checked
    assert all(fake.requests[v] == 0 for v in answered)           # nothing asked twice
    assert all(fake.requests[v] == 1 for v in vids if v not in answered)
    assert set(cache.get_many(vids)) == set(vids)                  # nothing lost
    assert report.dead == len(vids[::9])


# -- the full refresh: checks, rebuild without the dead, atomic swap --------------------------------

def copy_data_dir(src: Path, dst: Path) -> Path:
    """A private copy of the shared small index (a refresh swaps builds; others use the original)."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("liveness.sqlite*"))
    return dst


@pytest.mark.slow
def test_full_refresh_rebuilds_without_dead_and_swaps_atomically(fake, tmp_path, small_index_dir, audioset_meta):
    from core.index.store import open_current

    data = copy_data_dir(small_index_dir, tmp_path / "data")
    old = open_current(data)
    old_path, old_ids = old.path, old.video_ids()
    assert len(old_ids) > 20
    gone, private, invalid = old_ids[3], old_ids[10], old_ids[17]
    fake.script(gone, GONE)
    fake.script(private, PRIVATE)
    fake.script(invalid, INVALID)
    fake.script(old_ids[5], UNEMBEDDABLE)  # still plays: must stay

    seen: list[tuple[str, Path, int]] = []  # (stage, current build, its video count) per build event

    def progress(event: ProgressEvent) -> None:
        if event.stage != "check":
            current = open_current(data)
            seen.append((event.stage, current.path, len(current.video_ids())))

    settings = settings_for(data, fake).with_overrides(audioset_meta=audioset_meta)
    report = refresh_index(settings, progress=progress, rate_per_s=None, concurrency=16)
    assert report.checked == len(old_ids) and report.stopped is None
    assert report.dead == 3 and report.rebuilt

    # While the new build was being made the old one stayed current (what the bot serves), in full;
    # the switch happened once, at the end, and never went back.
    paths = [p for _, p, _ in seen]
    switch = paths.index(Path(report.new_build)) if Path(report.new_build) in paths else len(paths)
    assert switch >= 2, seen
    assert all(p == old_path and n == len(old_ids) for _, p, n in seen[:switch])
    assert all(p == Path(report.new_build) for p in paths[switch:])
    assert old_path.exists()  # readers that opened it keep working after the swap

    new = open_current(data)
    assert new.path != old_path and str(new.path) == report.new_build
    new_ids = set(new.video_ids())
    assert new_ids == set(old_ids) - {gone, private, invalid}
    assert old_ids[5] in new_ids
    assert new.manifest.get("sources") == old.manifest.get("sources")

    # a second refresh finds everything fresh and nothing to drop: no requests, no rebuild
    fake.reset_counts()
    again = refresh_index(settings, rate_per_s=None)
    assert again.stale == 0 and fake.total_requests == 0 and not again.rebuilt
    assert open_current(data).path == new.path

    # Weeks later the gone video plays again: once its answer expires it is asked about again
    # (although it is no longer in the build) and the rebuild brings it back; the others stay out.
    LivenessCache.for_data_dir(data).put(OEmbedResult(gone, "gone"), now=time.time() - 90 * 86400)
    fake.script(gone, LIVE)
    fake.reset_counts()
    back = refresh_index(settings, rate_per_s=None)
    assert fake.total_requests == 1 and fake.requests[gone] == 1
    assert back.revived == 1 and back.rebuilt and back.dead == 0
    assert set(open_current(data).video_ids()) == set(old_ids) - {private, invalid}


def test_a_refresh_that_lost_its_lock_publishes_nothing(fake, tmp_path, small_index_dir, audioset_meta, monkeypatch):
    """The last step before a refresh makes its build current is confirming it still holds its lock
    (on Milvus a stalled refresh can lose its lease to another): refused there, the finished build
    is discarded and the old one stays current. The takeover itself is tested against a real Milvus
    in test_milvus_lock.py; here the confirmation is made to refuse."""
    from core.index import lock as lock_module
    from core.index.store import BUILDS, open_current, read_pointer

    data = copy_data_dir(small_index_dir, tmp_path / "data")
    before, builds = read_pointer(data), sorted(p.name for p in (data / BUILDS).iterdir())
    old_ids = open_current(data).video_ids()
    fake.script(old_ids[2], GONE)
    asked: list[bool] = []

    def refuse(self) -> None:
        asked.append(True)
        raise lock_module.LockLostError("taken over")

    monkeypatch.setattr(lock_module.RefreshLock, "confirm", refuse)
    settings = settings_for(data, fake).with_overrides(audioset_meta=audioset_meta)
    with pytest.raises(lock_module.LockLostError):
        refresh_index(settings, rate_per_s=None)
    assert asked == [True]  # asked once, after the whole rebuild, before the swap
    assert read_pointer(data) == before
    assert sorted(p.name for p in (data / BUILDS).iterdir()) == builds  # the new build was discarded
    assert lock_module.refresh_holder(data) is None  # and the lock released


@pytest.mark.slow
def test_cli_dry_run_changes_nothing_and_reports(fake, tmp_path, small_index_dir, monkeypatch, capsys):
    from bot.cli import main
    from core.index.store import open_current

    data = copy_data_dir(small_index_dir, tmp_path / "data")
    old = open_current(data)
    vids = old.video_ids()
    # the CLI checks at the polite default rate (10/s): pre-answer most videos, leave 8 stale
    LivenessCache.for_data_dir(data).put_many(OEmbedResult(v, "live") for v in vids[8:])
    fake.script(vids[0], GONE)
    monkeypatch.setenv("YOUTUBE_OEMBED_URL", fake.url)
    assert main(["index", "refresh", "--index", str(data), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert f"{len(vids):,} indexed videos" in out.out
    assert "dry run: a refresh would rebuild the index without these 1 videos" in out.out
    assert "8 needed a check" in out.out
    assert "check" in out.err  # the progress bar went to stderr
    assert fake.total_requests == 8
    assert open_current(data).path == old.path


@pytest.mark.slow
def test_cli_ctrl_c_keeps_answers_and_resume_asks_only_the_rest(fake, tmp_path, small_index_dir):
    """The real command, interrupted like a moderator would (SIGINT), then resumed."""
    from core.index.store import open_current

    data = copy_data_dir(small_index_dir, tmp_path / "data")
    vids = open_current(data).video_ids()
    env = {**os.environ, "YOUTUBE_OEMBED_URL": fake.url, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "bot.cli", "index", "refresh", "--index", str(data)],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while sum(fake.completed.values()) < 15 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "echovids: interrupted" in err and "Traceback" not in err
    first_run = dict(fake.requests)
    answered = set(LivenessCache.for_data_dir(data).get_many(vids))
    assert 10 <= len(answered) < len(vids)
    assert all(first_run[v] == 1 for v in answered)

    fake.reset_counts()
    report = refresh_index(settings_for(data, fake), dry_run=True, rate_per_s=None, concurrency=16)
    assert report.stale == len(vids) - len(answered)
    assert not any(fake.requests[v] for v in answered)
    assert sum(fake.requests.values()) == report.stale


def test_cli_without_an_index_is_one_clear_line(tmp_path, capsys):
    from bot.cli import main

    assert main(["index", "refresh", "--index", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no index" in err[0] and "echovids index build" in err[0]
    assert not (tmp_path / "nothing").exists()  # a failed refresh leaves no litter


def test_cli_refuses_nonsense_rate_and_concurrency(tmp_path, capsys):
    from bot.cli import main

    assert main(["index", "refresh", "--index", str(tmp_path), "--concurrency", "0"]) == 1
    assert capsys.readouterr().err.strip() == "echovids: --concurrency must be at least 1 and --rate 0 or more"
    assert main(["index", "refresh", "--index", str(tmp_path), "--rate", "-1"]) == 1


# -- one refresh at a time; no blocking SQLite on the loop (issue 11 #1, #10) -------------------------

def test_a_second_refresh_is_refused_while_one_holds_the_lock(fake, tmp_path, capsys):
    from bot.cli import main
    from core.index.lock import LockBusyError, refresh_holder, refresh_lock
    from core.admin.refresh import refresh_index as run

    vids = ids(5)
    assert refresh_holder(tmp_path) is None
    with refresh_lock(tmp_path):
        assert refresh_holder(tmp_path) == os.getpid()
        with pytest.raises(LockBusyError, match=f"an index refresh is already running \\(pid {os.getpid()}\\)"):
            run(settings_for(tmp_path, fake), video_ids=vids, rate_per_s=None, dry_run=True)
        assert fake.total_requests == 0
    assert refresh_holder(tmp_path) is None
    assert run(settings_for(tmp_path, fake), video_ids=vids, rate_per_s=None, dry_run=True).checked == 5


HOLD_LOCK = """
import sys
sys.path.insert(0, {root!r})
from core.index.lock import refresh_lock
with refresh_lock({data!r}):
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_the_lock_is_seen_across_processes_and_dies_with_its_holder(fake, tmp_path, small_index_dir, monkeypatch, capsys):
    """A refresh in another process (the CLI, the bot's child) is seen here; SIGKILL frees it."""
    from bot.cli import main
    from core.index.lock import refresh_holder

    data = copy_data_dir(small_index_dir, tmp_path / "data")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK.format(root=str(PROJECT_ROOT), data=str(data))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert refresh_holder(data) == holder.pid
        monkeypatch.setenv("YOUTUBE_OEMBED_URL", fake.url)
        assert main(["index", "refresh", "--index", str(data), "--dry-run", "--rate", "0"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"echovids: an index refresh is already running (pid {holder.pid})"]
        assert fake.total_requests == 0
    finally:
        holder.kill()
        holder.wait()
    assert refresh_holder(data) is None  # the kernel released it with the process


def test_progress_json_is_one_event_per_line_and_a_final_report(fake, tmp_path, small_index_dir, monkeypatch, capsys):
    from bot.cli import main

    data = copy_data_dir(small_index_dir, tmp_path / "data")
    monkeypatch.setenv("YOUTUBE_OEMBED_URL", fake.url)
    assert main(["index", "refresh", "--index", str(data), "--dry-run", "--rate", "0", "--concurrency", "16",
                 "--progress-json"]) == 0
    out = capsys.readouterr()
    events = [json.loads(line) for line in out.out.splitlines()]
    progress, report = events[:-1], events[-1]
    assert progress and all(e["event"] == "progress" for e in progress)
    assert {"stage", "done", "total", "unit", "detail"} <= set(progress[0])
    checks = [e for e in progress if e["stage"] == "check"]
    assert checks[0]["done"] == 0 and checks[-1]["done"] == checks[-1]["total"] == report["stale"]
    assert len(checks) < report["stale"]  # throttled: not one line per answer
    assert report["event"] == "report" and report["dry_run"] and report["checked"] == report["stale"] > 0


def test_json_progress_throttles_by_its_clock_and_keeps_first_and_last():
    import io

    from bot.terminal.index_refresh import JsonProgress

    now = [0.0]
    out = io.StringIO()
    progress = JsonProgress(out, min_interval_s=1.0, clock=lambda: now[0])
    for i in range(10):
        progress(ProgressEvent("check", i, 10, "videos"))
        now[0] += 0.3
    progress(ProgressEvent("check", 10, 10, "videos"))
    progress(ProgressEvent("scann", 0, None, "shards"))
    progress(ProgressEvent("scann", 1, None, "shards"))  # pending: too soon after the previous line
    progress.flush()
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(e["stage"], e["done"]) for e in lines] == [
        ("check", 0), ("check", 4), ("check", 8), ("check", 10), ("scann", 0), ("scann", 1)]


async def test_refresh_never_blocks_the_loop_on_a_locked_cache(fake, tmp_path, monkeypatch):
    """Another process holds the liveness cache's write lock: the refresh's write waits on its
    writer thread while the event loop keeps running, and nothing is lost once the lock goes."""
    import asyncio
    import sqlite3
    import threading

    from core.liveness.cache import CACHE_FILENAME
    from core.admin.refresh import arefresh_index

    path = tmp_path / CACHE_FILENAME
    LivenessCache(path).close()  # the schema exists, as it would beside a running bot
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock, held as another process would
    writing = threading.Event()
    real_put = LivenessCache.put

    def put(self, result, now=None):
        writing.set()
        return real_put(self, result, now)

    monkeypatch.setattr(LivenessCache, "put", put)
    vids = ids(3)
    task = asyncio.create_task(arefresh_index(settings_for(tmp_path, fake), video_ids=vids, dry_run=True,
                                              rate_per_s=None, concurrency=1))
    try:
        assert await asyncio.to_thread(writing.wait, 60)  # a write is now waiting for the lock
        ticked = asyncio.Event()
        asyncio.get_running_loop().call_soon(ticked.set)
        await asyncio.wait_for(ticked.wait(), 60)           # ...and the loop still runs callbacks
        assert not task.done()
        assert blocker.execute("SELECT COUNT(*) FROM checks").fetchone()[0] == 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    report = await asyncio.wait_for(task, 120)
    assert report.checked == 3
    assert set(LivenessCache(path).get_many(vids)) == set(vids)


def test_a_bot_child_stops_with_its_whole_group_when_the_bot_goes(tmp_path, small_index_dir):
    """The bot's refresh child watches its stdin pipe: when the bot dies (even by SIGKILL, which
    runs no clean-up) the pipe closes and the child ends itself and its workers: no orphans."""
    from bot.refresh_process import group_members
    from core.index.lock import refresh_holder

    data = copy_data_dir(small_index_dir, tmp_path / "data")
    held = open_current_ids(data)[0]
    with FakeOEmbed() as server:
        server.hold(held)
        env = {**os.environ, "YOUTUBE_OEMBED_URL": server.url, "PYTHONPATH": str(PROJECT_ROOT)}
        child = subprocess.Popen([sys.executable, "-m", "bot.cli", "index", "refresh", "--index", str(data),
                                  "--progress-json", "--bot-child", "--rate", "0", "--timeout", "3600"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 env=env, start_new_session=True)
        try:
            assert json.loads(child.stdout.readline())["event"] == "progress"  # it is running
            assert refresh_holder(data) == child.pid
            # it gives way to the serving bot on the CPU
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
            child.stdin.close()  # what the kernel does to the pipe when the bot dies
            assert child.wait(timeout=60) == -signal.SIGTERM
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            server.release()
            child.stdout.close()
            child.stderr.close()
    deadline = time.monotonic() + 60
    while group_members(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(child.pid) == []
    assert refresh_holder(data) is None


def open_current_ids(data: Path) -> list[str]:
    from core.index.store import open_current

    return sorted(open_current(data).video_ids())


def test_summary_says_how_dead_videos_were_dropped():
    from bot.refresh_summary import summary
    from core.admin.refresh import RefreshReport

    deleted = RefreshReport(indexed=50, dead=2, rebuilt=True, method="delete", deleted_segments=3, deleted_rows=30,
                            build_s=0.8, new_build="/data/builds/20260101T000000-abc123")
    text = summary(deleted)
    assert "deleted 3 dead clips (30 seconds) from the Milvus collection in 0.8 s" in text
    assert "now current: 20260101T000000-abc123" in text and "/data" not in text
    rebuilt = RefreshReport(indexed=50, revived=1, rebuilt=True, method="rebuild", build_s=60.0, new_build="/b/x",
                            method_reason="1 videos left out earlier play again: their rows must be inserted")
    assert ("rebuilt without 0 dead videos in 60.0 s; now current: x (1 videos left out earlier play again"
            in summary(rebuilt))
    plan = RefreshReport(indexed=50, dead=2, dry_run=True, method="delete", dead_sample=["a", "b"])
    assert "dry run: a refresh would delete these 2 videos' rows from its Milvus collection" in summary(plan)
