"""``RestExchange``: the async REST client for Binance USD-M and AsterDex (HMAC "V1" keys).

This is the bot's only contact with real money.  The rules it keeps (see
``docs/exchange-api.md`` and ``docs/architecture.md``):

* **Reads** (and idempotent writes: cancel, leverage, margin type) are retried on connect
  errors, timeouts, 5xx, 429 and garbage bodies, with exponential backoff plus jitter
  (``http_retries`` extra attempts, ``http_backoff`` base seconds, ``http_timeout``).
* **Order submits are never retried blindly.**  Every order carries the caller's deterministic
  client id.  A timeout, a lost response, a 5xx, ``-1006``/``-1007`` or a garbage answer is an
  *unknown outcome*: the order is looked up by client id first and resent (same client id) only
  when the venue does not have it.  ``-4116`` (duplicate client id) means it exists: it is
  returned.  When the outcome cannot be established, :class:`UnknownOutcome` is raised.
* **Time sync:** the server-time offset is measured before the first signed request and every
  ``TIME_SYNC_INTERVAL_S``; a ``-1021`` answer triggers a resync and one retry.
* **Signing:** all parameters go in the query string (no query/body mix), ``signature`` last,
  ``X-MBX-APIKEY`` only on signed requests.  Public requests never carry the key.
* **Rate limits:** every request goes through the process-wide
  :class:`~mraster_tui.engine.venue.ratelimit.RateLimitGovernor` of the host.
* **Secrets:** no exception text or log line contains the key, the secret, a signature or a
  signed query string (messages name the method and path only, and are passed through a
  :class:`~mraster_tui.engine.venue.signing.Redactor`; transport exceptions are not chained).
* **Venue dialects** are declared in :class:`VenueCapabilities` (conditional orders through the
  algo endpoints on Binance, ``/fapi/v1/order`` on AsterDex; account endpoint version; limits).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import httpx

from mraster_tui.config.schema import setting
from mraster_tui.engine.clock import Clock, WallClock
from mraster_tui.engine.errors import (
    AuthError,
    DuplicateClientId,
    InvalidTimestamp,
    IpBanned,
    RateLimited,
    UnknownOrder,
    UnknownOutcome,
    VenueError,
    VenueRejected,
    VenueUnavailable,
    error_from_code,
)
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
    SymbolFilters,
    SymbolInfo,
    Ticker24h,
    interval_ms,
)
from mraster_tui.engine.venue.base import ASTER, BINANCE, Exchange, VenueCapabilities, d
from mraster_tui.engine.venue.ratelimit import (
    ORDER_SUBMITS,
    WEIGHT_TABLES,
    EventCallback,
    RateLimitGovernor,
    RateLimitSnapshot,
    VenueEvent,
    shared_governor,
)
from mraster_tui.engine.venue.signing import Redactor, encode_params, signed_query, strip_signature

__all__ = ["RestExchange", "PublicRestView", "KeyPermissions", "VenueEvent", "resolve_venue",
           "VENUES", "TIME_SYNC_INTERVAL_S", "parse_exchange_info", "parse_order", "parse_algo_order",
           "parse_position", "parse_fill"]

log = logging.getLogger(__name__)

VENUES: dict[str, VenueCapabilities] = {"binance": BINANCE, "aster": ASTER}
TIME_SYNC_INTERVAL_S = 600.0
#: keep-alive pool: httpx clients of SHARD_CONNECTIONS connections each, enough of them for
#: ``fetch_concurrency`` market-data reads plus POOL_HEADROOM other requests in flight (the two
#: all-symbol reads of a scan, the trading requests of the same cycle)
SHARD_CONNECTIONS = 4
POOL_HEADROOM = 8
CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
#: venue codes meaning "sent, but the outcome is unknown" (docs §5)
UNKNOWN_OUTCOME_CODES = frozenset({-1006, -1007})
_MARGIN_UNCHANGED = -4046

ORDER_PATH = "/fapi/v1/order"
ALGO_ORDER_PATH = "/fapi/v1/algoOrder"

_ALGO_STATUS: dict[str, OrderStatus] = {
    # the stop still protects only while NEW; TRIGGERING is about to execute, so it still
    # counts as the working stop (no second one must be placed)
    "NEW": OrderStatus.NEW,
    "TRIGGERING": OrderStatus.NEW,
    "TRIGGERED": OrderStatus.FILLED,
    "FINISHED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "CANCELLED": OrderStatus.CANCELED,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
}
_ORDER_STATUS: dict[str, OrderStatus] = {s.value: s for s in OrderStatus} | {
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}


def resolve_venue(base_url: str, venue: str = "auto") -> tuple[VenueCapabilities, str]:
    """The venue dialect for ``base_url``, and how it was chosen (for doctor).

    ``auto`` picks by host: ``*binance.com`` / ``*binancefuture.com`` -> binance, ``*asterdex*``
    -> aster, anything else (e.g. the loopback exchange) -> binance.
    """
    venue = (venue or "auto").strip().lower()
    if venue in VENUES:
        return VENUES[venue], "set explicitly"
    if venue != "auto":
        raise ValueError(f"unknown venue {venue!r}; use auto, binance or aster")
    host = (urlsplit(base_url).hostname or "").lower()
    if host.endswith("binance.com") or host.endswith("binancefuture.com"):
        return BINANCE, f"auto: host {host}"
    if "asterdex" in host:
        return ASTER, f"auto: host {host}"
    return BINANCE, f"auto: host {host or '?'} is neither Binance nor AsterDex, using the Binance dialect"


@dataclass(frozen=True, slots=True)
class KeyPermissions:
    """What the venue's account endpoint says the key/account may do (None = not reported)."""

    can_trade: bool | None
    can_deposit: bool | None
    can_withdraw: bool | None
    source: str


# -- wire -> types ---------------------------------------------------------------------------

def _fmt(x: Decimal) -> str:
    """A Decimal as plain digits (never ``1E-8``)."""
    return format(x, "f")


def _bool(x: Any) -> bool:
    if isinstance(x, str):
        return x.strip().lower() == "true"
    return bool(x)


def _filters(raw: list[dict[str, Any]]) -> SymbolFilters:
    by = {f.get("filterType"): f for f in raw}
    price = by.get("PRICE_FILTER", {})
    lot = by.get("LOT_SIZE", {})
    mlot = by.get("MARKET_LOT_SIZE", lot)
    notional = by.get("MIN_NOTIONAL", {})
    pct = by.get("PERCENT_PRICE", {})
    return SymbolFilters(
        tick_size=d(price.get("tickSize", "0")),
        min_price=d(price.get("minPrice", "0")),
        max_price=d(price.get("maxPrice", "0")),
        step_size=d(lot.get("stepSize", "0")),
        min_qty=d(lot.get("minQty", "0")),
        max_qty=d(lot.get("maxQty", "0")),
        market_step_size=d(mlot.get("stepSize", lot.get("stepSize", "0"))),
        market_min_qty=d(mlot.get("minQty", lot.get("minQty", "0"))),
        market_max_qty=d(mlot.get("maxQty", lot.get("maxQty", "0"))),
        min_notional=d(notional.get("notional", notional.get("minNotional", "0"))),
        multiplier_up=d(pct.get("multiplierUp", "1.05")),
        multiplier_down=d(pct.get("multiplierDown", "0.95")),
    )


_INTERVAL_MS = {"SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def parse_exchange_info(data: Mapping[str, Any]) -> ExchangeInfo:
    symbols: dict[str, SymbolInfo] = {}
    for s in data["symbols"]:
        symbols[s["symbol"]] = SymbolInfo(
            symbol=s["symbol"], base_asset=s.get("baseAsset", ""), quote_asset=s.get("quoteAsset", ""),
            status=s.get("status", ""), contract_type=s.get("contractType", ""),
            filters=_filters(s.get("filters", [])),
            maint_margin_percent=d(s.get("maintMarginPercent", "2.5")),
            price_precision=int(s.get("pricePrecision", 8)),
            quantity_precision=int(s.get("quantityPrecision", 8)),
        )
    limits = tuple(
        RateLimit(rl["rateLimitType"], _INTERVAL_MS[rl["interval"]] * int(rl.get("intervalNum", 1)), int(rl["limit"]))
        for rl in data.get("rateLimits", []) if rl.get("interval") in _INTERVAL_MS
    )
    return ExchangeInfo(int(data.get("serverTime", 0)), symbols, limits)


def parse_order(o: Mapping[str, Any]) -> Order:
    return Order(
        symbol=o["symbol"], order_id=int(o["orderId"]), client_id=str(o.get("clientOrderId", "")),
        side=Side(o["side"]), type=OrderType(o.get("type") or o["origType"]),
        status=_ORDER_STATUS[o["status"]],
        quantity=d(o.get("origQty", "0")), executed_qty=d(o.get("executedQty", "0")),
        avg_price=d(o.get("avgPrice", "0")), price=d(o.get("price", "0")),
        stop_price=d(o.get("stopPrice", "0")), reduce_only=_bool(o.get("reduceOnly", False)),
        close_position=_bool(o.get("closePosition", False)),
        working_type=str(o.get("workingType", "CONTRACT_PRICE")),
        time=int(o.get("time", o.get("updateTime", 0))), update_time=int(o.get("updateTime", 0)),
        time_in_force=str(o.get("timeInForce") or "GTC"),
    )


def parse_algo_order(o: Mapping[str, Any]) -> Order:
    """A Binance algo (conditional) order as a plain :class:`Order` (``is_algo=True``)."""
    return Order(
        symbol=o["symbol"], order_id=int(o["algoId"]), client_id=str(o.get("clientAlgoId", "")),
        side=Side(o["side"]), type=OrderType(o.get("orderType") or o["type"]),
        status=_ALGO_STATUS[o.get("algoStatus") or o["status"]],
        quantity=d(o.get("quantity") or "0"),
        executed_qty=d(o.get("executedQty") or o.get("actualQty") or "0"),
        avg_price=d(o.get("avgPrice") or o.get("actualPrice") or "0"),
        price=d(o.get("price") or "0"), stop_price=d(o.get("triggerPrice") or "0"),
        reduce_only=_bool(o.get("reduceOnly", False)), close_position=_bool(o.get("closePosition", False)),
        working_type=str(o.get("workingType", "CONTRACT_PRICE")),
        time=int(o.get("createTime", 0)), update_time=int(o.get("updateTime", 0)), is_algo=True,
        time_in_force=str(o.get("timeInForce") or "GTC"),
    )


def parse_position(p: Mapping[str, Any]) -> Position:
    return Position(
        symbol=p["symbol"], amount=d(p["positionAmt"]), entry_price=d(p.get("entryPrice", "0")),
        mark_price=d(p.get("markPrice", "0")), unrealized_pnl=d(p.get("unRealizedProfit", "0")),
        leverage=int(d(p.get("leverage", "0"))), liquidation_price=d(p.get("liquidationPrice", "0")),
        update_time=int(p.get("updateTime", 0)),
    )


def parse_fill(t: Mapping[str, Any]) -> Fill:
    return Fill(
        symbol=t["symbol"], trade_id=int(t["id"]), order_id=int(t["orderId"]), side=Side(t["side"]),
        price=d(t["price"]), qty=d(t["qty"]), quote_qty=d(t.get("quoteQty", "0")),
        commission=d(t.get("commission", "0")), commission_asset=str(t.get("commissionAsset", "")),
        realized_pnl=d(t.get("realizedPnl", "0")), time=int(t["time"]), maker=_bool(t.get("maker", False)),
    )


def _rows(data: Any) -> list[Mapping[str, Any]]:
    """All-symbol endpoints answer an array; with ``symbol`` an object."""
    return data if isinstance(data, list) else [data]


# -- the transport core (shared by the full client and its public-only view) ----------------

Signer = Callable[[dict[str, Any]], tuple[str, dict[str, str]]]


class _Core:
    """HTTP, rate limits, retries, time offset and error mapping; knows nothing about keys."""

    def __init__(self, base_url: str, caps: VenueCapabilities, settings: Any, clock: Clock,
                 transport: httpx.AsyncBaseTransport | None, governor: RateLimitGovernor | None,
                 redactor: Redactor) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"exchange base URL must look like https://host, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.caps = caps
        self.clock = clock
        self.redact = redactor
        self.retries = int(setting(settings, "http_retries"))
        self.backoff = float(setting(settings, "http_backoff"))
        self.timeout = float(setting(settings, "http_timeout"))
        self.weights = WEIGHT_TABLES[caps.name]
        self.governor = governor or shared_governor(
            parts.netloc.lower(),
            lambda: RateLimitGovernor(clock, weight_limit=caps.weight_limit_1m,
                                      order_limit_10s=caps.order_limit_10s, order_limit_1m=caps.order_limit_1m))
        # Several small keep-alive pools instead of one big one: httpcore's pool probes every
        # connection on each request state change (encode/httpx#3215), so its cost grows with
        # the pool size; shards of a few connections keep a 40-symbol scan cheap.
        connections = max(1, int(setting(settings, "fetch_concurrency"))) + POOL_HEADROOM
        shards = 1 if transport is not None else -(-connections // SHARD_CONNECTIONS)
        tls = httpx.create_ssl_context()  # one certificate store for all shards (~60 ms to build)
        self._clients = [
            httpx.AsyncClient(
                verify=tls, timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=SHARD_CONNECTIONS, max_keepalive_connections=SHARD_CONNECTIONS),
                transport=transport, headers={"User-Agent": "mraster-tui"}, follow_redirects=False,
            )
            for _ in range(shards)
        ]
        self._busy = [0] * shards
        self.offset_ms = 0
        self._synced_at: int | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._rng = random.Random()
        self.listeners: list[EventCallback] = []

    # -- events / time ----------------------------------------------------------------
    def emit(self, ev: VenueEvent) -> None:
        for cb in list(self.listeners):
            try:
                cb(ev)
            except Exception:  # a broken listener must not break trading
                log.exception("venue event listener failed")

    def venue_now_ms(self) -> int:
        return self.clock.now_ms() + self.offset_ms

    async def sync_time(self) -> int:
        """Measure the server-time offset (venue minus local, RTT-corrected); returns it."""
        t0 = self.clock.now_ms()
        data = await self.call("GET", "/fapi/v1/time", {})
        t1 = self.clock.now_ms()
        try:
            server = int(data["serverTime"])
        except (KeyError, TypeError, ValueError):
            raise VenueUnavailable("the venue's /fapi/v1/time answer has no serverTime") from None
        self.offset_ms = server - (t0 + t1) // 2
        self.governor.offset_ms = self.offset_ms
        self._synced_at = t1
        log.debug("server time offset %+d ms (round trip %d ms)", self.offset_ms, t1 - t0)
        return self.offset_ms

    async def ensure_time(self) -> None:
        due = self._synced_at is None or self.clock.now_ms() - self._synced_at > TIME_SYNC_INTERVAL_S * 1000
        if not due:
            return
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            if self._synced_at is None or self.clock.now_ms() - self._synced_at > TIME_SYNC_INTERVAL_S * 1000:
                await self.sync_time()

    def backoff_delay(self, attempt: int) -> float:
        base = self.backoff * (2 ** attempt)
        return base + self._rng.uniform(0, self.backoff)

    # -- the request path -------------------------------------------------------------
    @staticmethod
    def _what(method: str, path: str, params: Mapping[str, Any]) -> str:
        sym = params.get("symbol")
        return f"{method} {path}" + (f" {sym}" if sym else "")

    async def call(self, method: str, path: str, params: dict[str, Any], *, signer: Signer | None = None,
                   retry: bool = True) -> Any:
        """Send one logical request; see the module docstring for the retry rules.

        With ``retry=False`` (order submits) any failure after which the request may have
        reached the venue raises :class:`UnknownOutcome`.
        """
        what = self._what(method, path, params)
        weight = self.weights.weight(method, path, params)
        is_order = (method, path) in ORDER_SUBMITS
        attempts = 1 + (self.retries if retry else 0)
        resynced = False
        attempt = 0
        while True:
            try:
                return await self._once(method, path, params, signer, weight, is_order, what)
            except InvalidTimestamp:
                if signer is None or resynced:
                    raise
                resynced = True
                offset = await self.sync_time()
                self.emit(VenueEvent("time_sync", f"timestamp rejected (-1021); clock resynced, offset {offset:+d} ms"))
                continue  # rejected outright: nothing happened, retrying is safe (not counted)
            except _MaybeSent as exc:
                attempt += 1
                if not retry or attempt >= attempts:
                    tries = f" (after {attempts} attempts)" if retry and attempts > 1 else ""
                    if exc.rate_limited:
                        raise RateLimited(f"{what}: {exc.reason}{tries}", code=exc.code, http_status=429) from None
                    if retry or not exc.sent:
                        raise VenueUnavailable(f"{what}: {exc.reason}{tries}" + ("" if retry else "; nothing was sent"),
                                               code=exc.code, http_status=exc.status) from None
                    raise UnknownOutcome(f"{what}: {exc.reason}; the venue may or may not have acted",
                                         code=exc.code, http_status=exc.status) from None
                log.info("%s: %s; retry %d/%d", what, exc.reason, attempt, attempts - 1)
                if not exc.rate_limited:  # the governor already holds everybody back after a 429
                    await self.clock.sleep(self.backoff_delay(attempt - 1))

    async def _once(self, method: str, path: str, params: dict[str, Any], signer: Signer | None,
                    weight: int, is_order: bool, what: str) -> Any:
        window = await self.governor.acquire(weight, order=is_order)
        headers: dict[str, str] = {}
        if signer is not None:
            await self.ensure_time()
            query, headers = signer(dict(params))
            shown = strip_signature(query)
        else:
            query = encode_params(params)
            shown = query
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        shard = min(range(len(self._clients)), key=self._busy.__getitem__)
        self._busy[shard] += 1
        try:
            resp = await self._clients[shard].request(method, url, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _MaybeSent(f"cannot connect to the venue ({type(exc).__name__})", sent=False) from None
        except httpx.TimeoutException:
            raise _MaybeSent(f"no answer within {self.timeout:g} s (timeout)") from None
        except httpx.TransportError as exc:
            raise _MaybeSent(f"connection lost before the answer ({type(exc).__name__})") from None
        finally:
            self._busy[shard] -= 1
        status = resp.status_code
        text = resp.text
        body: Any
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = _GARBAGE
        code, msg = None, ""
        if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] < 0:
            code, msg = int(body["code"]), self.redact(str(body.get("msg", "")))
        self.governor.observe(status, resp.headers, window=window, message=msg)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s%s -> %s", method, path, f"?{self.redact(shown)}" if shown else "", status)

        if status == 418:
            raise IpBanned(f"{what}: the venue banned this IP for too many requests ({msg or 'HTTP 418'})",
                           until_ms=self.governor.banned_until() or self.venue_now_ms(), code=code, http_status=418)
        if status == 429:
            raise _MaybeSent(f"rate limited by the venue ({msg or 'HTTP 429'})", code=code, status=429,
                             rate_limited=True, sent=False)
        if body is _GARBAGE or body is None:
            excerpt = self.redact(" ".join(text.split())[:80])
            head = text[:200].lower()
            kind = "an HTML page" if "<html" in head or "<!doctype" in head else "a non-JSON answer"
            raise _MaybeSent(f"the venue sent {kind} instead of JSON (HTTP {status}): {excerpt!r}", status=status)
        if code is not None and code in UNKNOWN_OUTCOME_CODES:
            raise _MaybeSent(f"the venue timed out internally ({msg})", code=code, status=status)
        if status >= 500:
            raise _MaybeSent(f"venue error HTTP {status}" + (f": {msg}" if msg else ""), code=code, status=status)
        if code is not None:
            raise error_from_code(code, f"{what}: {msg}", http_status=status)
        if status >= 400:
            if status == 403:
                raise VenueRejected(f"{what}: refused by the venue's firewall (HTTP 403)", http_status=403)
            if status == 404:
                raise VenueRejected(f"{what}: the venue has no such endpoint (HTTP 404); wrong venue or base URL?",
                                    http_status=404)
            raise VenueRejected(f"{what}: HTTP {status}", http_status=status)
        return body

    async def aclose(self) -> None:
        for c in self._clients:
            await c.aclose()


_GARBAGE = object()


class _MaybeSent(Exception):
    """Internal: a transient failure (retry for reads; unknown outcome for order submits)."""

    def __init__(self, reason: str, *, code: int | None = None, status: int | None = None,
                 rate_limited: bool = False, sent: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.code, self.status = reason, code, status
        self.rate_limited, self.sent = rate_limited, sent


# -- public endpoints (shared by RestExchange and PublicRestView) ----------------------------

class _PublicEndpoints:
    _core: _Core
    capabilities: VenueCapabilities

    async def _public(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._core.call("GET", path, params or {})

    @staticmethod
    def _parse(what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (KeyError, TypeError, ValueError, IndexError, InvalidOperation) as exc:
            raise VenueUnavailable(f"{what}: unexpected answer from the venue ({type(exc).__name__}: {exc})") from None

    def rate_limit_snapshot(self) -> RateLimitSnapshot:
        return self._core.governor.snapshot()

    @property
    def time_offset_ms(self) -> int:
        return self._core.offset_ms

    async def sync_time(self) -> int:
        return await self._core.sync_time()

    async def server_time(self) -> int:
        data = await self._public("/fapi/v1/time")
        return self._parse("GET /fapi/v1/time", lambda: int(data["serverTime"]))

    async def exchange_info(self) -> ExchangeInfo:
        data = await self._public("/fapi/v1/exchangeInfo")
        info = self._parse("GET /fapi/v1/exchangeInfo", lambda: parse_exchange_info(data))
        if info.rate_limits:
            self._core.governor.apply_rate_limits(info.rate_limits)
        return info

    async def klines(self, symbol: str, interval: str, limit: int, *,
                     start_ms: int | None = None, end_ms: int | None = None) -> Candles:
        interval_ms(interval)  # ValueError with a clear message for a bad interval
        await self._core.ensure_time()  # "forming or closed" is judged on the venue's clock
        params = {"symbol": symbol, "interval": interval, "limit": int(limit), "startTime": start_ms, "endTime": end_ms}
        rows = await self._public("/fapi/v1/klines", params)
        return self._parse(f"GET /fapi/v1/klines {symbol}",
                           lambda: Candles.from_rows(rows, interval, now_ms=self._core.venue_now_ms()))

    async def tickers_24h(self) -> dict[str, Ticker24h]:
        data = await self._public("/fapi/v1/ticker/24hr")
        return self._parse("GET /fapi/v1/ticker/24hr", lambda: {
            t["symbol"]: Ticker24h(t["symbol"], d(t["lastPrice"]), d(t["quoteVolume"]), d(t["volume"]),
                                   d(t.get("priceChangePercent", "0"))) for t in _rows(data)})

    async def book_tickers(self) -> dict[str, BookTicker]:
        data = await self._public("/fapi/v1/ticker/bookTicker")
        return self._parse("GET /fapi/v1/ticker/bookTicker", lambda: {
            b["symbol"]: BookTicker(b["symbol"], d(b["bidPrice"]), d(b["askPrice"]), d(b.get("bidQty", "0")),
                                    d(b.get("askQty", "0")), int(b.get("time") or 0)) for b in _rows(data)})

    async def premium_index(self) -> dict[str, PremiumIndex]:
        data = await self._public("/fapi/v1/premiumIndex")
        return self._parse("GET /fapi/v1/premiumIndex", lambda: {
            p["symbol"]: PremiumIndex(p["symbol"], d(p["markPrice"]), d(p.get("indexPrice", "0")),
                                      d(p.get("lastFundingRate") or "0"), int(p.get("nextFundingTime") or 0),
                                      int(p.get("time") or 0)) for p in _rows(data)})

    async def funding_history(self, symbol: str, *, start_ms: int | None = None,
                              end_ms: int | None = None, limit: int = 1000) -> list[FundingRate]:
        data = await self._public("/fapi/v1/fundingRate", {"symbol": symbol, "startTime": start_ms,
                                                            "endTime": end_ms, "limit": int(limit)})
        return self._parse(f"GET /fapi/v1/fundingRate {symbol}", lambda: [
            FundingRate(f["symbol"], int(f["fundingTime"]), d(f["fundingRate"])) for f in data])


class PublicRestView(_PublicEndpoints):
    """Market data only: shares the parent's connection pool, rate-limit budget and time
    offset, but has no credentials and no signed method, so it cannot send a signed request
    (the paper venue uses it: paper mode never signs)."""

    simulated = False

    def __init__(self, core: _Core) -> None:
        self._core = core
        self.capabilities = core.caps

    async def close(self) -> None:
        """No-op: the parent :class:`RestExchange` owns the connection pool."""


# -- the full client -------------------------------------------------------------------------

class RestExchange(_PublicEndpoints, Exchange):
    """The :class:`Exchange` port over REST (see the module docstring).

    ``settings`` is read with ``getattr`` for: ``recv_window``, ``http_retries``,
    ``http_backoff``, ``http_timeout`` and ``fetch_concurrency`` (sizes the keep-alive pool so
    that a scan's reads never queue for a connection).  ``on_event`` receives
    :class:`VenueEvent` objects (ban, 429, throttling, time resync, recovered order).  ``transport`` is an optional httpx
    transport (tests); ``governor`` overrides the process-wide one of the host.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, api_secret: str | None = None,
                 venue: str = "auto", settings: Any = None, clock: Clock | None = None,
                 on_event: EventCallback | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 governor: RateLimitGovernor | None = None) -> None:
        caps, self.venue_reason = resolve_venue(base_url, venue)
        self.capabilities = caps
        self.clock = clock or WallClock()
        self._api_key = api_key or None
        self._api_secret = api_secret or None
        redactor = Redactor(self._api_key, self._api_secret)
        self.recv_window = int(setting(settings, "recv_window"))
        if not 0 < self.recv_window <= 60_000:
            raise ValueError(f"recv_window must be 1..60000 ms, got {self.recv_window}")
        self._core = _Core(base_url, caps, settings, self.clock, transport, governor, redactor)
        self._on_event = on_event
        if on_event is not None:
            self._core.listeners.append(on_event)
            self._core.governor.add_listener(on_event)

    def __repr__(self) -> str:  # never shows credentials
        return f"RestExchange({self._core.base_url!r}, venue={self.capabilities.name!r})"

    @property
    def base_url(self) -> str:
        return self._core.base_url

    @property
    def has_credentials(self) -> bool:
        return bool(self._api_key and self._api_secret)

    def public_only(self) -> PublicRestView:
        return PublicRestView(self._core)

    async def close(self) -> None:
        if self._on_event is not None:
            self._core.governor.remove_listener(self._on_event)
        await self._core.aclose()

    # -- signing ----------------------------------------------------------------------
    def _signer(self, params: dict[str, Any]) -> tuple[str, dict[str, str]]:
        assert self._api_key and self._api_secret
        params["recvWindow"] = self.recv_window
        params["timestamp"] = self._core.venue_now_ms()
        return signed_query(params, self._api_secret), {"X-MBX-APIKEY": self._api_key}

    async def _signed(self, method: str, path: str, params: dict[str, Any] | None = None, *,
                      retry: bool = True) -> Any:
        if not self.has_credentials:
            raise AuthError(f"{method} {path}: needs an API key and secret (none configured)")
        return await self._core.call(method, path, dict(params or {}), signer=self._signer, retry=retry)

    def _algo(self, conditional: bool) -> bool:
        return conditional and self.capabilities.conditional_via_algo

    # -- account ----------------------------------------------------------------------
    async def balance(self, asset: str = "USDT") -> Balance:
        rows = await self._signed("GET", "/fapi/v2/balance")

        def parse() -> Balance:
            for r in rows:
                if r["asset"] == asset:
                    return Balance(asset, d(r["balance"]), d(r.get("crossUnPnl", "0")),
                                   d(r.get("availableBalance", "0")))
            return Balance(asset, Decimal(0), Decimal(0), Decimal(0))
        return self._parse("GET /fapi/v2/balance", parse)

    async def positions(self) -> list[Position]:
        rows = await self._signed("GET", "/fapi/v2/positionRisk")
        return self._parse("GET /fapi/v2/positionRisk",
                           lambda: [p for p in map(parse_position, rows) if p.amount != 0])

    async def permissions(self) -> KeyPermissions:
        path = self.capabilities.account_path
        acct = await self._signed("GET", path)

        def flag(name: str) -> bool | None:
            return _bool(acct[name]) if isinstance(acct, dict) and name in acct else None
        return KeyPermissions(flag("canTrade"), flag("canDeposit"), flag("canWithdraw"), path)

    async def user_trades(self, symbol: str, *, start_ms: int | None = None,
                          order_id: int | None = None, limit: int = 500) -> list[Fill]:
        rows = await self._signed("GET", "/fapi/v1/userTrades", {"symbol": symbol, "orderId": order_id,
                                                                  "startTime": start_ms, "limit": int(limit)})
        return self._parse(f"GET /fapi/v1/userTrades {symbol}", lambda: [parse_fill(t) for t in rows])

    async def funding_income(self, symbol: str, *, start_ms: int, end_ms: int | None = None) -> Decimal | None:
        """Sum of the FUNDING_FEE income rows (GET /fapi/v1/income) in the window."""
        rows = await self._signed("GET", "/fapi/v1/income", {"symbol": symbol, "incomeType": "FUNDING_FEE",
                                                              "startTime": start_ms, "endTime": end_ms,
                                                              "limit": 1000})
        return self._parse(f"GET /fapi/v1/income {symbol}", lambda: sum(
            (d(r["income"]) for r in rows if r.get("incomeType", "FUNDING_FEE") == "FUNDING_FEE"), Decimal(0)))

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        data = await self._signed("POST", "/fapi/v1/leverage", {"symbol": symbol, "leverage": int(leverage)})
        return self._parse(f"POST /fapi/v1/leverage {symbol}", lambda: int(data["leverage"]))

    async def set_margin_type(self, symbol: str, margin_type: str) -> None:
        """``ISOLATED`` or ``CROSSED``; "no need to change" (-4046) counts as success."""
        margin_type = margin_type.upper()
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise ValueError(f"margin type must be ISOLATED or CROSSED, got {margin_type!r}")
        try:
            await self._signed("POST", "/fapi/v1/marginType", {"symbol": symbol, "marginType": margin_type})
        except VenueRejected as exc:
            if exc.code != _MARGIN_UNCHANGED:
                raise

    # -- orders -----------------------------------------------------------------------
    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        params = {"symbol": symbol}
        if self.capabilities.conditional_via_algo:
            plain, algo = await asyncio.gather(self._signed("GET", "/fapi/v1/openOrders", params),
                                               self._signed("GET", "/fapi/v1/openAlgoOrders", params))
        else:
            plain, algo = await self._signed("GET", "/fapi/v1/openOrders", params), []
        return self._parse("GET open orders", lambda: self._known_types(plain, parse_order)
                           + self._known_types(algo, parse_algo_order))

    @staticmethod
    def _known_types(rows: list[Mapping[str, Any]], parse: Callable[[Mapping[str, Any]], Order]) -> list[Order]:
        out: list[Order] = []
        for r in rows:
            kind = r.get("orderType") or r.get("type")
            if kind not in OrderType.__members__:
                # e.g. a manual TRAILING_STOP_MARKET: the engine cannot represent it
                log.warning("ignoring open %s order %s of unsupported type %s", r.get("symbol"),
                            r.get("clientOrderId") or r.get("clientAlgoId"), kind)
                continue
            out.append(parse(r))
        return out

    async def get_order(self, symbol: str, client_id: str, *, conditional: bool = False) -> Order | None:
        algo = self._algo(conditional)
        try:
            if algo:
                data = await self._signed("GET", ALGO_ORDER_PATH, {"symbol": symbol, "clientAlgoId": client_id})
            else:
                data = await self._signed("GET", ORDER_PATH, {"symbol": symbol, "origClientOrderId": client_id})
        except UnknownOrder:
            return None
        return self._parse(f"GET order {symbol}", lambda: parse_algo_order(data) if algo else parse_order(data))

    async def cancel_order(self, symbol: str, client_id: str, *, conditional: bool = False) -> Order | None:
        algo = self._algo(conditional)
        try:
            if algo:
                await self._signed("DELETE", ALGO_ORDER_PATH, {"symbol": symbol, "clientAlgoId": client_id})
            else:
                data = await self._signed("DELETE", ORDER_PATH, {"symbol": symbol, "origClientOrderId": client_id})
                return self._parse(f"DELETE order {symbol}", lambda: parse_order(data))
        except UnknownOrder:
            return None
        # the algo cancel answers {algoId, clientAlgoId, code, msg}: read back the final order
        return await self.get_order(symbol, client_id, conditional=True)

    async def cancel_all(self, symbol: str) -> None:
        await self._signed("DELETE", "/fapi/v1/allOpenOrders", {"symbol": symbol})
        if self.capabilities.conditional_via_algo:
            await self._signed("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": symbol})

    def _order_params(self, req: OrderRequest, algo: bool) -> dict[str, Any]:
        if not CLIENT_ID_RE.match(req.client_id):
            raise ValueError(f"client id {req.client_id!r} is not valid on the venue "
                             "(1-36 characters of A-Z a-z 0-9 . : / _ -)")
        p: dict[str, Any] = {"symbol": req.symbol, "side": req.side.value, "type": req.type.value}
        if algo:
            p = {"algoType": "CONDITIONAL", **p}
        if req.close_position:
            if not req.type.conditional:
                raise ValueError("closePosition is only valid on STOP_MARKET / TAKE_PROFIT_MARKET orders")
            p["closePosition"] = "true"
        else:
            if req.quantity is None or req.quantity <= 0:
                raise ValueError(f"{req.type.value} order {req.client_id} needs a positive quantity")
            p["quantity"] = _fmt(req.quantity)
            if req.reduce_only:
                p["reduceOnly"] = "true"
        if req.type is OrderType.LIMIT:
            if req.price is None:
                raise ValueError(f"LIMIT order {req.client_id} needs a price")
            p["price"] = _fmt(req.price)
            p["timeInForce"] = req.time_in_force or "GTC"
        if req.type.conditional:
            if req.stop_price is None:
                raise ValueError(f"{req.type.value} order {req.client_id} needs a stop price")
            p["triggerPrice" if algo else "stopPrice"] = _fmt(req.stop_price)
            p["workingType"] = req.working_type
        if algo:
            p["clientAlgoId"] = req.client_id
        else:
            p["newClientOrderId"] = req.client_id
            p["newOrderRespType"] = "RESULT"
        return p

    async def place_order(self, req: OrderRequest) -> Order:
        algo = self._algo(req.type.conditional)
        path = ALGO_ORDER_PATH if algo else ORDER_PATH
        params = self._order_params(req, algo)
        what = f"{req.type.value} {req.side.value} {req.symbol} order {req.client_id}"
        attempts = 1 + self._core.retries
        last: UnknownOutcome | None = None
        for attempt in range(attempts):
            try:
                data = await self._signed("POST", path, params, retry=False)
            except DuplicateClientId:
                existing = await self.get_order(req.symbol, req.client_id, conditional=req.type.conditional)
                if existing is None:
                    raise
                self._core.emit(VenueEvent("order_recovered", f"{what} already existed on the venue (-4116)"))
                return existing
            except UnknownOutcome as exc:
                last = exc
            else:
                try:
                    return parse_algo_order(data) if algo else parse_order(data)
                except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError):
                    last = UnknownOutcome(f"{what}: the venue's answer could not be read")
            log.warning("%s: outcome unknown (%s); looking it up by client id", what, last)
            # give the venue a moment to settle before asking what it did
            await self.clock.sleep(self._core.backoff_delay(attempt))
            try:
                existing = await self.get_order(req.symbol, req.client_id, conditional=req.type.conditional)
            except VenueError as qexc:
                raise UnknownOutcome(f"{what}: submit outcome unknown ({last}) and the look-up failed "
                                     f"({qexc}); query it again before resending") from None
            if existing is not None:
                self._core.emit(VenueEvent("order_recovered",
                                           f"{what}: the answer was lost but the venue has the order"))
                return existing
            log.warning("%s: the venue does not have it; resending with the same client id", what)
        raise UnknownOutcome(f"{what}: no answer after {attempts} attempts and the venue does not show the "
                             f"order yet; query it again before resending ({last})")
