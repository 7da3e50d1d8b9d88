"""The oEmbed client against the local fake: status → state, back-off, timeouts, politeness."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.liveness.oembed import OEmbedClient, TokenBucket, parse_retry_after
from tests.fakes.oembed_server import (
    GONE, INVALID, LIVE, MALFORMED, PRIVATE, RESET, UNEMBEDDABLE, FakeOEmbed, Reply, error, ratelimit, slow,
)

VID = "dQw4w9WgXcQ"


@pytest.fixture
async def fake():
    server = FakeOEmbed()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake):
    c = OEmbedClient(fake.url, rate_per_s=None, timeout_s=2.0)
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
async def test_status_maps_to_state(fake, client, reply, state):
    fake.script(VID, reply)
    result = await client.check(VID)
    assert result.state == state
    assert fake.requests[VID] >= 1
    assert fake.malformed_requests == 0  # the request had YouTube's shape: watch URL + format=json


async def test_live_keeps_title_and_channel(fake, client):
    fake.script(VID, Reply("live", title="Never Gonna Give You Up", channel="Rick Astley"))
    result = await client.check(VID)
    assert (result.state, result.title, result.channel, result.http_status) == (
        "live", "Never Gonna Give You Up", "Rick Astley", 200)


async def test_not_a_video_id_costs_no_request(fake, client):
    for bad in ["", "short", "has space!!", "x" * 12]:
        assert (await client.check(bad)).state == "invalid"
    assert fake.total_requests == 0


async def test_429_pauses_every_request_until_retry_after(fake, client):
    fake.script(VID, ratelimit("1"), LIVE)
    first = await client.check(VID)
    assert first.state == "unknown" and first.http_status == 429 and first.retry_after == pytest.approx(1.0)
    # Another video during the pause: answered "unknown" without asking (polite, and instant).
    other = await client.check("abcdefghijk")
    assert other.state == "unknown" and other.detail == "backing off"
    assert fake.total_requests == 1
    # A caller that may wait (refresh) waits the pause out, then gets the answer.
    t0 = time.monotonic()
    again = await client.check(VID, retries=2, wait_backoff=True)
    assert again.state == "live"
    assert time.monotonic() - t0 >= 0.9
    first_req, second_req = [t for v, t in fake.log if v == VID]
    assert second_req - first_req >= 0.95  # the server saw no request inside its Retry-After window


async def test_429_without_header_still_backs_off(fake, client):
    fake.script(VID, ratelimit(None))
    result = await client.check(VID)
    assert result.state == "unknown" and client.backoff_remaining() > 1


async def test_5xx_retried_with_backoff(fake, client):
    fake.script(VID, error(502), error(503), LIVE)
    result = await client.check(VID, retries=3)
    assert result.state == "live"
    assert fake.requests[VID] == 3


async def test_retry_after_on_503_is_honoured(fake, client):
    fake.script(VID, error(503, retry_after="1"), LIVE)
    t0 = time.monotonic()
    result = await client.check(VID, retries=1, wait_backoff=True)
    assert result.state == "live" and time.monotonic() - t0 >= 0.9


async def test_timeout_is_unknown_and_bounded(fake):
    fake.script(VID, slow(3.0))
    c = OEmbedClient(fake.url, rate_per_s=None, timeout_s=0.3)
    try:
        t0 = time.monotonic()
        result = await c.check(VID)
        assert result.state == "unknown" and "timed out" in result.detail
        assert time.monotonic() - t0 < 1.0
    finally:
        await c.close()


async def test_connection_refused_is_unknown():
    c = OEmbedClient("http://127.0.0.1:9/oembed", rate_per_s=None, timeout_s=1.0)
    try:
        result = await c.check(VID)
        assert result.state == "unknown" and "connection" in result.detail
    finally:
        await c.close()


async def test_concurrency_is_bounded(fake):
    fake.latency_s = 0.05
    c = OEmbedClient(fake.url, concurrency=3, rate_per_s=None)
    try:
        ids = [f"video{i:06d}" for i in range(20)]
        results = await asyncio.gather(*(c.check(v) for v in ids))
        assert all(r.state == "live" for r in results)
        assert fake.max_in_flight <= 3
        assert fake.max_in_flight == 3  # and it is actually used
    finally:
        await c.close()


async def test_global_rate_limit(fake):
    c = OEmbedClient(fake.url, concurrency=8, rate_per_s=20.0, burst=1)
    try:
        ids = [f"video{i:06d}" for i in range(11)]
        await asyncio.gather(*(c.check(v) for v in ids))
        times = sorted(t for _, t in fake.log)
        assert times[-1] - times[0] >= 10 / 20.0 * 0.9  # 11 requests at 20/s span ≥ 0.5 s
    finally:
        await c.close()


async def test_one_session_shared_and_closed(fake, client):
    await client.check(VID)
    session = client._session
    await client.check("abcdefghijk")
    assert client._session is session
    await client.close()
    assert session.closed


def test_client_survives_a_new_event_loop(fake):
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
    b = TokenBucket(None)
    t0 = time.monotonic()
    for _ in range(1000):
        await b.acquire()
    assert time.monotonic() - t0 < 0.1
