"""Where a scan cycle gets its market view: the :class:`SignalProvider` hook.

The engine asks its provider once per cycle for a :class:`ScanResult`: the symbols scanned, per
symbol the signal (``engine/signals.py``'s ``SignalResult``), the book, mark price, ATR and data
age, plus the symbols dropped before any signal was computed (and why).  Everything after the
provider (policy, risk, sizing, executor, guard, ledger) is the same code for live, paper, demo
and backtest.

* :class:`LiveSignalProvider` (the default): universe selection from exchangeInfo and the 24h
  tickers, a concurrent :class:`~mraster_tui.engine.marketdata.MarketData` fetch and
  ``evaluate_signal`` per symbol.
* Backtests plug in a provider backed by precomputed indicator series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from mraster_tui.engine.clock import Clock
from mraster_tui.engine.errors import VenueError
from mraster_tui.engine.types import BookTicker, ExchangeInfo, Ticker24h

#: exchangeInfo changes rarely; it is refetched this often (and after a failure)
INFO_REFRESH_MS = 3_600_000
#: the 24h tickers rank the universe; refetched at most this often
TICKER_REFRESH_MS = 60_000


@dataclass(frozen=True, slots=True)
class ScanContext:
    """What the engine hands its provider each cycle."""

    settings: Any
    exchange: Any
    clock: Clock
    cycle: int
    info: ExchangeInfo
    #: symbols with an open position or a pending entry: no signal needed (they are skipped)
    held: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SymbolScan:
    """One scanned symbol.  ``signal`` is None when the symbol had no usable data (``problems``
    says why).  ``can_open`` False means the data is too old (or incomplete) to open a trade."""

    symbol: str
    signal: Any  # signals.SignalResult | None
    book: BookTicker | None
    mark: Decimal | None
    atr: float | None
    age_ms: int | None
    can_open: bool
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScanResult:
    now_ms: int
    universe: tuple[str, ...]
    symbols: dict[str, SymbolScan]
    #: symbols dropped before any signal was computed: symbol -> reason code
    #: (``no_data``, ``universe:<why>`` is NOT listed here: only scanned-but-unusable symbols)
    dropped: dict[str, str] = field(default_factory=dict)
    #: age of the market data used, for the breaker (the live provider gives the median over
    #: symbols); None when nothing was fetched
    data_age_ms: int | None = None
    requests: int = 0


class SignalProvider(Protocol):
    async def scan(self, ctx: ScanContext, now_ms: int) -> ScanResult: ...


class LiveSignalProvider:
    """Universe + MarketData + ``evaluate_signal`` (see the module docstring)."""

    def __init__(self, exchange: Any, settings: Any, clock: Clock) -> None:
        from mraster_tui.engine.marketdata import MarketData

        self.exchange = exchange
        self.clock = clock
        self.settings = settings
        self.market = MarketData(exchange, settings, clock)
        self._tickers: dict[str, Ticker24h] = {}
        self._tickers_ms = -TICKER_REFRESH_MS

    def update_settings(self, settings: Any) -> None:
        self.settings = settings
        self.market.update_settings(settings)

    async def _tickers_24h(self, now_ms: int) -> dict[str, Ticker24h]:
        if now_ms - self._tickers_ms >= TICKER_REFRESH_MS or not self._tickers:
            try:
                self._tickers = await self.exchange.tickers_24h()
                self._tickers_ms = now_ms
            except VenueError:
                if not self._tickers:
                    raise
        return self._tickers

    async def scan(self, ctx: ScanContext, now_ms: int) -> ScanResult:
        from mraster_tui.engine.signals import evaluate_signal
        from mraster_tui.engine.universe import select_universe

        s = ctx.settings
        tickers = await self._tickers_24h(now_ms)
        uni = select_universe(ctx.info, tickers, s, cycle=ctx.cycle)
        universe = tuple(uni.symbols)
        wanted = [sym for sym in universe if sym not in ctx.held]
        scan = await self.market.scan(wanted)
        out: dict[str, SymbolScan] = {}
        for sym, snap in scan.snapshots.items():
            sig = evaluate_signal(snap.ltf, snap.htf, snap.book, snap.funding_rate, s,
                                  qv_score=uni.qv_scores.get(sym, 0.0), now_ms=now_ms)
            out[sym] = SymbolScan(sym, sig, snap.book, snap.mark_price, _atr_of(sig), snap.age_ms,
                                  snap.can_open, snap.problems)
        dropped = {sym: "no_data" for sym in scan.errors}
        return ScanResult(now_ms, universe, out, dropped, _median_age(scan.snapshots.values()), scan.requests)


def _median_age(snaps: Any) -> int | None:
    """The breaker's data age: the median over symbols, so one symbol served from a fallback
    copy does not stop every entry (that symbol itself cannot open: ``can_open`` is False)."""
    ages = sorted(s.age_ms for s in snaps)
    return ages[len(ages) // 2] if ages else None


def _atr_of(sig: Any) -> float | None:
    atr = getattr(sig, "atr", None)
    try:
        return float(atr) if atr is not None else None
    except (TypeError, ValueError):
        return None

