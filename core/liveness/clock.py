"""The time source of the liveness code, injectable so tests never depend on machine speed.

Back-off pauses (Retry-After), the request rate and cache freshness all read the clock; tests
pass a fake one (``tests/fakes/clock.py``) whose ``sleep`` moves time forward at once, so a test of
"waits out a 1 s pause" neither sleeps nor races a wall-clock margin.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Real time: ``monotonic`` for intervals, ``time`` for stored timestamps, ``sleep`` to wait."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


REAL_CLOCK = Clock()
