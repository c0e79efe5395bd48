"""Clocks.  The engine never calls ``time.time()`` directly: it is handed a clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    """Real time (live and paper trading)."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimClock:
    """A simulated clock for backtests and tests: ``sleep`` advances time instantly.

    ``on_advance`` (optional) is called with the new time after each advance, so a simulated
    venue can process everything that happened in between (triggers, funding).
    """

    def __init__(self, start_ms: int, on_advance=None) -> None:
        self._now = int(start_ms)
        self.on_advance = on_advance

    def now_ms(self) -> int:
        return self._now

    def set(self, t_ms: int) -> None:
        if t_ms < self._now:
            raise ValueError("a simulated clock never goes backwards")
        self._now = int(t_ms)
        if self.on_advance is not None:
            self.on_advance(self._now)

    def advance(self, seconds: float) -> None:
        self.set(self._now + int(round(seconds * 1000)))

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


class ScaledClock:
    """Wall time running ``speed`` times faster from a start point (the offline demo market)."""

    def __init__(self, start_ms: int, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self._start_ms = int(start_ms)
        self._wall0 = time.monotonic()
        self.speed = float(speed)

    def now_ms(self) -> int:
        return self._start_ms + int((time.monotonic() - self._wall0) * 1000 * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)
