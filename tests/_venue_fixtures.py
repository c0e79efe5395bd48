"""Helpers shared by the venue-layer tests (REST client, market data, doctor): a loopback
exchange in a thread and RestExchange clients with a private rate-limit governor each, so that
one test's 429/418 never leaks into the next."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import ROUND_UP, Decimal
from typing import Any

from mraster_tui.config import Settings
from mraster_tui.engine.clock import Clock, WallClock
from mraster_tui.engine.sim.server import TEST_API_KEY, TEST_API_SECRET, LoopbackExchange
from mraster_tui.engine.venue.base import BINANCE, VenueCapabilities
from mraster_tui.engine.venue.ratelimit import RateLimitGovernor
from mraster_tui.engine.venue.rest import RestExchange

#: any 64-digit hex string (a signature, or the test key) in text
HEX64 = re.compile(r"[0-9a-fA-F]{64}")


#: the schema's minimum timeout; tests that provoke a client timeout use it (with a 1.5 s delay)
SHORT_TIMEOUT = 1.0


def fast_settings(**changes: Any) -> Settings:
    """Defaults with quick retries and a timeout generous enough for a loaded test machine."""
    base = {"http_retries": 2, "http_backoff": 0.01, "http_timeout": 10.0, "recv_window": 5000}
    base.update(changes)
    return Settings.defaults().replace(**base)


def start_server(venue: str = "binance", symbols: int = 6, **kw: Any) -> LoopbackExchange:
    return LoopbackExchange(venue=venue, synthetic=symbols, seed=7, **kw).start()


def reset_server(handle: LoopbackExchange) -> None:
    handle.control(reset=True, clear_faults=True, reset_weights=True, weight_limit=2400)
    handle.clear_requests()


def client(base_url: str, *, venue: str = "auto", key: str | None = TEST_API_KEY,
           secret: str | None = TEST_API_SECRET, settings: Settings | None = None, events: list | None = None,
           caps: VenueCapabilities = BINANCE, clock: Clock | None = None, **gov: Any) -> RestExchange:
    clock = clock or WallClock()
    governor = RateLimitGovernor(clock, weight_limit=caps.weight_limit_1m, order_limit_10s=caps.order_limit_10s,
                                 order_limit_1m=caps.order_limit_1m, **gov)
    return RestExchange(base_url, api_key=key, api_secret=secret, venue=venue, settings=settings or fast_settings(),
                        clock=clock, on_event=events.append if events is not None else None, governor=governor)


def requests(handle: LoopbackExchange, path: str | None = None, method: str | None = None) -> list[dict]:
    return [r for r in handle.requests() if (path is None or r["path"] == path)
            and (method is None or r["method"] == method)]


async def min_order(ex: RestExchange, symbol: str, notional: Decimal = Decimal("12")) -> tuple[Decimal, Decimal, Any]:
    """(quantity worth about ``notional``, mark price, filters) for ``symbol``."""
    info = (await ex.exchange_info()).symbols[symbol]
    mark = (await ex.premium_index())[symbol].mark_price
    f = info.filters
    qty = (notional / mark / f.step_size).to_integral_value(rounding=ROUND_UP) * f.step_size
    return max(qty, f.min_qty), mark, f


def tick_round(price: Decimal, tick: Decimal) -> Decimal:
    return (price / tick).to_integral_value() * tick


def closing(handle: LoopbackExchange) -> Iterator[LoopbackExchange]:
    try:
        yield handle
    finally:
        handle.stop()
