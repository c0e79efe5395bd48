"""The rate-limit governor: one request-weight and order budget per venue host, shared by every
task of the process.

How it works:

* Every request first calls :meth:`RateLimitGovernor.acquire` with its weight (from
  :class:`WeightTable`, the contract's table).  The weight is charged to the current minute
  window *before* the request is sent; if it would take the minute above
  ``limit * (1 - safety_margin)`` the caller waits for the next window instead.  Order submits
  are counted against the 10 s and 1 min order limits the same way.
* Every response is passed to :meth:`observe`: ``X-MBX-USED-WEIGHT-1M`` and the
  ``X-MBX-ORDER-COUNT-*`` headers (matched case-insensitively) raise the local count when the
  venue has seen more than we did (other processes on the same IP).
* HTTP 429 starts a cool-down for everybody (``Retry-After`` when present, else exponential);
  HTTP 418 is an IP ban: every later :meth:`acquire` raises :class:`IpBanned` at once, without
  sending anything, until the ban ends, and an ``ip_banned`` event is emitted.

Windows are aligned on the venue's clock (``offset_ms`` is the measured server-time offset), as
Binance resets the weight at each minute of its own clock.  All state changes happen under a
lock and without an ``await`` between check and charge, so concurrent tasks (and threads) never
overspend.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from mraster_tui.engine.clock import Clock, WallClock
from mraster_tui.engine.errors import IpBanned, RateLimited
from mraster_tui.engine.types import RateLimit

MINUTE_MS = 60_000
TEN_S_MS = 10_000
DEFAULT_BAN_MS = 120_000  # bans last 2 min to 3 days; 2 min when the venue does not say
MAX_COOLDOWN_S = 60.0


@dataclass(frozen=True, slots=True)
class VenueEvent:
    """Something the UI / log should know about the venue connection.

    kinds: ``ip_banned``, ``ban_over``, ``rate_limited``, ``throttled``, ``time_sync``,
    ``order_recovered`` (a lost order response was resolved by client id).
    """

    kind: str
    message: str
    until_ms: int | None = None


EventCallback = Callable[[VenueEvent], None]


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    """What the status bar shows."""

    used_weight: int
    weight_limit: int
    orders_10s: int
    order_limit_10s: int | None
    orders_1m: int
    order_limit_1m: int | None
    banned_until_ms: int | None
    cooldown_until_ms: int | None

    @property
    def weight_fraction(self) -> float:
        return self.used_weight / self.weight_limit if self.weight_limit else 0.0


# -- weights -------------------------------------------------------------------------------

_FIXED_WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/exchangeInfo"): 1,
    ("GET", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/allOpenOrders"): 1,
    ("GET", "/fapi/v1/algoOrder"): 1,
    ("DELETE", "/fapi/v1/algoOrder"): 1,
    ("DELETE", "/fapi/v1/algoOpenOrders"): 1,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v4/account"): 5,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v1/allAlgoOrders"): 5,
    ("GET", "/fapi/v1/income"): 30,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
    ("POST", "/fapi/v1/listenKey"): 1,
    ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1,
}
_KLINE_PATHS = frozenset({"/fapi/v1/klines", "/fapi/v1/continuousKlines", "/fapi/v1/markPriceKlines",
                          "/fapi/v1/indexPriceKlines", "/fapi/v1/premiumIndexKlines"})
#: (method, path) pairs that submit an order (count against the ORDERS limits)
ORDER_SUBMITS = frozenset({("POST", "/fapi/v1/order"), ("PUT", "/fapi/v1/order"),
                           ("POST", "/fapi/v1/algoOrder"), ("POST", "/fapi/v1/batchOrders")})


def kline_weight(limit: int | None) -> int:
    """Weight of a klines request by ``limit`` (venue default 500)."""
    n = 500 if limit is None else int(limit)
    if n < 100:
        return 1
    if n < 500:
        return 2
    if n <= 1000:
        return 5
    return 10


@dataclass(frozen=True, slots=True)
class WeightTable:
    """IP weights of the endpoints whose weight differs between venues (docs §4); the rest are
    common to both and listed in ``_FIXED_WEIGHTS``."""

    book_ticker_one: int
    book_ticker_all: int
    premium_index_one: int
    premium_index_all: int
    order_submit: int
    #: Binance counts fundingRate in its own 500/5 min bucket; we charge 1 (conservative)
    funding_rate: int = 1
    unknown: int = 1

    def weight(self, method: str, path: str, params: Mapping[str, object] | None = None) -> int:
        method = method.upper()
        params = params or {}
        has_symbol = bool(params.get("symbol"))
        if (method, path) in ORDER_SUBMITS:
            return self.order_submit
        if (method, path) in _FIXED_WEIGHTS:
            return _FIXED_WEIGHTS[(method, path)]
        if path in _KLINE_PATHS:
            limit = params.get("limit")
            return kline_weight(int(limit) if limit is not None else None)
        if path == "/fapi/v1/ticker/24hr":
            return 1 if has_symbol else 40
        if path == "/fapi/v1/ticker/bookTicker":
            return self.book_ticker_one if has_symbol else self.book_ticker_all
        if path == "/fapi/v1/premiumIndex":
            return self.premium_index_one if has_symbol else self.premium_index_all
        if path in ("/fapi/v1/openOrders", "/fapi/v1/openAlgoOrders"):
            return 1 if has_symbol else 40
        if path in ("/fapi/v1/fundingRate", "/fapi/v1/fundingInfo"):
            return self.funding_rate
        return self.unknown


BINANCE_WEIGHTS = WeightTable(book_ticker_one=2, book_ticker_all=5, premium_index_one=1,
                              premium_index_all=10, order_submit=0)
ASTER_WEIGHTS = WeightTable(book_ticker_one=1, book_ticker_all=2, premium_index_one=1,
                            premium_index_all=1, order_submit=1)
WEIGHT_TABLES: dict[str, WeightTable] = {"binance": BINANCE_WEIGHTS, "aster": ASTER_WEIGHTS}


# -- headers -------------------------------------------------------------------------------

_BAN_UNTIL_RE = re.compile(r"banned until (\d{10,})", re.IGNORECASE)


def parse_retry_after(value: str | None, now_ms: int) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None when absent/garbage."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now_ms / 1000)


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _int_header(h: Mapping[str, str], name: str) -> int | None:
    raw = h.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


# -- the governor --------------------------------------------------------------------------

class RateLimitGovernor:
    """See the module docstring.  ``offset_ms`` (venue time minus local time) aligns windows."""

    def __init__(self, clock: Clock | None = None, *, weight_limit: int = 2400,
                 order_limit_10s: int | None = 300, order_limit_1m: int | None = 1200,
                 safety_margin: float = 0.1, on_event: EventCallback | None = None,
                 max_wait_s: float = 65.0) -> None:
        if not 0.0 <= safety_margin < 1.0:
            raise ValueError("safety_margin must be in [0, 1)")
        self.clock: Clock = clock or WallClock()
        self.weight_limit = int(weight_limit)
        self.order_limit_10s = order_limit_10s
        self.order_limit_1m = order_limit_1m
        self.safety_margin = float(safety_margin)
        self.max_wait_s = float(max_wait_s)
        self.offset_ms = 0
        self._listeners: list[EventCallback] = [on_event] if on_event else []
        self._lock = threading.Lock()
        self._weight_window = -1
        self._used = 0
        self._o10_window = -1
        self._o10 = 0
        self._o1m_window = -1
        self._o1m = 0
        self._banned_until: int | None = None
        self._cooldown_until: int | None = None
        self._consecutive_429 = 0
        self._throttle_window_noted = -1

    # -- configuration ----------------------------------------------------------------
    def add_listener(self, cb: EventCallback) -> None:
        if cb not in self._listeners:
            self._listeners.append(cb)

    def remove_listener(self, cb: EventCallback) -> None:
        if cb in self._listeners:
            self._listeners.remove(cb)

    def apply_rate_limits(self, limits: Iterable[RateLimit]) -> None:
        """Take the limits the venue publishes in exchangeInfo (``rateLimits``)."""
        with self._lock:
            for rl in limits:
                if rl.kind == "REQUEST_WEIGHT" and rl.interval_ms == MINUTE_MS:
                    self.weight_limit = int(rl.limit)
                elif rl.kind == "ORDERS" and rl.interval_ms == TEN_S_MS:
                    self.order_limit_10s = int(rl.limit)
                elif rl.kind == "ORDERS" and rl.interval_ms == MINUTE_MS:
                    self.order_limit_1m = int(rl.limit)

    # -- internals --------------------------------------------------------------------
    def _now(self) -> int:
        return self.clock.now_ms() + self.offset_ms

    def _roll(self, now: int) -> None:
        w = now // MINUTE_MS
        if w != self._weight_window:
            self._weight_window, self._used = w, 0
        w10 = now // TEN_S_MS
        if w10 != self._o10_window:
            self._o10_window, self._o10 = w10, 0
        if w != self._o1m_window:
            self._o1m_window, self._o1m = w, 0

    @staticmethod
    def _budget(limit: int | None, margin: float) -> int | None:
        if limit is None:
            return None
        return max(1, int(limit * (1.0 - margin)))

    def _emit(self, ev: VenueEvent) -> None:
        for cb in list(self._listeners):
            with contextlib.suppress(Exception):  # a broken listener must not break the request path
                cb(ev)

    def _check(self, now: int, weight: int, order: bool) -> tuple[float, VenueEvent | None]:
        """Under the lock: seconds to wait (0 = go, charged), or raise when banned."""
        events: VenueEvent | None = None
        if self._banned_until is not None:
            if now < self._banned_until:
                raise IpBanned(f"IP banned by the venue until {self._banned_until} (epoch ms); "
                               "no request is sent until then", until_ms=self._banned_until, http_status=418)
            self._banned_until = None
            events = VenueEvent("ban_over", "the venue's IP ban has ended; requests resume")
        if self._cooldown_until is not None:
            if now < self._cooldown_until:
                return (self._cooldown_until - now) / 1000, events
            self._cooldown_until = None
        self._roll(now)
        budget = self._budget(self.weight_limit, self.safety_margin)
        assert budget is not None
        # a request heavier than the whole budget may go alone at the start of a window
        if weight > 0 and self._used + weight > budget and self._used > 0:
            wait_ms = (self._weight_window + 1) * MINUTE_MS - now
            if self._throttle_window_noted != self._weight_window:
                self._throttle_window_noted = self._weight_window
                events = VenueEvent("throttled", f"request weight {self._used}/{self.weight_limit} this "
                                    f"minute; pausing {wait_ms / 1000:.1f} s to stay under the limit")
            return wait_ms / 1000, events
        if order:
            b10 = self._budget(self.order_limit_10s, self.safety_margin)
            if b10 is not None and self._o10 + 1 > b10:
                return ((self._o10_window + 1) * TEN_S_MS - now) / 1000, events
            b1m = self._budget(self.order_limit_1m, self.safety_margin)
            if b1m is not None and self._o1m + 1 > b1m:
                return ((self._o1m_window + 1) * MINUTE_MS - now) / 1000, events
            self._o10 += 1
            self._o1m += 1
        self._used += weight
        return 0.0, events

    # -- the request path -------------------------------------------------------------
    async def acquire(self, weight: int, *, order: bool = False) -> int:
        """Wait until ``weight`` fits the budget, charge it, and return the window id to pass
        to :meth:`observe`.  Raises :class:`IpBanned` during a ban (nothing may be sent) and
        :class:`RateLimited` when the venue's cool-down is longer than ``max_wait_s``."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._now()
                wait_s, ev = self._check(now, int(weight), order)
                window = self._weight_window
            if ev is not None:
                self._emit(ev)
            if wait_s <= 0:
                return window
            if waited + wait_s > self.max_wait_s:
                raise RateLimited(f"request budget exhausted (venue cool-down or weight limit); next request "
                                  f"allowed in {wait_s:.1f} s", retry_after=wait_s)
            # a small pad so that we wake up inside the next window, not at its edge
            await self.clock.sleep(wait_s + 0.005)
            waited += wait_s

    def observe(self, status: int, headers: Mapping[str, str], *, window: int | None = None,
                message: str = "") -> None:
        """Account for a response: usage headers, 429 cool-down, 418 ban."""
        h = _lower_headers(headers)
        with self._lock:
            now = self._now()
            self._roll(now)
            if window is None or window == self._weight_window:
                used = _int_header(h, "x-mbx-used-weight-1m")
                if used is not None:
                    self._used = max(self._used, used)
                o10 = _int_header(h, "x-mbx-order-count-10s")
                if o10 is not None:
                    self._o10 = max(self._o10, o10)
                o1m = _int_header(h, "x-mbx-order-count-1m")
                if o1m is not None:
                    self._o1m = max(self._o1m, o1m)
            retry_after = parse_retry_after(h.get("retry-after"), now)
            event: VenueEvent | None = None
            if status == 418:
                m = _BAN_UNTIL_RE.search(message)
                if m:
                    until = int(m.group(1))
                elif retry_after is not None:
                    until = now + int(retry_after * 1000)
                else:
                    until = now + DEFAULT_BAN_MS
                self._banned_until = max(until, self._banned_until or 0)
                event = VenueEvent("ip_banned", f"the venue banned this IP until {self._banned_until} "
                                   "(epoch ms) for too many requests; all requests stopped",
                                   until_ms=self._banned_until)
            elif status == 429:
                self._consecutive_429 += 1
                if retry_after is None:
                    retry_after = min(MAX_COOLDOWN_S, 2.0 ** (self._consecutive_429 - 1))
                self._cooldown_until = max(now + int(retry_after * 1000), self._cooldown_until or 0)
                event = VenueEvent("rate_limited", f"the venue answered 429 (too many requests); "
                                   f"pausing all requests for {retry_after:.1f} s", until_ms=self._cooldown_until)
            elif status < 400:
                self._consecutive_429 = 0
        if event is not None:
            self._emit(event)

    # -- status -----------------------------------------------------------------------
    def banned_until(self) -> int | None:
        with self._lock:
            if self._banned_until is not None and self._now() < self._banned_until:
                return self._banned_until
            return None

    def snapshot(self) -> RateLimitSnapshot:
        with self._lock:
            now = self._now()
            self._roll(now)
            banned = self._banned_until if self._banned_until and now < self._banned_until else None
            cool = self._cooldown_until if self._cooldown_until and now < self._cooldown_until else None
            return RateLimitSnapshot(self._used, self.weight_limit, self._o10, self.order_limit_10s,
                                     self._o1m, self.order_limit_1m, banned, cool)


_SHARED: weakref.WeakValueDictionary[str, RateLimitGovernor] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_governor(host_key: str, factory: Callable[[], RateLimitGovernor]) -> RateLimitGovernor:
    """The process-wide governor for a venue host (the venue limits per IP, so every client of
    one host in this process shares one budget).  ``factory`` builds it the first time."""
    with _SHARED_LOCK:
        gov = _SHARED.get(host_key)
        if gov is None:
            gov = factory()
            _SHARED[host_key] = gov
        return gov
