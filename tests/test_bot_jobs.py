"""The job pool's admission rules: bounded workers, global queue cap, per-user cooldown, downloads
bounded apart from the CPU work, admission closed on stop; and the bot's send-side rules."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs import JobPool, LoopLagMonitor, Refused
from bot.render import refusal_line
from tests.fakes.clock import FakeClock


async def test_cooldown_per_user_and_busy_cap():
    clock = FakeClock(100.0)
    pool = JobPool(workers=1, concurrency=1, max_queued=2, cooldown_s=5.0, clock=clock.monotonic)
    try:
        t1 = pool.admit(1)
        with pytest.raises(Refused) as err:
            pool.admit(1)
        assert err.value.reason == "cooldown" and err.value.retry_after == pytest.approx(5.0)
        assert refusal_line(err.value.reason, err.value.retry_after) == "Please wait 5 s between searches."
        clock.now += 5.0
        t2 = pool.admit(1)  # cooldown over
        t3 = pool.admit(2)
        # 1 in flight + 2 queued is the cap: a fourth user is told the pool is busy.
        with pytest.raises(Refused) as err:
            pool.admit(3)
        assert err.value.reason == "busy" and err.value.retry_after >= 1
        assert refusal_line("busy", err.value.retry_after).startswith("I'm busy")
        for t in (t1, t2, t3):
            pool.cancel(t)
        pool.admit(3)  # room again
    finally:
        pool.shutdown()


async def test_at_most_concurrency_jobs_run_at_once_on_workers_threads():
    pool = JobPool(workers=2, max_queued=10, cooldown_s=0)
    assert pool.concurrency == 4 and pool.executor._max_workers == 2
    running = peak = 0

    async def job():
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return "ok"

    try:
        tickets = [pool.admit(i) for i in range(10)]
        assert pool.queued == 10
        results = await asyncio.gather(*(pool.run(t, job) for t in tickets))
        assert results == ["ok"] * 10 and peak == 4
        assert pool.queued == 0 and pool.completed == 10
    finally:
        pool.shutdown()


async def test_failed_job_frees_its_slot_and_ticket_is_single_use():
    pool = JobPool(workers=1, concurrency=1, max_queued=0, cooldown_s=0)

    async def boom():
        raise ValueError("x")

    try:
        t = pool.admit(1)
        with pytest.raises(ValueError):
            await pool.run(t, boom)
        with pytest.raises(RuntimeError):
            await pool.run(t, boom)
        pool.cancel(t)  # no-op after run
        pool.admit(2)  # the slot is free again
    finally:
        pool.shutdown()


async def test_downloads_take_no_queue_place_and_have_their_own_bound():
    pool = JobPool(workers=1, concurrency=1, max_queued=1, cooldown_s=0, downloads=2, max_download_queue=1)
    try:
        fetching = [pool.admit(u, download=True) for u in range(3)]  # 2 downloading + 1 waiting
        with pytest.raises(Refused) as err:
            pool.admit(9, download=True)
        assert err.value.reason == "busy"
        # The CPU queue is untouched by downloads in progress: its own cap still admits two.
        cpu = [pool.admit(10), pool.admit(11)]
        with pytest.raises(Refused):
            pool.admit(12)

        gate, two_in = asyncio.Event(), asyncio.Event()
        inside: list[int] = []

        async def fetch(ticket):
            async with pool.downloading(ticket):
                inside.append(ticket.user_id)
                if len(inside) == 2:
                    two_in.set()
                await gate.wait()

        tasks = [asyncio.create_task(fetch(t)) for t in fetching]
        await two_in.wait()
        assert pool.downloads_in_progress == 2 and len(inside) == 2  # the third waits for a slot
        gate.set()
        await asyncio.gather(*tasks)
        assert len(inside) == 3
        # Downloaded: now they wait for the CPU like any other search, and run.
        done = await asyncio.gather(*(pool.run(t, _ok) for t in fetching + cpu))
        assert done == ["ok"] * 5 and pool.queued == 0 and pool.downloads_in_progress == 0
    finally:
        pool.shutdown()


async def test_a_failed_download_gives_its_place_back():
    pool = JobPool(workers=1, concurrency=1, max_queued=0, cooldown_s=0, downloads=1, max_download_queue=0)
    try:
        t = pool.admit(1, download=True)
        with pytest.raises(OSError):
            async with pool.downloading(t):
                raise OSError("reset")
        pool.cancel(t)
        assert pool.downloads_in_progress == 0 and pool.queued == 0
        pool.admit(2, download=True)
    finally:
        pool.shutdown()


async def test_no_admission_once_stopping():
    pool = JobPool(workers=1, cooldown_s=0)
    try:
        pool.stop_admitting()
        for download in (False, True):
            with pytest.raises(Refused) as err:
                pool.admit(1, download=download)
            assert err.value.reason == "stopping"
            assert refusal_line("stopping", err.value.retry_after) == "I'm restarting; please send it again in a minute."
    finally:
        pool.shutdown()


async def _ok():
    return "ok"


def test_download_time_budget_is_well_below_a_minute_for_the_size_cap():
    from bot.attachments import DownloadTimeouts

    t = DownloadTimeouts()
    cap = 25 * 2**20
    assert t.total_for(cap) <= 30  # a 25 MB cap: given up within half a minute even if it trickles
    assert t.total_for(100_000) < t.total_for(cap)  # small files get a smaller budget
    assert t.read_s <= 15 and t.connect_s <= 10  # a stall is noticed long before the total


def test_only_discord_cdn_hosts_are_fetched():
    from bot.attachments import allowed_hosts, check_host
    from bot.render import error_line
    from core.config import Settings

    hosts = allowed_hosts(Settings(discord_api_base="http://127.0.0.1:5555/api/v10"))
    assert {"cdn.discordapp.com", "media.discordapp.net", "127.0.0.1"} <= hosts
    check_host("https://cdn.discordapp.com/attachments/1/2/a.ogg?ex=1", hosts)
    check_host("https://media.discordapp.net/attachments/1/2/a.ogg", hosts)
    check_host("http://127.0.0.1:5555/attachments/1/a.ogg", hosts)
    for url in ("https://evil.example/a.ogg", "https://cdn.discordapp.com.evil.example/a.ogg",
                "http://localhost:5555/attachments/1/a.ogg", "file:///etc/passwd",
                "http://cdn.discordapp.com/a.ogg"):  # the real CDN is https only
        with pytest.raises(Exception) as err:
            check_host(url, hosts)
        assert "Discord" in error_line(err.value), url


def test_the_client_pings_nobody_and_no_code_overrides_it():
    """Set once on the client; a per-message ``allowed_mentions=`` anywhere in bot/ would be a way back."""
    from pathlib import Path

    import discord

    from bot.client import EchoVidsBot
    from core.config import Settings

    bot = EchoVidsBot(Settings(), allowed_mentions=discord.AllowedMentions.all())
    try:
        assert bot.allowed_mentions.to_dict() == discord.AllowedMentions.none().to_dict()
    finally:
        bot.jobs.shutdown()
    root = Path(__file__).resolve().parent.parent / "bot"
    offenders = [str(f.relative_to(root)) for f in root.rglob("*.py")
                 if f.name != "client.py" and "allowed_mentions" in f.read_text()]
    assert offenders == []


async def test_lag_monitor_sees_a_blocked_loop():
    import time

    mon = LoopLagMonitor(interval=0.01)
    mon.start()
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # block the loop on purpose
    await asyncio.sleep(0.05)
    await mon.stop()
    assert mon.percentile(100) >= 0.15


def test_privileged_intent_only_with_listen_channels():
    from bot.client import EchoVidsBot
    from core.config import Settings

    plain = EchoVidsBot(Settings())
    listening = EchoVidsBot(Settings(listen_channels=frozenset({123})))
    try:
        assert not plain.intents.message_content
        assert listening.intents.message_content
        assert plain.intents.dm_messages and plain.intents.guild_messages
    finally:
        plain.jobs.shutdown()
        listening.jobs.shutdown()
