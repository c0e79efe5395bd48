"""SimExchange: a deterministic Binance USD-M style matching engine (one-way mode, cross margin).

Pure Python, no wall clock, no threads, no I/O.  Time only moves through :meth:`advance_to`.
Used in-process by the paper venue and backtests, and behind the loopback HTTP server.

Account
    One USDT wallet in cross margin.  ``unrealized = amount * (mark - entry)`` per position;
    position initial margin = ``|amount| * mark / leverage``; open-order initial margin =
    ``qty * price / leverage`` of each resting non-reduce-only LIMIT order; available =
    wallet + unrealised - position IM - open-order IM (never below 0).  Leverage is per symbol,
    **20x by default** (Binance's default); the engine sets it explicitly.  All money is Decimal;
    commissions, PnL and balances are rounded to 8 decimals, fill prices are on the tick.

Orders
    MARKET fills at once at the book (ask for a buy, bid for a sell) moved by the slippage bps.
    LIMIT GTC rests, or fills at once as a taker when marketable (at the better of the limit
    and the slipped book price); IOC/FOK fill at once or expire (liquidity is unlimited, so
    there are no partial fills); GTX (post-only) is rejected with -5022 when marketable.  A
    resting LIMIT fills at its limit price as a maker when the price path touches it (also
    when the price gaps through it).  STOP_MARKET / TAKE_PROFIT_MARKET rest until the working
    price (``MARK_PRICE`` or ``CONTRACT_PRICE``) crosses the stop price (STOP BUY / TP SELL
    when it rises to it, STOP SELL / TP BUY when it falls to it); they then fill as a taker at
    the stop price converted to the contract price, moved against the order by half the spread
    plus the slippage bps, or at the open of a candle that gapped through the stop.
    ``closePosition`` closes whatever position there is at trigger time and expires when there
    is none (or it would open one); a reduce-only order never fills more than the position and
    expires when it can no longer reduce; reduce-only orders (not closePosition ones) expire
    when their position is closed.  A non-reduce conditional order whose margin is
    insufficient at trigger time expires.  ``algo=True`` orders (Binance algo service) have
    their own id space; when one triggers, a plain child order (client id ``algo-<algoId>``)
    is created and filled, and the fill carries the child's order id.

Intra-bar triggers
    Each symbol walks the feed's price path (see :mod:`mraster_tui.engine.sim.market`) from the
    old time to the new one; orders fire in the order the path reaches their levels; several
    orders crossed by one gap fire in the order the gap passes them (all at the open).  In the
    default ``intrabar="conservative"`` mode a candle entered while a position is open visits
    the extreme *adverse* to the position first (long: O->L->H->C, short: O->H->L->C), so when
    a stop and a take-profit both lie inside one bar the stop fills first -- unless the open
    already gapped beyond the take-profit, which then fills at the open.  ``intrabar="path"``
    always uses the feed's colour rule.  The path of a candle is fixed by the position held
    when the candle opened (a candle in which the position changes keeps its path) and also
    sets the prices quoted while time is inside it, so quotes and fills agree.  Symbols are
    walked one after the other within one :meth:`advance_to` call (events are then sorted by
    time), so cross-margin effects between symbols (margin checks of orders triggered later in
    the same step, the other positions' marks in a liquidation level) use the marks at the start
    of the step.

Fees and slippage
    Taker 0.05 %, maker 0.02 % by default (Binance USD-M VIP0), charged on every fill.
    :class:`SlippageModel`: half the spread (when ``half_spread``) plus ``bps``.

Funding
    At the feed's funding times (every 8 h on the UTC grid, or the data's times) each open
    position pays ``amount * mark * rate`` (longs pay positive rates, shorts receive them).
    The rate is the feed's, else the ``funding_rate`` given here, else no funding.

Liquidation
    Maintenance margin per position from the tier table :data:`MAINT_TIERS` (Binance BTCUSDT
    brackets: 0.4 % up to 50k notional ... 12.5 % above 50M, with the usual cumulative
    amounts so the function is continuous).  A position is liquidated when its mark price
    reaches the cross-margin liquidation price (wallet plus the other positions' unrealised PnL
    minus their maintenance margin).  The other positions' marks enter through "alarm bands":
    the account's cushion (margin balance - maintenance margin) is split over the positions,
    and whenever one moves by its share (at least 0.2 %) every level is recomputed, so the
    levels stay current without any work per step.  The liquidated position's open orders are
    cancelled, it is closed at the liquidation price as a taker (client id ``autoclose-...``),
    the remaining maintenance margin is charged as the clearance fee, and the wallet never
    goes below zero (the insurance fund takes the rest).

Speed
    Symbols with no order and no position are never looked at.  For the others the feed's
    ``scan`` finds the first candle that could reach any of their levels (stops, limits,
    liquidation, alarm bands) and the symbol sleeps in a heap until then or until the next
    funding time; the outcome is the same as checking every candle.

Venue rules (error codes)
    -1121 symbol, -1102 missing parameter, -1106 parameter not allowed, -1115 timeInForce,
    -1116 order type (algo endpoint), -1130 invalid value, -1100/-4015 client id, -1111
    precision, -4014/-4023 tick/step multiple, -4001/-4002/-4013 price bounds, -4003/-4004/-4005
    quantity bounds (MARKET uses the MARKET_LOT_SIZE filter), -4006/-4007 stop price bounds,
    -4016/-4024 PERCENT_PRICE for LIMIT, -4116 duplicate client id (an open order, or any order
    placed in the last ``client_id_window_ms``), -2022 reduce-only rejected, -4130 a second
    closePosition order of the same type and side, -2021 would immediately trigger, -4164 min
    notional (reduce-only and closePosition exempt; MARKET uses the mark price), -5022 post
    only, -2019 insufficient margin, -2011 cancel of an unknown or closed order, -2013 query
    of an unknown order (cancelled/expired orders without fills are forgotten after 3 days),
    -4028 leverage outside 1..125, -1120 interval, -1130 limit.
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from mraster_tui.engine.data import bucket_start
from mraster_tui.engine.errors import VenueRejected, error_from_code
from mraster_tui.engine.sim.market import MarketFeed, path_extremes, path_points, path_price, standard_low_first
from mraster_tui.engine.types import (
    Balance,
    BookTicker,
    Candles,
    ExchangeInfo,
    Fill,
    FundingRate,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    PremiumIndex,
    RateLimit,
    Side,
    SymbolInfo,
    Ticker24h,
    interval_ms,
)

ZERO = Decimal(0)
ONE = Decimal(1)
MONEY = Decimal("0.00000001")
DAY_MS = 86_400_000
DEFAULT_LEVERAGE = 20
STATE_VERSION = 1
_CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")

#: (upper notional bound, maintenance margin rate, cumulative amount); MM = notional*rate - cum.
MAINT_TIERS: tuple[tuple[Decimal, Decimal, Decimal], ...] = (
    (Decimal(50_000), Decimal("0.004"), Decimal(0)),
    (Decimal(250_000), Decimal("0.005"), Decimal(50)),
    (Decimal(1_000_000), Decimal("0.01"), Decimal(1_300)),
    (Decimal(10_000_000), Decimal("0.025"), Decimal(16_300)),
    (Decimal(20_000_000), Decimal("0.05"), Decimal(266_300)),
    (Decimal(50_000_000), Decimal("0.1"), Decimal(1_266_300)),
    (Decimal("Infinity"), Decimal("0.125"), Decimal(2_516_300)),
)

_TIERS_F = tuple((float(cap), float(rate), float(cum)) for cap, rate, cum in MAINT_TIERS)

_ALARM = object()  # threshold marker: a position left its alarm band -> recompute the levels
_MIN_BAND = 0.002  # an alarm band is at least +-0.2 % of the mark wide
_SCAN_AHEAD = 4096  # candles scanned ahead for the next one that could touch a level

RATE_LIMITS = (RateLimit("REQUEST_WEIGHT", 60_000, 2400), RateLimit("ORDERS", 60_000, 1200),
               RateLimit("ORDERS", 10_000, 300))


def maint_margin(notional: Decimal) -> Decimal:
    """Maintenance margin of a position notional (USDT) from :data:`MAINT_TIERS`."""
    n = abs(notional)
    for cap, rate, cum in MAINT_TIERS:
        if n <= cap:
            return n * rate - cum
    raise AssertionError("unreachable: the last tier is unbounded")


def _maint_margin_f(notional: float) -> float:
    for cap, rate, cum in _TIERS_F:
        if notional <= cap:
            return notional * rate - cum
    raise AssertionError("unreachable: the last tier is unbounded")


def _money(x: Decimal) -> Decimal:
    return x.quantize(MONEY, rounding=ROUND_HALF_UP)


def _reject(code: int, msg: str) -> VenueRejected:
    return error_from_code(code, msg, http_status=400)


def _dec_places(x: Decimal) -> int:
    return max(0, -x.normalize().as_tuple().exponent)


def _on_grid(x: Decimal, base: Decimal, step: Decimal) -> bool:
    return step <= 0 or (x - base) % step == 0


@dataclass(frozen=True, slots=True)
class SlippageModel:
    """Fill price of a taker order = reference price moved against the order by half the
    spread (when ``half_spread``; MARKET orders start from bid/ask, which already include it)
    plus ``bps`` basis points."""

    bps: Decimal = Decimal("1")
    half_spread: bool = True

    def __post_init__(self) -> None:
        if not Decimal(0) <= self.bps <= Decimal(1000):
            raise ValueError("slippage bps must be within 0..1000")


@dataclass(frozen=True, slots=True)
class SimEvent:
    kind: str  # fill | trigger | cancel | expire | funding | liquidation
    time: int
    symbol: str
    order: Order | None = None
    fill: Fill | None = None
    amount: Decimal | None = None  # funding paid (<0) / received (>0); liquidation clearance fee
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FundingPayment:
    symbol: str
    time: int
    rate: Decimal
    amount: Decimal  # credited to the wallet (negative = paid)


@dataclass(frozen=True, slots=True)
class PositionMargin:
    notional: Decimal
    initial_margin: Decimal
    maint_margin: Decimal
    open_order_initial_margin: Decimal


@dataclass(frozen=True, slots=True)
class AccountSummary:
    wallet_balance: Decimal
    unrealized_pnl: Decimal
    margin_balance: Decimal
    position_initial_margin: Decimal
    open_order_initial_margin: Decimal
    maint_margin: Decimal
    available_balance: Decimal
    positions: dict[str, PositionMargin] = field(default_factory=dict)

    @property
    def initial_margin(self) -> Decimal:
        return self.position_initial_margin + self.open_order_initial_margin


class _Ord:
    """Mutable order record."""

    __slots__ = ("order_id", "symbol", "client_id", "side", "type", "status", "qty", "executed", "cum_quote",
                 "price", "stop_price", "reduce_only", "close_position", "working_type", "tif", "time",
                 "update_time", "is_algo", "actual_order_id", "seq")

    def __init__(self, **kw) -> None:
        self.executed = ZERO
        self.cum_quote = ZERO
        self.actual_order_id = None
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def open(self) -> bool:
        return self.status.open

    def snapshot(self) -> Order:
        avg = (self.cum_quote / self.executed) if self.executed else ZERO
        return Order(self.symbol, self.order_id, self.client_id, self.side, self.type, self.status, self.qty,
                     self.executed, avg, self.price, self.stop_price, self.reduce_only, self.close_position,
                     self.working_type, self.time, self.update_time, self.is_algo, self.tif)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__slots__}
        for k in ("qty", "executed", "cum_quote", "price", "stop_price"):
            d[k] = str(d[k])
        d["side"], d["type"], d["status"] = self.side.value, self.type.value, self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "_Ord":
        kw = dict(d)
        for k in ("qty", "executed", "cum_quote", "price", "stop_price"):
            kw[k] = Decimal(kw[k])
        kw["side"], kw["type"], kw["status"] = Side(d["side"]), OrderType(d["type"]), OrderStatus(d["status"])
        return cls(**kw)


class _Sym:
    """Per-symbol state: position, open orders, fills, path choice, trigger thresholds."""

    __slots__ = ("symbol", "info", "tick", "step", "tick_f", "pp", "amount", "entry", "leverage", "orders",
                 "fills", "fill_times", "fills_sorted", "update_time", "var_k", "var_lf", "pos_since_k", "thr",
                 "dirty", "dn_max", "up_min", "liq", "band", "next_k", "next_fund", "wake", "mark_places")

    def __init__(self, info: SymbolInfo) -> None:
        self.symbol = info.symbol
        self.info = info
        self.tick = info.filters.tick_size
        self.step = info.filters.step_size
        self.tick_f = float(self.tick)
        self.pp = _dec_places(self.tick)
        self.mark_places = Decimal(10) ** -min(12, self.pp + 2)
        self.amount = ZERO
        self.entry = ZERO
        self.leverage = DEFAULT_LEVERAGE
        self.orders: list[_Ord] = []
        self.fills: list[Fill] = []
        self.fill_times: list[int] = []  # the fills' times, to find a time range by bisection
        self.fills_sorted = True  # fills are in time order (always, unless restored otherwise)
        self.update_time = 0
        self.var_k = -1  # a candle whose path was fixed explicitly (the one a position changed in)
        self.var_lf = True
        self.pos_since_k = 0  # first candle entered with the current position
        self.thr: list[tuple] = []
        self.dirty = True
        self.dn_max = -math.inf
        self.up_min = math.inf
        self.liq: float | None = None  # exact liquidation mark price
        self.band: tuple[float, float] | None = None  # mark range inside which no recheck is needed
        self.next_k = -1  # no threshold can be touched before this candle (-1: unknown)
        self.next_fund = -1  # next funding time (-1: unknown)
        self.wake: float | None = None  # when the next walk is needed (scheduled in the heap)

    def add_fill(self, fill: Fill) -> None:
        if self.fill_times and fill.time < self.fill_times[-1]:
            self.fills_sorted = False
        self.fills.append(fill)
        self.fill_times.append(fill.time)

    def set_fills(self, fills: list[Fill]) -> None:
        self.fills, self.fill_times, self.fills_sorted = [], [], True
        for f in fills:
            self.add_fill(f)

    def fills_between(self, lo: int, hi: int) -> list[Fill]:
        """The fills with ``lo <= time <= hi``, in fill order (a slice while they are sorted:
        the list grows all run long and the guard reads it after every closed trade)."""
        if self.fills_sorted:
            return self.fills[bisect.bisect_left(self.fill_times, lo):bisect.bisect_right(self.fill_times, hi)]
        return [f for f in self.fills if lo <= f.time <= hi]


class SimExchange:
    """See the module docstring for every rule.  Methods raise the venue's typed errors."""

    def __init__(self, feed: MarketFeed, *, balance: Decimal = Decimal("10000"), asset: str = "USDT",
                 taker_fee: Decimal = Decimal("0.0005"), maker_fee: Decimal = Decimal("0.0002"),
                 slippage: SlippageModel | None = None, funding_rate: Decimal | None = None,
                 start_ms: int | None = None, intrabar: str = "conservative",
                 client_id_window_ms: int = DAY_MS) -> None:
        if intrabar not in ("conservative", "path"):
            raise ValueError("intrabar must be 'conservative' or 'path'")
        if balance < 0:
            raise ValueError("balance must be >= 0")
        self.feed = feed
        self.asset = asset
        self.taker_fee = Decimal(taker_fee)
        self.maker_fee = Decimal(maker_fee)
        self.slippage = slippage or SlippageModel()
        self.funding_rate = funding_rate
        self.intrabar = intrabar
        self.client_id_window_ms = client_id_window_ms
        self._wallet = Decimal(balance)
        start = feed.default_start_ms if start_ms is None else int(start_ms)
        if start < feed.start_ms:
            raise ValueError("the simulation cannot start before the feed's data")
        self._now = start
        self._syms: dict[str, _Sym] = {s: _Sym(feed.symbol_info(s)) for s in feed.symbols()}
        self._active: set[str] = set()
        self._orders: dict[int, _Ord] = {}
        self._algos: dict[int, _Ord] = {}
        self._by_client: dict[tuple[str, str], _Ord] = {}
        self._algo_by_client: dict[tuple[str, str], _Ord] = {}
        self._next_order_id = 1_000_001
        self._next_algo_id = 1_000_000_000_001
        self._next_trade_id = 100_001
        self._seq = 0
        self._funding: list[FundingPayment] = []
        self._funding_by_sym: dict[str, list[FundingPayment]] = {}  # the same payments per symbol
        self._step_events: list[SimEvent] | None = None
        # quotes at the current instant, cached until time moves (see :meth:`forget_prices`)
        self._mark_cache: dict[str, float] = {}
        self._price_cache: dict[str, tuple[float, float, float]] = {}
        self._book_cache: dict[str, BookTicker] = {}
        self._walk_mark: tuple[str, float] | None = None  # (symbol, mark) at the current walk point
        self._due: set[str] = set()  # symbols whose levels changed: walked at the next step
        self._risk_stale = False  # funding changed the wallet during this step
        self._wake: list[tuple[float, str]] = []  # heap of (time the next walk is needed, symbol)
        self._journal: deque[SimEvent] = deque(maxlen=10_000)

    # ------------------------------------------------------------------------------ time
    @property
    def now_ms(self) -> int:
        return self._now

    def advance_to(self, t_ms: int) -> list[SimEvent]:
        """Move time to ``t_ms`` (never backwards), firing everything that happens on the way."""
        t_ms = int(t_ms)
        if t_ms < self._now:
            raise ValueError(f"simulated time never goes backwards ({t_ms} < {self._now})")
        if t_ms == self._now:
            return []
        self.forget_prices()  # quotes are cached per instant
        if not self._active:
            self._now = t_ms
            return []
        events: list[SimEvent] = []
        self._step_events = events
        try:
            t0 = self._now
            due, self._due = self._due, set()
            heap = self._wake
            while heap and heap[0][0] <= t_ms:  # symbols whose levels may be reached, or funding due
                w, sym = heapq.heappop(heap)
                if self._syms[sym].wake == w:
                    due.add(sym)
            for sym in sorted(due):
                st = self._syms[sym]
                if sym in self._active:
                    self._walk(st, t0, t_ms)
            if self._risk_stale:
                self._risk_stale = False
                self._refresh_risk()
        finally:
            self._step_events = None
        self._now = t_ms
        self.forget_prices()  # the walk cached marks at the step start
        events.sort(key=lambda e: e.time)
        return events

    def forget_prices(self) -> None:
        """Drop the quotes cached for the current instant (time moved, or a live feed replaced
        the observation at this instant).

        Within one instant a quote cannot change otherwise: a position change keeps the path of
        the candle it happens in, so the price now is the same before and after it."""
        self._mark_cache.clear()
        self._price_cache.clear()
        self._book_cache.clear()

    def drain_events(self) -> list[SimEvent]:
        """Every event since the last drain, from :meth:`advance_to` and from order calls alike
        (immediate fills, cancels); the last 10 000 are kept."""
        if not self._journal:  # the common case: every paper call drains
            return []
        out = list(self._journal)
        self._journal.clear()
        return out

    def _emit(self, ev: SimEvent) -> None:
        self._journal.append(ev)
        if self._step_events is not None:
            self._step_events.append(ev)

    # ------------------------------------------------------------------------------ prices
    def _row(self, st: _Sym, t: int) -> tuple[int, list]:
        k = self.feed.index_at(st.symbol, t)
        if k < 0:
            raise VenueRejected(f"no price for {st.symbol} yet", code=-1000, http_status=400)
        return k, self.feed.candle(st.symbol, k)

    def _low_first(self, st: _Sym, k: int, row: list) -> bool:
        """The path of candle ``k``: conservative mode visits the extreme adverse to the position
        held when the candle opened first; otherwise (or when flat) the colour rule."""
        if k == st.var_k:
            return st.var_lf
        if self.intrabar == "conservative" and st.amount and k >= st.pos_since_k:
            return st.amount > 0
        return standard_low_first(row[1], row[4])

    def _position_sign_changes(self, st: _Sym, t: int) -> None:
        """Keep the path of the current candle as it is; later candles follow the new position."""
        k = self.feed.index_at(st.symbol, t)
        if k >= 0 and st.var_k != k:
            st.var_lf = self._low_first(st, k, self.feed.candle(st.symbol, k))
            st.var_k = k
        st.pos_since_k = k + 1

    def _price_f(self, st: _Sym, t: int | None = None) -> tuple[float, float, float]:
        """(price, half spread fraction, premium) at ``t`` (default now; cached per instant
        outside :meth:`advance_to`, whose walk changes the paths of later candles)."""
        if t is None or t == self._now:
            if self._step_events is None:
                got = self._price_cache.get(st.symbol)
                if got is None:
                    got = self._price_cache[st.symbol] = self._price_at(st, self._now)
                return got
            t = self._now
        return self._price_at(st, t)

    def _price_at(self, st: _Sym, t: int) -> tuple[float, float, float]:
        k, row = self._row(st, t)
        return path_price(row, self.feed.base_ms, t, self._low_first(st, k, row)), row[6] / 2.0, row[7]

    def _mark_f(self, st: _Sym) -> float:
        """Mark price now (cached until time moves)."""
        m = self._mark_cache.get(st.symbol)
        if m is None:
            p, _, prem = self._price_f(st)
            m = self._mark_cache[st.symbol] = p * (1.0 + prem)
        return m

    def _mark_dec(self, st: _Sym, t: int | None = None) -> Decimal:
        if t is None or t == self._now:
            m = self._mark_f(st)
        else:
            p, _, prem = self._price_f(st, t)
            m = p * (1.0 + prem)
        return Decimal(repr(m)).quantize(st.mark_places)

    def _tick_dec(self, st: _Sym, x: float, up: bool | None) -> Decimal:
        """``x`` on the tick grid: rounded up, down, or (None) to the nearest tick."""
        n = x / st.tick_f
        eps = 1e-9 * max(1.0, abs(n))  # float noise must not push a value onto the next tick
        n = round(n) if up is None else math.ceil(n - eps) if up else math.floor(n + eps)
        return Decimal(max(n, 1)) * st.tick

    def _book(self, st: _Sym) -> tuple[Decimal, Decimal]:
        b = self._book_ticker(st)
        return b.bid, b.ask

    def _book_ticker(self, st: _Sym) -> BookTicker:
        """The best bid/ask now (cached per instant like :meth:`_price_f`)."""
        b = self._book_cache.get(st.symbol)
        if b is None:
            p, hs, _ = self._price_f(st)
            bid = self._tick_dec(st, p * (1.0 - hs), False)
            ask = self._tick_dec(st, p * (1.0 + hs), True)
            if ask <= bid and hs > 0:  # a real spread is at least one tick
                ask = bid + st.tick
            depth = max(st.step, (Decimal(2000) / ask / st.step).to_integral_value() * st.step)
            b = BookTicker(st.symbol, bid, ask, depth, depth, self._now)
            if self._step_events is None:
                self._book_cache[st.symbol] = b
        return b

    def _sym(self, symbol: str) -> _Sym:
        st = self._syms.get(symbol)
        if st is None:
            raise _reject(-1121, "Invalid symbol.")
        return st

    # ------------------------------------------------------------------------------ market data
    def exchange_info(self) -> ExchangeInfo:
        return ExchangeInfo(self._now, {s: st.info for s, st in self._syms.items()}, RATE_LIMITS)

    def symbol_info(self, symbol: str) -> SymbolInfo:
        return self._sym(symbol).info

    def price(self, symbol: str) -> Decimal:
        """Last (contract) price now, on the tick."""
        st = self._sym(symbol)
        return self._tick_dec(st, self._price_f(st)[0], None)

    def mark_price(self, symbol: str) -> Decimal:
        return self._mark_dec(self._sym(symbol))

    def klines(self, symbol: str, interval: str, limit: int = 500, start_ms: int | None = None,
               end_ms: int | None = None) -> Candles:
        """Candles up to now; the last one is the still-forming candle (``last_closed=False``)."""
        st = self._sym(symbol)
        try:
            step = interval_ms(interval)
        except ValueError:
            raise _reject(-1120, "Invalid interval.") from None
        if step % self.feed.base_ms:
            raise _reject(-1120, "Invalid interval.")
        if not 1 <= limit <= 1500:
            raise _reject(-1130, "Data sent for parameter 'limit' is not valid.")
        now = self._now
        b = bucket_start(now, interval)
        hi = now if end_ms is None else min(int(end_ms), now)
        if start_ms is not None:
            lo = int(start_ms)
        else:
            lo = bucket_start(hi, interval) - (limit - 1) * step
        closed = self.feed.candles(symbol, interval, lo, min(b, hi + 1))
        forming = self._forming(st, interval, b, now) if lo <= b <= hi else None
        if forming is None:
            c = closed
        else:
            ot, o, h, l, cl, v = forming
            c = Candles(np.r_[closed.open_time, ot], np.r_[closed.open, o], np.r_[closed.high, h],
                        np.r_[closed.low, l], np.r_[closed.close, cl], np.r_[closed.volume, v], interval, False)
        n = len(c)
        if n > limit:
            c = c.slice(0, limit) if start_ms is not None else c.slice(n - limit, n)
        return c

    def _forming(self, st: _Sym, interval: str, b: int, now: int):
        feed, base = self.feed, self.feed.base_ms
        end = feed.end_ms
        if end is not None and now >= end:
            return None
        k, row = self._row(st, now)
        if int(row[0]) + base <= now:  # in a data gap: nothing is forming
            return None
        parts = feed.candles(st.symbol, feed.base_interval, b, int(row[0])) if b < row[0] else None
        lf = self._low_first(st, k, row)
        lo, hi = path_extremes(row, base, now, lf)
        p = path_price(row, base, now, lf)
        frac = (now - row[0]) / base
        vol = row[5] * frac
        if parts is not None and len(parts):
            return (b, parts.open[0], max(hi, parts.high.max()), min(lo, parts.low.min()), p,
                    vol + parts.volume.sum())
        return b, row[1], hi, lo, p, vol

    def tickers_24h(self) -> dict[str, Ticker24h]:
        out = {}
        t0 = self._now - DAY_MS
        for sym, st in self._syms.items():
            if self.feed.index_at(sym, self._now) < 0:
                continue
            last = self.price(sym)
            v, q = self.feed.volume_between(sym, max(t0, self.feed.start_ms), self._now)
            opn = self._price_f(st, max(t0, self.feed.start_ms))[0]
            pct = Decimal(repr(round((float(last) / opn - 1.0) * 100.0, 3))) if opn > 0 else ZERO
            out[sym] = Ticker24h(sym, last, Decimal(repr(round(q, 2))),
                                 Decimal(repr(round(v, 8))).quantize(st.step) if v else ZERO, pct)
        return out

    def book_tickers(self) -> dict[str, BookTicker]:
        out = {}
        for sym, st in self._syms.items():
            if self.feed.index_at(sym, self._now) < 0:
                continue
            out[sym] = self._book_ticker(st)
        return out

    def book_ticker(self, symbol: str) -> BookTicker | None:
        """One symbol's entry of :meth:`book_tickers` (None before its first candle)."""
        st = self._sym(symbol)
        if self.feed.index_at(symbol, self._now) < 0:
            return None
        return self._book_ticker(st)

    def premium_index(self) -> dict[str, PremiumIndex]:
        out = {}
        for sym, st in self._syms.items():
            if self.feed.index_at(sym, self._now) < 0:
                continue
            p, _, prem = self._price_f(st)
            mark = Decimal(repr(p * (1.0 + prem))).quantize(st.mark_places)
            index = Decimal(repr(p * (1.0 + prem / 2.0))).quantize(st.mark_places)
            nt, rate = self.feed.next_funding(sym, self._now)
            rate = rate if rate is not None else (self.funding_rate or ZERO)
            out[sym] = PremiumIndex(sym, mark, index, rate, nt, self._now)
        return out

    def funding_history(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                        limit: int = 100) -> list[FundingRate]:
        self._sym(symbol)
        if not 1 <= limit <= 1000:
            raise _reject(-1130, "Data sent for parameter 'limit' is not valid.")
        hi = self._now if end_ms is None else min(int(end_ms), self._now)
        span = (limit + 1) * self.feed.funding_interval_ms
        lo = max(self.feed.start_ms, int(start_ms) if start_ms is not None else hi - span)
        rows = [FundingRate(symbol, t, r if r is not None else self.funding_rate)
                for t, r in self.feed.funding_events(symbol, lo - 1, hi)
                if r is not None or self.funding_rate is not None]
        return rows[:limit] if start_ms is not None else rows[-limit:]

    # ------------------------------------------------------------------------------ account
    def _upnl(self, st: _Sym, mark: Decimal) -> Decimal:
        return st.amount * (mark - st.entry)

    def _order_im(self, st: _Sym) -> Decimal:
        return sum((o.qty * o.price / st.leverage for o in st.orders
                    if o.type is OrderType.LIMIT and not o.reduce_only), ZERO)

    def account_summary(self) -> AccountSummary:
        upnl = pim = oim = mm = ZERO
        per: dict[str, PositionMargin] = {}
        for sym in sorted(self._active):
            st = self._syms[sym]
            o_im = self._order_im(st)
            oim += o_im
            if st.amount:
                mark = self._mark_dec(st)
                notional = abs(st.amount) * mark
                upnl += self._upnl(st, mark)
                im, m = notional / st.leverage, maint_margin(notional)
                pim, mm = pim + im, mm + m
                per[sym] = PositionMargin(_money(notional), _money(im), _money(m), _money(o_im))
            elif o_im:
                per[sym] = PositionMargin(ZERO, ZERO, ZERO, _money(o_im))
        avail = max(ZERO, self._wallet + upnl - pim - oim)
        return AccountSummary(_money(self._wallet), _money(upnl), _money(self._wallet + upnl), _money(pim),
                              _money(oim), _money(mm), _money(avail), per)

    def _available_f(self) -> float:
        """Available balance in floats (margin checks; money reporting uses account_summary)."""
        avail = float(self._wallet)
        for s in self._active:
            st = self._syms[s]
            lev = st.leverage
            for o in st.orders:
                if o.type is OrderType.LIMIT and not o.reduce_only:
                    avail -= float(o.qty * o.price) / lev
            if st.amount:
                a, m = float(st.amount), self._mark_f(st)
                avail += a * (m - float(st.entry)) - abs(a) * m / lev
        return max(0.0, avail)

    def balance(self) -> Balance:
        a = self.account_summary()
        return Balance(self.asset, a.wallet_balance, a.unrealized_pnl, a.available_balance)

    def positions(self) -> list[Position]:
        out = []
        levels = self._liq_levels()
        for sym in sorted(self._active):
            st = self._syms[sym]
            if not st.amount:
                continue
            mark = self._mark_dec(st)
            liq = levels.get(sym)
            out.append(Position(sym, st.amount, st.entry.quantize(Decimal(10) ** -min(12, st.pp + 4)), mark,
                                _money(self._upnl(st, mark)), st.leverage,
                                self._tick_dec(st, liq, False) if liq else ZERO, st.update_time))
        return out

    def set_leverage(self, symbol: str, leverage: int) -> int:
        st = self._sym(symbol)
        if isinstance(leverage, bool) or not isinstance(leverage, int) or not 1 <= leverage <= 125:
            raise _reject(-4028, f"Leverage {leverage} is not valid")
        st.leverage = leverage
        return leverage

    def leverage(self, symbol: str) -> int:
        return self._sym(symbol).leverage

    def funding_payments(self, symbol: str | None = None, start_ms: int | None = None,
                         end_ms: int | None = None) -> list[FundingPayment]:
        pool = self._funding if symbol is None else self._funding_by_sym.get(symbol, [])
        return [f for f in pool if (symbol is None or f.symbol == symbol)
                and (start_ms is None or f.time >= start_ms) and (end_ms is None or f.time <= end_ms)]

    def _add_funding(self, payment: FundingPayment) -> None:
        self._funding.append(payment)
        self._funding_by_sym.setdefault(payment.symbol, []).append(payment)

    def funding_income(self, symbol: str, start_ms: int, end_ms: int | None = None) -> Decimal:
        """Funding received (+) / paid (-) on ``symbol`` in [start_ms, end_ms]."""
        return sum((f.amount for f in self.funding_payments(symbol, start_ms, end_ms)), ZERO)

    # ------------------------------------------------------------------------------ orders
    def all_orders(self, symbol: str | None = None) -> list[Order]:
        """Every order ever placed (open and closed, plain and algo), oldest first."""
        recs = [*self._orders.values(), *self._algos.values()]
        return [o.snapshot() for o in sorted(recs, key=lambda o: o.seq) if symbol is None or o.symbol == symbol]

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open plain and algo orders (``Order.is_algo`` tells them apart), oldest first."""
        syms = [self._sym(symbol)] if symbol is not None else [self._syms[s] for s in sorted(self._active)]
        orders = [o for st in syms for o in st.orders]
        return [o.snapshot() for o in sorted(orders, key=lambda o: o.seq)]

    def _find(self, symbol: str, client_id: str | None, order_id: int | None, algo: bool) -> _Ord | None:
        if client_id is None and order_id is None:
            raise _reject(-1102, "Mandatory parameter 'orderId' was not sent, was empty/null, or malformed.")
        if order_id is not None:
            rec = (self._algos if algo else self._orders).get(int(order_id))
        else:
            rec = (self._algo_by_client if algo else self._by_client).get((symbol, client_id))
        if rec is None or rec.symbol != symbol:
            return None
        forgotten = (rec.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED) and not rec.executed
                     and rec.update_time < self._now - 3 * DAY_MS)
        return None if forgotten else rec

    def get_order(self, symbol: str, *, client_id: str | None = None, order_id: int | None = None,
                  algo: bool = False) -> Order:
        self._sym(symbol)
        rec = self._find(symbol, client_id, order_id, algo)
        if rec is None:
            raise _reject(-2013, "Order does not exist.")
        return rec.snapshot()

    def algo_actual_order_id(self, algo_id: int) -> int | None:
        """The plain order a triggered algo order created (Binance ``actualOrderId``)."""
        rec = self._algos.get(algo_id)
        return rec.actual_order_id if rec is not None else None

    def cancel_order(self, symbol: str, *, client_id: str | None = None, order_id: int | None = None,
                     algo: bool = False) -> Order:
        st = self._sym(symbol)
        rec = self._find(symbol, client_id, order_id, algo)
        if rec is None or not rec.open:
            raise _reject(-2011, "Unknown order sent.")
        self._close_order(st, rec, OrderStatus.CANCELED, self._now)
        return rec.snapshot()

    def cancel_all(self, symbol: str, *, algo: bool | None = None) -> int:
        st = self._sym(symbol)
        victims = [o for o in st.orders if algo is None or o.is_algo == algo]
        for rec in victims:
            self._close_order(st, rec, OrderStatus.CANCELED, self._now)
        return len(victims)

    def user_trades(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None,
                    order_id: int | None = None, from_id: int | None = None, limit: int = 500) -> list[Fill]:
        """Like GET /fapi/v1/userTrades: without a time range or fromId, the last 7 days."""
        st = self._sym(symbol)
        if not 1 <= limit <= 1000:
            raise _reject(-1130, "Data sent for parameter 'limit' is not valid.")
        fills = st.fills
        if order_id is not None:
            return [f for f in fills if f.order_id == order_id][:limit]
        if from_id is not None:
            return [f for f in fills if f.trade_id >= from_id][:limit]
        if start_ms is None and end_ms is None:
            lo, hi = self._now - 7 * DAY_MS, self._now
        elif start_ms is None:
            lo, hi = int(end_ms) - 7 * DAY_MS, int(end_ms)
        elif end_ms is None:
            lo, hi = int(start_ms), int(start_ms) + 7 * DAY_MS
        else:
            lo, hi = int(start_ms), int(end_ms)
        rows = st.fills_between(lo, hi)
        return rows[:limit] if start_ms is not None else rows[-limit:]

    def place_order(self, req: OrderRequest, *, algo: bool = False) -> Order:
        """Validate like the venue, then place (and fill, for marketable orders)."""
        st = self._sym(req.symbol)
        f = st.info.filters
        typ = req.type
        if algo and not typ.conditional:
            raise _reject(-1116, "Invalid orderType.")
        # -- mandatory / forbidden parameters
        if typ is OrderType.MARKET and req.quantity is None:
            raise self._missing("quantity")
        if typ is OrderType.LIMIT:
            for name, v in (("timeInForce", req.time_in_force), ("quantity", req.quantity), ("price", req.price)):
                if v is None:
                    raise self._missing(name)
        if typ.conditional:
            if req.stop_price is None:
                raise self._missing("triggerPrice" if algo else "stopPrice")
            if req.quantity is None and not req.close_position:
                raise self._missing("quantity")
        if req.close_position:
            if not typ.conditional:
                raise _reject(-1106, "Parameter 'closePosition' sent when not required.")
            if req.quantity is not None:
                raise _reject(-1106, "Parameter 'quantity' sent when not required.")
            if req.reduce_only:
                raise _reject(-1106, "Parameter 'reduceOnly' sent when not required.")
        tif = (req.time_in_force or "GTC").upper()
        if typ is OrderType.LIMIT and tif not in ("GTC", "IOC", "FOK", "GTX"):
            raise _reject(-1115, "Invalid timeInForce.")
        if typ is not OrderType.LIMIT:
            tif = "GTC"
        if req.working_type not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise _reject(-1130, "Data sent for parameter 'workingType' is not valid.")
        cid = req.client_id
        if cid:
            if len(cid) > 36:
                raise _reject(-4015, "Client order id length should not be more than 36 chars")
            if not _CLIENT_ID_RE.match(cid):
                raise _reject(-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                     "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        for name, v in (("quantity", req.quantity), ("price", req.price), ("stopPrice", req.stop_price)):
            if v is not None and (not isinstance(v, Decimal) or not v.is_finite()):
                raise _reject(-1130, f"Data sent for parameter '{name}' is not valid.")
        # -- filters
        qty = req.quantity
        if qty is not None:
            if _dec_places(qty) > _dec_places(st.step):
                raise _reject(-1111, "Precision is over the maximum defined for this asset.")
            if qty <= 0:
                raise _reject(-4003, "Quantity less than or equal to zero.")
            market = typ is not OrderType.LIMIT
            min_q = f.market_min_qty if market else f.min_qty
            max_q = f.market_max_qty if market else f.max_qty
            step = f.market_step_size if market else f.step_size
            if not _on_grid(qty, min_q, step):
                raise _reject(-4023, "Qty not increased by step size.")
            if qty < min_q:
                raise _reject(-4004, "Quantity less than min quantity.")
            if qty > max_q:
                raise _reject(-4005, "Quantity greater than max quantity.")
        mark = self._mark_dec(st)
        if typ is OrderType.LIMIT:
            price = req.price
            if _dec_places(price) > st.pp:
                raise _reject(-1111, "Precision is over the maximum defined for this asset.")
            if price <= 0:
                raise _reject(-4001, "Price less than 0.")
            if price < f.min_price:
                raise _reject(-4013, "Price less than min price.")
            if f.max_price > 0 and price > f.max_price:
                raise _reject(-4002, "Price greater than max price.")
            if not _on_grid(price, f.min_price, f.tick_size):
                raise _reject(-4014, "Price not increased by tick size.")
            if req.side is Side.BUY and price > mark * f.multiplier_up:
                raise _reject(-4016, "Price is higher than mark price multiplier cap.")
            if req.side is Side.SELL and price < mark * f.multiplier_down:
                raise _reject(-4024, "Price is lower than mark price multiplier floor.")
        if typ.conditional:
            sp = req.stop_price
            if _dec_places(sp) > st.pp:
                raise _reject(-1111, "Precision is over the maximum defined for this asset.")
            if sp <= 0:
                raise _reject(-4006, "Stop price less than zero.")
            if f.max_price > 0 and sp > f.max_price:
                raise _reject(-4007, "Stop price greater than max price.")
            if not _on_grid(sp, f.min_price, f.tick_size):
                raise _reject(-4014, "Price not increased by tick size.")
        # -- duplicate client id
        index = self._algo_by_client if algo else self._by_client
        if cid:
            prev = index.get((req.symbol, cid))
            if prev is not None and (prev.open or prev.time >= self._now - self.client_id_window_ms):
                raise _reject(-4116, "ClientOrderId is duplicated.")
        # -- position rules
        sign = 1 if req.side is Side.BUY else -1
        if req.reduce_only and (st.amount == 0 or (st.amount > 0) == (sign > 0)):
            raise _reject(-2022, "ReduceOnly Order is rejected.")
        if req.close_position and any(o.close_position and o.type is typ and o.side is req.side for o in st.orders):
            raise _reject(-4130, "An open stop or take profit order with GTE and closePosition in the direction "
                                 "is existing.")
        if typ.conditional:
            work = float(mark) if req.working_type == "MARK_PRICE" else self._price_f(st)[0]
            if self._trigger_up(typ, req.side):
                fires = work >= float(req.stop_price)
            else:
                fires = work <= float(req.stop_price)
            if fires:
                raise _reject(-2021, "Order would immediately trigger.")
        # -- notional, post-only, margin
        bid, ask = self._book(st)
        exempt = req.reduce_only or req.close_position
        if qty is not None and not exempt:
            ref = req.price if typ is OrderType.LIMIT else req.stop_price if typ.conditional else mark
            if qty * ref < f.min_notional:
                raise _reject(-4164, f"Order's notional must be no smaller than {f.min_notional} "
                                     "(unless you choose reduce only).")
        marketable = typ is OrderType.MARKET or (
            typ is OrderType.LIMIT and (req.price >= ask if sign > 0 else req.price <= bid))
        if typ is OrderType.LIMIT and tif == "GTX" and marketable:
            raise _reject(-5022, "Due to the order could not be executed as maker, the Post Only order will be "
                                 "rejected. The order will not be recorded in the order history")
        fill_price = None
        if marketable:
            fill_price = self._market_price(st, req.side, bid, ask)
            if typ is OrderType.LIMIT:
                fill_price = min(fill_price, req.price) if sign > 0 else max(fill_price, req.price)
        if not exempt and qty is not None and (marketable or (typ is OrderType.LIMIT and tif in ("GTC", "GTX"))):
            px = fill_price if fill_price is not None else req.price
            if not self._margin_ok(st, sign, qty, px):
                raise _reject(-2019, "Margin is insufficient.")
        # -- accepted
        rec = self._new_order(st, req, algo, tif, qty)
        if marketable:
            q = rec.qty
            if req.reduce_only:
                q = min(q, abs(st.amount))
            self._fill(st, rec, q, fill_price, False, self._now)
        elif typ is OrderType.LIMIT and tif in ("IOC", "FOK"):
            self._close_order(st, rec, OrderStatus.EXPIRED, self._now)
        return rec.snapshot()

    @staticmethod
    def _missing(name: str) -> VenueRejected:
        return _reject(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")

    @staticmethod
    def _trigger_up(typ: OrderType, side: Side) -> bool:
        """True when the order fires as the working price rises to its stop price."""
        return (typ is OrderType.STOP_MARKET) == (side is Side.BUY)

    def _market_price(self, st: _Sym, side: Side, bid: Decimal, ask: Decimal) -> Decimal:
        bps = float(self.slippage.bps) / 10_000.0
        if self.slippage.half_spread:
            ref = float(ask if side is Side.BUY else bid)
        else:
            ref = self._price_f(st)[0]
        return self._tick_dec(st, ref * (1.0 + bps) if side is Side.BUY else ref * (1.0 - bps), side is Side.BUY)

    def _margin_ok(self, st: _Sym, sign: int, qty: Decimal, price: Decimal) -> bool:
        closing = min(qty, abs(st.amount)) if st.amount * sign < 0 else ZERO
        opening = qty - closing
        if opening <= 0:
            return True
        released = float(closing) * self._mark_f(st) / st.leverage
        return float(opening * price) / st.leverage <= self._available_f() + released

    def _new_order(self, st: _Sym, req: OrderRequest, algo: bool, tif: str, qty: Decimal | None) -> _Ord:
        if algo:
            oid, self._next_algo_id = self._next_algo_id, self._next_algo_id + 1
        else:
            oid, self._next_order_id = self._next_order_id, self._next_order_id + 1
        self._seq += 1
        rec = _Ord(order_id=oid, symbol=st.symbol, client_id=req.client_id or f"sim-{oid}", side=req.side,
                   type=req.type, status=OrderStatus.NEW, qty=qty if qty is not None else ZERO,
                   price=req.price if req.type is OrderType.LIMIT else ZERO,
                   stop_price=req.stop_price if req.type.conditional else ZERO, reduce_only=req.reduce_only,
                   close_position=req.close_position, working_type=req.working_type, tif=tif, time=self._now,
                   update_time=self._now, is_algo=algo, seq=self._seq)
        (self._algos if algo else self._orders)[oid] = rec
        (self._algo_by_client if algo else self._by_client)[(st.symbol, rec.client_id)] = rec
        st.orders.append(rec)
        self._mark_dirty(st)
        self._active.add(st.symbol)
        return rec

    def _close_order(self, st: _Sym, rec: _Ord, status: OrderStatus, t: int, detail: str = "") -> None:
        rec.status = status
        rec.update_time = t
        if rec in st.orders:
            st.orders.remove(rec)
        self._mark_dirty(st)
        self._touch(st)
        kind = "cancel" if status is OrderStatus.CANCELED else "expire"
        self._emit(SimEvent(kind, t, st.symbol, rec.snapshot(), detail=detail))

    def _mark_dirty(self, st: _Sym) -> None:
        """The symbol's levels changed: rebuild them and walk it at the next step."""
        st.dirty = True
        self._due.add(st.symbol)

    def _touch(self, st: _Sym) -> None:
        if st.orders or st.amount:
            self._active.add(st.symbol)
        else:
            self._active.discard(st.symbol)

    # ------------------------------------------------------------------------------ fills
    def _fill(self, st: _Sym, rec: _Ord, qty: Decimal, price: Decimal, maker: bool, t: int,
              child: _Ord | None = None) -> Fill:
        """Execute ``qty`` of ``rec`` at ``price``; ``child`` is the plain order of a triggered algo."""
        sign = 1 if rec.side is Side.BUY else -1
        amt = st.amount
        closing = min(qty, abs(amt)) if amt * sign < 0 else ZERO
        opening = qty - closing
        realized = closing * (price - st.entry) * (1 if amt > 0 else -1) if closing else ZERO
        notional = price * qty
        commission = _money(notional * (self.maker_fee if maker else self.taker_fee))
        new_amt = amt + sign * qty
        if (new_amt > 0) != (amt > 0) or (new_amt < 0) != (amt < 0):
            self._position_sign_changes(st, t)
        if opening:
            if closing == abs(amt):  # from flat, or flipped through zero
                st.entry = price
            else:
                st.entry = (abs(amt) * st.entry + opening * price) / (abs(amt) + opening)
        if new_amt == 0:
            st.entry = ZERO
        st.amount = new_amt
        st.update_time = t
        realized = _money(realized)
        self._wallet += realized - commission
        tid, self._next_trade_id = self._next_trade_id, self._next_trade_id + 1
        target = child or rec
        fill = Fill(st.symbol, tid, target.order_id, rec.side, price, qty, notional, commission, self.asset,
                    realized, t, maker)
        st.add_fill(fill)
        for o in (rec, child) if child is not None else (rec,):
            o.executed += qty
            o.cum_quote += notional
            o.status = OrderStatus.FILLED
            o.update_time = t
        if rec in st.orders:
            st.orders.remove(rec)
        self._mark_dirty(st)
        self._emit(SimEvent("fill", t, st.symbol, target.snapshot(), fill))
        self._after_position_change(st, t)
        return fill

    def _after_position_change(self, st: _Sym, t: int) -> None:
        """Expire reduce-only orders that can no longer reduce; refresh the liquidation levels."""
        for o in list(st.orders):
            if o.reduce_only and (st.amount == 0 or (st.amount > 0) == (o.side is Side.BUY)):
                self._close_order(st, o, OrderStatus.EXPIRED, t, "reduce-only order with nothing to reduce")
        self._touch(st)
        self._refresh_risk()

    # ------------------------------------------------------------------------------ liquidation
    def _risk_parts(self) -> tuple[list[tuple[_Sym, float, float]], float]:
        """([(position, mark, its unrealised - maintenance)], cushion) with cushion = wallet +
        the sum of those parts.  Marks are the current ones (during a walk: the walked symbol at
        the walk point, the others at the step start)."""
        held = []
        total = float(self._wallet)
        wm = self._walk_mark
        for s in self._active:
            st = self._syms[s]
            if st.amount:
                m = wm[1] if wm is not None and wm[0] == s else self._mark_f(st)
                a = float(st.amount)
                part = a * (m - float(st.entry)) - _maint_margin_f(abs(a) * m)
                held.append((st, m, part))
                total += part
        return held, total

    @staticmethod
    def _liq_level(st: _Sym, others: float) -> float | None:
        """The mark at which wallet-and-others (``others``) + amount * (P - entry) equals the
        maintenance margin of |amount| * P, solved tier by tier; None if it cannot happen."""
        a = float(st.amount)
        q, e = abs(a), float(st.entry)
        lo = 0.0
        for cap, rate, cum in _TIERS_F:
            p = (q * e - others - cum) / (q * (1.0 - rate)) if a > 0 else (q * e + others + cum) / (q * (1.0 + rate))
            if p <= 0:
                return None
            if lo <= q * p <= cap:
                return p
            lo = cap
        return None

    def _liq_levels(self) -> dict[str, float | None]:
        held, total = self._risk_parts()
        return {st.symbol: self._liq_level(st, total - part) for st, _, part in held}

    def _refresh_risk(self) -> None:
        """Set every position's alarm band and, when it matters, its liquidation level.

        The cushion C is split over the n positions: each may move by C / (2n) of loss
        (maintenance-margin growth included) either way before an alarm recomputes
        everything, so no liquidation is missed and nothing is done per step.  While a band is
        that wide the liquidation level lies beyond it and is not needed; once the cushion is
        so small that the band hits its floor (0.2 % of the mark) the exact level (which
        depends on the other positions' marks, refreshed at every alarm) becomes a threshold."""
        held, cushion = self._risk_parts()
        n = len(held)
        for st, m, part in held:
            level, band = None, None
            if cushion > 0:
                h = cushion / (2.0 * n * abs(float(st.amount)) * (1.0 + float(MAINT_TIERS[-1][1])))
                if h < _MIN_BAND * m:
                    h = _MIN_BAND * m
                    level = self._liq_level(st, cushion - part)
                old = st.band
                if old is not None and old[0] <= m <= old[1] and (old[1] - old[0]) <= 2.0 * h:
                    band = old  # still safe: keep it, so other symbols' fills cost nothing here
                else:
                    band = (m - h, m + h)
            else:
                level = self._liq_level(st, cushion - part)
            if level is not None and st.liq is not None and abs(level - st.liq) <= 1e-4 * abs(st.liq - m):
                level = st.liq  # a negligible shift
            if level != st.liq or band != st.band:
                st.liq, st.band = level, band
                self._mark_dirty(st)
        for s in self._active:
            st = self._syms[s]
            if not st.amount and (st.liq is not None or st.band is not None):
                st.liq = st.band = None
                self._mark_dirty(st)

    def _liquidate(self, st: _Sym, level: float, base: float, t: int) -> None:
        for o in list(st.orders):
            self._close_order(st, o, OrderStatus.CANCELED, t, "cancelled before liquidation")
        side = Side.SELL if st.amount > 0 else Side.BUY
        qty = abs(st.amount)
        price = self._tick_dec(st, base, side is Side.BUY)
        mm = maint_margin(qty * Decimal(repr(level)))
        oid, self._next_order_id = self._next_order_id, self._next_order_id + 1
        self._seq += 1
        rec = _Ord(order_id=oid, symbol=st.symbol, client_id=f"autoclose-{t}", side=side, type=OrderType.MARKET,
                   status=OrderStatus.NEW, qty=qty, price=ZERO, stop_price=ZERO, reduce_only=True,
                   close_position=False, working_type="CONTRACT_PRICE", tif="GTC", time=t, update_time=t,
                   is_algo=False, seq=self._seq)
        self._orders[oid] = rec
        self._by_client[(st.symbol, rec.client_id)] = rec
        self._fill(st, rec, qty, price, False, t)
        fee = _money(min(mm, max(ZERO, self._wallet)))
        self._wallet -= fee
        if self._wallet < 0:
            self._wallet = ZERO
        self._emit(SimEvent("liquidation", t, st.symbol, rec.snapshot(), amount=-fee,
                            detail=f"liquidated at {price}; clearance fee {fee}"))
        self._refresh_risk()

    # ------------------------------------------------------------------------------ funding
    def _pay_funding(self, st: _Sym, tf: int, rate: Decimal | None) -> None:
        if rate is None:
            rate = self.funding_rate
        if rate is None or not st.amount:
            return
        mark = self._mark_dec(st, tf)
        self._walk_mark = (st.symbol, float(mark))
        amount = _money(-st.amount * mark * rate)
        self._wallet += amount
        self._add_funding(FundingPayment(st.symbol, tf, rate, amount))
        self._emit(SimEvent("funding", tf, st.symbol, amount=amount, detail=f"rate {rate} at mark {mark}"))
        self._risk_stale = True  # one refresh for all the payments of this step (end of advance_to)

    # ------------------------------------------------------------------------------ the walk
    def _thresholds(self, st: _Sym) -> list[tuple]:
        """(level, on_mark, fires_rising, priority, order-or-None) for the open orders and the
        liquidation level, plus prefilter bounds ``dn_max`` / ``up_min`` (contract terms)."""
        if not st.dirty:
            return st.thr
        thr = []
        if st.liq is not None:
            thr.append((st.liq, True, st.amount < 0, 0, None))
        if st.band is not None:
            thr.append((st.band[0], True, False, 9, _ALARM))
            thr.append((st.band[1], True, True, 9, _ALARM))
        for o in st.orders:
            if o.type is OrderType.LIMIT:
                thr.append((float(o.price), False, o.side is Side.SELL, 3, o))
            else:
                prio = 1 if o.type is OrderType.STOP_MARKET else 2
                thr.append((float(o.stop_price), o.working_type == "MARK_PRICE", self._trigger_up(o.type, o.side),
                            prio, o))
        pb = self.feed.premium_bound
        st.dn_max = max((lv / (1.0 - pb) if mk else lv for lv, mk, up, _, _ in thr if not up), default=-math.inf)
        st.up_min = min((lv / (1.0 + pb) if mk else lv for lv, mk, up, _, _ in thr if up), default=math.inf)
        st.thr = thr
        st.dirty = False
        st.next_k = -1
        return thr

    def _walk(self, st: _Sym, t0: int, t1: int) -> None:
        ta = t0
        quiet = not st.dirty and self.feed.index_at(st.symbol, t1) < st.next_k  # no level reachable
        if t1 >= st.next_fund:
            for tf, rate in self.feed.funding_events(st.symbol, t0, t1):
                if not quiet:
                    self._walk_range(st, ta, tf)
                self._pay_funding(st, tf, rate)
                ta = tf
        if ta < t1 and not quiet:
            self._walk_range(st, ta, t1)
        self._walk_mark = None
        st.next_fund = self.feed.next_funding_time(st.symbol, t1)
        if quiet and not st.dirty:  # only funding was due: the levels and next_k still hold
            st.wake = min(float(st.next_fund), self.feed.candle_time(st.symbol, st.next_k))
            heapq.heappush(self._wake, (st.wake, st.symbol))
        elif st.orders or st.amount:  # the first candle that could touch a level (looked up in
            self._thresholds(st)      # growing windows: most levels are near or never reached)
            k = max(self.feed.index_at(st.symbol, t1), 0)
            lim = 64
            while True:
                nk = self.feed.scan(st.symbol, k, st.dn_max, st.up_min, lim)
                if nk < k + lim or lim >= _SCAN_AHEAD:
                    break
                k, lim = k + lim, lim * 8
            st.next_k = nk
            st.wake = min(float(st.next_fund), self.feed.candle_time(st.symbol, nk))
            heapq.heappush(self._wake, (st.wake, st.symbol))
        else:
            st.wake = None

    def _walk_range(self, st: _Sym, ta: int, tb: int) -> None:
        if not (st.orders or st.amount):
            return
        feed, sym = self.feed, st.symbol
        k, kb = feed.index_at(sym, ta), feed.index_at(sym, tb)
        if kb < 0:
            return
        self._thresholds(st)
        entering = k < 0
        k = max(k, 0)
        lo, hi = feed.price_range(sym, k, kb)
        if lo > st.dn_max and hi < st.up_min:  # nothing can fire in this range
            return
        row = feed.candle(sym, k)
        prev_close = None
        if entering:
            ta = int(row[0])
        while True:
            lo_k, hi_k = row[3], row[2]
            if prev_close is not None:
                lo_k, hi_k = min(lo_k, prev_close), max(hi_k, prev_close)
            self._thresholds(st)
            if lo_k <= st.dn_max or hi_k >= st.up_min:
                if prev_close is not None:
                    self._segment(st, row, row[0], prev_close, row[0], row[1], True)
                self._candle_path(st, k, row, ta, tb)
            if k >= kb or not (st.orders or st.amount):
                return
            k += 1
            prev_close = row[4]
            row = feed.candle(sym, k)
            ta = int(row[0])

    def _candle_path(self, st: _Sym, k: int, row: list, ta: float, tb: int) -> None:
        base = self.feed.base_ms
        lf = self._low_first(st, k, row)
        t_prev, p_prev = ta, path_price(row, base, ta, lf)
        for tp, pp in path_points(row, base, lf)[1:]:
            if tp <= ta:
                continue
            if tp > tb:
                self._segment(st, row, t_prev, p_prev, tb, path_price(row, base, tb, lf), False)
                return
            self._segment(st, row, t_prev, p_prev, tp, pp, False)
            t_prev, p_prev = tp, pp

    def _segment(self, st: _Sym, row: list, ta: float, pa: float, tb: float, pb: float, gap: bool) -> None:
        """Fire everything the straight move pa -> pb crosses, in path order."""
        prem = row[7]
        for _ in range(10_000):
            if not (st.orders or st.amount):
                return
            best = None
            for lv, on_mark, up, prio, ref in self._thresholds(st):
                level = lv / (1.0 + prem) if on_mark else lv
                if up:
                    if pa >= level:
                        f = 0.0
                    elif pb >= level:
                        f = (level - pa) / (pb - pa)
                    else:
                        continue
                else:
                    if pa <= level:
                        f = 0.0
                    elif pb <= level:
                        f = (pa - level) / (pa - pb)
                    else:
                        continue
                key = (f, prio, ref.seq if isinstance(ref, _Ord) else 0)
                if best is None or key < best[0]:
                    best = (key, level, lv, ref)
            if best is None:
                return
            (f, _, _), level, lv, ref = best
            t = ta + f * (tb - ta)
            ti = int(math.ceil(t)) if not gap else int(ta)
            base = row[1] if gap else level
            self._walk_mark = (st.symbol, (pa + f * (pb - pa)) * (1.0 + prem))
            if ref is _ALARM:
                st.band = None  # recentred on the walk point (never kept: it was just left)
                self._refresh_risk()
            elif ref is None:
                self._liquidate(st, lv, base, ti)
            elif ref.type is OrderType.LIMIT:
                self._trigger_limit(st, ref, ti)
            else:
                self._trigger_conditional(st, ref, base, row[6] / 2.0, ti)
            pa = pa + f * (pb - pa)
            ta = t
        raise RuntimeError(f"{st.symbol}: trigger loop did not settle")  # pragma: no cover - a bug guard

    def _trigger_limit(self, st: _Sym, rec: _Ord, t: int) -> None:
        qty = rec.qty
        if rec.reduce_only:
            if st.amount == 0 or (st.amount > 0) == (rec.side is Side.BUY):
                self._close_order(st, rec, OrderStatus.EXPIRED, t, "reduce-only order with nothing to reduce")
                return
            qty = min(qty, abs(st.amount))
        self._fill(st, rec, qty, rec.price, True, t)

    def _trigger_conditional(self, st: _Sym, rec: _Ord, base: float, half_spread: float, t: int) -> None:
        self._emit(SimEvent("trigger", t, st.symbol, rec.snapshot(), detail=f"stop {rec.stop_price}"))
        opposite = st.amount != 0 and (st.amount > 0) != (rec.side is Side.BUY)
        if rec.close_position or rec.reduce_only:
            if not opposite:
                self._close_order(st, rec, OrderStatus.EXPIRED, t, "no position to close at trigger time")
                return
            qty = abs(st.amount) if rec.close_position else min(rec.qty, abs(st.amount))
        else:
            qty = rec.qty
        buy = rec.side is Side.BUY
        slip = (half_spread if self.slippage.half_spread else 0.0) + float(self.slippage.bps) / 10_000.0
        price = self._tick_dec(st, base * (1.0 + slip) if buy else base * (1.0 - slip), buy)
        if not (rec.close_position or rec.reduce_only) and not self._margin_ok(st, 1 if buy else -1, qty, price):
            self._close_order(st, rec, OrderStatus.EXPIRED, t, "margin is insufficient at trigger time")
            return
        child = None
        if rec.is_algo:
            oid, self._next_order_id = self._next_order_id, self._next_order_id + 1
            self._seq += 1
            child = _Ord(order_id=oid, symbol=st.symbol, client_id=f"algo-{rec.order_id}", side=rec.side,
                         type=rec.type, status=OrderStatus.NEW, qty=qty, price=ZERO, stop_price=rec.stop_price,
                         reduce_only=rec.reduce_only, close_position=rec.close_position,
                         working_type=rec.working_type, tif="GTC", time=t, update_time=t, is_algo=False,
                         seq=self._seq)
            self._orders[oid] = child
            self._by_client[(st.symbol, child.client_id)] = child
            rec.actual_order_id = oid
        if rec.close_position:
            rec.qty = qty
        self._fill(st, rec, qty, price, False, t, child)

    # ------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-able state (the feed is not included: rebuild it with the same seed/files)."""
        syms = {}
        for s, st in self._syms.items():
            if st.amount or st.fills or st.leverage != DEFAULT_LEVERAGE or st.var_k >= 0 or st.pos_since_k:
                syms[s] = {"amount": str(st.amount), "entry": str(st.entry), "leverage": st.leverage,
                           "update_time": st.update_time, "var": [st.var_k, st.var_lf, st.pos_since_k],
                           "fills": [_fill_to_dict(f) for f in st.fills]}
        return {
            "version": STATE_VERSION, "now": self._now, "asset": self.asset, "wallet": str(self._wallet),
            "taker_fee": str(self.taker_fee), "maker_fee": str(self.maker_fee),
            "slippage": [str(self.slippage.bps), self.slippage.half_spread],
            "funding_rate": None if self.funding_rate is None else str(self.funding_rate),
            "intrabar": self.intrabar, "client_id_window_ms": self.client_id_window_ms,
            "ids": [self._next_order_id, self._next_algo_id, self._next_trade_id, self._seq],
            "orders": [o.to_dict() for o in sorted([*self._orders.values(), *self._algos.values()],
                                                   key=lambda o: o.seq)],
            "symbols": syms,
            "funding": [[f.symbol, f.time, str(f.rate), str(f.amount)] for f in self._funding],
        }

    @classmethod
    def from_dict(cls, feed: MarketFeed, data: dict) -> "SimExchange":
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported simulator state version {data.get('version')!r}")
        bps, half = data["slippage"]
        fr = data["funding_rate"]
        sim = cls(feed, balance=Decimal(data["wallet"]), asset=data["asset"], taker_fee=Decimal(data["taker_fee"]),
                  maker_fee=Decimal(data["maker_fee"]), slippage=SlippageModel(Decimal(bps), half),
                  funding_rate=None if fr is None else Decimal(fr), start_ms=data["now"], intrabar=data["intrabar"],
                  client_id_window_ms=data["client_id_window_ms"])
        sim._next_order_id, sim._next_algo_id, sim._next_trade_id, sim._seq = data["ids"]
        for s, d in data["symbols"].items():
            st = sim._sym(s)
            st.amount, st.entry = Decimal(d["amount"]), Decimal(d["entry"])
            st.leverage, st.update_time = d["leverage"], d["update_time"]
            st.var_k, st.var_lf, st.pos_since_k = d["var"]
            st.set_fills([_fill_from_dict(f) for f in d["fills"]])
        for od in data["orders"]:
            rec = _Ord.from_dict(od)
            (sim._algos if rec.is_algo else sim._orders)[rec.order_id] = rec
            (sim._algo_by_client if rec.is_algo else sim._by_client)[(rec.symbol, rec.client_id)] = rec
            if rec.open:
                sim._syms[rec.symbol].orders.append(rec)
        for s, t, r, a in data["funding"]:
            sim._add_funding(FundingPayment(s, t, Decimal(r), Decimal(a)))
        for st in sim._syms.values():
            sim._touch(st)
        sim._due.update(sim._active)
        sim._refresh_risk()
        return sim


def _fill_to_dict(f: Fill) -> dict:
    return {"symbol": f.symbol, "trade_id": f.trade_id, "order_id": f.order_id, "side": f.side.value,
            "price": str(f.price), "qty": str(f.qty), "quote_qty": str(f.quote_qty), "commission": str(f.commission),
            "commission_asset": f.commission_asset, "realized_pnl": str(f.realized_pnl), "time": f.time,
            "maker": f.maker}


def _fill_from_dict(d: dict) -> Fill:
    return Fill(d["symbol"], d["trade_id"], d["order_id"], Side(d["side"]), Decimal(d["price"]), Decimal(d["qty"]),
                Decimal(d["quote_qty"]), Decimal(d["commission"]), d["commission_asset"], Decimal(d["realized_pnl"]),
                d["time"], d["maker"])
