"""The oEmbed client against the local fake: status → state, back-off, timeouts, politeness.

Pauses and rates are measured on a fake clock (its ``sleep`` advances time at once) and "slow"
answers are held by the fake server until released: nothing here depends on machine speed.
"""

from __future__ import annotations

import asyncio

import pytest

from core.liveness.oembed import OEmbedClient, TokenBucket, parse_retry_after
from tests.fakes.oembed_server import (
    GONE, INVALID, LIVE, MALFORMED, PRIVATE, RESET, UNEMBEDDABLE, FakeOEmbed, Reply, error, ratelimit,
)
from tests.fakes.clock import FakeClock

VID = "dQw4w9WgXcQ"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def client(oembed, clock):
    c = OEmbedClient(oembed.url, rate_per_s=None, timeout_s=2.0, clock=clock)
    yield c
    await c.close()


@pytest.mark.parametrize(
    "reply, state",
    [
        (LIVE, "live"),
        (UNEMBEDDABLE, "unembeddable"),
        (PRIVATE, "private"),
        (GONE, "gone"),
        (INVALID, "invalid"),
        (error(500), "unknown"),
        (error(503), "unknown"),
        (MALFORMED, "unknown"),
        (RESET, "unknown"),
    ],
)
async def test_status_maps_to_state(oembed, client, reply, state):
    oembed.script(VID, reply)
    result = await client.check(VID)
    assert result.state == state
    assert oembed.requests[VID] >= 1
    assert oembed.malformed_requests == 0  # the request had YouTube's shape: watch URL + format=json


async def test_live_keeps_title_and_channel(oembed, client):
    oembed.script(VID, Reply("live", title="Never Gonna Give You Up", channel="Rick Astley"))
    result = await client.check(VID)
    assert (result.state, result.title, result.channel, result.http_status) == (
        "live", "Never Gonna Give You Up", "Rick Astley", 200)


async def test_not_a_video_id_costs_no_request(oembed, client):
    for bad in ["", "short", "has space!!", "x" * 12]:
        assert (await client.check(bad)).state == "invalid"
    assert oembed.total_requests == 0


async def test_429_pauses_every_request_until_retry_after(oembed, client, clock):
    oembed.script(VID, ratelimit("1"), LIVE)
    first = await client.check(VID)
    assert first.state == "unknown" and first.http_status == 429 and first.retry_after == pytest.approx(1.0)
    # Another video during the pause: answered "unknown" without asking (polite, and instant).
    other = await client.check("abcdefghijk")
    assert other.state == "unknown" and other.detail == "backing off"
    assert oembed.total_requests == 1
    # A caller that may wait (refresh) waits the pause out, then gets the answer.
    t0 = clock.now
    again = await client.check(VID, retries=2, wait_backoff=True)
    assert again.state == "live" and oembed.requests[VID] == 2
    assert clock.now - t0 == pytest.approx(1.0, abs=0.01)  # it waited the pause out, and no longer


async def test_429_without_header_still_backs_off(oembed, client):
    oembed.script(VID, ratelimit(None))
    result = await client.check(VID)
    assert result.state == "unknown" and client.backoff_remaining() > 1


async def test_5xx_retried_with_backoff(oembed, client):
    oembed.script(VID, error(502), error(503), LIVE)
    result = await client.check(VID, retries=3)
    assert result.state == "live"
    assert oembed.requests[VID] == 3


async def test_retry_after_on_503_is_honoured(oembed, client, clock):
    oembed.script(VID, error(503, retry_after="1"), LIVE)
    t0 = clock.now
    result = await client.check(VID, retries=1, wait_backoff=True)
    assert result.state == "live" and clock.now - t0 == pytest.approx(1.0, abs=0.01)


async def test_timeout_is_unknown_and_bounded(oembed):
    oembed.hold(VID)  # the server never answers while the client waits
    c = OEmbedClient(oembed.url, rate_per_s=None, timeout_s=0.3)
    try:
        result = await asyncio.wait_for(c.check(VID), 60)
        assert result.state == "unknown" and "timed out after 0.3 s" in result.detail
        assert oembed.completed[VID] == 0
    finally:
        await c.close()


async def test_connection_refused_is_unknown():
    c = OEmbedClient("http://127.0.0.1:9/oembed", rate_per_s=None, timeout_s=1.0)
    try:
        result = await c.check(VID)
        assert result.state == "unknown" and "connection" in result.detail
    finally:
        await c.close()


async def test_concurrency_is_bounded(oembed):
    c = OEmbedClient(oembed.url, concurrency=3, rate_per_s=None)
    ids = [f"video{i:06d}" for i in range(20)]
    for v in ids:
        oembed.hold(v)
    try:
        checks = asyncio.gather(*(c.check(v) for v in ids))
        for _ in range(2000):  # until three requests are held at the server (a state, not a delay)
            if sum(oembed.waiting.values()) >= 3:
                break
            await asyncio.sleep(0.005)
        assert sum(oembed.waiting.values()) == 3 and oembed.max_in_flight == 3  # used, and no more
        oembed.release()
        results = await asyncio.wait_for(checks, 60)
        assert all(r.state == "live" for r in results)
        assert oembed.max_in_flight == 3
    finally:
        await c.close()


async def test_global_rate_limit(oembed, clock):
    c = OEmbedClient(oembed.url, concurrency=8, rate_per_s=20.0, burst=1, clock=clock)
    try:
        ids = [f"video{i:06d}" for i in range(11)]
        t0 = clock.now
        await asyncio.gather(*(c.check(v) for v in ids))
        assert oembed.total_requests == 11
        assert clock.now - t0 == pytest.approx(10 / 20.0, abs=1e-6)  # 11 requests at 20/s span 0.5 s
    finally:
        await c.close()


async def test_one_session_shared_and_closed(oembed, client):
    await client.check(VID)
    session = client._session
    await client.check("abcdefghijk")
    assert client._session is session
    await client.close()
    assert session.closed


def test_client_survives_a_new_event_loop(oembed):
    """The CLI runs one asyncio.run per command; a client reused across loops must not break."""
    fake_url = None

    async def serve_and_check(c):
        return (await c.check(VID)).state

    with FakeOEmbed() as threaded:
        fake_url = threaded.url
        c = OEmbedClient(fake_url, rate_per_s=None)
        assert asyncio.run(serve_and_check(c)) == "live"
        assert asyncio.run(serve_and_check(c)) == "live"
        asyncio.run(c.close())
        assert threaded.requests[VID] == 2


def test_parse_retry_after():
    assert parse_retry_after("120") == 120
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 30) == pytest.approx(30)


async def test_token_bucket_unlimited_is_instant():
    clock = FakeClock()
    b = TokenBucket(None, clock=clock)
    for _ in range(1000):
        await b.acquire()
    assert clock.sleeps == []  # never waits
