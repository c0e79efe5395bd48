"""RestExchange over real HTTP against the loopback exchange (binance and aster dialects)."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from decimal import Decimal
from pathlib import Path

import pytest
from _venue_fixtures import (
    HEX64,
    SHORT_TIMEOUT,
    TEST_API_KEY,
    TEST_API_SECRET,
    client,
    closing,
    fast_settings,
    min_order,
    requests,
    reset_server,
    start_server,
    tick_round,
)

from mraster_tui.engine.clock import SimClock
from mraster_tui.engine.errors import (
    AuthError,
    ConditionalNotSupported,
    IpBanned,
    RateLimited,
    UnknownOutcome,
    VenueUnavailable,
)
from mraster_tui.engine.types import OrderRequest, OrderStatus, OrderType, RateLimit, Side
from mraster_tui.engine.venue.base import ASTER, BINANCE
from mraster_tui.engine.venue.rest import (
    TIME_SYNC_INTERVAL_S,
    PublicRestView,
    parse_algo_order,
    parse_exchange_info,
    parse_fill,
    parse_order,
    parse_position,
    resolve_venue,
)

pytestmark = pytest.mark.timeout(60)

SYM = "BTCUSDT"


@pytest.fixture(scope="module")
def bn():
    yield from closing(start_server("binance"))


@pytest.fixture(scope="module")
def aster():
    yield from closing(start_server("aster"))


@pytest.fixture
def srv(bn):
    reset_server(bn)
    return bn


@pytest.fixture
async def ex(srv):
    events: list = []
    e = client(srv.base_url, events=events)
    e.events = events  # type: ignore[attr-defined]
    yield e
    await e.close()


def test_resolve_venue_by_host() -> None:
    assert resolve_venue("https://fapi.binance.com")[0] is BINANCE
    assert resolve_venue("https://testnet.binancefuture.com")[0] is BINANCE
    assert resolve_venue("https://fapi.asterdex.com")[0] is ASTER
    caps, why = resolve_venue("http://127.0.0.1:5000")
    assert caps is BINANCE and "neither" in why
    assert resolve_venue("http://127.0.0.1:5000", "aster")[0] is ASTER
    with pytest.raises(ValueError, match="unknown venue"):
        resolve_venue("https://x", "kraken")
    with pytest.raises(ValueError, match="base URL"):
        client("fapi.binance.com")


async def test_public_endpoints_send_no_key(srv, ex) -> None:
    info = await ex.exchange_info()
    assert SYM in info.symbols and info.symbols[SYM].filters.tick_size > 0
    assert ex.rate_limit_snapshot().weight_limit == 2400  # taken from exchangeInfo
    now = await ex.server_time()
    candles = await ex.klines(SYM, "5m", 50)
    assert len(candles) == 50
    assert not candles.last_closed  # the venue's last row is the forming candle
    assert int(candles.open_time[-1]) <= now < int(candles.open_time[-1]) + 300_000
    books = await ex.book_tickers()
    prem = await ex.premium_index()
    tick = await ex.tickers_24h()
    assert set(books) == set(prem) == set(tick) == set(info.symbols)
    assert books[SYM].bid < books[SYM].ask
    funding = await ex.funding_history(SYM, limit=5)
    assert len(funding) == 5 and all(f.symbol == SYM for f in funding)
    assert [f.funding_time for f in funding] == sorted(f.funding_time for f in funding)
    log = srv.requests()
    assert log and not any(r["signed"] or r["api_key"] for r in log)
    assert ex.rate_limit_snapshot().used_weight >= 1 + 1 + 1 + 5 + 10 + 40  # header-fed


async def test_signed_read_and_bad_signature(srv, ex) -> None:
    bal = await ex.balance("USDT")
    assert bal.wallet_balance == Decimal("10000")
    r = requests(srv, "/fapi/v2/balance")[-1]
    assert r["signed"] and r["api_key"] and r["status"] == 200
    assert r["params"]["recvWindow"] == "5000"
    bad = client(srv.base_url, secret="f" * 64)
    try:
        with pytest.raises(AuthError) as ei:
            await bad.balance()
        assert ei.value.code == -1022
        assert "f" * 64 not in str(ei.value)
    finally:
        await bad.close()
    unknown = client(srv.base_url, key="A" * 64)
    try:
        with pytest.raises(AuthError) as ei:
            await unknown.positions()
        assert ei.value.code == -2015 and ei.value.http_status == 401
    finally:
        await unknown.close()
    nokey = client(srv.base_url, key=None, secret=None)
    try:
        with pytest.raises(AuthError, match="needs an API key"):
            await nokey.balance()
    finally:
        await nokey.close()


async def test_invalid_timestamp_resyncs_and_retries_once(srv, ex) -> None:
    await ex.balance()  # synced at start
    srv.control(skew_ms=30_000)  # the venue's clock jumps 30 s ahead
    srv.clear_requests()
    bal = await ex.balance()
    assert bal.wallet_balance > 0
    seen = [(r["path"], r["status"], r["code"]) for r in srv.requests()]
    assert seen == [("/fapi/v2/balance", 400, -1021), ("/fapi/v1/time", 200, None), ("/fapi/v2/balance", 200, None)]
    assert 29_000 < ex.time_offset_ms < 31_000
    assert [e.kind for e in ex.events] == ["time_sync"]


async def test_time_offset_is_applied_and_refreshed_periodically(srv) -> None:
    server_now = srv.server_time()
    clock = SimClock(server_now - 3_600_000)  # this machine's clock is an hour behind
    ex = client(srv.base_url, clock=clock)
    try:
        await ex.balance()
        assert 3_590_000 < ex.time_offset_ms < 3_610_000
        clock.advance(TIME_SYNC_INTERVAL_S + 1)  # local time jumps: the old offset is now wrong
        srv.clear_requests()
        await ex.balance()
        assert [(r["path"], r["status"]) for r in srv.requests()] == [("/fapi/v1/time", 200),
                                                                      ("/fapi/v2/balance", 200)]
        assert abs(ex.time_offset_ms - (3_600_000 - (TIME_SYNC_INTERVAL_S + 1) * 1000)) < 10_000
    finally:
        await ex.close()


async def test_reads_retry_on_5xx_then_give_up(srv, ex) -> None:
    srv.fault("error", path="/fapi/v1/klines", count=2, status=503)
    candles = await ex.klines(SYM, "5m", 10)
    assert len(candles) == 10
    assert [r["status"] for r in requests(srv, "/fapi/v1/klines")] == [503, 503, 200]
    srv.clear_requests()
    srv.fault("error", path="/fapi/v1/klines", count=3, status=502)
    with pytest.raises(VenueUnavailable, match="after 3 attempts"):
        await ex.klines(SYM, "5m", 10)
    assert len(requests(srv, "/fapi/v1/klines")) == 3


async def test_reads_retry_on_timeout_and_html(srv, ex) -> None:
    short = client(srv.base_url, settings=fast_settings(http_timeout=SHORT_TIMEOUT))
    try:
        srv.fault("delay", path="/fapi/v2/positionRisk", count=1, ms=1500)
        assert await short.positions() == []
        for _ in range(40):  # the delayed first attempt is logged when the server finishes it
            if len(requests(srv, "/fapi/v2/positionRisk")) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(requests(srv, "/fapi/v2/positionRisk")) == 2  # timed out once, retried once
    finally:
        await short.close()
    srv.fault("garbage", path="/fapi/v1/ticker/bookTicker", count=1, body="html", status=502)
    assert SYM in await ex.book_tickers()
    srv.fault("garbage", path="/fapi/v1/premiumIndex", count=3, body="html", status=200)
    with pytest.raises(VenueUnavailable, match="HTML page instead of JSON"):
        await ex.premium_index()


async def test_lost_response_after_accept_gives_exactly_one_order(srv, ex) -> None:
    qty, mark, _ = await min_order(ex, SYM)
    srv.fault("drop", path="/fapi/v1/order", method="POST", count=1)  # accepted, answer lost
    req = OrderRequest(SYM, Side.BUY, OrderType.MARKET, "t-lost-1", quantity=qty)
    order = await ex.place_order(req)
    assert order.client_id == "t-lost-1" and order.status is OrderStatus.FILLED
    assert len(requests(srv, "/fapi/v1/order", "POST")) == 1  # never resent
    pos = [p for p in await ex.positions() if p.symbol == SYM]
    assert len(pos) == 1 and pos[0].amount == qty  # one fill, not two
    assert "order_recovered" in [e.kind for e in ex.events]
    # the 503 "Unknown error" variant on a resting order: still exactly one open order
    _, _, f = await min_order(ex, SYM)
    price = tick_round(mark * Decimal("0.97"), f.tick_size)
    srv.fault("unknown", path="/fapi/v1/order", method="POST", count=1)
    limit = OrderRequest(SYM, Side.BUY, OrderType.LIMIT, "t-lost-2", quantity=qty, price=price)
    got = await ex.place_order(limit)
    assert got.status is OrderStatus.NEW and got.time_in_force == "GTC" and got.price == price
    assert [o.client_id for o in await ex.open_orders(SYM)].count("t-lost-2") == 1
    # the answer comes after the client's timeout
    short = client(srv.base_url, settings=fast_settings(http_timeout=SHORT_TIMEOUT))
    try:
        srv.fault("delay", path="/fapi/v1/order", method="POST", count=1, ms=1500, when="after")
        late = OrderRequest(SYM, Side.BUY, OrderType.LIMIT, "t-lost-3", quantity=qty, price=price)
        assert (await short.place_order(late)).client_id == "t-lost-3"
    finally:
        await short.close()
    assert [o.client_id for o in await ex.open_orders(SYM)].count("t-lost-3") == 1
    assert len(requests(srv, "/fapi/v1/order", "POST")) == 3
    await ex.cancel_all(SYM)
    await ex.place_order(OrderRequest(SYM, Side.SELL, OrderType.MARKET, "t-lost-close", quantity=qty,
                                      reduce_only=True))


async def test_order_rejected_before_processing_is_resent_once(srv, ex) -> None:
    qty, mark, f = await min_order(ex, SYM)
    price = tick_round(mark * Decimal("0.96"), f.tick_size)
    srv.fault("error", path="/fapi/v1/order", method="POST", count=1, status=503)
    req = OrderRequest(SYM, Side.BUY, OrderType.LIMIT, "t-resend-1", quantity=qty, price=price)
    order = await ex.place_order(req)
    assert order.status is OrderStatus.NEW
    posts = requests(srv, "/fapi/v1/order", "POST")
    assert [p["status"] for p in posts] == [503, 200]
    assert [r["status"] for r in requests(srv, "/fapi/v1/order", "GET")] == [400]  # looked up: -2013
    assert [o.client_id for o in await ex.open_orders(SYM)].count("t-resend-1") == 1
    # a duplicate submit with the same client id returns the existing order (-4116)
    again = await ex.place_order(req)
    assert again.order_id == order.order_id
    assert requests(srv, "/fapi/v1/order", "POST")[-1]["code"] == -4116
    assert [o.client_id for o in await ex.open_orders(SYM)].count("t-resend-1") == 1
    assert (await ex.cancel_order(SYM, "t-resend-1")).status is OrderStatus.CANCELED
    assert await ex.cancel_order(SYM, "t-resend-1") is None
    assert await ex.get_order(SYM, "no-such-order") is None


async def test_unknown_outcome_when_the_lookup_fails_too(srv, ex) -> None:
    qty, mark, f = await min_order(ex, SYM)
    price = tick_round(mark * Decimal("0.95"), f.tick_size)
    srv.fault("unknown", path="/fapi/v1/order", method="POST", count=1, code=-1007)
    srv.fault("error", path="/fapi/v1/order", method="GET", count=3, status=503)
    req = OrderRequest(SYM, Side.BUY, OrderType.LIMIT, "t-unknown-1", quantity=qty, price=price)
    with pytest.raises(UnknownOutcome, match="query it again before resending"):
        await ex.place_order(req)
    assert len(requests(srv, "/fapi/v1/order", "POST")) == 1  # not resent blindly
    assert (await ex.get_order(SYM, "t-unknown-1")).status is OrderStatus.NEW  # it was placed
    await ex.cancel_all(SYM)


async def test_429_backs_off_with_retry_after(srv, ex) -> None:
    srv.fault("429", path="/fapi/v1/klines", count=1, retry_after=1)
    await ex.klines(SYM, "5m", 5)
    t = [r["time"] for r in requests(srv, "/fapi/v1/klines")]
    assert [r["status"] for r in requests(srv, "/fapi/v1/klines")] == [429, 200]
    assert t[1] - t[0] >= 950  # Retry-After honoured
    assert "rate_limited" in [e.kind for e in ex.events]
    # an order refused with 429 was not placed: it is reported, not looked up or resent
    qty, _, _ = await min_order(ex, SYM)
    srv.fault("429", path="/fapi/v1/order", method="POST", count=1, retry_after=1)
    with pytest.raises(RateLimited):
        await ex.place_order(OrderRequest(SYM, Side.BUY, OrderType.MARKET, "t-429", quantity=qty))
    assert requests(srv, "/fapi/v1/order", "GET") == []


async def test_418_stops_every_request_until_the_ban_ends(srv, ex) -> None:
    srv.fault("418", path="/fapi/v1/klines", count=1, retry_after=30)
    with pytest.raises(IpBanned) as ei:
        await ex.klines(SYM, "5m", 5)
    assert ei.value.until_ms > 0
    assert [e.kind for e in ex.events if e.kind == "ip_banned"] == ["ip_banned"]
    sent = len(srv.requests())
    for call in (ex.balance(), ex.klines(SYM, "5m", 5), ex.book_tickers()):
        with pytest.raises(IpBanned):
            await call
    assert len(srv.requests()) == sent  # nothing left the process during the ban
    assert ex.rate_limit_snapshot().banned_until_ms == ei.value.until_ms


async def test_governor_throttles_before_the_venue_limit(srv) -> None:
    srv.control(weight_limit=30)
    ex = client(srv.base_url, max_wait_s=0.2)
    try:
        await ex.exchange_info()  # learns the 30/min limit -> budget 27
        assert ex.rate_limit_snapshot().weight_limit == 30
        with pytest.raises(RateLimited, match="next request allowed"):
            for _ in range(40):
                await ex.klines(SYM, "5m", 5)  # weight 1 each
        assert all(r["status"] == 200 for r in srv.requests())  # the venue never had to say 429
        assert srv.control()["used_weight_1m"] <= 27
    finally:
        await ex.close()


async def test_binance_stop_goes_to_the_algo_endpoint(srv, ex) -> None:
    _, mark, f = await min_order(ex, SYM)
    stop = tick_round(mark * Decimal("0.9"), f.tick_size)
    req = OrderRequest(SYM, Side.SELL, OrderType.STOP_MARKET, "t-algo-sl", stop_price=stop, close_position=True)
    order = await ex.place_order(req)
    assert order.is_algo and order.status is OrderStatus.NEW and order.stop_price == stop
    posts = [(r["method"], r["path"]) for r in srv.requests() if r["method"] == "POST"]
    assert posts == [("POST", "/fapi/v1/algoOrder")]
    p = requests(srv, "/fapi/v1/algoOrder", "POST")[0]["params"]
    assert p["algoType"] == "CONDITIONAL" and p["triggerPrice"] == format(stop, "f")
    assert p["clientAlgoId"] == "t-algo-sl" and "stopPrice" not in p and "newClientOrderId" not in p
    opened = [o for o in await ex.open_orders(SYM) if o.client_id == "t-algo-sl"]
    assert len(opened) == 1 and opened[0].is_algo and opened[0].type is OrderType.STOP_MARKET
    assert (await ex.get_order(SYM, "t-algo-sl", conditional=True)).order_id == order.order_id
    cancelled = await ex.cancel_order(SYM, "t-algo-sl", conditional=True)
    assert cancelled is not None and cancelled.status is OrderStatus.CANCELED
    assert await ex.cancel_order(SYM, "t-algo-sl", conditional=True) is None


async def test_aster_stop_goes_to_the_order_endpoint(aster) -> None:
    reset_server(aster)
    ex = client(aster.base_url, venue="aster", caps=ASTER)
    try:
        assert ex.capabilities is ASTER
        _, mark, f = await min_order(ex, SYM)
        stop = tick_round(mark * Decimal("0.9"), f.tick_size)
        req = OrderRequest(SYM, Side.SELL, OrderType.STOP_MARKET, "t-aster-sl", stop_price=stop, close_position=True)
        order = await ex.place_order(req)
        assert not order.is_algo and order.stop_price == stop
        posts = requests(aster, method="POST")
        assert [r["path"] for r in posts] == ["/fapi/v1/order"]
        assert posts[0]["params"]["stopPrice"] == format(stop, "f")
        assert posts[0]["params"]["newClientOrderId"] == "t-aster-sl"
        assert [o.client_id for o in await ex.open_orders(SYM)] == ["t-aster-sl"]
        assert not any(r["path"].startswith("/fapi/v1/algo") or r["path"] == "/fapi/v1/openAlgoOrders"
                       for r in aster.requests())
        perms = await ex.permissions()
        assert perms.source == "/fapi/v4/account" and perms.can_trade is True
        await ex.cancel_all(SYM)
        assert await ex.open_orders(SYM) == []
    finally:
        await ex.close()


async def test_aster_dialect_against_binance_is_a_typed_error(srv) -> None:
    ex = client(srv.base_url, venue="aster", caps=ASTER)
    try:
        _, mark, f = await min_order(ex, SYM)
        req = OrderRequest(SYM, Side.SELL, OrderType.STOP_MARKET, "t-4120", stop_price=tick_round(
            mark * Decimal("0.9"), f.tick_size), close_position=True)
        with pytest.raises(ConditionalNotSupported) as ei:
            await ex.place_order(req)
        assert ei.value.code == -4120
    finally:
        await ex.close()


async def test_account_calls(srv, ex) -> None:
    assert await ex.set_leverage(SYM, 3) == 3
    await ex.set_margin_type(SYM, "CROSSED")  # unchanged -> -4046 counts as success
    await ex.set_margin_type(SYM, "CROSSED")
    perms = await ex.permissions()
    assert perms.can_trade is True and perms.source == "/fapi/v2/account"
    qty, _, _ = await min_order(ex, SYM)
    o = await ex.place_order(OrderRequest(SYM, Side.BUY, OrderType.MARKET, "t-acct-1", quantity=qty))
    fills = await ex.user_trades(SYM, order_id=o.order_id)
    assert sum(f.qty for f in fills) == qty and all(f.order_id == o.order_id for f in fills)
    # a reduce-only stop with a quantity (the FastTP replacement leg) on the algo endpoint
    _, mark, f = await min_order(ex, SYM)
    sl = await ex.place_order(OrderRequest(SYM, Side.SELL, OrderType.STOP_MARKET, "t-acct-sl", quantity=qty,
                                           stop_price=tick_round(mark * Decimal("0.9"), f.tick_size),
                                           reduce_only=True))
    assert sl.is_algo and sl.reduce_only and sl.quantity == qty and not sl.close_position
    p = requests(srv, "/fapi/v1/algoOrder", "POST")[-1]["params"]
    assert (p["reduceOnly"], p["quantity"]) == ("true", format(qty, "f")) and "closePosition" not in p
    await ex.cancel_all(SYM)
    assert await ex.open_orders(SYM) == []
    await ex.place_order(OrderRequest(SYM, Side.SELL, OrderType.MARKET, "t-acct-2", quantity=qty, reduce_only=True))
    assert [p for p in await ex.positions() if p.symbol == SYM] == []
    with pytest.raises(ValueError, match="client id"):
        await ex.place_order(OrderRequest(SYM, Side.BUY, OrderType.MARKET, "bad id with spaces", quantity=qty))


async def test_public_view_cannot_sign(srv, ex) -> None:
    view = ex.public_only()
    assert isinstance(view, PublicRestView)
    for name in ("balance", "positions", "place_order", "cancel_order", "open_orders", "permissions", "_signed"):
        assert not hasattr(view, name)
    await view.klines(SYM, "5m", 5)
    await view.book_tickers()
    assert srv.requests() and not any(r["signed"] or r["api_key"] for r in srv.requests())
    assert view.rate_limit_snapshot() == ex.rate_limit_snapshot()  # one shared budget


async def test_no_secret_in_errors_or_logs(srv, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="mraster_tui.engine.venue")
    failures: list[BaseException] = []
    bad = client(srv.base_url, secret="e" * 64, settings=fast_settings(http_retries=0))
    good = client(srv.base_url, settings=fast_settings(http_retries=0, http_timeout=SHORT_TIMEOUT))
    try:
        for coro in (bad.balance(),):
            with pytest.raises(AuthError) as ei:
                await coro
            failures.append(ei.value)
        srv.fault("error", path="/fapi/v2/balance", count=1, status=500)
        with pytest.raises(VenueUnavailable) as ei2:
            await good.balance()
        failures.append(ei2.value)
        srv.fault("delay", path="/fapi/v1/openOrders", count=1, ms=1500)
        with pytest.raises(VenueUnavailable) as ei3:
            await good.open_orders(SYM)
        failures.append(ei3.value)
        qty, _, _ = await min_order(good, SYM)
        srv.fault("drop", path="/fapi/v1/order", method="POST", count=1)
        srv.fault("error", path="/fapi/v1/order", method="GET", count=1, status=503)
        with pytest.raises(UnknownOutcome) as ei4:
            await good.place_order(OrderRequest(SYM, Side.BUY, OrderType.MARKET, "t-redact", quantity=qty))
        await good.place_order(OrderRequest(SYM, Side.SELL, OrderType.MARKET, "t-redact-close", quantity=qty,
                                            reduce_only=True))
        failures.append(ei4.value)
    finally:
        await bad.close()
        await good.close()
    client_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mraster_tui.engine.venue"))
    assert "signature=***" in client_log  # signed requests were logged, redacted
    texts = [client_log, repr(good), repr(bad)]
    for exc in failures:
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for text in texts:
        assert TEST_API_KEY not in text and TEST_API_SECRET not in text and "e" * 64 not in text
        assert not HEX64.search(text), text


async def test_funding_income_sums_the_venues_funding_fees() -> None:
    with start_server("binance", symbols=2) as h:
        ex = client(h.base_url)
        try:
            qty, _, _ = await min_order(ex, SYM, Decimal("200"))
            start = await ex.server_time()
            await ex.place_order(OrderRequest(SYM, Side.BUY, OrderType.MARKET, "t-fund-1", quantity=qty))
            next_funding = (await ex.premium_index())[SYM].next_funding_time
            h.advance(next_funding - h.server_time() + 1000)  # past one funding time
            got = await ex.funding_income(SYM, start_ms=start)  # (resyncs after the clock jump)
            with h.lock:
                expected = h.sim.funding_income(SYM, start)
            assert got == expected and got != 0
            assert requests(h, "/fapi/v1/income")[-1]["params"]["incomeType"] == "FUNDING_FEE"
        finally:
            await ex.close()


# -- parsing the contract's wire samples (docs/exchange-samples) -------------------------------

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "docs" / "exchange-samples" / "nautilus_trader"


def sample(rel: str):
    p = SAMPLES / rel
    if not p.exists():
        pytest.skip(f"exchange samples not available ({p}); they ship with the development checkout")
    return json.loads(p.read_text())


HTTP_JSON = "crates/adapters/binance/test_data/futures/http_json/"
HTTP_RESP = "tests/integration_tests/adapters/binance/resources/http_responses/"


def test_parse_wire_samples() -> None:
    info = parse_exchange_info(sample(HTTP_RESP + "http_futures_market_exchange_info.json"))
    btc = info.symbols["BTCUSDT"]
    assert btc.filters.tick_size == Decimal("0.10") and btc.filters.step_size == Decimal("0.001")
    assert btc.filters.min_notional == Decimal("10") and btc.filters.multiplier_down == Decimal("0.5454")
    assert RateLimit("REQUEST_WEIGHT", 60_000, 6000) in info.rate_limits
    assert RateLimit("ORDERS", 10_000, 300) in info.rate_limits
    o = parse_order(sample(HTTP_JSON + "order_response.json"))
    assert (o.order_id, o.client_id, o.type, o.status, o.price, o.quantity) == (
        12345678, "testOrder123", OrderType.LIMIT, OrderStatus.NEW, Decimal("50000.00"), Decimal("0.001"))
    algo = parse_algo_order(sample(HTTP_JSON + "open_algo_orders.json")[0])  # "type", not "orderType"
    assert algo.is_algo and algo.type is OrderType.STOP_MARKET and algo.stop_price == Decimal("45000.00")
    assert algo.client_id == "test-algo-order-1" and algo.working_type == "MARK_PRICE"
    pos = parse_position(sample(HTTP_JSON + "position_risk.json")[0])
    assert (pos.amount, pos.leverage, pos.entry_price) == (Decimal("0.001"), 20, Decimal("50000.0"))
    fills = [parse_fill(t) for t in sample(HTTP_RESP + "http_futures_account_trades.json")]
    assert fills[0].trade_id == 82357626 and fills[0].commission == Decimal("0.00555670")
    assert fills[0].side is Side.SELL and not fills[0].maker


async def test_the_pool_holds_every_concurrent_scan_read_in_one_wave(srv) -> None:
    """The keep-alive pool is sized from fetch_concurrency: 64 market-data reads plus the two
    all-symbol reads of a scan all reach the venue at once (a pool of 32 connections would send
    them in three waves, each a full latency later)."""
    srv.control(latency_ms=600)
    e = client(srv.base_url, settings=fast_settings(fetch_concurrency=64))
    try:
        await e.sync_time()
        srv.clear_requests()
        await asyncio.gather(*(e.klines(SYM, "5m", 3) for _ in range(64)), e.book_tickers(), e.premium_index())
    finally:
        await e.close()
    served = [r["time"] for r in requests(srv) if r["status"] == 200]
    assert len(served) == 66
    # one wave: all were served within the same 600 ms wait (a second wave starts >= 600 ms later)
    assert max(served) - min(served) < 500


async def test_without_settings_the_client_uses_the_schema_defaults() -> None:
    """A client built without settings (or with a duck-typed object lacking some) gets the
    documented defaults, not numbers of its own that could drift from the schema."""
    from mraster_tui.config import Settings
    from mraster_tui.engine.venue.rest import POOL_HEADROOM, SHARD_CONNECTIONS, RestExchange

    d = Settings.defaults()
    e = RestExchange("http://127.0.0.1:9")
    try:
        assert e.recv_window == d.recv_window
        assert (e._core.retries, e._core.backoff, e._core.timeout) == (d.http_retries, d.http_backoff, d.http_timeout)
        assert len(e._core._clients) * SHARD_CONNECTIONS >= d.fetch_concurrency + POOL_HEADROOM
    finally:
        await e.close()
