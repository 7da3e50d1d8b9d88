"""Query-time filtering: dead videos dropped and replaced, titles shown, budget never exceeded.

No test depends on machine speed: time that matters (TTLs, Retry-After pauses) comes from a fake
clock, answers that must be "late" are *held* by the fake server until the test releases them,
and background cache writes are awaited (``drain``) instead of slept on.
"""

from __future__ import annotations

import asyncio

import pytest

from core.config import Settings
from core.liveness import TTL, LivenessCache, LivenessChecker
from core.results import Match
from core.youtube import youtube_url
from tests.fakes.clock import FakeClock
from tests.fakes.oembed_server import (
    GONE, INVALID, MALFORMED, PRIVATE, RESET, UNEMBEDDABLE, Reply, error, ratelimit,
)


def vid(name: str) -> str:
    return (name + "___________")[:11]


def matches(*names: str, library: tuple[int, ...] = ()) -> list[Match]:
    out = []
    for rank, name in enumerate(names):
        if rank in library:
            out.append(Match(None, 3, "file:///lib/a.wav", 1.0 - rank / 100, ["Music"], title="a.wav",
                             source="library"))
        else:
            out.append(Match(vid(name), 12, youtube_url(vid(name), 12), 1.0 - rank / 100, ["Dog"],
                             segment_start=10, segment_end=20))
    return out


@pytest.fixture
async def checker(oembed, tmp_path):
    c = LivenessChecker(Settings(data_dir=tmp_path, youtube_oembed_url=oembed.url), rate_per_s=None)
    yield c
    await c.close()


async def test_dead_dropped_and_reply_filled_from_later_candidates(oembed, checker):
    oembed.script(vid("gone"), GONE)
    oembed.script(vid("private"), PRIVATE)
    oembed.script(vid("invalid"), INVALID)
    oembed.script(vid("noembed"), UNEMBEDDABLE)
    oembed.script(vid("live1"), Reply("live", title="Dog barks at mailman", channel="Pets"))
    cands = matches("gone", "live1", "private", "noembed", "invalid", "live2", "live3", "live4")
    out = await checker.filter(cands, want=4, budget_s=5)
    assert [m.video_id for m in out] == [vid("live1"), vid("noembed"), vid("live2"), vid("live3")]
    assert [m.live for m in out] == ["live", "unembeddable", "live", "live"]
    assert out[0].title == "Dog barks at mailman" and out[0].channel == "Pets"
    assert out[2].title == f"Video {vid('live2')}"
    # rank, score, url and segment pass through untouched
    assert out[0].url == cands[1].url and out[0].score == cands[1].score and out[0].segment_end == 20
    # the input list is not mutated
    assert all(m.live == "unchecked" for m in cands)


async def test_only_top_candidates_are_checked(oembed, checker):
    cands = matches(*[f"v{i}" for i in range(30)])
    out = await checker.filter(cands, want=3, budget_s=5)
    assert len(out) == 3 and all(m.live == "live" for m in out)
    assert oembed.total_requests <= 3 + 2  # want plus a few spares, not all 30


async def test_library_matches_pass_through_unchecked(oembed, checker):
    cands = matches("lib", "live1", "lib2", library=(0, 2))
    out = await checker.filter(cands, want=3, budget_s=5)
    assert [m.live for m in out] == ["unchecked", "live", "unchecked"]
    assert out[0].title == "a.wav"
    assert oembed.total_requests == 1


async def test_trouble_is_kept_as_unknown(oembed, checker):
    oembed.script(vid("err"), error(503))
    oembed.script(vid("bad"), MALFORMED)
    oembed.script(vid("reset"), RESET)
    out = await checker.filter(matches("err", "bad", "reset", "live"), want=4, budget_s=5)
    assert [m.live for m in out] == ["unknown", "unknown", "unknown", "live"]


async def test_429_keeps_unknown_and_pauses_later_queries(oembed, checker):
    oembed.script(vid("rl"), ratelimit("30"))
    out = await checker.filter(matches("rl"), want=1, budget_s=2)
    assert out[0].live == "unknown"
    before = oembed.total_requests
    out = await checker.filter(matches("other1", "other2"), want=2, budget_s=2)
    assert [m.live for m in out] == ["unknown", "unknown"]
    assert oembed.total_requests == before  # nobody asks YouTube during its Retry-After


async def test_cache_hit_sends_nothing(oembed, checker, tmp_path):
    cands = matches("gone", "a", "b", "c")
    oembed.script(vid("gone"), GONE)
    first = await checker.filter(cands, want=3, budget_s=5)
    await checker.drain()  # cache writes happen on a worker thread: wait for them, not for a while
    sent = oembed.total_requests
    second = await checker.filter(cands, want=3, budget_s=5)
    assert oembed.total_requests == sent
    assert [(m.video_id, m.live, m.title) for m in second] == [(m.video_id, m.live, m.title) for m in first]
    # and the cache is the data directory's own file, readable by anyone
    assert LivenessCache.for_data_dir(tmp_path).get(vid("gone")).state == "gone"


async def test_ttl_expiry_triggers_a_new_check(oembed, tmp_path):
    clock = FakeClock()
    c = LivenessChecker(Settings(data_dir=tmp_path, youtube_oembed_url=oembed.url), rate_per_s=None,
                        ttl=TTL(live=300), clock=clock)
    try:
        oembed.script(vid("a"), Reply("live", title="Before"), GONE)
        out = await c.filter(matches("a", "b"), want=1, budget_s=5)
        assert out[0].title == "Before"
        await c.drain()
        clock.advance(299)
        assert (await c.filter(matches("a", "b"), want=1, budget_s=5))[0].video_id == vid("a")
        assert oembed.requests[vid("a")] == 1  # fresh: from the cache
        clock.advance(2)
        out = await c.filter(matches("a", "b"), want=1, budget_s=5)
        assert oembed.requests[vid("a")] == 2  # expired: asked again, and now it is gone
        assert [m.video_id for m in out] == [vid("b")]
    finally:
        await c.close()


async def test_slow_server_cannot_stretch_the_budget(oembed, checker):
    slow_ones = [vid(n) for n in ("s1", "s2", "s3", "s4")]
    for v in slow_ones:
        oembed.hold(v)  # they answer only when released: certainly after any budget
    oembed.script(vid("gone"), GONE)
    cands = matches("s1", "gone", "s2", "fast", "s3", "s4")
    out = await asyncio.wait_for(checker.filter(cands, want=3, budget_s=0.3), 60)
    assert [(m.video_id, m.live) for m in out] == [(vid("s1"), "unknown"), (vid("s2"), "unknown"),
                                                   (vid("fast"), "live")]
    assert sum(oembed.waiting[v] for v in slow_ones) >= 2  # the reply left while they were unanswered
    # The late answers still land in the cache, so the next query knows the truth from the cache
    # alone (budget 0: no time to ask anyone).
    oembed.release()
    await checker.drain()
    cache = LivenessCache.for_data_dir(checker.settings.data_dir)
    assert cache.get(vid("s1")).state == "live"
    sent = oembed.total_requests
    out = await checker.filter(cands, want=3, budget_s=0)
    assert [m.live for m in out] == ["live", "live", "live"]
    assert oembed.total_requests == sent


async def test_zero_budget_answers_from_cache_only(oembed, checker):
    oembed.hold(vid("a"))
    oembed.hold(vid("b"))
    out = await asyncio.wait_for(checker.filter(matches("a", "b"), want=2, budget_s=0), 60)
    assert [m.live for m in out] == ["unknown", "unknown"]


async def test_concurrent_queries_share_one_request_per_video(oembed, checker):
    oembed.latency_s = 0.1
    cands = matches("a", "b", "c")
    outs = await asyncio.gather(*(checker.filter(cands, want=3, budget_s=5) for _ in range(5)))
    assert all([m.live for m in o] == ["live"] * 3 for o in outs)
    assert all(n == 1 for n in oembed.requests.values())


async def test_duplicate_video_in_candidates_checked_once(oembed, checker):
    cands = matches("a", "a", "b")
    out = await checker.filter(cands, want=3, budget_s=5)
    assert [m.video_id for m in out] == [vid("a"), vid("a"), vid("b")]
    assert oembed.requests[vid("a")] == 1


async def test_empty_and_want_zero(checker):
    assert await checker.filter([], want=5, budget_s=1) == []
    assert await checker.filter(matches("a"), want=0, budget_s=1) == []


async def test_all_dead_returns_fewer(oembed, checker):
    for name in ("g1", "g2", "g3"):
        oembed.script(vid(name), GONE)
    out = await checker.filter(matches("g1", "g2", "g3", "ok"), want=3, budget_s=5)
    assert [m.video_id for m in out] == [vid("ok")]


async def test_close_is_clean_with_checks_in_flight(oembed, tmp_path):
    oembed.hold(vid("slow"))  # never answered while the checker closes
    c = LivenessChecker(Settings(data_dir=tmp_path, youtube_oembed_url=oembed.url), rate_per_s=None)
    await c.filter(matches("slow"), want=1, budget_s=0.05)
    await asyncio.wait_for(c.close(), 60)  # does not wait for the answer
    assert oembed.waiting[vid("slow")] <= 1 and c.client._session is None


async def test_unwritable_data_dir_still_answers(oembed, tmp_path):
    """An unusable data directory (here: a file where the folder should be, which fails even for
    root) costs the cache its home, never the reply."""
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    c = LivenessChecker(Settings(data_dir=blocked, youtube_oembed_url=oembed.url), rate_per_s=None)
    try:
        out = await c.filter(matches("a"), want=1, budget_s=5)
        assert out[0].live == "live"
        assert c.cache.path.parent != blocked
    finally:
        await c.close()


async def test_a_short_pause_is_not_remembered_as_unknown(oembed, tmp_path):
    """Videos we skipped during a 1 s Retry-After were never asked: once the pause is over they are
    checked, not served from a cached "unknown"."""
    clock = FakeClock()
    checker = LivenessChecker(Settings(data_dir=tmp_path, youtube_oembed_url=oembed.url), rate_per_s=None,
                              clock=clock)
    try:
        oembed.script(vid("rl"), ratelimit("1"), Reply("live"))
        await checker.filter(matches("rl"), want=1, budget_s=2)
        out = await checker.filter(matches("later"), want=1, budget_s=2)
        assert out[0].live == "unknown" and oembed.requests[vid("later")] == 0
        await checker.drain()
        clock.advance(1.1)  # the pause is over
        out = await checker.filter(matches("later"), want=1, budget_s=2)
        assert out[0].live == "live" and oembed.requests[vid("later")] == 1
    finally:
        await checker.close()


async def test_backlog_is_bounded_when_youtube_is_slower_than_queries(oembed, checker):
    for i in range(10):
        oembed.hold(vid(f"q{i}"))
        oembed.hold(vid(f"r{i}"))
    checker.max_backlog = 4
    out = await checker.filter(matches(*[f"q{i}" for i in range(10)]), want=5, budget_s=0.2)
    assert [m.live for m in out] == ["unknown"] * 5
    assert len(checker._inflight) == 4
    out = await checker.filter(matches(*[f"r{i}" for i in range(10)]), want=5, budget_s=0.2)
    assert len(checker._inflight) == 4  # nothing more queued
    assert [m.live for m in out] == ["unknown"] * 5
