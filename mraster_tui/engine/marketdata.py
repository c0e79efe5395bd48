"""Market data for a scan: klines of both timeframes per symbol, book tickers and premium index
(mark price, funding) for the whole universe, fetched concurrently, cached, with an outage
fallback.

* Klines are fetched per symbol with at most ``fetch_concurrency`` requests in flight; book
  tickers and the premium index come from one all-symbol request each.
* Klines are cached per (symbol, interval) for ``kline_cache_sec``, but never across a candle
  close: once the cached forming candle's period has ended, the next read refetches, so a scan
  right after a close always sees the newly closed candle.  Concurrent readers of one key share
  one request.  After the first full read a refresh asks only for the newest candles (from the
  cached forming one on, at most ``INCREMENTAL_MAX``: weight 1, a fraction of the parsing) and
  merges them into the cached history; without an overlap it reads the full history again.
* When a fetch fails, the last good copy is used instead and the snapshot says so (``stale``
  with the reasons) and how old its oldest piece is (``age_ms``).  ``can_open`` is False when
  that age exceeds ``max_data_age_sec`` (or a piece is missing): the engine must not open a
  position then; managing open positions may still use the data, with a warning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

import numpy as np

from mraster_tui.config.schema import setting
from mraster_tui.engine.clock import Clock
from mraster_tui.engine.errors import VenueError
from mraster_tui.engine.types import BookTicker, Candles, PremiumIndex, interval_ms

T = TypeVar("T")

#: cached data older than this many times ``max_data_age_sec`` is dropped for symbols no longer
#: scanned (it could not open a trade anyway and only costs memory)
_PRUNE_FACTOR = 10
#: after the first full read, klines are refreshed with reads of at most this many candles
INCREMENTAL_MAX = 99


@dataclass(frozen=True, slots=True)
class MarketSnapshot:
    """One symbol's data for a scan.

    ``age_ms`` is the age of the oldest piece (time since it was fetched); ``stale`` is True
    when a piece is a fallback copy kept from before a failed fetch (``problems`` tells which
    and why); ``can_open`` is the flag the engine checks before opening a position.
    """

    symbol: str
    ltf: Candles
    htf: Candles
    book: BookTicker | None
    premium: PremiumIndex | None
    age_ms: int
    stale: bool
    can_open: bool
    problems: tuple[str, ...] = ()

    @property
    def funding_rate(self) -> float | None:
        return float(self.premium.last_funding_rate) if self.premium is not None else None

    @property
    def mark_price(self) -> Decimal | None:
        return self.premium.mark_price if self.premium is not None else None


@dataclass(frozen=True, slots=True)
class MarketScan:
    """The result of :meth:`MarketData.scan`."""

    snapshots: dict[str, MarketSnapshot]
    #: symbols with no usable data at all (never fetched successfully) -> reason
    errors: dict[str, str]
    started_ms: int
    elapsed_ms: int
    #: HTTP requests this scan made (cache hits and shared in-flight reads excluded)
    requests: int

    @property
    def max_age_ms(self) -> int | None:
        return max((s.age_ms for s in self.snapshots.values()), default=None)


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    fetched_ms: int
    limit: int = 0  # klines: how many candles were asked for


@dataclass(frozen=True, slots=True)
class _Got(Generic[T]):
    """A piece of data as handed to a snapshot: fresh or a fallback copy."""

    value: T | None
    fetched_ms: int | None
    problem: str | None  # set when the fetch failed (value is then the fallback, if any)


class MarketData:
    """See the module docstring.  ``exchange`` needs ``klines``, ``book_tickers`` and
    ``premium_index`` (a :class:`RestExchange`, its public view, or a paper venue)."""

    def __init__(self, exchange: Any, settings: Any, clock: Clock) -> None:
        self.exchange = exchange
        self.clock = clock
        self._klines: dict[tuple[str, str], _Entry[Candles]] = {}
        self._all: dict[str, _Entry[dict]] = {}  # book_tickers / premium_index -> last good answer
        self._inflight: dict[Any, asyncio.Future] = {}
        self._requests = 0
        self.update_settings(settings)

    def update_settings(self, settings: Any) -> None:
        """Take live changes (cache lifetime, max age, concurrency, timeframes)."""
        self.interval = str(setting(settings, "interval"))
        self.htf_interval = str(setting(settings, "htf_interval"))
        for iv in (self.interval, self.htf_interval):
            interval_ms(iv)  # a clear ValueError for a bad interval
        self.klines_limit = int(setting(settings, "klines"))
        self.cache_ms = int(float(setting(settings, "kline_cache_sec")) * 1000)
        self.max_age_ms = int(float(setting(settings, "max_data_age_sec")) * 1000)
        self.concurrency = max(1, int(setting(settings, "fetch_concurrency")))

    # -- cache helpers ----------------------------------------------------------------
    def _fresh(self, entry: _Entry[Candles], interval: str, limit: int, now: int) -> bool:
        if entry.limit < limit or len(entry.value) == 0 or now - entry.fetched_ms >= self.cache_ms:
            return False
        # never serve a forming candle whose period has ended: a new candle has closed since
        # (judged on the venue's clock when the exchange knows its offset)
        venue_now = now + int(getattr(self.exchange, "time_offset_ms", 0) or 0)
        return venue_now < int(entry.value.open_time[-1]) + interval_ms(interval)

    async def _shared(self, key: Any, fetch: Callable[[], Awaitable[T]]) -> T:
        """Run ``fetch`` once for concurrent callers asking for the same ``key``."""
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            self._requests += 1
            result = await fetch()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: nobody else may be waiting
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            del self._inflight[key]

    # -- single pieces ----------------------------------------------------------------
    async def _candles(self, symbol: str, interval: str, limit: int, sem: asyncio.Semaphore) -> _Got[Candles]:
        key = (symbol, interval)
        entry = self._klines.get(key)
        if entry is not None and self._fresh(entry, interval, limit, self.clock.now_ms()):
            return _Got(_tail(entry.value, limit), entry.fetched_ms, None)

        fetch_limit = self._incremental_limit(entry, interval, limit)

        async def fetch() -> Candles:
            async with sem:
                got = await self.exchange.klines(symbol, interval, fetch_limit)
                if fetch_limit < limit:
                    merged = _merge(entry.value, got, limit) if entry is not None else None
                    if merged is not None:
                        return merged
                    got = await self.exchange.klines(symbol, interval, limit)  # no overlap: full read
                return got
        try:
            candles = await self._shared(("klines", symbol, interval, limit), fetch)
        except VenueError as exc:
            entry = self._klines.get(key)
            problem = f"{interval} klines: {exc}"
            if entry is None:
                return _Got(None, None, problem)
            return _Got(_tail(entry.value, limit), entry.fetched_ms, problem)
        fetched = self.clock.now_ms()
        self._klines[key] = _Entry(candles, fetched, limit)
        return _Got(candles, fetched, None)

    def _incremental_limit(self, entry: _Entry[Candles] | None, interval: str, limit: int) -> int:
        """How many candles to ask for: after the first full read only the newest few (the cached
        forming candle onwards), which the scan merges into the cached history.  Small reads
        weigh less (1 instead of 2) and cost a fraction of the parsing.  A cached copy shorter
        than ``limit`` is the symbol's whole history (the venue had no more candles, e.g. a new
        listing): it is refreshed the same way, as the merge only ever appends candles that
        overlap it."""
        if entry is None or entry.limit < limit or len(entry.value) == 0:
            return limit
        venue_now = self.clock.now_ms() + int(getattr(self.exchange, "time_offset_ms", 0) or 0)
        missing = (venue_now - int(entry.value.open_time[-1])) // interval_ms(interval) + 1
        if missing < 0 or missing + 2 > INCREMENTAL_MAX:
            return limit
        return min(limit, max(3, int(missing) + 2))

    async def _all_symbols(self, method: str) -> _Got[dict]:
        """One all-symbol read (``book_tickers`` / ``premium_index``), with its fallback."""
        entry = self._all.get(method)
        try:
            value = await self._shared(method, getattr(self.exchange, method))
        except VenueError as exc:
            problem = f"{method.replace('_', ' ')}: {exc}"
            if entry is None:
                return _Got(None, None, problem)
            return _Got(entry.value, entry.fetched_ms, problem)
        fetched = self.clock.now_ms()
        self._all[method] = _Entry(value, fetched)
        return _Got(value, fetched, None)

    # -- the scan ---------------------------------------------------------------------
    async def scan(self, symbols: Sequence[str]) -> MarketScan:
        """Fetch everything for ``symbols`` concurrently (see the module docstring)."""
        started = self.clock.now_ms()
        requests_before = self._requests
        sem = asyncio.Semaphore(self.concurrency)
        symbols = list(dict.fromkeys(symbols))
        book, prem, *klines = await asyncio.gather(
            self._all_symbols("book_tickers"), self._all_symbols("premium_index"),
            *(asyncio.gather(self._candles(s, self.interval, self.klines_limit, sem),
                             self._candles(s, self.htf_interval, self.klines_limit, sem)) for s in symbols))
        now = self.clock.now_ms()
        snaps: dict[str, MarketSnapshot] = {}
        errors: dict[str, str] = {}
        for sym, (ltf, htf) in zip(symbols, klines, strict=True):
            snap = self._snapshot(sym, ltf, htf, book, prem, now)
            if isinstance(snap, str):
                errors[sym] = snap
            else:
                snaps[sym] = snap
        self._prune(symbols, now)
        return MarketScan(snaps, errors, started, now - started, self._requests - requests_before)

    def _snapshot(self, sym: str, ltf: _Got[Candles], htf: _Got[Candles], book: _Got[dict],
                  prem: _Got[dict], now: int) -> MarketSnapshot | str:
        if ltf.value is None or htf.value is None:
            return "; ".join(p for p in (ltf.problem, htf.problem) if p) or "no klines"
        problems = [p for p in (ltf.problem, htf.problem, book.problem, prem.problem) if p]
        b = book.value.get(sym) if book.value is not None else None
        p = prem.value.get(sym) if prem.value is not None else None
        if book.value is not None and b is None:
            problems.append("no book ticker for this symbol")
        if prem.value is not None and p is None:
            problems.append("no premium index for this symbol")
        times = [g.fetched_ms for g in (ltf, htf) if g.fetched_ms is not None]
        if b is not None and book.fetched_ms is not None:
            times.append(book.fetched_ms)
        if p is not None and prem.fetched_ms is not None:
            times.append(prem.fetched_ms)
        age = max(0, now - min(times))
        stale = any(g.problem for g in (ltf, htf, book, prem))
        can_open = b is not None and p is not None and age <= self.max_age_ms and len(ltf.value) > 0
        return MarketSnapshot(sym, ltf.value, htf.value, b, p, age, stale, can_open, tuple(problems))

    def _prune(self, scanned: Iterable[str], now: int) -> None:
        keep = set(scanned)
        limit = self.max_age_ms * _PRUNE_FACTOR
        for key in [k for k, e in self._klines.items() if k[0] not in keep and now - e.fetched_ms > limit]:
            del self._klines[key]

    def invalidate(self, symbol: str | None = None) -> None:
        """Forget cached klines (of one symbol, or all)."""
        if symbol is None:
            self._klines.clear()
        else:
            for key in [k for k in self._klines if k[0] == symbol]:
                del self._klines[key]


def _merge(old: Candles, new: Candles, limit: int) -> Candles | None:
    """``old`` history with ``new`` (the newest candles) on top, the last ``limit`` rows; None
    when they do not overlap (a gap: the caller reads the full history again)."""
    if len(new) == 0 or len(old) == 0:
        return None
    first_new = int(new.open_time[0])
    if first_new > int(old.open_time[-1]) or first_new < int(old.open_time[0]):
        return None
    keep = int(np.searchsorted(old.open_time, first_new))
    out = Candles(*(np.concatenate((getattr(old, f)[:keep], getattr(new, f)))
                    for f in ("open_time", "open", "high", "low", "close", "volume")),
                  new.interval, new.last_closed)
    return _tail(out, limit)


def _tail(c: Candles, n: int) -> Candles:
    return c if len(c) <= n else c.slice(len(c) - n, len(c))
