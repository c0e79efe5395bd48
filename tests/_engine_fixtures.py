"""Shared pieces of the engine tests: crafted replay markets with a known signal, a loopback
exchange in a thread, an engine clock that follows the exchange's clock, settings for LIVE mode
with the loopback's test keys."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import numpy as np

from mraster_tui.config import Settings
from mraster_tui.engine.events import MemorySink
from mraster_tui.engine.runner import Engine
from mraster_tui.engine.sim.exchange import SimExchange
from mraster_tui.engine.sim.market import ReplayMarket
from mraster_tui.engine.sim.server import TEST_API_KEY, TEST_API_SECRET, LoopbackExchange
from mraster_tui.engine.types import Candles
from mraster_tui.engine.venue.rest import RestExchange

FIVE_MIN = 300_000
#: the crafted market starts here (a UTC day boundary); the engine starts at ``T_START``
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
HISTORY_BARS = 4 * 288  # four days of 5m candles before the start
T_START = T0 + HISTORY_BARS * FIVE_MIN
SYMBOL = "TESTUSDT"
CALM = "CALMUSDT"  # a flat symbol that never signals (no trend)


def _rows_uptrend(n: int, p0: float, growth: float = 0.0004) -> list[list[float]]:
    """A steady uptrend with a small ripple: EMA21 > EMA55, rising HTF EMA, RSI > 50, ADX high."""
    rows = []
    prev = p0
    for i in range(n):
        c = round(p0 * np.exp(growth * (i + 1)) * (1 + 0.0010 * np.sin(i * 0.7)), 2)
        o = prev
        h = round(max(o, c) * 1.0008, 2)
        lo = round(min(o, c) * 0.9992, 2)
        rows.append([o, h, lo, c])
        prev = c
    return rows


def _rows_flat(n: int, p: float) -> list[list[float]]:
    rows = []
    for i in range(n):
        wiggle = 0.05 if i % 2 else -0.05
        rows.append([p, round(p + 0.1, 2), round(p - 0.1, 2), round(p + wiggle, 2)])
        p = round(p + wiggle, 2)
    return rows


def future_rows(kind: str, p: float) -> list[list[float]]:
    """What happens after the start (multipliers of the last close ``p``):

    * ``crash``: 10 more minutes of drift, then a -5 % candle (any long stop is hit), then flat;
    * ``tp``: a +3 % candle (a long's take-profit is hit), then flat;
    * ``fasttp``: +1.2 %, then a down candle that falls 0.8 % within 100 s (FastTP triggers), flat;
    * ``hold``: a gentle rise that triggers nothing for hours.
    """
    r = lambda x: round(x, 2)  # noqa: E731
    if kind == "crash":
        rows = [[p, r(p * 1.0012), r(p * 0.9995), r(p * 1.001)], [r(p * 1.001), r(p * 1.002), r(p * 0.9998), r(p * 1.0015)]]
        q = rows[-1][3]
        rows.append([q, r(q * 1.0005), r(q * 0.95), r(q * 0.951)])
        return rows + _rows_flat(400, rows[-1][3])
    if kind == "tp":
        rows = [[p, r(p * 1.031), r(p * 0.9996), r(p * 1.03)]]
        return rows + _rows_flat(400, rows[-1][3])
    if kind == "fasttp":
        rows = [[p, r(p * 1.0125), r(p * 0.9997), r(p * 1.012)],
                [r(p * 1.012), r(p * 1.013), r(p * 1.004), r(p * 1.005)]]
        return rows + _rows_flat(400, rows[-1][3])
    if kind == "hold":
        return [[a, b, c, d] for a, b, c, d in _rows_uptrend(400, p, growth=0.00002)]
    raise ValueError(kind)


def crafted_series(kind: str = "hold", t0: int = T0) -> dict[str, Candles]:
    """TESTUSDT trending up (a long signal at ``t0 + HISTORY_BARS`` candles) then ``kind``;
    CALMUSDT flat.  ``kind="late"``: the last history candle is a spike wick (wickiness ~1, so
    no signal at the start); the signal appears when the next candle closes, 5 minutes later."""
    hist = _rows_uptrend(HISTORY_BARS, 100.0)
    if kind == "late":
        p = hist[-1][0]
        hist[-1] = [p, p, round(p * 0.99, 2), p]
        kind = "hold"
    rows = hist + future_rows(kind, hist[-1][3])
    calm = _rows_flat(len(rows), 50.0)
    return {SYMBOL: _candles(rows, t0), CALM: _candles(calm, t0)}


def t0_for_start(start_ms: int) -> int:
    """The data origin that puts the signal candle's close just before ``start_ms``."""
    return start_ms // FIVE_MIN * FIVE_MIN - HISTORY_BARS * FIVE_MIN


def _candles(rows: list[list[float]], t0: int) -> Candles:
    a = np.array(rows, dtype=np.float64)
    n = len(rows)
    ot = t0 + np.arange(n, dtype=np.int64) * FIVE_MIN
    vol = np.full(n, 2000.0)
    return Candles(ot, a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(), vol, "5m", True)


def write_freqtrade_json(series: dict[str, Candles], folder: Path) -> list[Path]:
    """The series as freqtrade futures JSON files (what ``sim-exchange --data`` reads)."""
    out = []
    for sym, c in series.items():
        base = sym[:-4]
        path = folder / f"{base}_USDT_USDT-5m-futures.json"
        rows = [[int(t), o, h, lo, cl, v] for t, o, h, lo, cl, v in
                zip(c.open_time, c.open, c.high, c.low, c.close, c.volume)]
        path.write_text(json.dumps(rows))
        out.append(path)
    return out


def crafted_sim(kind: str = "hold", start: int = T_START) -> SimExchange:
    market = ReplayMarket(crafted_series(kind, t0_for_start(start)))
    return SimExchange(market, balance=Decimal("10000"), start_ms=start)


def loopback(kind: str = "hold", *, venue: str = "binance", start: int = T_START, **kw) -> LoopbackExchange:
    """The loopback exchange on the crafted market; ``start`` = its clock's start (the signal)."""
    return LoopbackExchange(crafted_sim(kind, start), venue=venue, start_ms=start, **kw).start()


class VenueClock:
    """The engine's clock = the loopback exchange's clock (jumps included), so tests can move
    time with ``handle.advance(ms)`` and the engine sees the same instant as the venue."""

    def __init__(self, handle: LoopbackExchange) -> None:
        self.handle = handle
        self.speed = handle.clock.speed

    def now_ms(self) -> int:
        return self.handle.clock.now_ms()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


def live_settings(base_url: str, **over) -> Settings:
    values = dict(exchange_base=base_url, venue="binance", api_key=TEST_API_KEY, api_secret=TEST_API_SECRET,
                  paper=False, include_symbols="", klines=120, guard_interval_sec=1.0, loop_sleep=5.0,
                  http_retries=1, http_backoff=0.05, http_timeout=5.0, decision_log="", bandit_enabled=False,
                  scan_delay_sec=0.2)
    values.update(over)
    return Settings.defaults().replace(**values)


def live_engine(handle: LoopbackExchange, tmp: Path, settings: Settings | None = None,
                sink: MemorySink | None = None, decision_log: Path | None = None) -> tuple[Engine, MemorySink]:
    settings = settings or live_settings(handle.base_url)
    clock = VenueClock(handle)
    sink = sink or MemorySink()
    holder: list[Engine] = []
    rest = RestExchange(handle.base_url, api_key=settings.api_key, api_secret=settings.api_secret,
                        venue=str(settings.venue), settings=settings, clock=clock,
                        on_event=lambda ev: holder and holder[0].on_venue_event(ev))
    engine = Engine(settings, exchange=rest, clock=clock, sink=sink, state_path=tmp / "state.json", mode="LIVE",
                    close_exchange=True, decision_log_path=decision_log)
    holder.append(engine)
    return engine, sink
