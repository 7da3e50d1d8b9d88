"""Getting a computed reply to the user through a Discord outage.

discord.py already retries a 429 (five tries, each after ``retry_after``) and some 5xx, but a storm
that outlasts those few seconds would drop a search that cost real work, and leave a slash command
"thinking…" for ever. So every reply goes through :meth:`ReplyRetry.send`: a transient failure
(429, 5xx, a network error) is retried later with growing delays, a bounded number of times, well
inside an interaction token's 15 minutes; and if it still fails, that is logged at WARNING with the
reason, once. Any other HTTP error (403, 404, 400) is the request's own fault: it is raised at once
so the caller can fall back (a plain error line, a send without the reply reference).

``delays`` and ``sleep`` are injectable so tests outlast a storm without waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aiohttp
import discord

log = logging.getLogger("echovids.bot.delivery")

T = TypeVar("T")

#: Seconds before the 2nd, 3rd… attempt: about 3.5 minutes in all, inside a token's 15.
DEFAULT_DELAYS: tuple[float, ...] = (2.0, 8.0, 30.0, 60.0, 120.0)


class DeliveryFailed(Exception):
    """Every attempt failed with a transient error (already logged at WARNING)."""


def is_transient(err: BaseException) -> bool:
    """Worth trying again later: rate limited, Discord's servers failing, or the network."""
    if isinstance(err, discord.DiscordServerError):
        return True
    if isinstance(err, discord.RateLimited):
        return True
    if isinstance(err, discord.HTTPException):
        return err.status == 429 or err.status >= 500
    return isinstance(err, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError))


def reason(err: BaseException) -> str:
    if isinstance(err, discord.HTTPException):
        return f"HTTP {err.status} {err.text or err.__class__.__name__}".strip()
    return f"{err.__class__.__name__}: {err}"


class ReplyRetry:
    """Retry one reply through transient failures; ``delays[i]`` is the wait before attempt i + 2."""

    def __init__(self, delays: Sequence[float] = DEFAULT_DELAYS,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep):
        self.delays = tuple(delays)
        self.sleep = sleep

    async def send(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``await attempt()`` until it succeeds; :class:`DeliveryFailed` after the last try."""
        tries = len(self.delays) + 1
        for number in range(1, tries + 1):
            try:
                return await attempt()
            except Exception as err:
                if not is_transient(err):
                    raise
                if number == tries:
                    log.warning("gave up sending %s after %d attempts: %s", what, tries, reason(err))
                    raise DeliveryFailed(reason(err)) from err
                delay = self.delays[number - 1]
                log.info("sending %s failed (%s); trying again in %g s", what, reason(err), delay)
                await self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
