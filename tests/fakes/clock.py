"""A clock for tests: time moves only when the test (or a ``sleep``) moves it."""

from __future__ import annotations

import asyncio

from core.liveness.clock import Clock


class FakeClock(Clock):
    """``sleep(s)`` records ``s``, advances the clock by ``s`` and yields once to the loop."""

    def __init__(self, start: float = 1_000_000.0):
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds
