"""The refresh lock across machines: a lease in a real Milvus server (the ``milvus_uri`` fixture).

"Another machine" is a second Settings with its own data directory (so the flocks never meet) and
the same Milvus URI and prefix; a holder posing as another host shows the path where no kernel
drops a dead holder's lock. Expiry runs on an injected clock: nothing here sleeps or times.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from core.index.lock import LockBusyError, RefreshHolder, acquire_refresh_lock, refresh_holder, refresh_holder_of
from tests.fakes.clock import FakeClock

ROOT = Path(__file__).resolve().parent.parent


def _settings(data: Path, uri: str, prefix: str, **extra) -> Settings:
    return Settings(data_dir=data, vector_store="milvus", milvus_uri=uri, milvus_prefix=prefix, **extra)


def _left_behind(settings: Settings) -> tuple[list[str], str | None]:
    """Lock collections of this prefix, and what the lock alias names (None: no alias)."""
    from core.index.milvus_lock import _alias_target, lock_alias
    from core.index.vectorstore_milvus import _pymilvus, connect

    pm = _pymilvus()
    using = connect(settings)
    names = [n for n in pm.utility.list_collections(using=using) if n.startswith(f"{settings.milvus_prefix}_refresh_")]
    return names, _alias_target(pm, using, lock_alias(settings))


@pytest.mark.slow
def test_a_refresh_held_through_one_data_directory_is_refused_through_another(tmp_path: Path, milvus_uri: str):
    from core.admin import Admin
    from core.admin.refresh import refresh_index
    from tests.fakes.oembed_server import FakeOEmbed

    a = _settings(tmp_path / "a", milvus_uri, "two")
    with FakeOEmbed() as fake:
        b = _settings(tmp_path / "b", milvus_uri, "two", youtube_oembed_url=fake.url)
        assert refresh_holder_of(b) is None
        lock = acquire_refresh_lock(a)
        try:
            assert refresh_holder(b.data_dir) is None  # b's flock is free: only Milvus knows
            assert refresh_holder_of(b) == RefreshHolder(os.getpid(), socket.gethostname())
            assert Admin(b).refresh_holder() == RefreshHolder(os.getpid(), socket.gethostname())  # the bot's probe
            with pytest.raises(LockBusyError) as busy:  # through the refresh itself
                refresh_index(b, video_ids=["v0000000000", "v0000000001"], rate_per_s=None, dry_run=True)
            assert str(busy.value) == f"an index refresh is already running (pid {os.getpid()} on {socket.gethostname()})"
            assert (busy.value.pid, busy.value.host) == (os.getpid(), socket.gethostname())
            assert fake.total_requests == 0
            assert refresh_holder(b.data_dir) is None  # the refused run let go of b's flock
        finally:
            lock.release()
        assert refresh_holder_of(b) is None and _left_behind(a) == ([], None)
        report = refresh_index(b, video_ids=["v0000000000", "v0000000001"], rate_per_s=None, dry_run=True)
        assert report.checked == 2  # released → acquirable from the other side
    assert _left_behind(b) == ([], None)


@pytest.mark.slow
def test_a_stale_lease_is_broken_and_its_silent_holder_learns_it(tmp_path: Path, milvus_uri: str):
    from core.index.milvus_lock import MilvusLockBusy, MilvusRefreshLock, read_lease

    clock = FakeClock(1000.0)
    a = _settings(tmp_path / "a", milvus_uri, "stale")
    b = _settings(tmp_path / "b", milvus_uri, "stale")
    first = MilvusRefreshLock(a, clock=clock.time, ttl_s=60, host="machine-a", machine="machine-a/boot",
                              heartbeat=False).acquire()
    second = MilvusRefreshLock(b, clock=clock.time, ttl_s=60, heartbeat=False)
    try:
        clock.now = 1060.0  # the last second of the lease
        with pytest.raises(MilvusLockBusy) as busy:
            second.acquire()
        assert (busy.value.lease.host, busy.value.lease.pid) == ("machine-a", os.getpid())
        assert first.beat()  # the heartbeat moves the expiry to 1120
        clock.now = 1100.0
        with pytest.raises(MilvusLockBusy):
            second.acquire()
        clock.now = 1120.5  # silent for longer than the TTL: breakable
        second.acquire()
        assert second.broke is not None and second.broke.host == "machine-a"
        assert read_lease(b).collection == second.collection
        assert not first.beat() and first.lost.is_set()  # the stalled holder finds out
        first.release()  # and does not take the lock away from its new holder
        assert read_lease(b).collection == second.collection
        names, alias_to = _left_behind(b)
        assert names == [second.collection] and alias_to == second.collection  # the broken one is gone
    finally:
        first.release()
        second.release()
    assert _left_behind(b) == ([], None)


@pytest.mark.slow
def test_a_refresh_confirms_its_lease_before_publishing(tmp_path: Path, milvus_uri: str):
    """What a refresh calls right before its swap: fine while the lease is ours, LockLostError once a
    stall let another process break it (the refresh then discards its build: test_refresh.py)."""
    from core.index.lock import REFRESH_LOCK, FileLock, LockLostError, RefreshLock
    from core.index.milvus_lock import MilvusRefreshLock

    clock = FakeClock(1000.0)
    a = _settings(tmp_path / "a", milvus_uri, "confirm")
    b = _settings(tmp_path / "b", milvus_uri, "confirm")
    held = RefreshLock(FileLock(tmp_path / "a" / REFRESH_LOCK).acquire(),
                       MilvusRefreshLock(a, clock=clock.time, ttl_s=60, host="machine-a", machine="machine-a/boot",
                                         heartbeat=False).acquire())
    other = MilvusRefreshLock(b, clock=clock.time, ttl_s=60, heartbeat=False)
    try:
        held.confirm()  # ours: and confirming renews the lease to 1060
        clock.now = 1060.5
        other.acquire()  # the holder stalled past its lease: broken
        with pytest.raises(LockLostError, match="taken over"):
            held.confirm()
    finally:
        held.release()
        other.release()
    assert _left_behind(b) == ([], None)


HOLD = """
import sys
sys.path.insert(0, {root!r})
from core.config import Settings
from core.index.milvus_lock import MilvusRefreshLock
settings = Settings(data_dir={data!r}, vector_store="milvus", milvus_uri={uri!r}, milvus_prefix={prefix!r})
kw = {{"host": "machine-b", "machine": "machine-b/boot"}} if {elsewhere!r} else {{}}
MilvusRefreshLock(settings, clock=lambda: 1000.0, ttl_s=60, **kw).acquire()
print("holding", flush=True)
sys.stdin.read()
"""


def _killed_holder(tmp_path: Path, uri: str, prefix: str, elsewhere: bool) -> int:
    """A process that takes the lock (lease written at clock 1000, TTL 60 s) and is SIGKILLed."""
    code = HOLD.format(root=str(ROOT), data=str(tmp_path / "holder"), uri=uri, prefix=prefix, elsewhere=elsewhere)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        seen = refresh_holder_of(_settings(tmp_path / "other", uri, prefix), clock=FakeClock(1000.0).time)
        assert seen == RefreshHolder(holder.pid, "machine-b" if elsewhere else socket.gethostname())
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the lease stays in Milvus
        holder.wait()
        holder.stdout.close()
        holder.stdin.close()
    return holder.pid


@pytest.mark.slow
def test_a_killed_holder_on_another_machine_leaves_a_lease_that_expires(tmp_path: Path, milvus_uri: str):
    pid = _killed_holder(tmp_path, milvus_uri, "killed", elsewhere=True)
    b = _settings(tmp_path / "b", milvus_uri, "killed")
    with pytest.raises(LockBusyError, match=f"already running \\(pid {pid} on machine-b\\)"):
        acquire_refresh_lock(b, clock=FakeClock(1060.0).time)  # no kernel there to drop it: still fresh
    assert refresh_holder_of(b, clock=FakeClock(1060.5).time) is None  # past its expiry it counts as free
    lock = acquire_refresh_lock(b, clock=FakeClock(1060.5).time)
    try:
        assert lock.milvus_lock.broke.pid == pid
        assert _left_behind(b)[0] == [lock.milvus_lock.collection]
    finally:
        lock.release()
    assert _left_behind(b) == ([], None)


@pytest.mark.slow
def test_a_killed_holder_on_this_machine_is_known_dead_at_once(tmp_path: Path, milvus_uri: str):
    """Same host and boot id, pid gone: no need to wait out the TTL (the bot's refresh child
    SIGKILLed, say); the injected clock still says the lease is fresh."""
    pid = _killed_holder(tmp_path, milvus_uri, "here", elsewhere=False)
    b = _settings(tmp_path / "b", milvus_uri, "here")
    assert refresh_holder_of(b, clock=FakeClock(1000.0).time) is None
    with acquire_refresh_lock(b, clock=FakeClock(1000.0).time) as lock:
        assert lock.milvus_lock.broke.pid == pid
    assert _left_behind(b) == ([], None)


@pytest.mark.slow
def test_different_prefixes_do_not_block_each_other(tmp_path: Path, milvus_uri: str):
    one = _settings(tmp_path / "a", milvus_uri, "deploy_one")
    two = _settings(tmp_path / "b", milvus_uri, "deploy_two")
    elsewhere = _settings(tmp_path / "c", milvus_uri, "deploy_one")  # deploy_one, another data directory
    with acquire_refresh_lock(one):
        assert refresh_holder_of(two) is None
        with acquire_refresh_lock(two):
            assert refresh_holder_of(elsewhere) == RefreshHolder(os.getpid(), socket.gethostname())
    assert _left_behind(one) == ([], None) and _left_behind(two) == ([], None)


def test_the_scann_store_keeps_to_the_flock(tmp_path: Path):
    """No Milvus call on the default path: the URI below has nothing listening, and the lock and
    the probe still answer at once from the data directory's flock."""
    settings = Settings(data_dir=tmp_path, vector_store="scann", milvus_uri="http://127.0.0.1:9")
    with acquire_refresh_lock(settings) as lock:
        assert lock.milvus_lock is None
        assert refresh_holder_of(settings) == RefreshHolder(os.getpid())
        with pytest.raises(LockBusyError, match=f"already running \\(pid {os.getpid()}\\)$"):
            acquire_refresh_lock(settings)
    assert refresh_holder_of(settings) is None


def test_the_bot_names_a_holder_on_another_machine():
    from bot.cogs.moderation import _holder_text

    assert _holder_text(RefreshHolder(123)) == " (pid 123)"
    assert _holder_text(RefreshHolder(123, "machine-b")) == " (pid 123 on machine-b)"
    assert _holder_text(RefreshHolder(0)) == ""


@pytest.mark.slow
def test_a_breaker_that_died_mid_way_blocks_only_until_its_own_lease_expires(tmp_path: Path, milvus_uri: str):
    """Breaking is guarded by a second alias; a breaker killed while holding it (posed here: its
    guard made, then nothing) leaves a guard whose own lease expires like any other."""
    from core.index.milvus_lock import MilvusLockBusy, MilvusRefreshLock, _break_alias
    from core.index.vectorstore_milvus import _pymilvus, connect

    clock = FakeClock(1000.0)
    a = _settings(tmp_path / "a", milvus_uri, "guard")
    holder = MilvusRefreshLock(a, clock=clock.time, ttl_s=60, host="machine-a", machine="machine-a/boot",
                               heartbeat=False).acquire()  # lease until 1060, then silent
    clock.now = 1050.0
    dead = MilvusRefreshLock(a, clock=clock.time, ttl_s=60, host="machine-c", machine="machine-c/boot")
    pm, using = _pymilvus(), connect(a)
    dead.collection = dead._create_own(pm, using)  # its lease: until 1110
    assert dead._alias(pm, using, _break_alias(a, holder.collection))  # ...and it dies here
    b = _settings(tmp_path / "b", milvus_uri, "guard")
    clock.now = 1061.0
    with pytest.raises(MilvusLockBusy) as busy:  # the holder is stale, but someone is breaking it
        MilvusRefreshLock(b, clock=clock.time, ttl_s=60, heartbeat=False).acquire()
    assert busy.value.lease.host == "machine-a"
    clock.now = 1110.5
    with MilvusRefreshLock(b, clock=clock.time, ttl_s=60, heartbeat=False) as lock:
        assert lock.broke.host == "machine-a"
        assert _left_behind(b)[0] == [lock.collection]  # the dead holder's and dead breaker's are gone
    assert _left_behind(b) == ([], None)
    from core.index.milvus_lock import _alias_target

    assert _alias_target(pm, using, _break_alias(a, holder.collection)) is None  # the guard went too
    holder.release()  # finds the lock gone and takes nothing from anyone
    assert _left_behind(b) == ([], None)


def test_the_bot_refresh_child_gets_the_store_settings(tmp_path: Path):
    """The bot's settings may not come from the environment (tests, benchmarks): its refresh child
    must still rebuild into, and take the lock in, the same Milvus."""
    from bot.refresh_process import child_env
    from core.config import load_settings

    settings = _settings(tmp_path, "http://milvus.example:19530", "deploy_x", milvus_token="user:pw")
    env = child_env(settings, base={})
    child = load_settings(env)
    assert (child.vector_store, child.milvus_uri, child.milvus_token, child.milvus_prefix) == \
        ("milvus", "http://milvus.example:19530", "user:pw", "deploy_x")


@pytest.mark.slow
def test_the_cli_refuses_a_refresh_held_on_another_machine(tmp_path: Path, milvus_uri: str, small_index_dir: Path,
                                                            monkeypatch, capsys):
    """`echovids index refresh` on machine B, with its own data directory, while machine A holds the
    lease: one line naming A's holder, exit 1, and not one liveness request sent."""
    import shutil

    from bot.cli import main
    from core.index.milvus_lock import MilvusRefreshLock
    from tests.fakes.oembed_server import FakeOEmbed

    data = tmp_path / "b"
    shutil.copytree(small_index_dir, data, symlinks=True, ignore=shutil.ignore_patterns("liveness.sqlite*"))
    # A's lease is written by its own clock, far ahead: fresh whatever B's clock says
    with MilvusRefreshLock(_settings(tmp_path / "a", milvus_uri, "cli"), clock=lambda: 4e9, host="machine-a",
                           machine="machine-a/boot", heartbeat=False), FakeOEmbed() as fake:
        for name, value in {"ECHOVIDS_VECTOR_STORE": "milvus", "ECHOVIDS_MILVUS_URI": milvus_uri,
                            "ECHOVIDS_MILVUS_PREFIX": "cli", "YOUTUBE_OEMBED_URL": fake.url}.items():
            monkeypatch.setenv(name, value)
        assert main(["index", "refresh", "--index", str(data), "--dry-run", "--rate", "0"]) == 1
        assert capsys.readouterr().err.strip().splitlines() == [
            f"echovids: an index refresh is already running (pid {os.getpid()} on machine-a)"]
        assert fake.total_requests == 0
    assert _left_behind(_settings(data, milvus_uri, "cli")) == ([], None)  # B's refused run left nothing
