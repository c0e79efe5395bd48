"""The rate-limit governor with a simulated clock (no sleeping, exact times)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from mraster_tui.engine.clock import SimClock
from mraster_tui.engine.errors import IpBanned, RateLimited
from mraster_tui.engine.types import RateLimit
from mraster_tui.engine.venue.ratelimit import (
    ASTER_WEIGHTS,
    BINANCE_WEIGHTS,
    RateLimitGovernor,
    VenueEvent,
    kline_weight,
    parse_retry_after,
    shared_governor,
)

T0 = 1_700_000_000_000  # 1_700_000_000_000 % 60_000 == 20_000: 20 s into a minute
MINUTE_END = T0 - 20_000 + 60_000


def make(limit: int = 100, **kw) -> tuple[RateLimitGovernor, SimClock, list[VenueEvent]]:
    clock = SimClock(T0)
    events: list[VenueEvent] = []
    gov = RateLimitGovernor(clock, weight_limit=limit, on_event=events.append, **kw)
    return gov, clock, events


def test_weight_table_matches_contract() -> None:
    assert [kline_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, None)] == [1, 1, 2, 2, 5, 5, 10, 5]
    b, a = BINANCE_WEIGHTS, ASTER_WEIGHTS
    assert b.weight("GET", "/fapi/v1/klines", {"symbol": "X", "limit": 360}) == 2
    assert b.weight("GET", "/fapi/v1/klines", {"symbol": "X"}) == 5
    assert b.weight("GET", "/fapi/v1/ticker/bookTicker", {}) == 5
    assert b.weight("GET", "/fapi/v1/ticker/bookTicker", {"symbol": "X"}) == 2
    assert a.weight("GET", "/fapi/v1/ticker/bookTicker", {}) == 2
    assert a.weight("GET", "/fapi/v1/ticker/bookTicker", {"symbol": "X"}) == 1
    assert b.weight("GET", "/fapi/v1/premiumIndex", {}) == 10
    assert a.weight("GET", "/fapi/v1/premiumIndex", {}) == 1
    assert b.weight("GET", "/fapi/v1/ticker/24hr", {}) == 40
    assert b.weight("GET", "/fapi/v1/openOrders", {}) == 40
    assert b.weight("GET", "/fapi/v1/openAlgoOrders", {"symbol": "X"}) == 1
    assert b.weight("POST", "/fapi/v1/order", {}) == 0
    assert b.weight("POST", "/fapi/v1/algoOrder", {}) == 0
    assert a.weight("post", "/fapi/v1/order", {}) == 1
    assert b.weight("GET", "/fapi/v2/balance", {}) == 5
    assert a.weight("GET", "/fapi/v4/account", {}) == 5
    assert b.weight("DELETE", "/fapi/v1/order", {}) == 1


async def test_throttles_before_the_limit_and_resumes_next_minute() -> None:
    gov, clock, events = make(100)  # budget = 90 with the 10 % margin
    await gov.acquire(40)
    await gov.acquire(40)
    assert clock.now_ms() == T0  # both fitted, no waiting
    assert gov.snapshot().used_weight == 80
    await gov.acquire(40)  # 120 > 90: waits for the next minute window
    assert MINUTE_END <= clock.now_ms() < MINUTE_END + 100
    assert gov.snapshot().used_weight == 40
    assert [e.kind for e in events] == ["throttled"]


async def test_used_weight_header_is_authoritative_and_case_insensitive() -> None:
    gov, clock, _ = make(100)
    w = await gov.acquire(1)
    gov.observe(200, {"x-mbx-used-weight-1m": "85"}, window=w)  # another process used the IP too
    assert gov.snapshot().used_weight == 85
    await gov.acquire(5)
    assert clock.now_ms() == T0
    gov.observe(200, {"X-MBX-USED-WEIGHT-1M": "89"}, window=w)
    await gov.acquire(5)  # 94 > 90
    assert clock.now_ms() >= MINUTE_END


async def test_header_from_a_previous_window_is_ignored() -> None:
    gov, clock, _ = make(100)
    w = await gov.acquire(1)
    clock.set(MINUTE_END + 1)
    gov.observe(200, {"X-MBX-USED-WEIGHT-1M": "88"}, window=w)  # answer of last minute's request
    assert gov.snapshot().used_weight == 0


async def test_429_pauses_everybody_honouring_retry_after() -> None:
    gov, clock, events = make()
    gov.observe(429, {"Retry-After": "3"})
    assert events[-1].kind == "rate_limited"
    await gov.acquire(1)
    assert T0 + 3000 <= clock.now_ms() < T0 + 3100


async def test_429_without_retry_after_backs_off_exponentially() -> None:
    gov, clock, _ = make()
    gov.observe(429, {})
    await gov.acquire(1)
    t1 = clock.now_ms()
    assert T0 + 1000 <= t1 < T0 + 1100
    gov.observe(429, {})
    await gov.acquire(1)
    assert t1 + 2000 <= clock.now_ms() < t1 + 2100
    gov.observe(200, {})  # success resets the exponent
    gov.observe(429, {})
    t2 = clock.now_ms()
    await gov.acquire(1)
    assert t2 + 1000 <= clock.now_ms() < t2 + 1100


async def test_long_cooldown_raises_rate_limited_instead_of_hanging() -> None:
    gov, clock, _ = make(max_wait_s=10)
    gov.observe(429, {"retry-after": "30"})
    with pytest.raises(RateLimited) as ei:
        await gov.acquire(1)
    assert ei.value.retry_after == pytest.approx(30.0)
    assert clock.now_ms() == T0


async def test_418_stops_all_requests_until_the_ban_ends() -> None:
    gov, clock, events = make()
    until = T0 + 120_000
    gov.observe(418, {}, message=f"Way too many requests; IP banned until {until}.")
    assert events[-1] == VenueEvent("ip_banned", events[-1].message, until_ms=until)
    for _ in range(3):
        with pytest.raises(IpBanned) as ei:
            await gov.acquire(1)
        assert ei.value.until_ms == until
    assert clock.now_ms() == T0  # nothing waited, nothing charged
    assert gov.snapshot().banned_until_ms == until and gov.snapshot().used_weight == 0
    clock.set(until)
    await gov.acquire(1)
    assert events[-1].kind == "ban_over"
    assert gov.banned_until() is None


async def test_418_with_retry_after_only() -> None:
    gov, _, _ = make()
    gov.observe(418, {"Retry-After": "300"}, message="Way too many requests")
    assert gov.banned_until() == T0 + 300_000


async def test_order_limits_count_submits() -> None:
    gov, clock, _ = make(2400, order_limit_10s=10, order_limit_1m=1200)  # 9 per 10 s with margin
    for _ in range(9):
        await gov.acquire(0, order=True)
    assert clock.now_ms() == T0
    await gov.acquire(0, order=True)
    assert clock.now_ms() >= T0 + 10_000  # T0 is on a 10 s boundary
    gov.observe(200, {"X-MBX-ORDER-COUNT-10S": "9"}, window=None)
    assert gov.snapshot().orders_10s == 9


async def test_concurrent_tasks_share_one_budget() -> None:
    gov, _, _ = make(100)
    charged: dict[int, int] = defaultdict(int)

    async def worker() -> None:
        for _ in range(4):
            w = await gov.acquire(5)
            charged[w] += 5
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(25)))
    assert sum(charged.values()) == 25 * 4 * 5
    assert max(charged.values()) <= 90
    assert len(charged) >= 6  # 500 weight at <= 90 per minute needs at least 6 windows


def test_apply_rate_limits_from_exchange_info() -> None:
    gov, _, _ = make()
    gov.apply_rate_limits([RateLimit("REQUEST_WEIGHT", 60_000, 6000), RateLimit("ORDERS", 10_000, 50),
                           RateLimit("ORDERS", 60_000, 700), RateLimit("RAW_REQUESTS", 300_000, 9)])
    snap = gov.snapshot()
    assert (snap.weight_limit, snap.order_limit_10s, snap.order_limit_1m) == (6000, 50, 700)


def test_parse_retry_after() -> None:
    assert parse_retry_after("7", T0) == 7.0
    assert parse_retry_after(None, T0) is None
    assert parse_retry_after("soon", T0) is None
    # HTTP date 90 s after T0 (T0 = 2023-11-14 22:13:20 UTC)
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:50 GMT", T0) == pytest.approx(90.0)


def test_shared_governor_is_one_per_host() -> None:
    a = shared_governor("test-host:1", RateLimitGovernor)
    b = shared_governor("test-host:1", RateLimitGovernor)
    c = shared_governor("test-host:2", RateLimitGovernor)
    assert a is b and a is not c


def test_rejects_bad_margin() -> None:
    with pytest.raises(ValueError):
        RateLimitGovernor(weight_limit=10, safety_margin=1.0)
