"""The job pool's admission rules: bounded workers, global queue cap, per-user cooldown."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs import JobPool, LoopLagMonitor, Refused
from bot.render import refusal_line


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_cooldown_per_user_and_busy_cap():
    clock = Clock()
    pool = JobPool(workers=1, concurrency=1, max_queued=2, cooldown_s=5.0, clock=clock)
    try:
        t1 = pool.admit(1)
        with pytest.raises(Refused) as err:
            pool.admit(1)
        assert err.value.reason == "cooldown" and err.value.retry_after == pytest.approx(5.0)
        assert "try again in 5 s" in refusal_line(err.value.reason, err.value.retry_after)
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
