"""Is a YouTube video still there? One oEmbed request answers it without an API key.

YouTube's oEmbed endpoint distinguishes the cases a reply cares about by HTTP status alone, so a
check is one small GET. Everything here is about doing that GET *politely* and *predictably*:
one shared :class:`aiohttp.ClientSession`, a bound on requests in flight, a global request rate
(token bucket), a per-request timeout, and a back-off that honours ``Retry-After`` for the whole
client (when YouTube says "slow down" it means every request, not just the one that got the 429).
Failures never raise: anything we could not learn is the state ``"unknown"``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from dataclasses import dataclass
from typing import Literal

import aiohttp

from core.liveness.clock import REAL_CLOCK, Clock
from core.youtube import is_video_id, watch_url

CheckState = Literal["live", "unembeddable", "private", "gone", "invalid", "unknown"]

#: States after which the link does not work: such videos are dropped from replies and indexes.
DEAD_STATES: frozenset[str] = frozenset({"private", "gone", "invalid"})

#: HTTP status → state (issue 5). 429 and 5xx are "unknown" (and trigger back-off).
STATUS_STATES: dict[int, CheckState] = {
    200: "live",
    401: "unembeddable",   # embedding disabled; the watch link still works
    403: "private",
    404: "gone",
    400: "invalid",
}

DEFAULT_CONCURRENCY = 8
DEFAULT_RATE_PER_S = 10.0
DEFAULT_TIMEOUT_S = 5.0
MAX_PAUSE_S = 3600.0
#: ``detail`` of an answer given without asking because the server asked us to pause.
BACKING_OFF = "backing off"
USER_AGENT = "echo-vids liveness check (+https://github.com/; oEmbed, polite)"


@dataclass(frozen=True)
class OEmbedResult:
    """What one check learned. ``retry_after`` is set when the server asked us to wait."""

    video_id: str
    state: CheckState
    title: str | None = None
    channel: str | None = None
    http_status: int | None = None
    retry_after: float | None = None
    detail: str = ""

    @property
    def dead(self) -> bool:
        return self.state in DEAD_STATES

    @property
    def asked(self) -> bool:
        """False when no request was made (a server-requested pause): nothing was learned."""
        return self.detail != BACKING_OFF


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class TokenBucket:
    """A global request rate: ``rate`` tokens per second, at most ``burst`` saved up.

    Waiters queue on a FIFO lock so a burst of queries cannot starve an earlier one. ``rate`` of
    ``None`` or ``<= 0`` disables the limit (benchmarks of raw concurrency).
    """

    def __init__(self, rate: float | None, burst: float | None = None, *, clock: Clock = REAL_CLOCK):
        self.rate = rate if rate and rate > 0 else None
        self.burst = max(1.0, burst if burst is not None else (self.rate or 1.0))
        self.clock = clock
        self._tokens = self.burst
        self._stamp = clock.monotonic()
        self._lock: asyncio.Lock | None = None

    def _refill(self, now: float) -> None:
        assert self.rate is not None
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        if self.rate is None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self.clock.monotonic()
                self._refill(now)
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await self.clock.sleep((1.0 - self._tokens) / self.rate)


class OEmbedClient:
    """Checks videos against ``base_url`` (YouTube's oEmbed endpoint, or a proxy/fake).

    Create and use it inside one running event loop; the session and the asyncio primitives are
    made lazily on first use because they bind to the loop that is running then.
    """

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_per_s: float | None = DEFAULT_RATE_PER_S,
        burst: float | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retry_after_s: float = 300.0,
        user_agent: str = USER_AGENT,
        clock: Clock = REAL_CLOCK,
    ):
        self.base_url = base_url
        self.clock = clock
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = timeout_s
        self.max_retry_after_s = max_retry_after_s
        self.user_agent = user_agent
        self.bucket = TokenBucket(rate_per_s, burst, clock=clock)
        #: monotonic time before which nobody should send a request (server asked us to wait).
        self.blocked_until = 0.0
        self.requests_sent = 0
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def _ensure(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A different loop (e.g. one asyncio.run per CLI search) cannot reuse the old session;
            # it is dropped rather than closed because its loop is gone.
            self._loop = loop
            self._sem = asyncio.Semaphore(self.concurrency)
            self.bucket._lock = None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": self.user_agent},
                connector=aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300),
                raise_for_status=False,
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                if self._loop is asyncio.get_running_loop():
                    await session.close()
            except RuntimeError:
                pass

    # -- checks ------------------------------------------------------------------------------
    def backoff_remaining(self) -> float:
        return max(0.0, self.blocked_until - self.clock.monotonic())

    def _note_retry_after(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self.clock.monotonic() + seconds)

    async def check(self, video_id: str, *, retries: int = 0, wait_backoff: bool = False) -> OEmbedResult:
        """One video's state. Never raises for network or server trouble (→ ``"unknown"``).

        ``retries`` re-asks after 429/5xx/timeouts (refresh wants an answer; a query has no time).
        ``wait_backoff`` waits out a server-requested pause (up to ``max_retry_after_s``) instead of
        answering ``"unknown"`` at once.
        """
        if not is_video_id(video_id):
            return OEmbedResult(video_id, "invalid", detail="not a YouTube video id")
        attempt = 0
        while True:
            wait = self.backoff_remaining()
            if wait > 0:
                if not wait_backoff or wait > self.max_retry_after_s:
                    return OEmbedResult(video_id, "unknown", retry_after=wait, detail=BACKING_OFF)
                await self.clock.sleep(wait)
            result = await self._once(video_id)
            if result is None:  # a pause began while we queued; no request was made
                continue
            if result.state != "unknown" or attempt >= retries:
                return result
            attempt += 1
            if result.retry_after is None:
                # No hint from the server: exponential back-off with jitter for this request only.
                await self.clock.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random()))

    async def _once(self, video_id: str) -> OEmbedResult | None:
        session = self._ensure()
        assert self._sem is not None
        async with self._sem:
            await self.bucket.acquire()
            wait = self.backoff_remaining()
            if wait > 0:  # someone got a 429 while we queued for a token
                return None
            self.requests_sent += 1
            try:
                async with session.get(self.base_url, params={"url": watch_url(video_id), "format": "json"}) as resp:
                    status = resp.status
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    if status == 200:
                        body = await resp.read()
                        return _live_result(video_id, body)
            except asyncio.TimeoutError:
                return OEmbedResult(video_id, "unknown", detail=f"timed out after {self.timeout_s:g} s")
            except (aiohttp.ClientError, OSError) as err:
                return OEmbedResult(video_id, "unknown", detail=f"connection error: {type(err).__name__}")
        if status in STATUS_STATES:
            return OEmbedResult(video_id, STATUS_STATES[status], http_status=status)
        if status == 429 or status >= 500:
            if status == 429 and retry_after is None:
                retry_after = 5.0
            if retry_after is not None:
                # Honoured in full up to an hour: a broken header must not silence us for days.
                self._note_retry_after(min(retry_after, MAX_PAUSE_S))
            return OEmbedResult(video_id, "unknown", http_status=status, retry_after=retry_after,
                                detail=f"HTTP {status}")
        return OEmbedResult(video_id, "unknown", http_status=status, detail=f"unexpected HTTP {status}")


def _live_result(video_id: str, body: bytes) -> OEmbedResult:
    """200 → live, with title and channel. A 200 that is not oEmbed JSON (a captive portal, a broken
    proxy) proves nothing about YouTube, so it is "unknown" rather than "live"."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return OEmbedResult(video_id, "unknown", http_status=200, detail="malformed JSON")
    if not isinstance(data, dict):
        return OEmbedResult(video_id, "unknown", http_status=200, detail="malformed JSON")
    title = data.get("title")
    channel = data.get("author_name")
    return OEmbedResult(
        video_id,
        "live",
        title=str(title)[:500] if isinstance(title, str) and title.strip() else None,
        channel=str(channel)[:200] if isinstance(channel, str) and channel.strip() else None,
        http_status=200,
    )
