"""The loopback exchange: a :class:`SimExchange` behind an HTTP/1.1 server that speaks the
Binance USDⓈ-M wire contract (``docs/exchange-api.md``), for end-to-end tests of real clients.

It behaves like the venue, not like a mock: HMAC signatures are verified over the raw bytes
received, the timestamp/recvWindow rule is enforced, weights are counted per minute with the
``X-MBX-USED-WEIGHT-1M`` header on every reply, 429/418 follow Binance's rules, numbers are JSON
strings formatted to the symbol precision, errors are real ``{code, msg}`` bodies with real HTTP
statuses, and ``--venue binance`` serves the algo-order family (conditional orders on
``/fapi/v1/order`` answer -4120) while ``--venue aster`` takes conditional orders on
``/fapi/v1/order`` and has no algo endpoints.

**Clock.**  One server clock drives everything: ``sim time = start + elapsed_wall * speed`` (plus
any jump made through the control endpoint).  ``serverTime``, the timestamp rule, the per-minute
weight windows and ban times all use it, shifted by the injected clock skew.  With ``speed > 1``
the recvWindow and the "1000 ms ahead" tolerance are stretched by ``speed`` (they are windows of
*wall* time); a client still has to resync every ``recvWindow`` wall ms, exactly what a -1021
resync does.  ``Retry-After`` is given in wall seconds.  A control jump moves the server clock
forward like a real clock step: clients see -1021 until they resync.

**Faults** are settings and rules changed at run time through ``POST /_control`` (JSON, no
signature, only on this loopback server) or :meth:`LoopbackExchange.control`:

* ``latency_ms`` (every request), ``latency_paths`` ({path: ms}): added before processing;
* ``error_rate`` with ``error_status`` and ``seed``: that share of requests fails with a 5xx
  before processing (seeded RNG, so a run is reproducible);
* ``skew_ms``: server clock offset;
* ``faults``: a list of rules, each ``{"kind": ..., "path": ..., "method": ..., "count": N,
  "seconds": S}`` (path (one path or a list) and method restrict it, count = the next N matching
  requests, seconds = for S seconds of server time; neither = until cleared).  Kinds:

  - ``error``: 5xx before processing (``status`` 500/502/503/504, optional ``code``/``msg``);
  - ``delay``: sleep ``ms`` before processing (``when: "before"``, the default) or after
    processing (``when: "after"``: the request is executed, the answer comes late);
  - ``drop``: process the request, then close the connection without an answer;
  - ``unknown``: process the request, then answer 503 -1000 "Unknown error, please check your
    request or try again later." (``code: -1007`` gives the "Timeout waiting for response from
    backend server" variant);
  - ``429``: answer 429 -1003 with ``Retry-After`` (``retry_after`` seconds, default 1);
  - ``418``: answer 418 -1003 "IP banned until <ms>" with ``Retry-After`` (``retry_after``,
    default 2; with ``seconds`` the ban lasts that long);
  - ``garbage``: an HTML error page (``body: "html"``) or broken bytes (``body: "garbage"``)
    with ``status`` (default 200) instead of the answer, nothing processed.

``GET /_control`` shows the state, ``GET /_control/requests`` the request log (method, path,
params without the signature, signed or not, API-key header present or not, status, code,
weight, fault), ``DELETE /_control/requests`` clears it.  Control requests are not logged, not
weighed and never faulted.

**Rate limits.**  A request whose weight would take the minute's used weight over the limit is
refused with 429 (-1003, ``Retry-After`` = the rest of the minute) and not counted; after the
first 429 of a minute, ``ban_after`` more refused requests are tolerated, the next one bans the
IP for ``ban_seconds`` (418 for everything, the ban end in the message).  Order endpoints also
count against ORDERS 10 s (Binance) and 1 min (-1015 when exceeded); Binance's fundingRate
has its own 500 per 5 minutes bucket.

**Not simulated** (answered like the venue answers what it refuses, with a clear message):
STOP / TAKE_PROFIT / TRAILING_STOP_MARKET orders (-1116), hedge mode (positionSide LONG/SHORT:
-4061), GTD / HIDDEN time in force (-1115), order amendment (PUT) and batch orders (404),
the user-data stream and WebSockets.  ``marginType`` is recorded and reported, but margin is
always computed as cross margin; ``priceProtect`` is accepted and echoed only.  Kline columns
the feed has no data for (quote volume, trade count, taker-buy volumes) are derived from OHLCV,
and the 24h ticker's open price from its change percent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np

from mraster_tui.engine.errors import VenueError, VenueRejected
from mraster_tui.engine.sim.exchange import MAINT_TIERS, SimExchange
from mraster_tui.engine.sim.market import ReplayMarket, SyntheticMarket
from mraster_tui.engine.types import (
    INTERVAL_MS,
    Candles,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
    SymbolInfo,
)
from mraster_tui.engine.venue.signing import strip_signature

log = logging.getLogger(__name__)

#: The public test-vector key pair of the Binance / AsterDex signing docs: the loopback server's
#: default credentials (they protect nothing; they make the contract's examples verifiable).
from mraster_tui.engine.sim.testvector import TEST_API_KEY, TEST_API_SECRET, VENUES  # noqa: E402  (re-exported)


_MANDATORY = "Mandatory parameter '{}' was not sent, was empty/null, or malformed."
_INVALID = "Data sent for parameter '{}' is not valid."
_API_KEY_FORMAT_RE = re.compile(r"^[A-Za-z0-9]{64}$")
_SIGNATURE_TAIL_RE = re.compile(r"(?:^|&)signature=([^&]*)$")
_ALL_TYPES = ("MARKET", "LIMIT", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
              "TRAILING_STOP_MARKET")
_CONDITIONAL_TYPES = frozenset(_ALL_TYPES[2:])
_SIM_TYPES = {t.value: t for t in OrderType}  # what the matching engine implements
_TIME_IN_FORCE = ("GTC", "IOC", "FOK", "GTX", "GTD", "HIDDEN")
_SIM_TIF = ("GTC", "IOC", "FOK", "GTX")
_UNKNOWN_503 = "Unknown error, please check your request or try again later."
_TIMEOUT_1007 = "Timeout waiting for response from backend server. Send status unknown; execution status unknown."


class ApiError(Exception):
    """A ``{code, msg}`` error answer with its HTTP status."""

    def __init__(self, status: int, code: int, msg: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg
        self.headers = list(headers)


class ControlError(ValueError):
    """A bad ``/_control`` request (unknown key, wrong type): answered 400 with the reason."""


# --------------------------------------------------------------------------------------------
# formatting


def _decimals(step: Decimal) -> int:
    """Number of decimals a tick or step size carries as written (``0.10`` -> 2, ``1`` -> 0)."""
    exp = step.as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def fmt_dec(value: Decimal | float | int, places: int) -> str:
    """A wire number: at least ``places`` decimals, more only if the value really has them
    (so an average price never gets rounded away)."""
    d = value if isinstance(value, Decimal) else Decimal(str(value))
    exp = d.as_tuple().exponent
    if isinstance(exp, int) and -exp > places:
        return format(d.normalize(), "f")
    return format(d.quantize(Decimal(1).scaleb(-places)), "f")


@dataclass(frozen=True, slots=True)
class _Precision:
    price: int
    qty: int

    @staticmethod
    def of(info: SymbolInfo) -> "_Precision":
        # the symbol's pricePrecision / quantityPrecision, but never fewer decimals than the
        # tick / step carries (a value on the grid must print exactly)
        return _Precision(max(info.price_precision, _decimals(info.filters.tick_size)),
                          max(info.quantity_precision, _decimals(info.filters.step_size)))


def _money(x: Decimal | float | int) -> str:
    return fmt_dec(x, 8)


# --------------------------------------------------------------------------------------------
# faults


@dataclass
class FaultRule:
    """One injected fault (see the module docstring for the kinds and their options)."""

    kind: str
    paths: tuple[str, ...] | None = None  # None: every path
    method: str | None = None
    count: int | None = None
    until_ms: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def matches(self, method: str, path: str, now_ms: int) -> bool:
        if self.count is not None and self.count <= 0:
            return False
        if self.until_ms is not None and now_ms >= self.until_ms:
            return False
        if self.paths is not None and path not in self.paths:
            return False
        return self.method is None or self.method == method

    def use(self) -> None:
        if self.count is not None:
            self.count -= 1

    @property
    def spent(self) -> bool:
        return self.count is not None and self.count <= 0

    def to_json(self) -> dict[str, Any]:
        paths = None if self.paths is None else self.paths[0] if len(self.paths) == 1 else list(self.paths)
        return {"kind": self.kind, "path": paths, "method": self.method, "count": self.count,
                "until_ms": self.until_ms, **self.options}


_RULE_OPTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "error": {"status": int, "code": int, "msg": str},
    "delay": {"ms": (int, float), "when": str},
    "drop": {},
    "unknown": {"code": int},
    "429": {"retry_after": (int, float)},
    "418": {"retry_after": (int, float)},
    "garbage": {"body": str, "status": int},
}


def _parse_rule(spec: dict[str, Any], now_ms: int, speed: float) -> FaultRule:
    if not isinstance(spec, dict):
        raise ControlError("each fault must be a JSON object")
    kind = str(spec.get("kind", ""))
    if kind not in _RULE_OPTIONS:
        raise ControlError(f"unknown fault kind {kind!r}; use one of {', '.join(_RULE_OPTIONS)}")
    allowed = _RULE_OPTIONS[kind]
    options: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("kind", "path", "method", "count", "seconds"):
            continue
        if key not in allowed:
            raise ControlError(f"fault {kind!r} takes no option {key!r}")
        if not isinstance(value, allowed[key]) or isinstance(value, bool):
            raise ControlError(f"fault {kind!r}: option {key!r} has the wrong type")
        options[key] = value
    if kind == "error" and options.get("status", 503) not in (500, 502, 503, 504):
        raise ControlError("fault 'error': status must be 500, 502, 503 or 504")
    if kind == "delay":
        if "ms" not in options or options["ms"] < 0:
            raise ControlError("fault 'delay' needs ms >= 0")
        if options.setdefault("when", "before") not in ("before", "after"):
            raise ControlError("fault 'delay': when must be 'before' or 'after'")
    if kind == "unknown" and options.get("code", -1000) not in (-1000, -1007):
        raise ControlError("fault 'unknown': code must be -1000 or -1007")
    if kind == "garbage" and options.setdefault("body", "html") not in ("html", "garbage"):
        raise ControlError("fault 'garbage': body must be 'html' or 'garbage'")
    count = spec.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ControlError("fault count must be an integer >= 1")
    seconds = spec.get("seconds")
    if seconds is not None and (not isinstance(seconds, (int, float)) or seconds <= 0):
        raise ControlError("fault seconds must be > 0")
    method = spec.get("method")
    path = spec.get("path")
    paths = [path] if isinstance(path, str) else path
    if paths is not None and (not isinstance(paths, list) or not paths
                              or not all(isinstance(x, str) and x.startswith("/") for x in paths)):
        raise ControlError("fault path must be a path starting with '/' or a list of them")
    until = now_ms + int(seconds * 1000 * max(speed, 1.0)) if seconds is not None else None
    return FaultRule(kind, tuple(paths) if paths is not None else None,
                     method.upper() if isinstance(method, str) else None, count, until, options)


# --------------------------------------------------------------------------------------------
# rate limits


class _Window:
    """A fixed window counter aligned to the epoch (Binance counts per calendar minute)."""

    def __init__(self, size_ms: int) -> None:
        self.size_ms = size_ms
        self.start = -1
        self.count = 0

    def _roll(self, now_ms: int) -> None:
        start = now_ms - now_ms % self.size_ms
        if start != self.start:
            self.start, self.count = start, 0

    def value(self, now_ms: int) -> int:
        self._roll(now_ms)
        return self.count

    def add(self, now_ms: int, n: int) -> int:
        self._roll(now_ms)
        self.count += n
        return self.count

    def ms_left(self, now_ms: int) -> int:
        self._roll(now_ms)
        return self.start + self.size_ms - now_ms

    def reset(self) -> None:
        self.start, self.count = -1, 0


# --------------------------------------------------------------------------------------------
# clock


class ServerClock:
    """``start + elapsed_wall * speed + jumps``; thread-safe, never goes backwards."""

    def __init__(self, start_ms: int, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self.speed = float(speed)
        self._start_ms = int(start_ms)
        self._wall0 = time.monotonic()
        self._jump_ms = 0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._start_ms + int((time.monotonic() - self._wall0) * 1000 * self.speed) + self._jump_ms

    def jump(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("the server clock never goes backwards")
        with self._lock:
            self._jump_ms += int(ms)


# --------------------------------------------------------------------------------------------
# request log


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One served request.  ``params`` never holds the signature; the API key is never kept."""

    time_ms: int
    method: str
    path: str
    params: dict[str, str]
    signed: bool
    api_key: bool
    status: int
    code: int | None
    weight: int
    fault: str | None

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time_ms, "method": self.method, "path": self.path, "params": self.params,
                "signed": self.signed, "api_key": self.api_key, "status": self.status, "code": self.code,
                "weight": self.weight, "fault": self.fault}


@dataclass
class Reply:
    """What the HTTP layer writes (or, with ``drop``, does not write)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False
    delay_after_s: float = 0.0
    code: int | None = None  # the venue error code of an error body (for the request log)


class _Encoded(bytes):
    """A JSON body an endpoint has already encoded (the klines rows): sent as it is."""


def _json_reply(status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    body = obj if isinstance(obj, _Encoded) else json.dumps(obj, separators=(",", ":")).encode()
    return Reply(status, body, headers=list(headers))


def _error_body(status: int, code: int, msg: str, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    reply = _json_reply(status, {"code": code, "msg": msg}, headers)
    reply.code = code
    return reply


_HTML_PAGES = {
    200: "Service temporarily under maintenance",
    403: "403 Forbidden",
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


def _html_reply(status: int) -> Reply:
    title = _HTML_PAGES.get(status, f"{status} Error")
    page = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
            "<hr><center>CloudFront</center>\r\n</body>\r\n</html>\r\n")
    return Reply(status, page.encode(), content_type="text/html; charset=utf-8")


# --------------------------------------------------------------------------------------------
# routes


NONE, SIGNED = "NONE", "SIGNED"


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Callable[["_Call"], Any]
    security: str
    weight: Callable[[dict[str, str]], int]
    new_order: bool = False  # counts against the ORDERS limits and gets the order-count headers
    funding_bucket: bool = False  # Binance: fundingRate has its own 500 / 5 min bucket


def _not_found(c: "_Call") -> Any:
    raise ApiError(404, -5000, f"Path {c.path}, Method {c.method} is invalid")


def _w(n: int) -> Callable[[dict[str, str]], int]:
    return lambda p: n


def _w_symbol(with_symbol: int, without: int) -> Callable[[dict[str, str]], int]:
    return lambda p: with_symbol if p.get("symbol") else without


def _w_klines(p: dict[str, str]) -> int:
    try:
        limit = int(p.get("limit", "500"))
    except ValueError:
        return 5
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


_NOT_FOUND = _Route(_not_found, NONE, _w(1))


@dataclass
class _Trace:
    """What the request log records about how a request was served."""

    weight: int = 0
    fault: str | None = None


@dataclass
class _Call:
    """One request as the endpoint handlers see it."""

    method: str
    path: str
    params: dict[str, str]
    now_ms: int  # server clock (skew included)


# --------------------------------------------------------------------------------------------
# the venue


@dataclass
class ServerSettings:
    """Everything about the loopback venue that is not a fault.  Changeable through /_control
    where noted in :meth:`LoopbackVenue.control`."""

    venue: str = "binance"
    api_key: str = TEST_API_KEY
    api_secret: str = TEST_API_SECRET
    weight_limit: int = 2400
    order_limit_10s: int = 300
    order_limit_1m: int = 1200
    funding_limit_5m: int = 500
    ban_after: int = 3  # requests still sent after a 429 in the same minute before the 418 ban
    ban_seconds: float = 120.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.venue not in VENUES:
            raise ValueError(f"venue must be one of {', '.join(VENUES)}, not {self.venue!r}")
        if not self.api_key or not self.api_secret:
            raise ValueError("api_key and api_secret must not be empty")
        if self.weight_limit < 1:
            raise ValueError("weight_limit must be >= 1")


class LoopbackVenue:
    """The protocol layer: routes, signing, weights, faults and wire formatting around a
    SimExchange.  Transport-independent (``dispatch`` takes a parsed request, returns a
    :class:`Reply`), so the HTTP server stays a thin shell."""

    def __init__(self, sim: Any, clock: Any, settings: ServerSettings | None = None) -> None:
        self.sim = sim
        self.clock = clock  # a ServerClock, or any object with now_ms() (e.g. engine.clock.SimClock)
        self._speed = float(getattr(clock, "speed", 1.0))
        self.settings = settings or ServerSettings()
        self.lock = threading.RLock()
        self.binance = self.settings.venue == "binance"
        self.infos: dict[str, SymbolInfo] = dict(sim.exchange_info().symbols)
        self.prec = {s: _Precision.of(i) for s, i in self.infos.items()}
        self.events: deque = deque(maxlen=10_000)
        self.log: deque[RequestRecord] = deque(maxlen=20_000)
        self._weight = _Window(60_000)
        self._orders_10s = _Window(10_000)
        self._orders_1m = _Window(60_000)
        self._funding = _Window(300_000)
        self._over_limit = 0  # requests refused with 429 in the current minute
        self._over_limit_minute = -1
        self._banned_until = 0
        self._rng = random.Random(self.settings.seed)
        self._margin_type: dict[str, str] = {}
        self._update_id = 0
        self.kline_rows = KlineRowCache()
        self.reset_faults()
        self.routes = self._build_routes()

    # -- control ---------------------------------------------------------------------------
    def reset_faults(self) -> None:
        with self.lock:
            self.latency_ms = 0.0
            self.latency_paths: dict[str, float] = {}
            self.error_rate = 0.0
            self.error_status = 503
            self.skew_ms = 0
            self.rules: list[FaultRule] = []

    def control(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply a control request (see the module docstring); returns the new state.

        Keys: ``reset`` (faults back to none first), ``latency_ms``, ``latency_paths``,
        ``error_rate``, ``error_status``, ``seed``, ``skew_ms``, ``faults`` (rules to add),
        ``clear_faults``, ``weight_limit``, ``ban_after``, ``ban_seconds``, ``reset_weights``
        (also lifts a ban), ``advance_ms`` (jump the server clock forward)."""
        if not isinstance(changes, dict):
            raise ControlError("the control body must be a JSON object")
        known = {"reset", "latency_ms", "latency_paths", "error_rate", "error_status", "seed", "skew_ms",
                 "faults", "clear_faults", "weight_limit", "ban_after", "ban_seconds", "reset_weights",
                 "advance_ms"}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ControlError(f"unknown control key(s): {', '.join(unknown)}")

        def num(key: str, lo: float, hi: float | None = None, kind: type = float) -> Any:
            v = changes[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (hi is not None and v > hi):
                raise ControlError(f"{key} must be a number in [{lo}, {hi if hi is not None else 'inf'}]")
            if kind is int and int(v) != v:
                raise ControlError(f"{key} must be an integer")
            return kind(v)

        with self.lock:
            now = self.server_now()
            # validate everything before changing anything
            if not isinstance(changes.get("faults", []), list):
                raise ControlError("faults must be a list of rule objects")
            rules = [_parse_rule(s, now, self._speed) for s in changes.get("faults", [])]
            paths = changes.get("latency_paths", {})
            if not isinstance(paths, dict) or any(
                    not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0
                    for k, v in paths.items()):
                raise ControlError("latency_paths must map paths to milliseconds >= 0")
            values = {}
            for key, lo, hi, kind in (("latency_ms", 0, None, float), ("error_rate", 0, 1, float),
                                      ("seed", 0, None, int), ("skew_ms", -10**12, 10**12, int),
                                      ("weight_limit", 1, None, int), ("ban_after", 0, None, int),
                                      ("ban_seconds", 0, None, float), ("advance_ms", 0, None, int),
                                      ("error_status", 500, 504, int)):
                if key in changes:
                    values[key] = num(key, lo, hi, kind)
            if values.get("error_status", 503) not in (500, 502, 503, 504):
                raise ControlError("error_status must be 500, 502, 503 or 504")

            if changes.get("reset"):
                self.reset_faults()
            if changes.get("clear_faults"):
                self.rules = []
            if "latency_ms" in values:
                self.latency_ms = values["latency_ms"]
            if "latency_paths" in changes:
                self.latency_paths = {k: float(v) for k, v in paths.items()}
            if "error_rate" in values:
                self.error_rate = values["error_rate"]
            if "error_status" in values:
                self.error_status = values["error_status"]
            if "seed" in values:
                self._rng = random.Random(values["seed"])
            if "skew_ms" in values:
                self.skew_ms = values["skew_ms"]
            for key in ("weight_limit", "ban_after", "ban_seconds"):
                if key in values:
                    setattr(self.settings, key, values[key])
            if changes.get("reset_weights"):
                for w in (self._weight, self._orders_10s, self._orders_1m, self._funding):
                    w.reset()
                self._over_limit = 0
                self._banned_until = 0
            if values.get("advance_ms"):
                self._jump(values["advance_ms"])
            self.rules.extend(rules)
            return self.state()

    def state(self) -> dict[str, Any]:
        with self.lock:
            now = self.server_now()
            return {
                "venue": self.settings.venue,
                "server_time": now,
                "speed": self._speed,
                "latency_ms": self.latency_ms,
                "latency_paths": dict(self.latency_paths),
                "error_rate": self.error_rate,
                "error_status": self.error_status,
                "skew_ms": self.skew_ms,
                "faults": [r.to_json() for r in self.rules if not r.spent],
                "weight_limit": self.settings.weight_limit,
                "used_weight_1m": self._weight.value(now),
                "banned_until": self._banned_until if self._banned_until > now else 0,
                "ban_after": self.settings.ban_after,
                "ban_seconds": self.settings.ban_seconds,
            }

    def requests(self, clear: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            out = [r.to_json() for r in self.log]
            if clear:
                self.log.clear()
            return out

    def clear_requests(self) -> None:
        with self.lock:
            self.log.clear()

    # -- time ------------------------------------------------------------------------------
    def server_now(self) -> int:
        return self.clock.now_ms() + self.skew_ms

    def _jump(self, ms: int) -> None:
        if hasattr(self.clock, "jump"):
            self.clock.jump(ms)
        elif hasattr(self.clock, "set"):
            self.clock.set(self.clock.now_ms() + ms)
        else:
            raise ControlError("this server's clock cannot be moved")
        self._advance()

    def _advance(self) -> None:
        """Move the matching engine to the server clock and collect its events (caller holds
        the lock).  The server owns the sim's event journal: read events via ``events``."""
        t = self.clock.now_ms()
        if t > self.sim.now_ms:
            self.sim.advance_to(t)
        self.events.extend(self.sim.drain_events())

    def tick(self) -> None:
        """Background ticker: fire triggers, fills and funding even when nobody asks."""
        with self.lock:
            self._advance()

    # -- dispatch --------------------------------------------------------------------------
    def latency_for(self, path: str) -> float:
        """Seconds to sleep before processing (global latency plus the path's).  Reads two
        references without the venue lock: a request waiting for its latency must not queue
        behind another one being processed (a real venue answers in parallel)."""
        return (self.latency_ms + self.latency_paths.get(path, 0.0)) / 1000.0

    def take_delay_before(self, method: str, path: str) -> float:
        """Consume a matching ``delay`` rule with ``when=before``; seconds to sleep."""
        if not self.rules:  # no fault rule at all (the usual case): no need to queue for the lock
            return 0.0
        with self.lock:
            rule = self._take_rule(method, path, self.server_now(), ("delay",))
            return float(rule.options["ms"]) / 1000.0 if rule is not None else 0.0

    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Serve one request.  ``headers`` keys are lower case."""
        path, _, query = target.partition("?")
        body_text = body.decode("latin-1") if body else ""
        with self.lock:
            now = self.server_now()
            params: dict[str, str] = {}
            trace = _Trace()
            route = self.routes.get((method, path), _NOT_FOUND)
            try:
                self._advance()
                params = self._params(query, body_text, headers)
                reply = self._serve(route, _Call(method, path, params, now), query, body_text, headers, trace)
            except ApiError as e:
                reply = _error_body(e.status, e.code, e.msg, e.headers)
            except Exception:  # a bug in the loopback server itself: say so, keep serving
                log.exception("loopback exchange: internal error on %s %s", method, path)
                reply = _error_body(500, -1000, "An unknown error occured while processing the request.")
            reply.headers.append(("X-MBX-USED-WEIGHT-1M", str(self._weight.value(now))))
            self.events.extend(self.sim.drain_events())  # immediate fills and cancels
            self.log.append(RequestRecord(
                now, method, path, {k: v for k, v in params.items() if k != "signature"},
                "signature" in params, "x-mbx-apikey" in headers, 0 if reply.drop else reply.status,
                reply.code, trace.weight, trace.fault))
            return reply

    def _params(self, query: str, body: str, headers: dict[str, str]) -> dict[str, str]:
        ctype = headers.get("content-type", "application/x-www-form-urlencoded")
        body_params = _parse_params(body) if body and ctype.startswith("application/x-www-form-urlencoded") else {}
        return {**body_params, **_parse_params(query)}  # the query string wins

    def _serve(self, route: _Route, call: _Call, query: str, body: str, headers: dict[str, str],
               trace: "_Trace") -> Reply:
        method, path, params, now = call.method, call.path, call.params, call.now_ms
        # 1. bans, forced 429/418 and garbage come from "the edge": nothing is processed
        if self._banned_until > now:
            return self._ban_reply(now)
        rule = self._take_rule(method, path, now, ("418", "429", "garbage"))
        if rule is not None:
            trace.fault = rule.kind
            return self._edge_fault(rule, now)
        # 2. IP weight
        weight = route.weight(params)
        limited = self._check_weight(weight, now)
        if limited is not None:
            return limited
        self._weight.add(now, weight)
        trace.weight = weight
        # 3. 5xx before processing (rules first, then the random rate)
        rule = self._take_rule(method, path, now, ("error",))
        if rule is not None:
            trace.fault = "error"
            return self._server_error(int(rule.options.get("status", 503)), rule.options.get("code"),
                                      rule.options.get("msg"))
        if self.error_rate and self._rng.random() < self.error_rate:
            trace.fault = "error_rate"
            return self._server_error(self.error_status, None, None)
        # 4. auth, other limits, the endpoint itself
        if route.security == SIGNED:
            self._authenticate(query, body, params, headers, now)
        if route.funding_bucket and self.binance:
            self._check_bucket(self._funding, self.settings.funding_limit_5m, now, "5 minutes")
        order_headers: list[tuple[str, str]] = []
        if route.new_order:
            order_headers = self._count_order(now)
        try:
            result = route.handler(call)
        except VenueRejected as e:
            status = e.http_status or _status_for(e.code)
            raise ApiError(status, e.code or -1000, _plain_msg(e), order_headers) from None
        # 5. post-processing faults: the request was executed, the answer is lost or late
        rule = self._take_rule(method, path, now, ("drop", "unknown", "delay"), after=True)
        if rule is None:
            return _json_reply(200, result, order_headers)
        trace.fault = rule.kind
        if rule.kind == "drop":
            return Reply(0, b"", drop=True)
        if rule.kind == "unknown":
            if rule.options.get("code", -1000) == -1007:
                return _error_body(503, -1007, _TIMEOUT_1007)
            return _error_body(503, -1000, _UNKNOWN_503)
        reply = _json_reply(200, result, order_headers)
        reply.delay_after_s = float(rule.options["ms"]) / 1000.0
        return reply

    def _take_rule(self, method: str, path: str, now: int, kinds: tuple[str, ...], *,
                   after: bool = False) -> FaultRule | None:
        self.rules = [r for r in self.rules if r.until_ms is None or r.until_ms > now]
        for rule in self.rules:
            if rule.kind not in kinds or not rule.matches(method, path, now):
                continue
            if rule.kind == "delay" and (rule.options["when"] == "after") != after:
                continue
            rule.use()
            if rule.spent:
                self.rules.remove(rule)
            return rule
        return None

    # -- limits ----------------------------------------------------------------------------
    def _retry_after(self, ms: float) -> int:
        """Server-clock milliseconds as wall seconds for Retry-After (at least 1)."""
        return max(1, math.ceil(ms / 1000.0 / max(self._speed, 1.0)))

    def _ban_reply(self, now: int, until: int | None = None) -> Reply:
        until = self._banned_until if until is None else until
        return _error_body(418, -1003, f"Way too many requests; IP banned until {until}. Please use the "
                           "websocket for live updates to avoid bans.",
                           [("Retry-After", str(self._retry_after(until - now)))])

    def _too_many(self, retry_after_s: int) -> Reply:
        return _error_body(429, -1003, f"Too many requests; current limit is {self.settings.weight_limit} "
                           "requests per minute. Please use the websocket for live updates to avoid polling the API.",
                           [("Retry-After", str(retry_after_s))])

    def _check_weight(self, weight: int, now: int) -> Reply | None:
        minute = now - now % 60_000
        if minute != self._over_limit_minute:
            self._over_limit_minute, self._over_limit = minute, 0
        if weight == 0 or self._weight.value(now) + weight <= self.settings.weight_limit:
            return None
        self._over_limit += 1
        if self._over_limit > self.settings.ban_after + 1:
            self._banned_until = now + int(self.settings.ban_seconds * 1000 * max(self._speed, 1.0))
            return self._ban_reply(now)
        return self._too_many(self._retry_after(self._weight.ms_left(now)))

    def _check_bucket(self, window: _Window, limit: int, now: int, label: str) -> None:
        if window.value(now) + 1 > limit:
            raise ApiError(429, -1003, f"Too many requests; current limit is {limit} requests per {label}.",
                           [("Retry-After", str(self._retry_after(window.ms_left(now))))])
        window.add(now, 1)

    def _count_order(self, now: int) -> list[tuple[str, str]]:
        checks = [(self._orders_1m, self.settings.order_limit_1m, "MINUTE")]
        if self.binance:
            checks.insert(0, (self._orders_10s, self.settings.order_limit_10s, "TEN_SECONDS"))
        for window, limit, label in checks:
            if window.value(now) + 1 > limit:
                raise ApiError(429, -1015, f"Too many new orders; current limit is {limit} orders per {label}.",
                               [("Retry-After", str(self._retry_after(window.ms_left(now))))])
        headers = []
        if self.binance:
            headers.append(("X-MBX-ORDER-COUNT-10S", str(self._orders_10s.add(now, 1))))
        headers.append(("X-MBX-ORDER-COUNT-1M", str(self._orders_1m.add(now, 1))))
        return headers

    # -- faults ----------------------------------------------------------------------------
    def _edge_fault(self, rule: FaultRule, now: int) -> Reply:
        if rule.kind == "429":
            return self._too_many(math.ceil(rule.options.get("retry_after", 1)))
        if rule.kind == "418":
            ra = rule.options.get("retry_after", 2)
            until = rule.until_ms if rule.until_ms is not None else now + int(ra * 1000 * max(self._speed, 1.0))
            return self._ban_reply(now, until)
        status = int(rule.options.get("status", 200))
        if rule.options.get("body") == "garbage":
            return Reply(status, b'\x00\x9c{"code":-10\xff\xfe<<<', content_type="application/json")
        return _html_reply(status)

    def _server_error(self, status: int, code: int | None, msg: str | None) -> Reply:
        if status in (502, 504) and code is None and msg is None:
            return _html_reply(status)
        defaults = {500: (-1000, "Request occur unknown error."),
                    503: (-1001, "Internal error; unable to process your request. Please try again.")}
        d_code, d_msg = defaults.get(status, (-1001, "Service Unavailable."))
        return _error_body(status, code if code is not None else d_code, msg if msg is not None else d_msg)

    # -- signing ---------------------------------------------------------------------------
    def _authenticate(self, query: str, body: str, params: dict[str, str], headers: dict[str, str],
                      now: int) -> None:
        key = headers.get("x-mbx-apikey")
        if key is None or key == "":
            raise ApiError(401, -2014, "API-key format invalid.")
        if not hmac.compare_digest(key.encode(), self.settings.api_key.encode()):
            if not _API_KEY_FORMAT_RE.match(key):
                raise ApiError(401, -2014, "API-key format invalid.")
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        recv = 5000
        if "recvWindow" in params:
            try:
                recv = int(params["recvWindow"])
            except ValueError:
                raise ApiError(400, -1102, _MANDATORY.format("recvWindow")) from None
            if recv > 60_000:
                raise ApiError(400, -1131, "recvWindow must be less than 60000")
            if recv <= 0:
                raise ApiError(400, -1130, _INVALID.format("recvWindow"))
        try:
            ts = int(params["timestamp"])
        except (KeyError, ValueError):
            raise ApiError(400, -1102, _MANDATORY.format("timestamp")) from None
        scale = max(self._speed, 1.0)
        if ts >= now + 1000 * scale:
            raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > recv * scale:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        if "signature" not in params:
            raise ApiError(400, -1102, _MANDATORY.format("signature"))
        payload, sig = _signed_payload(query, body)
        if sig is None:  # a signature that is not the last parameter
            raise ApiError(400, -1022, "Signature for this request is not valid.")
        expected = hmac.new(self.settings.api_secret.encode(), payload.encode("latin-1"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig.lower()):
            raise ApiError(400, -1022, "Signature for this request is not valid.")

    # -- the route table -------------------------------------------------------------------
    def _build_routes(self) -> dict[tuple[str, str], _Route]:
        bn = self.binance
        r: dict[tuple[str, str], _Route] = {
            ("GET", "/fapi/v1/ping"): _Route(lambda c: {}, NONE, _w(1)),
            ("GET", "/fapi/v1/time"): _Route(lambda c: {"serverTime": c.now_ms}, NONE, _w(1)),
            ("GET", "/fapi/v1/exchangeInfo"): _Route(self._exchange_info, NONE, _w(1)),
            ("GET", "/fapi/v1/klines"): _Route(self._klines, NONE, _w_klines),
            ("GET", "/fapi/v1/ticker/24hr"): _Route(self._ticker_24hr, NONE, _w_symbol(1, 40)),
            ("GET", "/fapi/v1/ticker/bookTicker"): _Route(self._book_ticker, NONE,
                                                          _w_symbol(2, 5) if bn else _w_symbol(1, 2)),
            ("GET", "/fapi/v1/premiumIndex"): _Route(self._premium_index, NONE,
                                                     _w_symbol(1, 10) if bn else _w(1)),
            ("GET", "/fapi/v1/fundingRate"): _Route(self._funding_rate, NONE, _w(0) if bn else _w(1),
                                                    funding_bucket=True),
            ("POST", "/fapi/v1/order"): _Route(self._new_order, SIGNED, _w(0) if bn else _w(1), new_order=True),
            ("GET", "/fapi/v1/order"): _Route(self._query_order, SIGNED, _w(1)),
            ("DELETE", "/fapi/v1/order"): _Route(self._cancel_order, SIGNED, _w(1)),
            ("GET", "/fapi/v1/openOrders"): _Route(self._open_orders, SIGNED, _w_symbol(1, 40)),
            ("GET", "/fapi/v1/allOrders"): _Route(self._all_orders, SIGNED, _w(5)),
            ("DELETE", "/fapi/v1/allOpenOrders"): _Route(self._cancel_all, SIGNED, _w(1)),
            ("GET", "/fapi/v2/positionRisk"): _Route(self._position_risk_v2, SIGNED, _w(5)),
            ("GET", "/fapi/v2/balance"): _Route(self._balance, SIGNED, _w(5)),
            ("GET", "/fapi/v1/userTrades"): _Route(self._user_trades, SIGNED, _w(5)),
            ("GET", "/fapi/v1/income"): _Route(self._income, SIGNED, _w(30)),
            ("POST", "/fapi/v1/leverage"): _Route(self._leverage, SIGNED, _w(1)),
            ("POST", "/fapi/v1/marginType"): _Route(self._margin_type_change, SIGNED, _w(1)),
            ("GET", "/fapi/v1/leverageBracket"): _Route(self._leverage_bracket, SIGNED, _w(1)),
            ("GET", "/fapi/v1/positionSide/dual"): _Route(lambda c: {"dualSidePosition": False}, SIGNED, _w(30)),
        }
        if bn:
            r.update({
                ("GET", "/fapi/v2/account"): _Route(self._account_full, SIGNED, _w(5)),
                ("GET", "/fapi/v3/account"): _Route(self._account_v3, SIGNED, _w(5)),
                ("GET", "/fapi/v3/balance"): _Route(self._balance, SIGNED, _w(5)),
                ("GET", "/fapi/v3/positionRisk"): _Route(self._position_risk_v3, SIGNED, _w(5)),
                ("POST", "/fapi/v1/algoOrder"): _Route(self._new_algo_order, SIGNED, _w(0), new_order=True),
                ("GET", "/fapi/v1/algoOrder"): _Route(self._query_algo_order, SIGNED, _w(1)),
                ("DELETE", "/fapi/v1/algoOrder"): _Route(self._cancel_algo_order, SIGNED, _w(1)),
                ("GET", "/fapi/v1/openAlgoOrders"): _Route(self._open_algo_orders, SIGNED, _w_symbol(1, 40)),
                ("DELETE", "/fapi/v1/algoOpenOrders"): _Route(self._cancel_all_algo, SIGNED, _w(1)),
                ("GET", "/fapi/v1/allAlgoOrders"): _Route(self._all_algo_orders, SIGNED, _w(5)),
            })
        else:
            r[("GET", "/fapi/v4/account")] = _Route(self._account_full, SIGNED, _w(5))
        return r

    # -- parameter helpers -----------------------------------------------------------------
    def _symbol(self, p: dict[str, str], required: bool = True) -> str | None:
        s = p.get("symbol")
        if not s:
            if required:
                raise ApiError(400, -1102, _MANDATORY.format("symbol"))
            return None
        if s not in self.infos:
            raise ApiError(400, -1121, "Invalid symbol.")
        return s

    @staticmethod
    def _int(p: dict[str, str], name: str, default: int | None, lo: int | None = None,
             hi: int | None = None) -> int | None:
        raw = p.get(name)
        if raw is None or raw == "":
            return default
        try:
            v = int(raw)
        except ValueError:
            raise ApiError(400, -1130, _INVALID.format(name)) from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ApiError(400, -1130, _INVALID.format(name))
        return v

    @staticmethod
    def _dec(p: dict[str, str], name: str) -> Decimal | None:
        raw = p.get(name)
        if raw is None or raw == "":
            return None
        try:
            v = Decimal(raw)
        except InvalidOperation:
            raise ApiError(400, -1102, _MANDATORY.format(name)) from None
        if not v.is_finite():
            raise ApiError(400, -1102, _MANDATORY.format(name))
        return v

    @staticmethod
    def _bool(p: dict[str, str], name: str) -> bool | None:
        raw = p.get(name)
        if raw is None or raw == "":
            return None
        low = raw.lower()
        if low not in ("true", "false"):
            raise ApiError(400, -1130, _INVALID.format(name))
        return low == "true"

    # -- market data -----------------------------------------------------------------------
    def _exchange_info(self, c: _Call) -> dict[str, Any]:
        limits = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                   "limit": self.settings.weight_limit},
                  {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                   "limit": self.settings.order_limit_1m}]
        if self.binance:
            limits.append({"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                           "limit": self.settings.order_limit_10s})
        return {"timezone": "UTC", "serverTime": c.now_ms, "futuresType": "U_MARGINED", "rateLimits": limits,
                "exchangeFilters": [],
                "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
                "symbols": [self._symbol_json(info) for info in self.infos.values()]}

    def _symbol_json(self, info: SymbolInfo) -> dict[str, Any]:
        f = info.filters
        pr = self.prec[info.symbol]
        filters: list[dict[str, Any]] = [
            {"filterType": "PRICE_FILTER", "minPrice": fmt_dec(f.min_price, pr.price),
             "maxPrice": fmt_dec(f.max_price, pr.price), "tickSize": fmt_dec(f.tick_size, pr.price)},
            {"filterType": "LOT_SIZE", "minQty": fmt_dec(f.min_qty, pr.qty), "maxQty": fmt_dec(f.max_qty, pr.qty),
             "stepSize": fmt_dec(f.step_size, pr.qty)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": fmt_dec(f.market_min_qty, pr.qty),
             "maxQty": fmt_dec(f.market_max_qty, pr.qty), "stepSize": fmt_dec(f.market_step_size, pr.qty)},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": format(f.min_notional.normalize(), "f")},
            {"filterType": "PERCENT_PRICE", "multiplierUp": fmt_dec(f.multiplier_up, 4),
             "multiplierDown": fmt_dec(f.multiplier_down, 4), "multiplierDecimal": "4"},
        ]
        if not self.binance:
            filters.insert(4, {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10})
        order_types = ["LIMIT", "MARKET", "STOP_MARKET", "TAKE_PROFIT_MARKET"]
        return {
            "symbol": info.symbol, "pair": info.symbol, "contractType": info.contract_type,
            "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": info.status,
            "maintMarginPercent": fmt_dec(info.maint_margin_percent, 4),
            "requiredMarginPercent": fmt_dec(info.maint_margin_percent * 2, 4),
            "baseAsset": info.base_asset, "quoteAsset": info.quote_asset, "marginAsset": info.quote_asset,
            "pricePrecision": pr.price, "quantityPrecision": pr.qty, "baseAssetPrecision": 8,
            "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
            "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000, "filters": filters, "orderTypes": order_types,
            "timeInForce": list(_SIM_TIF),
        }

    def _klines(self, c: _Call) -> _Encoded:
        p = c.params
        symbol = self._symbol(p)
        interval = p.get("interval")
        if not interval:
            raise ApiError(400, -1102, _MANDATORY.format("interval"))
        start = self._int(p, "startTime", None, 0)
        end = self._int(p, "endTime", None, 0)
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1130, _INVALID.format("startTime"))
        # interval and limit bounds are the matching engine's rules (-1120 / -1130)
        candles = self.sim.klines(symbol, interval, limit=self._int(p, "limit", 500), start_ms=start, end_ms=end)
        return _Encoded(self.kline_rows.encode((symbol, interval), candles, INTERVAL_MS[interval], self.prec[symbol]))

    def _ticker_24hr(self, c: _Call) -> Any:
        symbol = self._symbol(c.params, required=False)
        tickers = self.sim.tickers_24h()
        names = [symbol] if symbol else list(self.infos)
        rows = [self._ticker_json(tickers[s], c.now_ms) for s in names if s in tickers]
        return rows[0] if symbol else rows

    def _ticker_json(self, t: Any, now: int) -> dict[str, Any]:
        pr = self.prec[t.symbol]
        last = t.last_price
        pct = t.price_change_percent
        tick = self.infos[t.symbol].filters.tick_size
        open_ = (last / (1 + pct / 100)).quantize(tick)
        low, high = self._range_24h(t.symbol, now, tick)
        low, high = min(low, open_, last), max(high, open_, last)
        vol = t.volume
        avg = (t.quote_volume / vol) if vol else last
        count = max(1, int(t.quote_volume / 2500))
        first_id = 10_000_000 + (now // 1000)
        row = {"symbol": t.symbol, "priceChange": fmt_dec(last - open_, pr.price),
               "priceChangePercent": fmt_dec(pct.quantize(Decimal("0.001")), 3),
               "weightedAvgPrice": fmt_dec(avg.quantize(Decimal(1).scaleb(-pr.price)), pr.price),
               "lastPrice": fmt_dec(last, pr.price), "lastQty": fmt_dec(self.infos[t.symbol].filters.min_qty, pr.qty),
               "openPrice": fmt_dec(open_, pr.price), "highPrice": fmt_dec(high, pr.price),
               "lowPrice": fmt_dec(low, pr.price), "volume": fmt_dec(vol.quantize(Decimal(1).scaleb(-pr.qty)), pr.qty),
               "quoteVolume": fmt_dec(t.quote_volume.quantize(Decimal("0.01")), 2), "openTime": now - 86_400_000,
               "closeTime": now, "firstId": first_id, "lastId": first_id + count - 1, "count": count}
        if not self.binance:
            row["prevClosePrice"] = fmt_dec(open_, pr.price)
        return row

    def _range_24h(self, symbol: str, now: int, tick: Decimal) -> tuple[Decimal, Decimal]:
        """Lowest low and highest high of the closed base candles of the last 24 h (the forming
        candle's extremes are not known yet; its part so far is covered by last/open)."""
        feed = self.sim.feed
        k1 = feed.index_at(symbol, now) - 1
        k0 = max(0, feed.index_at(symbol, max(now - 86_400_000, feed.start_ms)))
        if k1 < k0:
            return Decimal("Infinity"), Decimal("-Infinity")
        lo, hi = feed.price_range(symbol, k0, k1)
        return Decimal(repr(lo)).quantize(tick), Decimal(repr(hi)).quantize(tick)

    def _book_ticker(self, c: _Call) -> Any:
        symbol = self._symbol(c.params, required=False)
        books = self.sim.book_tickers()
        names = [symbol] if symbol else list(self.infos)
        rows = []
        for s in names:
            b = books.get(s)
            if b is None:
                continue
            pr = self.prec[s]
            row: dict[str, Any] = {"symbol": s, "bidPrice": fmt_dec(b.bid, pr.price),
                                   "bidQty": fmt_dec(b.bid_qty, pr.qty), "askPrice": fmt_dec(b.ask, pr.price),
                                   "askQty": fmt_dec(b.ask_qty, pr.qty), "time": b.time or c.now_ms}
            if self.binance:
                self._update_id += 1
                row["lastUpdateId"] = 1_000_000_000 + self._update_id
            rows.append(row)
        return rows[0] if symbol else rows

    def _premium_index(self, c: _Call) -> Any:
        symbol = self._symbol(c.params, required=False)
        premium = self.sim.premium_index()
        names = [symbol] if symbol else list(self.infos)
        rows = []
        for s in names:
            pi = premium.get(s)
            if pi is None:
                continue
            rows.append({"symbol": s, "markPrice": _money(pi.mark_price), "indexPrice": _money(pi.index_price),
                         "estimatedSettlePrice": _money(pi.index_price),
                         "lastFundingRate": fmt_dec(pi.last_funding_rate, 8), "interestRate": "0.00010000",
                         "nextFundingTime": pi.next_funding_time, "time": pi.time or c.now_ms})
        return rows[0] if symbol else rows

    def _funding_rate(self, c: _Call) -> list[dict[str, Any]]:
        p = c.params
        symbol = self._symbol(p, required=False)
        limit = self._int(p, "limit", 100, 1, 1000)
        start = self._int(p, "startTime", None, 0)
        end = self._int(p, "endTime", None, 0)
        rows = []
        for s in [symbol] if symbol else list(self.infos):
            rows.extend(self.sim.funding_history(s, start_ms=start, end_ms=end, limit=limit))
        rows.sort(key=lambda f: (f.funding_time, f.symbol))
        rows = rows[:limit] if start is not None else rows[-limit:]
        out = []
        for f in rows:
            row: dict[str, Any] = {"symbol": f.symbol, "fundingTime": f.funding_time,
                                   "fundingRate": fmt_dec(f.funding_rate, 8)}
            if self.binance:
                row["markPrice"] = _money(self._mark_at(f.symbol, f.funding_time))
                row["rateType"] = "Regular"
            out.append(row)
        return out

    def _mark_at(self, symbol: str, t: int) -> Decimal:
        """The mark price at a past instant: the price at ``t`` on the feed's base candle
        (its open when ``t`` is the candle's open time, else its close) times its premium."""
        feed = self.sim.feed
        row = feed.candle(symbol, max(0, feed.index_at(symbol, t)))
        price = row[1] if row[0] >= t else row[4]
        return Decimal(repr(price * (1.0 + row[7]))).quantize(Decimal("0.00000001"))

    # -- orders ----------------------------------------------------------------------------
    def _order_request(self, p: dict[str, str], *, algo: bool) -> tuple[OrderRequest, bool]:
        """Wire parameters -> OrderRequest (and newOrderRespType == ACK).  Only what the matching
        engine cannot judge is checked here (parameter syntax, the endpoint's order types, hedge
        mode); the venue rules (filters, client ids, closePosition combinations...) are the
        SimExchange's."""
        symbol = self._symbol(p)
        side = p.get("side")
        if not side:
            raise ApiError(400, -1102, _MANDATORY.format("side"))
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        otype = p.get("type")
        if not otype:
            raise ApiError(400, -1102, _MANDATORY.format("type"))
        if otype not in _ALL_TYPES:
            raise ApiError(400, -1116, "Invalid orderType.")
        conditional = otype in _CONDITIONAL_TYPES
        if self.binance and conditional and not algo:
            raise ApiError(400, -4120, "Order type not supported for this endpoint. Please use the Algo Order API "
                                       "endpoints instead.")
        if algo:
            algo_type = p.get("algoType")
            if not algo_type:
                raise ApiError(400, -1102, _MANDATORY.format("algoType"))
            if algo_type != "CONDITIONAL":
                raise ApiError(400, -1130, _INVALID.format("algoType"))
            if not conditional:
                raise ApiError(400, -1116, "Invalid orderType.")
        if otype not in _SIM_TYPES:
            raise ApiError(400, -1116, f"Invalid orderType. (the loopback exchange simulates "
                                       f"{', '.join(_SIM_TYPES)}, not {otype})")
        position_side = p.get("positionSide") or "BOTH"
        if position_side not in ("BOTH", "LONG", "SHORT"):
            raise ApiError(400, -1130, _INVALID.format("positionSide"))
        if position_side != "BOTH":
            raise ApiError(400, -4061, "Order's position side does not match user's setting.")
        tif = p.get("timeInForce") or None
        if tif is not None and tif not in _TIME_IN_FORCE:
            raise ApiError(400, -1115, "Invalid timeInForce.")
        resp_type = p.get("newOrderRespType") or "ACK"
        if resp_type not in ("ACK", "RESULT"):
            raise ApiError(400, -1130, _INVALID.format("newOrderRespType"))
        self._bool(p, "priceProtect")  # syntax only: the simulation has no price protection
        req = OrderRequest(
            symbol=symbol, side=Side(side), type=_SIM_TYPES[otype],
            client_id=p.get("clientAlgoId" if algo else "newClientOrderId") or "",
            quantity=self._dec(p, "quantity"), price=self._dec(p, "price"),
            stop_price=self._dec(p, "triggerPrice" if algo else "stopPrice"), time_in_force=tif,
            reduce_only=bool(self._bool(p, "reduceOnly")), close_position=bool(self._bool(p, "closePosition")),
            working_type=p.get("workingType") or "CONTRACT_PRICE")
        return req, resp_type == "ACK"

    def _new_order(self, c: _Call) -> dict[str, Any]:
        req, ack = self._order_request(c.params, algo=False)
        order = self.sim.place_order(req)
        if ack:  # the venue's ACK: accepted, the fill is reported later (WS or a query)
            order = replace(order, status=OrderStatus.NEW, executed_qty=Decimal(0), avg_price=Decimal(0))
        return self._order_json(order, with_time=False, price_protect=self._bool(c.params, "priceProtect"))

    def _order_ref(self, p: dict[str, str], id_key: str, client_key: str) -> dict[str, Any]:
        order_id = self._int(p, id_key, None)
        client_id = p.get(client_key) or None
        if order_id is None and client_id is None:
            raise ApiError(400, -1102, f"Param '{client_key}' or '{id_key}' must be sent, but both were empty/null!")
        return {"order_id": order_id, "client_id": client_id}

    def _query_order(self, c: _Call) -> dict[str, Any]:
        symbol = self._symbol(c.params)
        ref = self._order_ref(c.params, "orderId", "origClientOrderId")
        return self._order_json(self.sim.get_order(symbol, algo=False, **ref), with_time=True)

    def _cancel_order(self, c: _Call) -> dict[str, Any]:
        symbol = self._symbol(c.params)
        ref = self._order_ref(c.params, "orderId", "origClientOrderId")
        return self._order_json(self.sim.cancel_order(symbol, algo=False, **ref), with_time=False)

    def _open_orders(self, c: _Call) -> list[dict[str, Any]]:
        symbol = self._symbol(c.params, required=False)
        return [self._order_json(o, with_time=True) for o in self.sim.open_orders(symbol) if not o.is_algo]

    def _all_orders(self, c: _Call) -> list[dict[str, Any]]:
        p = c.params
        symbol = self._symbol(p)
        return [self._order_json(o, with_time=True) for o in self._history(p, symbol, algo=False, id_key="orderId")]

    def _history(self, p: dict[str, str], symbol: str, *, algo: bool, id_key: str) -> list[Order]:
        """allOrders / allAlgoOrders: ``id_key`` >= given id, or a time window, ``limit`` rows."""
        limit = self._int(p, "limit", 500, 1, 1000)
        start = self._int(p, "startTime", None, 0)
        end = self._int(p, "endTime", None, 0)
        from_id = self._int(p, id_key, None)
        rows = [o for o in self.sim.all_orders(symbol) if o.is_algo == algo
                and (from_id is None or o.order_id >= from_id)
                and (start is None or o.time >= start) and (end is None or o.time <= end)]
        return rows[:limit] if from_id is not None or start is not None else rows[-limit:]

    def _cancel_all(self, c: _Call) -> dict[str, Any]:
        symbol = self._symbol(c.params)
        self.sim.cancel_all(symbol, algo=False if self.binance else None)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _order_json(self, o: Order, *, with_time: bool, price_protect: bool | None = None) -> dict[str, Any]:
        pr = self.prec[o.symbol]
        row: dict[str, Any] = {
            "orderId": o.order_id, "symbol": o.symbol, "status": o.status.value, "clientOrderId": o.client_id,
            "price": fmt_dec(o.price, pr.price), "avgPrice": fmt_dec(o.avg_price, pr.price),
            "origQty": fmt_dec(o.quantity, pr.qty), "executedQty": fmt_dec(o.executed_qty, pr.qty),
            "cumQty": fmt_dec(o.executed_qty, pr.qty), "cumQuote": fmt_dec(o.executed_qty * o.avg_price, pr.price),
            "timeInForce": _shown_tif(o), "type": o.type.value, "reduceOnly": o.reduce_only,
            "closePosition": o.close_position, "side": o.side.value, "positionSide": "BOTH",
            "stopPrice": fmt_dec(o.stop_price, pr.price), "workingType": o.working_type,
            "priceProtect": bool(price_protect), "origType": o.type.value,
        }
        if self.binance:
            row.update({"priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0})
        if with_time:
            row["time"] = o.time
        row["updateTime"] = o.update_time or o.time
        return row

    # -- algo orders (binance) -------------------------------------------------------------
    def _new_algo_order(self, c: _Call) -> dict[str, Any]:
        req, _ = self._order_request(c.params, algo=True)
        order = self.sim.place_order(req, algo=True)
        return self._algo_json(order, extended=False, price_protect=self._bool(c.params, "priceProtect"))

    def _find_algo(self, p: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """Algo queries and cancels need no symbol: find the order's symbol by its id (the most
        recent algo order with that client id)."""
        ref = self._order_ref(p, "algoId", "clientAlgoId")
        symbol = self._symbol(p, required=False)
        if symbol:
            return symbol, ref
        for o in reversed(self.sim.all_orders(None)):
            if o.is_algo and (o.order_id == ref["order_id"] if ref["order_id"] is not None
                              else o.client_id == ref["client_id"]):
                return o.symbol, ref
        return "", ref

    def _query_algo_order(self, c: _Call) -> dict[str, Any]:
        symbol, ref = self._find_algo(c.params)
        if not symbol:
            raise ApiError(400, -2013, "Order does not exist.")
        return self._algo_json(self.sim.get_order(symbol, algo=True, **ref), extended=True)

    def _cancel_algo_order(self, c: _Call) -> dict[str, Any]:
        symbol, ref = self._find_algo(c.params)
        if not symbol:
            raise ApiError(400, -2011, "Unknown order sent.")
        o = self.sim.cancel_order(symbol, algo=True, **ref)
        return {"algoId": o.order_id, "clientAlgoId": o.client_id, "code": "200", "msg": "success"}

    def _open_algo_orders(self, c: _Call) -> list[dict[str, Any]]:
        symbol = self._symbol(c.params, required=False)
        algo_id = self._int(c.params, "algoId", None)
        return [self._algo_json(o, extended=True) for o in self.sim.open_orders(symbol)
                if o.is_algo and (algo_id is None or o.order_id == algo_id)]

    def _cancel_all_algo(self, c: _Call) -> dict[str, Any]:
        symbol = self._symbol(c.params)
        self.sim.cancel_all(symbol, algo=True)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def _all_algo_orders(self, c: _Call) -> list[dict[str, Any]]:
        symbol = self._symbol(c.params)
        return [self._algo_json(o, extended=True) for o in self._history(c.params, symbol, algo=True, id_key="algoId")]

    def _algo_json(self, o: Order, *, extended: bool, price_protect: bool | None = None) -> dict[str, Any]:
        pr = self.prec[o.symbol]
        status = _ALGO_STATUS[o.status]
        finished = status == "FINISHED"
        row: dict[str, Any] = {
            "algoId": o.order_id, "clientAlgoId": o.client_id, "algoType": "CONDITIONAL",
            "orderType": o.type.value, "symbol": o.symbol, "side": o.side.value, "positionSide": "BOTH",
            "timeInForce": _shown_tif(o), "quantity": fmt_dec(o.quantity, pr.qty), "algoStatus": status,
            "triggerPrice": fmt_dec(o.stop_price, pr.price), "price": fmt_dec(o.price, pr.price),
            "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": o.working_type,
            "priceMatch": "NONE", "closePosition": o.close_position, "priceProtect": bool(price_protect),
            "reduceOnly": o.reduce_only, "activatePrice": "", "callbackRate": "", "createTime": o.time,
            "updateTime": o.update_time or o.time, "triggerTime": o.update_time if finished else 0,
            "goodTillDate": 0,
        }
        if extended:
            actual = self.sim.algo_actual_order_id(o.order_id)
            row["actualOrderId"] = str(actual) if actual is not None else ""
            row["actualPrice"] = fmt_dec(o.avg_price, pr.price) if finished else "0"
        return row

    # -- account ---------------------------------------------------------------------------
    def _position_view(self, symbol: str | None) -> tuple[Any, dict[str, Position], dict[str, Decimal]]:
        """(account summary, positions by symbol, mark prices of the symbols asked for)."""
        summary = self.sim.account_summary()
        positions = {p.symbol: p for p in self.sim.positions()}
        if symbol:
            marks = {symbol: positions[symbol].mark_price if symbol in positions else self.sim.mark_price(symbol)}
        else:
            marks = {s: pi.mark_price for s, pi in self.sim.premium_index().items()}
        return summary, positions, marks

    def _position_core(self, s: str, pos: Position | None, mark: Decimal) -> dict[str, Any]:
        """The keys positionRisk v2 and v3 share."""
        pr = self.prec[s]
        amount = pos.amount if pos else Decimal(0)
        return {"symbol": s, "positionAmt": fmt_dec(amount, pr.qty),
                "entryPrice": fmt_dec(pos.entry_price if pos else 0, 1),
                "breakEvenPrice": fmt_dec(self._break_even(pos) if pos else 0, 1),
                "markPrice": fmt_dec(mark, 8), "unRealizedProfit": _money(pos.unrealized_pnl if pos else 0),
                "liquidationPrice": fmt_dec(pos.liquidation_price if pos else 0, 1),
                "notional": _money(amount * mark), "isolatedMargin": _money(0), "isolatedWallet": "0",
                "positionSide": "BOTH", "updateTime": pos.update_time if pos else 0}

    def _break_even(self, pos: Position) -> Decimal:
        """Entry price moved by the taker fee of the round trip's closing leg."""
        sign = 1 if pos.amount > 0 else -1
        return pos.entry_price * (1 + sign * self.sim.taker_fee)

    def _position_risk_v2(self, c: _Call) -> list[dict[str, Any]]:
        """``/fapi/v2/positionRisk``: one row per symbol, zero positions included."""
        symbol = self._symbol(c.params, required=False)
        _, positions, marks = self._position_view(symbol)
        rows = []
        for s in [symbol] if symbol else list(self.infos):
            row = self._position_core(s, positions.get(s), marks[s])
            row.update({"leverage": str(self.sim.leverage(s)), "maxNotionalValue": self._max_notional(s),
                        "marginType": "isolated" if self._margin_type.get(s) == "ISOLATED" else "cross",
                        "isAutoAddMargin": "false"})
            if not self.binance:
                for k in ("breakEvenPrice", "notional", "isolatedWallet"):
                    del row[k]
            rows.append(row)
        return rows

    def _position_risk_v3(self, c: _Call) -> list[dict[str, Any]]:
        """``/fapi/v3/positionRisk``: only symbols with a position or open orders."""
        symbol = self._symbol(c.params, required=False)
        summary, positions, marks = self._position_view(symbol)
        rows = []
        for s in [symbol] if symbol else list(self.infos):
            margin = summary.positions.get(s)
            if margin is None and s not in positions:
                continue
            row = self._position_core(s, positions.get(s), marks[s])
            pim = margin.initial_margin if margin else Decimal(0)
            oim = margin.open_order_initial_margin if margin else Decimal(0)
            row.update({"marginAsset": self.sim.asset, "initialMargin": _money(pim + oim),
                        "maintMargin": _money(margin.maint_margin if margin else 0),
                        "positionInitialMargin": _money(pim), "openOrderInitialMargin": _money(oim), "adl": 0,
                        "bidNotional": "0", "askNotional": "0"})
            rows.append(row)
        return rows

    def _balance(self, c: _Call) -> list[dict[str, Any]]:
        a = self.sim.account_summary()
        return [{"accountAlias": "SgsRmYFzAuTi", "asset": self.sim.asset, "balance": _money(a.wallet_balance),
                 "crossWalletBalance": _money(a.wallet_balance), "crossUnPnl": _money(a.unrealized_pnl),
                 "availableBalance": _money(a.available_balance),
                 "maxWithdrawAmount": _money(min(a.available_balance, a.wallet_balance)),
                 "marginAvailable": True, "updateTime": c.now_ms}]

    def _account_body(self, c: _Call, summary: Any) -> dict[str, Any]:
        """Totals and ``assets[]``, shared by every account version."""
        a = summary
        withdraw = min(a.available_balance, a.wallet_balance)
        totals = {"totalInitialMargin": _money(a.initial_margin), "totalMaintMargin": _money(a.maint_margin),
                  "totalWalletBalance": _money(a.wallet_balance), "totalUnrealizedProfit": _money(a.unrealized_pnl),
                  "totalMarginBalance": _money(a.margin_balance),
                  "totalPositionInitialMargin": _money(a.position_initial_margin),
                  "totalOpenOrderInitialMargin": _money(a.open_order_initial_margin),
                  "totalCrossWalletBalance": _money(a.wallet_balance), "totalCrossUnPnl": _money(a.unrealized_pnl),
                  "availableBalance": _money(a.available_balance), "maxWithdrawAmount": _money(withdraw)}
        asset = {"asset": self.sim.asset, "walletBalance": _money(a.wallet_balance),
                 "unrealizedProfit": _money(a.unrealized_pnl), "marginBalance": _money(a.margin_balance),
                 "maintMargin": _money(a.maint_margin), "initialMargin": _money(a.initial_margin),
                 "positionInitialMargin": _money(a.position_initial_margin),
                 "openOrderInitialMargin": _money(a.open_order_initial_margin),
                 "crossWalletBalance": _money(a.wallet_balance), "crossUnPnl": _money(a.unrealized_pnl),
                 "availableBalance": _money(a.available_balance), "maxWithdrawAmount": _money(withdraw),
                 "marginAvailable": True, "updateTime": c.now_ms}
        return {**totals, "assets": [asset]}

    def _account_full(self, c: _Call) -> dict[str, Any]:
        """``/fapi/v2/account`` (Binance) and ``/fapi/v4/account`` (Aster): every symbol listed."""
        summary, positions, _ = self._position_view(None)
        rows = []
        for s in self.infos:
            pos, margin = positions.get(s), summary.positions.get(s)
            pim = margin.initial_margin if margin else Decimal(0)
            oim = margin.open_order_initial_margin if margin else Decimal(0)
            rows.append({"symbol": s, "initialMargin": _money(pim + oim),
                         "maintMargin": _money(margin.maint_margin if margin else 0),
                         "unrealizedProfit": _money(pos.unrealized_pnl if pos else 0),
                         "positionInitialMargin": _money(pim), "openOrderInitialMargin": _money(oim),
                         "leverage": str(self.sim.leverage(s)), "isolated": self._margin_type.get(s) == "ISOLATED",
                         "entryPrice": fmt_dec(pos.entry_price if pos else 0, 1),
                         "maxNotional": self._max_notional(s), "bidNotional": "0", "askNotional": "0",
                         "positionSide": "BOTH", "positionAmt": fmt_dec(pos.amount if pos else 0, self.prec[s].qty),
                         "updateTime": pos.update_time if pos else 0})
        return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True, "updateTime": 0,
                "multiAssetsMargin": False, "tradeGroupId": -1, **self._account_body(c, summary), "positions": rows}

    def _account_v3(self, c: _Call) -> dict[str, Any]:
        """``/fapi/v3/account``: no account flags, only symbols with a position."""
        summary, positions, _ = self._position_view(None)
        rows = []
        for s, pos in positions.items():
            margin = summary.positions[s]
            rows.append({"symbol": s, "positionSide": "BOTH", "positionAmt": fmt_dec(pos.amount, self.prec[s].qty),
                         "unrealizedProfit": _money(pos.unrealized_pnl), "isolatedMargin": _money(0),
                         "notional": _money(pos.amount * pos.mark_price), "isolatedWallet": "0",
                         "initialMargin": _money(margin.initial_margin + margin.open_order_initial_margin),
                         "maintMargin": _money(margin.maint_margin), "updateTime": pos.update_time})
        return {**self._account_body(c, summary), "positions": rows}

    def _income(self, c: _Call) -> list[dict[str, Any]]:
        """``/fapi/v1/income``: FUNDING_FEE from the sim's funding payments, REALIZED_PNL and
        COMMISSION from the fills."""
        p = c.params
        symbol = self._symbol(p, required=False)
        kind = p.get("incomeType") or None
        if kind is not None and kind not in _INCOME_TYPES:
            raise ApiError(400, -1130, _INVALID.format("incomeType"))
        start = self._int(p, "startTime", None, 0)
        end = self._int(p, "endTime", None, 0)
        limit = self._int(p, "limit", 100, 1, 1000)
        lo = start if start is not None else (end if end is not None else c.now_ms) - 7 * 86_400_000
        hi = end if end is not None else c.now_ms
        rows: list[tuple[int, int, dict[str, Any]]] = []
        asset = self.sim.asset
        index = {s: i for i, s in enumerate(self.infos)}
        if kind in (None, "FUNDING_FEE"):
            for f in self.sim.funding_payments(symbol, lo, hi):
                tran = (f.time // 1000) * 100_000 + index[f.symbol] * 10 + 1
                rows.append((f.time, tran, {"symbol": f.symbol, "incomeType": "FUNDING_FEE", "income": _money(f.amount),
                                            "asset": asset, "info": "FUNDING_FEE", "time": f.time, "tranId": tran,
                                            "tradeId": ""}))
        if kind in (None, "REALIZED_PNL", "COMMISSION"):
            for s in [symbol] if symbol else list(self.infos):
                for f in self.sim.user_trades(s, start_ms=lo, end_ms=hi, limit=1000):
                    items = []
                    if kind in (None, "REALIZED_PNL") and f.realized_pnl:
                        items.append(("REALIZED_PNL", f.realized_pnl, 2))
                    if kind in (None, "COMMISSION") and f.commission:
                        items.append(("COMMISSION", -f.commission, 3))
                    for name, amount, k in items:
                        tran = f.trade_id * 10 + k
                        rows.append((f.time, tran, {"symbol": s, "incomeType": name, "income": _money(amount),
                                                    "asset": f.commission_asset, "info": name, "time": f.time,
                                                    "tranId": tran, "tradeId": str(f.trade_id)}))
        rows.sort(key=lambda r: (r[0], r[1]))
        out = [r[2] for r in rows]
        return out[:limit] if start is not None else out[-limit:]

    def _user_trades(self, c: _Call) -> list[dict[str, Any]]:
        p = c.params
        symbol = self._symbol(p)
        start = self._int(p, "startTime", None, 0)
        end = self._int(p, "endTime", None, 0)
        if start is not None and end is not None and end - start > 7 * 86_400_000:
            raise ApiError(400, -4166, "Search window is restricted to recent 7 days only.")
        fills = self.sim.user_trades(symbol, start_ms=start, end_ms=end, order_id=self._int(p, "orderId", None),
                                     from_id=self._int(p, "fromId", None), limit=self._int(p, "limit", 500, 1, 1000))
        pr = self.prec[symbol]
        return [{"symbol": f.symbol, "id": f.trade_id, "orderId": f.order_id, "side": f.side.value,
                 "price": fmt_dec(f.price, pr.price), "qty": fmt_dec(f.qty, pr.qty),
                 "realizedPnl": _money(f.realized_pnl), "marginAsset": f.commission_asset,
                 "quoteQty": _money(f.quote_qty), "commission": _money(f.commission),
                 "commissionAsset": f.commission_asset, "time": f.time, "positionSide": "BOTH",
                 "buyer": f.side is Side.BUY, "maker": f.maker} for f in fills]

    def _leverage(self, c: _Call) -> dict[str, Any]:
        symbol = self._symbol(c.params)
        raw = c.params.get("leverage")
        if not raw:
            raise ApiError(400, -1102, _MANDATORY.format("leverage"))
        try:
            lev = int(raw)
        except ValueError:
            raise ApiError(400, -1130, _INVALID.format("leverage")) from None
        got = self.sim.set_leverage(symbol, lev)
        return {"leverage": got, "maxNotionalValue": self._max_notional(symbol), "symbol": symbol}

    def _margin_type_change(self, c: _Call) -> dict[str, Any]:
        symbol = self._symbol(c.params)
        wanted = c.params.get("marginType")
        if not wanted:
            raise ApiError(400, -1102, _MANDATORY.format("marginType"))
        wanted = wanted.upper()
        if wanted not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -4044, "The margin type is invalid.")
        if self._margin_type.get(symbol, "CROSSED") == wanted:
            raise ApiError(400, -4046, "No need to change margin type.")
        if any(p.symbol == symbol for p in self.sim.positions()):
            raise ApiError(400, -4048, "Margin type cannot be changed if there exists position.")
        if self.sim.open_orders(symbol):
            raise ApiError(400, -4047, "Margin type cannot be changed if there exists open orders.")
        self._margin_type[symbol] = wanted
        return {"code": 200, "msg": "success"}

    @staticmethod
    def _brackets() -> list[dict[str, Any]]:
        """Leverage brackets from the tier table the simulation liquidates on (the same for
        every symbol); the initial leverage of a tier is ``1 / (2 * maintenance rate)``, at
        most 125, which reproduces Binance's BTCUSDT brackets."""
        out, floor = [], Decimal(0)
        for i, (cap, rate, cum) in enumerate(MAINT_TIERS):
            out.append({"bracket": i + 1, "initialLeverage": min(125, int(1 / (2 * rate))),
                        "notionalCap": int(cap) if cap.is_finite() else _LAST_BRACKET_CAP,
                        "notionalFloor": int(floor), "maintMarginRatio": float(rate), "cum": float(cum)})
            floor = cap
        return out

    def _max_notional(self, symbol: str) -> str:
        """The largest notional the symbol's leverage allows (the last bracket still open to it)."""
        lev = self.sim.leverage(symbol)
        caps = [b["notionalCap"] for b in self._brackets() if b["initialLeverage"] >= lev]
        return str(caps[-1] if caps else self._brackets()[0]["notionalCap"])

    def _leverage_bracket(self, c: _Call) -> Any:
        symbol = self._symbol(c.params, required=False)
        rows = [{"symbol": s, "notionalCoef": 1.0, "brackets": self._brackets()}
                for s in ([symbol] if symbol else self.infos)]
        return rows[0] if symbol else rows


_INCOME_TYPES = ("FUNDING_FEE", "REALIZED_PNL", "COMMISSION", "TRANSFER", "INSURANCE_CLEAR", "WELCOME_BONUS",
                 "REFERRAL_KICKBACK", "COMMISSION_REBATE", "API_REBATE", "CONTEST_REWARD", "DELIVERED_SETTELMENT",
                 "COIN_SWAP_DEPOSIT", "COIN_SWAP_WITHDRAW")
_LAST_BRACKET_CAP = 500_000_000  # the unbounded tier, shown as a large finite cap like the venue

_ALGO_STATUS = {OrderStatus.NEW: "NEW", OrderStatus.PARTIALLY_FILLED: "FINISHED", OrderStatus.FILLED: "FINISHED",
                OrderStatus.CANCELED: "CANCELED", OrderStatus.EXPIRED: "EXPIRED", OrderStatus.REJECTED: "REJECTED"}


def _shown_tif(o: Order) -> str:
    """Binance shows closePosition conditional orders as ``GTE_GTC``."""
    return "GTE_GTC" if o.close_position else o.time_in_force


def _status_for(code: int | None) -> int:
    return 401 if code in (-2014, -2015) else 400


def _plain_msg(e: VenueError) -> str:
    """The venue message without the ``(code N)`` suffix that ``VenueError.__str__`` adds."""
    return Exception.__str__(e)


def _parse_params(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in parse_qsl(raw, keep_blank_values=True):
        if k in out:
            raise ApiError(400, -1101, "Duplicate values for a parameter detected.")
        out[k] = v
    return out


def _signed_payload(query: str, body: str) -> tuple[str, str | None]:
    """``totalParams`` (query + body, no separator) with the trailing ``&signature=...``
    removed, and the signature; None when the signature is not the last parameter."""
    m = _SIGNATURE_TAIL_RE.search(body)
    if m:
        return query + body[:m.start()], m.group(1)
    m = _SIGNATURE_TAIL_RE.search(query)
    if m:
        return query[:m.start()] + body, m.group(1)
    return query + body, None


def _encode_kline_rows(c: Candles, step_ms: int, pr: _Precision) -> list[str]:
    """Binance's 12-column rows, each already JSON-encoded (one ``%`` per row: the answer of a
    360-candle read is built without per-cell strings or ``json.dumps``).  The venue's extra
    columns (quote volume, trade count, taker buy volumes) are derived from OHLCV: quote volume
    at the bar's typical price, taker-buy share leaning with the bar's direction, one trade per
    2500 USDT."""
    if len(c) == 0:
        return []
    rng = c.high - c.low
    quote = c.volume * (c.high + c.low + c.close) / 3.0
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rng > 0, 0.5 + 0.25 * (c.close - c.open) / rng, 0.5)
    trades = np.where(c.volume > 0, np.maximum(1, (quote / 2500.0).astype(np.int64)), 0)
    p, q, m = f'"%.{pr.price}f"', f'"%.{pr.qty}f"', f'"%.{max(pr.price, 2)}f"'
    row = f'[%d,{p},{p},{p},{p},{q},%d,{m},%d,{q},{m},"0"]'
    return [row % r for r in zip(
        c.open_time.tolist(), c.open.tolist(), c.high.tolist(), c.low.tolist(), c.close.tolist(),
        c.volume.tolist(), (c.open_time + (step_ms - 1)).tolist(), quote.tolist(), trades.tolist(),
        (c.volume * share).tolist(), (quote * share).tolist())]


@dataclass(slots=True)
class _EncodedRows:
    open_time: np.ndarray  # int64
    ohlcv: np.ndarray  # (n, 5) float64
    rows: list[str]


class KlineRowCache:
    """The encoded wire rows of closed candles per (symbol, interval), so that a kline answer
    only formats the rows it has not sent before (a real venue has its closed candles ready).

    A cached row is reused only where its open time and OHLCV are *equal* to the candle being
    answered (checked vectorised on every answer), so the cache can never change an answer: a
    row that differs is simply encoded again and replaces the cached run.  Each key keeps one
    contiguous run of at most ``max_rows`` rows; the forming candle is never cached."""

    def __init__(self, max_rows: int = 1500) -> None:
        self.max_rows = max_rows
        self._runs: dict[tuple[str, str], _EncodedRows] = {}
        self.hits = 0  # rows served from the cache (for tests and profiling)

    def encode(self, key: tuple[str, str], c: Candles, step_ms: int, pr: _Precision) -> bytes:
        """The JSON array of ``c``'s rows (the answer body)."""
        n = len(c)
        ot = c.open_time
        ohlcv = np.column_stack((c.open, c.high, c.low, c.close, c.volume))
        run = self._runs.get(key)
        reused = 0  # leading rows of the answer taken from the cached run
        at = 0
        if run is not None and n:
            at = int(np.searchsorted(run.open_time, ot[0]))
            span = min(len(run.open_time) - at, n)
            if span > 0:
                same = ((run.open_time[at:at + span] == ot[:span])
                        & (run.ohlcv[at:at + span] == ohlcv[:span]).all(axis=1))
                reused = span if same.all() else int(np.argmin(same))
        head = run.rows[at:at + reused] if reused else []
        rows = head + _encode_kline_rows(c.slice(reused, n), step_ms, pr)
        self.hits += reused
        closed = n if c.last_closed else n - 1
        if closed > reused:
            if run is not None and reused and at + reused == len(run.open_time):
                # the answer continues the cached run: append its new closed rows
                run = _EncodedRows(np.concatenate((run.open_time, ot[reused:closed])),
                                   np.concatenate((run.ohlcv, ohlcv[reused:closed])), run.rows + rows[reused:closed])
            else:
                run = _EncodedRows(ot[:closed].copy(), ohlcv[:closed], rows[:closed])
            if len(run.rows) > self.max_rows:
                cut = len(run.rows) - self.max_rows
                run = _EncodedRows(run.open_time[cut:], run.ohlcv[cut:], run.rows[cut:])
            self._runs[key] = run
        return ("[" + ",".join(rows) + "]").encode("ascii")


# --------------------------------------------------------------------------------------------
# HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "loopback-exchange"
    sys_version = ""
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without NODELAY, Nagle + delayed ACK
        # would add ~40 ms to every keep-alive request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if log.isEnabledFor(logging.DEBUG):
            log.debug("loopback exchange: %s", strip_signature(format % args))

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return
        body = self.rfile.read(length) if length > 0 else b""
        path = self.path.partition("?")[0]
        if path == "/_control" or path.startswith("/_control/"):
            self._write(self.server.owner.control_request(self.command, self.path, body))
            return
        venue = self.server.owner.venue
        time.sleep(venue.latency_for(path) + venue.take_delay_before(self.command, path))
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = venue.dispatch(self.command, self.path, headers, body)
        if reply.delay_after_s:
            time.sleep(reply.delay_after_s)
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for k, v in reply.headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], owner: "LoopbackExchange") -> None:
        self.owner = owner
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timeout, killed) is normal here; anything else is logged."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return
        log.exception("loopback exchange: error while serving %s", client_address)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# building a market


#: generated days kept in memory per symbol of a synthetic market (about 100 KB each)
_CHUNKS_PER_SYMBOL = 10


def build_sim(*, synthetic: int | None = None, data: Iterable[str | Path] = (), seed: int = 0,
              start_ms: int | None = None, balance: Decimal = Decimal("10000"),
              now_ms: int | None = None) -> SimExchange:
    """A SimExchange on a synthetic market (``synthetic`` symbols, default 20) or on replayed
    kline/funding files (:meth:`ReplayMarket.from_files`; bad files raise ``DataError``).

    ``start_ms`` defaults to ``now_ms`` (the wall clock) for a synthetic market, so the server
    clock is the real time, and for replay data to the feed's default start (after its warm-up
    history)."""
    files = [Path(f) for f in data]
    if files and synthetic:
        raise ValueError("give either data files or a synthetic market, not both")
    if files:
        market: Any = ReplayMarket.from_files(files)
        start = start_ms if start_ms is not None else market.default_start_ms
    else:
        start = start_ms if start_ms is not None else (now_ms if now_ms is not None else int(time.time() * 1000))
        n = synthetic or 20
        # room for every symbol's whole generated history (the default 4 days plus the current
        # day) and a few more days of running: with less, a 40-symbol scan of 5m and 30m klines
        # evicts and regenerates candles on every read (3 ms per answer), which a venue that
        # has its candles ready does not do
        market = SyntheticMarket(n, seed=seed, start_ms=start, cache_chunks=_CHUNKS_PER_SYMBOL * n)
    return SimExchange(market, balance=balance, start_ms=start)


# --------------------------------------------------------------------------------------------
# programmatic API


class LoopbackExchange:
    """The loopback exchange in a background thread.

    ``with LoopbackExchange(venue="aster", synthetic=5) as ex: httpx.get(ex.base_url + ...)``.
    Give a ready ``sim`` (a SimExchange) or let it build one (``synthetic`` symbols, default 20,
    or ``data`` files).  ``handle.sim`` is the SimExchange: read it only while holding
    ``handle.lock`` if the server is serving requests at the same time.

    The server clock is a :class:`ServerClock` at ``speed`` starting at the sim's time (the
    real time for a market built here without ``start_ms``), or ``clock``: any object with
    ``now_ms()`` (``engine.clock.SimClock`` for a test that steps time itself; ``speed`` is
    then ignored and control jumps call its ``set``).  A background thread advances the sim
    every ``tick_seconds`` so triggers fire without requests.  ``faults`` are control changes
    applied at start (the CLI's fault flags).
    """

    def __init__(self, sim: Any = None, *, host: str = "127.0.0.1", port: int = 0, venue: str = "binance",
                 api_key: str = TEST_API_KEY, api_secret: str = TEST_API_SECRET, speed: float = 1.0,
                 start_ms: int | None = None, synthetic: int | None = None, symbols: int | None = None,
                 data: Iterable[str | Path] = (), seed: int = 0, balance: Decimal | str | float = Decimal("10000"),
                 weight_limit: int = 2400, ban_after: int = 3, ban_seconds: float = 120.0,
                 tick_seconds: float = 0.2, faults: dict[str, Any] | None = None, clock: Any = None) -> None:
        wall_now = int(time.time() * 1000)
        data = [Path(d) for d in data]
        built = sim is None
        if sim is None:
            sim = build_sim(synthetic=synthetic or symbols, data=data, seed=seed, start_ms=start_ms,
                            balance=Decimal(str(balance)), now_ms=wall_now)
        self.sim = sim
        if clock is None:
            # a market built here on the wall clock starts at the real time of the first request
            live = built and start_ms is None and not data
            clock = ServerClock(int(time.time() * 1000) if live else sim.now_ms, speed)
        self.clock = clock
        self.venue = LoopbackVenue(sim, self.clock, ServerSettings(
            venue=venue, api_key=api_key, api_secret=api_secret, weight_limit=weight_limit,
            ban_after=ban_after, ban_seconds=ban_seconds, seed=seed))
        self.lock = self.venue.lock
        self._addr = (host, port)
        self._tick_seconds = tick_seconds
        self._initial_faults = faults
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.base_url = ""

    # lifecycle
    def start(self) -> "LoopbackExchange":
        if self._httpd is not None:
            return self
        if self._initial_faults:  # a bad fault spec fails here, before any socket is opened
            self.control(**self._initial_faults)
            self._initial_faults = None
        self._stop = threading.Event()
        self._httpd = _HTTPServer(self._addr, self)
        host, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"loopback-http-{port}", daemon=True)
        ticker = threading.Thread(target=self._tick_loop, name=f"loopback-tick-{port}", daemon=True)
        self._threads = [serve, ticker]
        for t in self._threads:
            t.start()
        return self

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick_seconds):
            try:
                self.venue.tick()
            except Exception:  # keep ticking; the error is a sim bug worth seeing
                log.exception("loopback exchange: advancing the simulation failed")

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> "LoopbackExchange":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # control
    def control(self, **changes: Any) -> dict[str, Any]:
        """Change faults and settings (keys of :meth:`LoopbackVenue.control`); returns the state."""
        return self.venue.control(changes)

    def fault(self, kind: str, **rule: Any) -> dict[str, Any]:
        """Add one fault rule: ``handle.fault("error", path="/fapi/v1/order", count=1, status=503)``."""
        return self.control(faults=[{"kind": kind, **rule}])

    def requests(self, clear: bool = False) -> list[dict[str, Any]]:
        return self.venue.requests(clear)

    def clear_requests(self) -> None:
        self.venue.clear_requests()

    def events(self) -> list[Any]:
        with self.lock:
            return list(self.venue.events)

    def advance(self, ms: int) -> None:
        """Jump the server clock (and the simulation) forward by ``ms``."""
        self.control(advance_ms=int(ms))

    def server_time(self) -> int:
        return self.venue.server_now()

    def control_request(self, method: str, target: str, body: bytes) -> Reply:
        """The ``/_control`` endpoint (HTTP side of :meth:`control`)."""
        path, _, query = target.partition("?")
        try:
            if path == "/_control" and method == "GET":
                return _json_reply(200, self.venue.state())
            if path == "/_control" and method == "POST":
                try:
                    changes = json.loads(body or b"{}")
                except ValueError:
                    raise ControlError("the control body must be JSON") from None
                return _json_reply(200, self.venue.control(changes))
            if path == "/_control/requests" and method == "GET":
                clear = dict(parse_qsl(query)).get("clear", "").lower() in ("1", "true")
                return _json_reply(200, self.venue.requests(clear))
            if path == "/_control/requests" and method == "DELETE":
                self.venue.clear_requests()
                return _json_reply(200, {"cleared": True})
            if path == "/_control/events" and method == "GET":
                return _json_reply(200, [_event_json(e) for e in self.events()])
        except ControlError as e:
            return _json_reply(400, {"error": str(e)})
        return _json_reply(404, {"error": f"no control endpoint {method} {path}"})


def _event_json(e: Any) -> dict[str, Any]:
    return {"kind": e.kind, "time": e.time, "symbol": e.symbol,
            "order_id": e.order.order_id if e.order is not None else None,
            "client_id": e.order.client_id if e.order is not None else None,
            "amount": str(e.amount) if e.amount is not None else None, "detail": e.detail}


def start_in_thread(sim: Any = None, **kwargs: Any) -> tuple[str, LoopbackExchange]:
    """Start a :class:`LoopbackExchange` (same keyword arguments); returns (base_url, handle).
    Call ``handle.stop()`` when done."""
    handle = LoopbackExchange(sim, **kwargs).start()
    return handle.base_url, handle


class LoopbackProcess:
    """The loopback exchange as a real child process (``python -m mraster_tui sim-exchange``),
    for kill -9 and restart tests.  ``args`` are the command's flags; ``--port 0`` is added
    unless a port is given.  Its stderr is collected (last 200 lines) in :attr:`stderr_tail`."""

    def __init__(self, args: Iterable[str] = (), *, python: str | None = None, timeout: float = 20.0,
                 cwd: str | Path | None = None, env: dict[str, str] | None = None) -> None:
        args = list(args)
        cmd = [python or sys.executable, "-m", "mraster_tui", "sim-exchange", *args]
        if not any(a == "--port" or a.startswith("--port=") for a in args):
            cmd += ["--port", "0"]
        self._client: httpx.Client | None = None
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=cwd, env=env)
        # drain both pipes for the life of the process: a full pipe would block the server
        first: list[str] = []
        self._drains = [threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
                        for stream, sink in ((self.proc.stdout, first), (self.proc.stderr, self.stderr_tail))]
        for t in self._drains:
            t.start()
        deadline = time.monotonic() + timeout
        while not first and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        line = first[0].strip() if first else ""
        if not line.startswith("listening on "):
            self.kill()
            raise RuntimeError(f"the loopback exchange did not start: {line or 'no output'}; "
                               f"{' '.join(self.stderr_tail)[-500:]}")
        self.base_url = line.removeprefix("listening on ").strip()
        self._client = httpx.Client(base_url=self.base_url, timeout=10.0)

    @staticmethod
    def _drain(stream: Any, sink: Any) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def control(self, **changes: Any) -> dict[str, Any]:
        assert self._client is not None
        r = self._client.post("/_control", json=changes)
        if r.status_code != 200:
            raise ControlError(r.json().get("error", r.text))
        return r.json()

    def requests(self, clear: bool = False) -> list[dict[str, Any]]:
        assert self._client is not None
        return self._client.get("/_control/requests", params={"clear": "1" if clear else "0"}).json()

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; returns the exit code."""
        self._close_client()
        self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (the kill -9 case)."""
        self._close_client()
        self.proc.kill()
        self.proc.wait(10)

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "LoopbackProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._close_client()
        for t in self._drains:  # the pipes reach EOF once the process is gone
            t.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
