"""Market feeds: where the simulated exchange gets its prices.

A :class:`MarketFeed` serves *base candles* (the finest interval it has) per symbol, indexed
``k = 0, 1, ...``; everything else (klines of any higher interval, the price at any instant,
bid/ask, mark price, funding) is derived from them:

* **Intra-candle path.**  Inside a base candle the price moves in straight lines through four
  points: the open at the open time, the first extreme at 1/3 of the candle, the second extreme
  at 2/3 and the close at the end.  The standard order is O->L->H->C for an up candle
  (close >= open) and O->H->L->C for a down candle.  The simulated exchange may visit the
  extreme that is adverse to an open position first ("conservative" intra-bar mode, see
  :mod:`mraster_tui.engine.sim.exchange`).  Between the end of a candle and the next candle's
  open (a data gap, or the space between two live observations) the price stays at the close;
  it jumps to the next open at that candle's open time (a gap).
* **Spread and mark price.**  Each candle carries a full spread as a fraction of the price and a
  mark-price premium: ``mark = price * (1 + premium)``, constant within a candle and never
  beyond ``premium_bound`` in absolute value.
* **Funding** happens at funding times with the feed's rate, or ``None`` when the feed has no
  rate for that time (the exchange then uses its configured rate).

Implementations: :class:`SyntheticMarket` (seeded random market, generated lazily one UTC day
per symbol at a time), :class:`ReplayMarket` (kline files) and :class:`LiveFeed` (observed
live prices, for the paper venue).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import numpy as np

from mraster_tui.engine.data import DataError, bucket_start, load_files, resample
from mraster_tui.engine.types import Candles, FundingRate, SymbolFilters, SymbolInfo, interval_ms

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
#: Default synthetic market start: 2024-01-01 00:00 UTC (fixed, so a seed means one market).
DEFAULT_SYNTHETIC_START_MS = 1_704_067_200_000

#: A base candle as Python floats: (open_time, open, high, low, close, volume, spread, premium).
CandleRow = list


class MarketFeed(Protocol):
    """What :class:`~mraster_tui.engine.sim.exchange.SimExchange` needs from a price source."""

    base_interval: str
    base_ms: int  # duration of one base candle
    start_ms: int  # first instant every symbol has a price
    end_ms: int | None  # end of the data (None: unbounded)
    default_start_ms: int  # where a simulation starts by default (after some history)
    premium_bound: float  # |mark / price - 1| never exceeds this
    funding_interval_ms: int

    def symbols(self) -> list[str]: ...

    def symbol_info(self, symbol: str) -> SymbolInfo: ...

    def index_at(self, symbol: str, t_ms: int) -> int:
        """Index of the base candle containing ``t_ms``, or of the last one before it (gap / end
        of data); -1 before the first candle."""

    def candle(self, symbol: str, k: int) -> CandleRow: ...

    def candle_time(self, symbol: str, k: int) -> float:
        """Open time of candle ``k`` (``math.inf`` past the end of the data)."""

    def price_range(self, symbol: str, k0: int, k1: int) -> tuple[float, float]:
        """(lowest low, highest high) of base candles ``k0..k1`` inclusive."""

    def candles(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> Candles:
        """Closed candles of ``interval`` with ``start_ms <= open_time < end_ms``."""

    def funding_events(self, symbol: str, t0: int, t1: int) -> list[tuple[int, Decimal | None]]:
        """Funding times in ``(t0, t1]`` with their rate (None: the feed has no rate)."""

    def next_funding(self, symbol: str, t_ms: int) -> tuple[int, Decimal | None]:
        """The first funding time after ``t_ms`` and its (estimated) rate."""

    def next_funding_time(self, symbol: str, t_ms: int) -> int:
        """The first funding time after ``t_ms`` (cheap: no rate)."""

    def scan(self, symbol: str, k0: int, down: float, up: float, limit: int) -> int:
        """The first candle ``k >= k0`` (at most ``limit`` ahead) whose range, including the
        jump from the previous close, reaches ``down`` or ``up``; ``k0 + limit`` (or past the
        end of the data) when none does.  The exchange uses it only to skip steps in which
        nothing can happen, never to decide anything, so it may read ahead of "now"."""

    def volume_between(self, symbol: str, t0: int, t1: int) -> tuple[float, float]:
        """(base volume, quote volume) of base candles with ``t0 <= open_time < t1``."""


# -- the intra-candle path ------------------------------------------------------------------

def standard_low_first(o: float, c: float) -> bool:
    """The documented path visits the low first in an up (or flat) candle."""
    return c >= o


def path_price(row: CandleRow, dur: int, t: float, low_first: bool) -> float:
    """Price at ``t`` inside (or after) the base candle ``row``."""
    x = (t - row[0]) / dur
    o, c = row[1], row[4]
    if x >= 1.0:
        return c
    if x <= 0.0:
        return o
    p1, p2 = (row[3], row[2]) if low_first else (row[2], row[3])
    x3 = 3.0 * x
    if x3 < 1.0:
        return o + (p1 - o) * x3
    if x3 < 2.0:
        return p1 + (p2 - p1) * (x3 - 1.0)
    return p2 + (c - p2) * (x3 - 2.0)


def path_points(row: CandleRow, dur: int, low_first: bool) -> tuple[tuple[float, float], ...]:
    """The four (time, price) corners of the candle's path; the last one is the close, reached
    at the end of the candle."""
    ot = row[0]
    p1, p2 = (row[3], row[2]) if low_first else (row[2], row[3])
    return ((ot, row[1]), (ot + dur / 3.0, p1), (ot + 2.0 * dur / 3.0, p2), (ot + dur, row[4]))


def path_extremes(row: CandleRow, dur: int, t: float, low_first: bool) -> tuple[float, float]:
    """(low, high) the path has touched from the candle open up to ``t``."""
    lo = hi = row[1]
    for tp, p in path_points(row, dur, low_first)[1:]:
        if tp > t:
            break
        lo, hi = min(lo, p), max(hi, p)
    p = path_price(row, dur, t, low_first)
    return min(lo, p), max(hi, p)


# -- symbol filters -------------------------------------------------------------------------

def _pow10(e: int) -> Decimal:
    return Decimal(10 ** e) if e >= 0 else Decimal(10) ** e


def make_symbol_info(symbol: str, price: float, *, tick: Decimal | None = None, quote: str = "USDT",
                     min_notional: Decimal = Decimal(5)) -> SymbolInfo:
    """Realistic filters for a price level: tick ~ 1e-4..1e-5 of the price (0.1 at 65000,
    0.01 at 3000 or 150, 1e-5 at 0.5), step such that one step is worth 0.1-1 USDT, min
    notional 5, MARKET max qty a tenth of the LIMIT max qty (Binance-like)."""
    e = math.floor(math.log10(price))
    if tick is None:
        tick = _pow10(max(-8, e - 4 - (1 if price >= 1000 else 0)))
    step = _pow10(max(-8, min(3, math.floor(math.log10(1.0 / price)))))
    max_qty = max(Decimal(str(5e7 / price)) // step * step, step)
    market_max = max(max_qty / 10 // step * step, step)
    max_price = Decimal(str(price * 1000)) // tick * tick
    filters = SymbolFilters(
        tick_size=tick, min_price=tick, max_price=max_price, step_size=step, min_qty=step, max_qty=max_qty,
        market_step_size=step, market_min_qty=step, market_max_qty=market_max, min_notional=min_notional)
    base = symbol[: -len(quote)] if symbol.endswith(quote) and len(symbol) > len(quote) else symbol
    return SymbolInfo(symbol, base, quote, "TRADING", "PERPETUAL", filters,
                      price_precision=max(0, -tick.as_tuple().exponent),
                      quantity_precision=max(0, -step.as_tuple().exponent))


def _decimals_in(values: np.ndarray) -> int:
    d = 0
    for x in values:
        s = repr(float(x))
        if "e" in s or "E" in s:
            return 8
        if "." in s:
            d = max(d, len(s.split(".")[1].rstrip("0")))
    return min(d, 8)


# -- shared grid helpers --------------------------------------------------------------------

def _grid_events(t0: int, t1: int, every: int) -> list[tuple[int, Decimal | None]]:
    first = (t0 // every + 1) * every
    if first > t1:
        return []
    return [(t, None) for t in range(first, t1 + 1, every)]


def _closed_window(full: Candles, start_ms: int, end_ms: int) -> Candles:
    """Rows of ``full`` with start <= open_time < end, never its incomplete last bucket."""
    n = len(full) - (0 if full.last_closed else 1)
    i0 = int(np.searchsorted(full.open_time[:n], start_ms, side="left"))
    i1 = int(np.searchsorted(full.open_time[:n], end_ms, side="left"))
    return full.slice(i0, max(i0, i1), last_closed=True)


class _Cumulative:
    """Cumulative base and quote volume for O(1) window sums."""

    __slots__ = ("cv", "cq")

    def __init__(self, v: np.ndarray, q: np.ndarray) -> None:
        self.cv = np.r_[0.0, np.cumsum(v)]
        self.cq = np.r_[0.0, np.cumsum(q)]

    def between(self, i0: int, i1: int) -> tuple[float, float]:
        return float(self.cv[i1] - self.cv[i0]), float(self.cq[i1] - self.cq[i0])


# -- replay ---------------------------------------------------------------------------------

class _Series:
    __slots__ = ("ot", "rows", "regular", "t0", "n", "cum", "resampled", "funding", "funding_times", "lo_eff",
                 "hi_eff")

    def __init__(self, c: Candles, spread: float, premium: float, qv: np.ndarray | None,
                 funding: Sequence[FundingRate]) -> None:
        n = len(c)
        self.n = n
        self.ot = c.open_time.astype(np.int64)
        self.rows = np.column_stack([self.ot.astype(np.float64), c.open, c.high, c.low, c.close, c.volume,
                                     np.full(n, spread), np.full(n, premium)])
        self.t0 = int(self.ot[0])
        step = interval_ms(c.interval)
        self.regular = bool(n < 2 or (np.diff(self.ot) == step).all())
        q = qv if qv is not None else c.volume * c.close
        self.cum = _Cumulative(c.volume, q)
        self.resampled: dict[str, Candles] = {c.interval: c}
        self.funding = list(funding)
        self.funding_times = [f.funding_time for f in self.funding]
        prev_close = np.r_[c.open[:1], c.close[:-1]]
        self.lo_eff = np.minimum(c.low, prev_close)  # a gap from the previous close counts
        self.hi_eff = np.maximum(c.high, prev_close)


class ReplayMarket:
    """Replays recorded candles (the finest interval in ``series`` is the base interval).

    Spread is ``spread`` (a fraction of the price, at least one tick when quoted) and the mark
    premium is ``premium`` (both constant).  Funding comes from ``funding`` where a symbol has
    data (those times and rates only), otherwise every ``funding_interval_h`` hours on the UTC
    grid without a rate.  Filters are inferred from the data (tick from the price decimals)
    unless ``infos`` gives them.  The common window of all symbols is the playable range;
    the default start leaves ``warmup_ms`` of history (at most half the data).
    """

    def __init__(self, series: Mapping[str, Candles], funding: Mapping[str, Sequence[FundingRate]] | None = None, *,
                 infos: Mapping[str, SymbolInfo] | None = None, spread: float = 0.0002, premium: float = 0.0,
                 quote_volume: Mapping[str, np.ndarray] | None = None, warmup_ms: int = 3 * DAY_MS,
                 funding_interval_h: int = 8) -> None:
        if not series:
            raise ValueError("a replay market needs at least one series")
        intervals = {c.interval for c in series.values()}
        if len(intervals) != 1:
            raise ValueError(f"all replay series must share one interval, got {sorted(intervals)}")
        if not 0 <= spread < 0.1 or abs(premium) >= 0.05:
            raise ValueError("spread must be in [0, 0.1) and |premium| < 0.05")
        self.base_interval = intervals.pop()
        self.base_ms = interval_ms(self.base_interval)
        self.premium_bound = abs(premium)
        self.funding_interval_ms = funding_interval_h * HOUR_MS
        funding = funding or {}
        self._s: dict[str, _Series] = {}
        self._infos: dict[str, SymbolInfo] = {}
        for sym, c in series.items():
            if len(c) == 0:
                raise ValueError(f"{sym}: empty series")
            c = c.closed_only()
            self._s[sym] = _Series(c, spread, premium, (quote_volume or {}).get(sym), funding.get(sym, ()))
            if infos and sym in infos:
                self._infos[sym] = infos[sym]
            else:
                sample = np.r_[c.open[:500], c.close[:500]]
                tick = _pow10(-_decimals_in(sample))
                self._infos[sym] = make_symbol_info(sym, float(np.median(c.close[-500:])), tick=tick)
        self.start_ms = max(s.t0 for s in self._s.values())
        self.end_ms = min(int(s.ot[-1]) + self.base_ms for s in self._s.values())
        if self.end_ms <= self.start_ms:
            raise ValueError("the replay series do not overlap in time")
        self.default_start_ms = self.start_ms + min(warmup_ms, (self.end_ms - self.start_ms) // 2)
        self.default_start_ms -= self.default_start_ms % self.base_ms

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], *, allow_gaps: bool = False, **kw) -> "ReplayMarket":
        """Build from kline and funding files (kind detected per file; mark-price files skipped)."""
        files = load_files(paths, allow_gaps=allow_gaps)
        series: dict[str, Candles] = {}
        qv: dict[str, np.ndarray] = {}
        for p, lc in files.candles:
            if lc.symbol in series:
                raise DataError(p, f"a second series for {lc.symbol}; give one file per symbol")
            series[lc.symbol] = lc.candles
            if lc.quote_volume is not None:
                qv[lc.symbol] = lc.quote_volume
        if not series:
            raise DataError(", ".join(map(str, paths)) or "(no files)", "no kline files among the data files")
        return cls(series, files.funding, quote_volume=qv, **kw)

    # -- MarketFeed --
    def symbols(self) -> list[str]:
        return list(self._s)

    def symbol_info(self, symbol: str) -> SymbolInfo:
        return self._infos[symbol]

    def index_at(self, symbol: str, t_ms: int) -> int:
        s = self._s[symbol]
        if s.regular:
            k = (t_ms - s.t0) // self.base_ms
            return -1 if k < 0 else min(k, s.n - 1)
        return int(np.searchsorted(s.ot, t_ms, side="right")) - 1

    def candle(self, symbol: str, k: int) -> CandleRow:
        return self._s[symbol].rows[k].tolist()

    def candle_time(self, symbol: str, k: int) -> float:
        s = self._s[symbol]
        return float(s.ot[k]) if k < s.n else math.inf

    def price_range(self, symbol: str, k0: int, k1: int) -> tuple[float, float]:
        rows = self._s[symbol].rows
        if k1 - k0 < 16:  # a few candles: plain Python beats numpy's per-call overhead
            hl = rows[k0:k1 + 1, 2:4].tolist()
            return min(r[1] for r in hl), max(r[0] for r in hl)
        return rows[k0:k1 + 1, 3].min().item(), rows[k0:k1 + 1, 2].max().item()

    def candles(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> Candles:
        s = self._s[symbol]
        full = s.resampled.get(interval)
        if full is None:
            full = s.resampled[interval] = resample(s.resampled[self.base_interval], interval)
        return _closed_window(full, start_ms, end_ms)

    def funding_events(self, symbol: str, t0: int, t1: int) -> list[tuple[int, Decimal | None]]:
        s = self._s[symbol]
        if not s.funding:
            return _grid_events(t0, t1, self.funding_interval_ms)
        i0 = bisect.bisect_right(s.funding_times, t0)
        i1 = bisect.bisect_right(s.funding_times, t1)
        return [(f.funding_time, f.funding_rate) for f in s.funding[i0:i1]]

    def next_funding(self, symbol: str, t_ms: int) -> tuple[int, Decimal | None]:
        s = self._s[symbol]
        if s.funding:
            i = bisect.bisect_right(s.funding_times, t_ms)
            if i < len(s.funding):
                return s.funding_times[i], s.funding[i].funding_rate
        return (t_ms // self.funding_interval_ms + 1) * self.funding_interval_ms, None

    def next_funding_time(self, symbol: str, t_ms: int) -> int:
        return self.next_funding(symbol, t_ms)[0]

    def scan(self, symbol: str, k0: int, down: float, up: float, limit: int) -> int:
        s = self._s[symbol]
        k1 = min(s.n, k0 + limit)
        hit = np.flatnonzero((s.lo_eff[k0:k1] <= down) | (s.hi_eff[k0:k1] >= up))
        return k0 + int(hit[0]) if hit.size else k1

    def volume_between(self, symbol: str, t0: int, t1: int) -> tuple[float, float]:
        s = self._s[symbol]
        i0 = int(np.searchsorted(s.ot, t0, side="left"))
        i1 = int(np.searchsorted(s.ot, t1, side="left"))
        return s.cum.between(i0, max(i0, i1))


# -- synthetic ------------------------------------------------------------------------------

#: (symbol, typical price) of well-known perpetuals, in rough order of 24h volume.
_KNOWN: tuple[tuple[str, float], ...] = (
    ("BTCUSDT", 65000.0), ("ETHUSDT", 3200.0), ("SOLUSDT", 150.0), ("XRPUSDT", 0.55), ("DOGEUSDT", 0.15),
    ("BNBUSDT", 580.0), ("ADAUSDT", 0.45), ("SUIUSDT", 1.2), ("AVAXUSDT", 35.0), ("LINKUSDT", 15.0),
    ("LTCUSDT", 80.0), ("TRXUSDT", 0.12), ("DOTUSDT", 7.0), ("BCHUSDT", 400.0), ("NEARUSDT", 5.0),
    ("APTUSDT", 9.0), ("ARBUSDT", 1.0), ("OPUSDT", 2.0), ("WIFUSDT", 2.5), ("PEPEUSDT", 0.0000095),
    ("FILUSDT", 5.5), ("ATOMUSDT", 8.0), ("INJUSDT", 25.0), ("ETCUSDT", 27.0), ("UNIUSDT", 9.0),
    ("AAVEUSDT", 110.0), ("TIAUSDT", 8.0), ("SEIUSDT", 0.5), ("ORDIUSDT", 40.0), ("FETUSDT", 1.5),
    ("RNDRUSDT", 7.0), ("ENAUSDT", 0.8), ("JUPUSDT", 1.0), ("WLDUSDT", 3.0), ("LDOUSDT", 2.0),
    ("STXUSDT", 2.0), ("TONUSDT", 6.0), ("ICPUSDT", 12.0), ("HBARUSDT", 0.09), ("XLMUSDT", 0.11),
    ("ALGOUSDT", 0.18), ("GALAUSDT", 0.04), ("SANDUSDT", 0.45), ("MANAUSDT", 0.45), ("AXSUSDT", 7.0),
    ("CRVUSDT", 0.45), ("DYDXUSDT", 2.0), ("GMXUSDT", 30.0), ("SNXUSDT", 3.0), ("MKRUSDT", 2800.0),
    ("COMPUSDT", 55.0), ("1INCHUSDT", 0.4), ("ZECUSDT", 25.0), ("DASHUSDT", 30.0), ("XMRUSDT", 130.0),
    ("EOSUSDT", 0.8), ("IOTAUSDT", 0.25), ("THETAUSDT", 2.0), ("VETUSDT", 0.035), ("CHZUSDT", 0.1),
)
_CONSONANTS = "BCDFGHJKLMNPRSTVWXZ"
_VOWELS = "AEIOU"


def _synthetic_name(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        n = int(rng.integers(2, 4))
        base = "".join(_CONSONANTS[int(rng.integers(len(_CONSONANTS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))]
                       for _ in range(n))[: int(rng.integers(3, 6))]
        sym = base + "USDT"
        if sym not in taken:
            taken.add(sym)
            return sym


@dataclass(frozen=True, slots=True)
class _SymParams:
    index: int
    price0: float
    sigma_day: float
    qv24: float  # target 24h quote volume (USDT)
    spread: float  # typical full spread (fraction)


@dataclass(slots=True)
class _GenState:
    """Generator state at a chunk boundary (everything the next chunk depends on)."""

    r: float  # random-walk component of log(price / price0)
    y: float  # mean-reverting component
    h: float  # log-volatility
    regime: int  # 0 range, 1 up trend, 2 down trend
    left: int  # candles left in the current regime
    drift: float  # per-candle drift of the current regime
    close: float  # last close


class _Chunk:
    __slots__ = ("rows", "cum", "regime", "resampled")

    def __init__(self, rows: np.ndarray, regime: np.ndarray) -> None:
        self.rows = rows
        q = rows[:, 5] * rows[:, 4]
        self.cum = _Cumulative(rows[:, 5], q)
        self.regime = regime
        self.resampled: dict[str, Candles] = {}


def _ar1(phi: float, x0: float, e: np.ndarray) -> np.ndarray:
    """x_t = phi * x_{t-1} + e_t (t = 1..n) without a Python loop: closed form in blocks short
    enough that phi**-block stays well inside float64."""
    n = e.shape[0]
    out = np.empty(n)
    block = max(1, int(27.0 / -math.log(phi))) if phi < 1.0 else n
    x = x0
    for s in range(0, n, block):
        seg = e[s:s + block]
        j = np.arange(1, seg.shape[0] + 1, dtype=np.float64)
        pw = phi ** j
        out[s:s + seg.shape[0]] = pw * (x + np.cumsum(seg / pw))
        x = out[s + seg.shape[0] - 1]
    return out


class SyntheticMarket:
    """A seeded synthetic perpetual-futures market, generated lazily.

    Per symbol the log price is a random-walk component with regime drift plus a mean-reverting
    component; the regime switches between up trend, down trend and range (exponential
    durations, ~8 h trends and ~10 h ranges); volatility follows an AR(1) log-vol process
    (clustering) and shocks are Student-t (fat tails).  Wicks are exponential in the current
    volatility with rare spikes; volume follows the 24h target, the UTC time of day and the
    size of the move; spread widens with volatility and with lower liquidity; the mark
    premium is a fraction of the spread; funding every 8 h (00/08/16 UTC) depends on the
    regime at the start of the funding period (up: positive, down: lower, range: ~0.01%).

    24h quote volumes fall log-linearly with the symbol's rank (about 1.5e10 USDT for BTCUSDT
    down to ~1e4 for rank 300), so a universe of 40 or 200 with a 75 000 USDT minimum can be
    tested.  Symbols beyond the built-in list of well-known names get generated names.

    Data starts ``history_days`` before ``start_ms`` (rounded down to a UTC day); one chunk
    is one UTC day per symbol, generated on first use from the previous chunk's end state and
    an RNG keyed by (seed, symbol, day), kept in an LRU cache (only the small boundary states
    are kept forever).  The same seed gives the same market whatever the order of queries.
    """

    premium_bound = 0.003

    def __init__(self, symbols: int | Sequence[str] = 20, seed: int = 0, start_ms: int | None = None,
                 base_interval: str = "1m", *, history_days: float = 4.0, funding_interval_h: int = 8,
                 cache_chunks: int | None = None) -> None:
        self.base_interval = base_interval
        self.base_ms = interval_ms(base_interval)
        if DAY_MS % self.base_ms:
            raise ValueError("the synthetic base interval must divide one day")
        self.seed = int(seed)
        self.chunk_len = DAY_MS // self.base_ms
        self.funding_interval_ms = funding_interval_h * HOUR_MS
        start = DEFAULT_SYNTHETIC_START_MS if start_ms is None else int(start_ms)
        self.default_start_ms = start - start % self.base_ms
        self.start_ms = (start - int(history_days * DAY_MS)) // DAY_MS * DAY_MS
        self.end_ms = None
        rng = np.random.default_rng([self.seed, 0x5EED])
        if isinstance(symbols, int):
            if not 1 <= symbols <= 2000:
                raise ValueError("symbols must be between 1 and 2000")
            names = [s for s, _ in _KNOWN[:symbols]]
            taken = set(names)
            while len(names) < symbols:
                names.append(_synthetic_name(rng, taken))
        else:
            names = [s.upper() for s in symbols]
            if len(set(names)) != len(names) or not names:
                raise ValueError("symbol names must be unique and non-empty")
        known = dict(_KNOWN)
        self._names = names
        self._params: dict[str, _SymParams] = {}
        self._infos: dict[str, SymbolInfo] = {}
        ranks = {s: i for i, (s, _) in enumerate(_KNOWN)}
        next_rank = len(_KNOWN)
        for i, sym in enumerate(names):
            srng = np.random.default_rng([self.seed, 1, i])
            rank = ranks.get(sym)
            if rank is None:
                rank, next_rank = next_rank, next_rank + 1
            price0 = known.get(sym) or float(10 ** srng.uniform(-3.5, 2.7))
            price0 *= float(np.exp(srng.normal(0.0, 0.1)))
            frac = min(1.0, rank / 300.0)
            qv24 = float(10 ** (10.2 - 6.3 * frac ** 0.7 + srng.normal(0.0, 0.15)))
            sigma_day = 0.025 if sym == "BTCUSDT" else 0.032 if sym == "ETHUSDT" else float(
                srng.uniform(0.035, 0.055) + 0.025 * frac)
            spread = float(np.clip(1e-5 * (1e10 / qv24) ** 0.45, 5e-6, 0.01))
            self._params[sym] = _SymParams(i, price0, sigma_day, qv24, spread)
            self._infos[sym] = make_symbol_info(sym, price0)
        self._states: dict[str, list[_GenState]] = {}
        self._cache: OrderedDict[tuple[str, int], _Chunk] = OrderedDict()
        self._cache_cap = cache_chunks or max(64, 3 * len(names))

    # -- generation --
    def _initial_state(self, p: _SymParams) -> _GenState:
        return _GenState(0.0, 0.0, 0.0, 0, 0, 0.0, p.price0)

    def _chunk(self, symbol: str, c: int) -> _Chunk:
        key = (symbol, c)
        ch = self._cache.get(key)
        if ch is not None:
            self._cache.move_to_end(key)
            return ch
        states = self._states.setdefault(symbol, [self._initial_state(self._params[symbol])])
        while len(states) <= c:  # generate forward to reach chunk c's start state
            ch, end = self._generate(symbol, len(states) - 1, states[-1])
            states.append(end)
            self._store((symbol, len(states) - 2), ch)
        ch = self._cache.get(key)
        if ch is None:
            ch, _ = self._generate(symbol, c, states[c])
            self._store(key, ch)
        return ch

    def _store(self, key: tuple[str, int], ch: _Chunk) -> None:
        self._cache[key] = ch
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_cap:
            self._cache.popitem(last=False)

    def _generate(self, symbol: str, c: int, st: _GenState) -> tuple[_Chunk, _GenState]:
        p = self._params[symbol]
        rng = np.random.default_rng([self.seed, 2, p.index, c])
        n = self.chunk_len
        dt_min = self.base_ms / 60_000.0
        sigma_c = p.sigma_day * math.sqrt(dt_min / 1440.0)
        # regimes
        regime = np.empty(n, dtype=np.int8)
        drift = np.empty(n)
        reg, left, mu = st.regime, st.left, st.drift
        i = 0
        while i < n:
            if left <= 0:
                if reg == 0:
                    reg = 1 if rng.random() < 0.5 else 2
                else:
                    reg = 0 if rng.random() < 0.65 else 3 - reg
                mean_h = 10.0 if reg == 0 else 8.0
                left = max(1, int((0.75 + rng.exponential(mean_h)) * 60.0 / dt_min))
                k = rng.uniform(0.02, 0.07)
                mu = 0.0 if reg == 0 else (k if reg == 1 else -k) * sigma_c * math.sqrt(dt_min)
            m = min(left, n - i)
            regime[i:i + m] = reg
            drift[i:i + m] = mu
            i += m
            left -= m
        # volatility clustering: AR(1) log-vol with a ~6 h memory
        phi_h = math.exp(-dt_min / 360.0)
        sd_h = 0.45
        h = _ar1(phi_h, st.h, sd_h * math.sqrt(1.0 - phi_h ** 2) * rng.standard_normal(n))
        sig = sigma_c * np.exp(h - 0.5 * sd_h ** 2)
        e1 = rng.standard_t(4, n) / math.sqrt(2.0)
        e2 = rng.standard_t(4, n) / math.sqrt(2.0)
        ranging = regime == 0
        w_rw = np.where(ranging, 0.3, 0.95)
        w_ou = np.where(ranging, 1.0, 0.3)
        pull = -st.r * dt_min / (45.0 * 1440.0)  # keeps prices within a sane band over years
        r = st.r + np.cumsum(drift + pull + w_rw * sig * e1)
        y = _ar1(math.exp(-dt_min / 90.0), st.y, w_ou * sig * e2)
        close = p.price0 * np.exp(r + y)
        opn = np.r_[st.close, close[:-1]]
        up = sig * rng.exponential(0.45, n)
        dn = sig * rng.exponential(0.45, n)
        spikes = rng.random(n) < 0.003
        up[spikes] *= rng.uniform(3.0, 8.0, int(spikes.sum()))
        spikes = rng.random(n) < 0.003
        dn[spikes] *= rng.uniform(3.0, 8.0, int(spikes.sum()))
        high = np.maximum(opn, close) * np.exp(up)
        low = np.minimum(opn, close) * np.exp(-dn)
        ot = self.start_ms + (c * n + np.arange(n)) * self.base_ms
        hour = (ot % DAY_MS) / HOUR_MS
        season = 1.0 + 0.35 * np.cos(2.0 * math.pi * (hour - 14.0) / 24.0)
        ret = np.log(close / opn)
        activity = (0.35 + 0.65 * np.minimum(np.abs(ret) / sig, 5.0)) * (sig / sigma_c) ** 0.8
        activity *= np.where(ranging, 0.9, 1.15)
        volume = p.qv24 / n * season * activity * rng.lognormal(-0.06, 0.35, n) / close
        spread = np.clip(p.spread * (sig / sigma_c) ** 0.7, 2e-6, 0.02)
        premium = np.clip(0.35 * spread * rng.standard_normal(n) + 0.5 * np.minimum(spread, 3e-4) * np.sign(drift),
                          -self.premium_bound, self.premium_bound)
        rows = np.column_stack([ot.astype(np.float64), opn, high, low, close, volume, spread, premium])
        end = _GenState(float(r[-1]), float(y[-1]), float(h[-1]), int(reg), int(left), float(mu), float(close[-1]))
        return _Chunk(rows, regime), end

    # -- MarketFeed --
    def symbols(self) -> list[str]:
        return list(self._names)

    def symbol_info(self, symbol: str) -> SymbolInfo:
        return self._infos[symbol]

    def index_at(self, symbol: str, t_ms: int) -> int:
        if t_ms < self.start_ms:
            return -1
        return (t_ms - self.start_ms) // self.base_ms

    def candle(self, symbol: str, k: int) -> CandleRow:
        c, i = divmod(k, self.chunk_len)
        return self._chunk(symbol, c).rows[i].tolist()

    def candle_time(self, symbol: str, k: int) -> float:
        return float(self.start_ms + k * self.base_ms)

    def price_range(self, symbol: str, k0: int, k1: int) -> tuple[float, float]:
        lo, hi = math.inf, -math.inf
        n = self.chunk_len
        for c in range(k0 // n, k1 // n + 1):
            rows = self._chunk(symbol, c).rows
            a = max(k0 - c * n, 0)
            b = min(k1 - c * n, n - 1) + 1
            if b - a < 16:
                hl = rows[a:b, 2:4].tolist()
                lo, hi = min(lo, min(r[1] for r in hl)), max(hi, max(r[0] for r in hl))
            else:
                lo, hi = min(lo, rows[a:b, 3].min().item()), max(hi, rows[a:b, 2].max().item())
        return lo, hi

    def _base_slice(self, symbol: str, k0: int, k1: int) -> np.ndarray:
        n = self.chunk_len
        parts = []
        for c in range(k0 // n, (k1 - 1) // n + 1):
            rows = self._chunk(symbol, c).rows
            parts.append(rows[max(k0 - c * n, 0):min(k1 - c * n, n)])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def candles(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> Candles:
        step = interval_ms(interval)
        start_ms = max(start_ms, self.start_ms)
        if end_ms <= start_ms:
            return Candles.empty(interval)
        if DAY_MS % step == 0:  # buckets never straddle a chunk: cache per chunk
            parts = []
            for c in range((start_ms - self.start_ms) // DAY_MS, (end_ms - 1 - self.start_ms) // DAY_MS + 1):
                ch = self._chunk(symbol, c)
                rc = ch.resampled.get(interval)
                if rc is None:
                    r = ch.rows
                    base = Candles(r[:, 0].astype(np.int64), r[:, 1], r[:, 2], r[:, 3], r[:, 4], r[:, 5],
                                   self.base_interval, True)
                    rc = ch.resampled[interval] = resample(base, interval)
                parts.append(rc)
            ot = np.concatenate([p.open_time for p in parts])
            cols = [np.concatenate([getattr(p, f) for p in parts]) for f in ("open", "high", "low", "close", "volume")]
            full = Candles(ot, *cols, interval, True)
        else:  # 3d / 1w: aggregate from the base candles of whole buckets
            b0 = bucket_start(start_ms, interval)
            if b0 < self.start_ms:
                b0 += step
            k0 = (b0 - self.start_ms) // self.base_ms
            k1 = (end_ms - self.start_ms + self.base_ms - 1) // self.base_ms
            if k1 <= k0:
                return Candles.empty(interval)
            r = self._base_slice(symbol, k0, k1)
            base = Candles(r[:, 0].astype(np.int64), r[:, 1], r[:, 2], r[:, 3], r[:, 4], r[:, 5], self.base_interval, True)
            full = resample(base, interval)
        return _closed_window(full, start_ms, end_ms)

    def _funding_rate(self, symbol: str, tf: int) -> Decimal:
        p = self._params[symbol]
        period_start = max(tf - self.funding_interval_ms, self.start_ms)
        k = self.index_at(symbol, period_start)
        c, i = divmod(k, self.chunk_len)
        regime = int(self._chunk(symbol, c).regime[i])
        rng = np.random.default_rng([self.seed, 3, p.index, tf // self.funding_interval_ms])
        if regime == 1:
            rate = 0.0001 + rng.uniform(0.0, 0.0004)
        elif regime == 2:
            rate = rng.uniform(-0.0003, 0.0001)
        else:
            rate = 0.0001 + rng.normal(0.0, 0.00003)
        return Decimal(f"{min(max(rate, -0.003), 0.003):.8f}")

    def funding_events(self, symbol: str, t0: int, t1: int) -> list[tuple[int, Decimal | None]]:
        return [(t, self._funding_rate(symbol, t)) for t, _ in _grid_events(t0, t1, self.funding_interval_ms)]

    def next_funding(self, symbol: str, t_ms: int) -> tuple[int, Decimal | None]:
        tf = self.next_funding_time(symbol, t_ms)
        return tf, self._funding_rate(symbol, tf)

    def next_funding_time(self, symbol: str, t_ms: int) -> int:
        return (t_ms // self.funding_interval_ms + 1) * self.funding_interval_ms

    def scan(self, symbol: str, k0: int, down: float, up: float, limit: int) -> int:
        # candles open at the previous close here, so a candle's own range covers its jump
        n = self.chunk_len
        k1 = k0 + limit
        for c in range(k0 // n, (k1 - 1) // n + 1):
            rows = self._chunk(symbol, c).rows
            a, b = max(k0 - c * n, 0), min(k1 - c * n, n)
            hit = np.flatnonzero((rows[a:b, 3] <= down) | (rows[a:b, 2] >= up))
            if hit.size:
                return c * n + a + int(hit[0])
        return k1

    def volume_between(self, symbol: str, t0: int, t1: int) -> tuple[float, float]:
        k0 = max(0, -(-(t0 - self.start_ms) // self.base_ms))
        k1 = max(0, -(-(t1 - self.start_ms) // self.base_ms))
        v = q = 0.0
        n = self.chunk_len
        for c in range(k0 // n, (k1 - 1) // n + 1) if k1 > k0 else ():
            cum = self._chunk(symbol, c).cum
            a, b = max(k0 - c * n, 0), min(k1 - c * n, n)
            dv, dq = cum.between(a, b)
            v, q = v + dv, q + dq
        return v, q

    def regime_at(self, symbol: str, t_ms: int) -> int:
        """0 range, 1 up trend, 2 down trend (for tests and the demo's status line)."""
        c, i = divmod(self.index_at(symbol, t_ms), self.chunk_len)
        return int(self._chunk(symbol, c).regime[i])


# -- live observations (paper venue on real prices) -----------------------------------------

class LiveFeed:
    """Prices observed from a real venue, one 1 ms "candle" per observation.

    Between two observations the price is flat at the last one and jumps to the next at its
    time, so a stop crossed between two polls fills at the newly observed price (plus
    slippage), never at a price nobody saw.  Only recent observations are kept.  Klines and
    tickers are not served from here: the paper venue forwards them to the real venue.
    """

    base_interval = "1m"
    base_ms = 1
    end_ms = None
    premium_bound = 0.05

    def __init__(self, infos: Mapping[str, SymbolInfo], start_ms: int, *, keep: int = 2000,
                 funding_interval_h: int = 8) -> None:
        self._infos = dict(infos)
        self.start_ms = self.default_start_ms = int(start_ms)
        self.funding_interval_ms = funding_interval_h * HOUR_MS
        self._keep = keep
        self._t: dict[str, list[int]] = {s: [] for s in infos}
        self._rows: dict[str, list[CandleRow]] = {s: [] for s in infos}
        self._dropped: dict[str, int] = dict.fromkeys(infos, 0)
        self._funding: dict[str, tuple[int, Decimal]] = {}

    def push(self, t_ms: int, symbol: str, price: float, spread: float, premium: float = 0.0) -> None:
        """Record an observation (times per symbol must not go backwards)."""
        ts, rows = self._t[symbol], self._rows[symbol]
        premium = max(-self.premium_bound, min(self.premium_bound, premium))
        row = [float(t_ms), price, price, price, price, 0.0, spread, premium]
        if ts and t_ms <= ts[-1]:
            if t_ms < ts[-1]:
                raise ValueError("live observations must not go back in time")
            rows[-1] = row
            return
        ts.append(int(t_ms))
        rows.append(row)
        if len(ts) > 2 * self._keep:
            cut = len(ts) - self._keep
            del ts[:cut], rows[:cut]
            self._dropped[symbol] += cut

    def set_funding(self, symbol: str, next_time: int, rate: Decimal) -> None:
        self._funding[symbol] = (int(next_time), rate)

    def has_price(self, symbol: str) -> bool:
        return bool(self._t.get(symbol))

    def symbols(self) -> list[str]:
        return list(self._infos)

    def symbol_info(self, symbol: str) -> SymbolInfo:
        return self._infos[symbol]

    def index_at(self, symbol: str, t_ms: int) -> int:
        i = bisect.bisect_right(self._t[symbol], t_ms) - 1
        return -1 if i < 0 else i + self._dropped[symbol]

    def candle(self, symbol: str, k: int) -> CandleRow:
        return self._rows[symbol][k - self._dropped[symbol]]

    def candle_time(self, symbol: str, k: int) -> float:
        i = k - self._dropped[symbol]
        ts = self._t[symbol]
        return float(ts[i]) if 0 <= i < len(ts) else math.inf

    def price_range(self, symbol: str, k0: int, k1: int) -> tuple[float, float]:
        d = self._dropped[symbol]
        prices = [r[4] for r in self._rows[symbol][k0 - d:k1 - d + 1]]
        return min(prices), max(prices)

    def candles(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> Candles:
        return Candles.empty(interval)

    def funding_events(self, symbol: str, t0: int, t1: int) -> list[tuple[int, Decimal | None]]:
        f = self._funding.get(symbol)
        return [f] if f is not None and t0 < f[0] <= t1 else []

    def next_funding(self, symbol: str, t_ms: int) -> tuple[int, Decimal | None]:
        f = self._funding.get(symbol)
        if f is not None and f[0] > t_ms:
            return f
        return (t_ms // self.funding_interval_ms + 1) * self.funding_interval_ms, None

    def next_funding_time(self, symbol: str, t_ms: int) -> int:
        return self.next_funding(symbol, t_ms)[0]

    def scan(self, symbol: str, k0: int, down: float, up: float, limit: int) -> int:
        return k0  # the future is not known: every step is walked

    def volume_between(self, symbol: str, t0: int, t1: int) -> tuple[float, float]:
        return 0.0, 0.0
