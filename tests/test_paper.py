"""PaperExchange: the feed-driven paper venue under a simulated clock, and live-price paper over
real HTTP against the loopback exchange, proving that no signed request leaves the process even
with API keys configured."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np
import pytest

from _venue_fixtures import client
from mraster_tui.config import Settings
from mraster_tui.engine.clock import ScaledClock, SimClock, WallClock
from mraster_tui.engine.sim.exchange import SimExchange, SlippageModel
from mraster_tui.engine.sim.market import ReplayMarket
from mraster_tui.engine.sim.paper import PaperExchange, ensure_public_only, sim_options
from mraster_tui.engine.sim.server import LoopbackExchange
from mraster_tui.engine.types import (
    Candles,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    SymbolFilters,
    SymbolInfo,
    interval_ms,
)

pytestmark = pytest.mark.timeout(60)

T0 = 1_704_067_200_000
M = 60_000
SYM = "TESTUSDT"


def replay(rows, interval="1m", spread=0.0):
    arr = np.array([(r, r, r, r) if isinstance(r, (int, float)) else r for r in rows], dtype=float)
    n = len(arr)
    c = Candles((T0 + np.arange(n) * interval_ms(interval)).astype(np.int64), arr[:, 0], arr[:, 1], arr[:, 2],
                arr[:, 3], np.full(n, 1000.0), interval, True)
    f = SymbolFilters(tick_size=D("0.01"), min_price=D("0.01"), max_price=D("100000"), step_size=D("0.001"),
                      min_qty=D("0.001"), max_qty=D("1000"), market_step_size=D("0.001"), market_min_qty=D("0.001"),
                      market_max_qty=D("100"), min_notional=D("5"))
    info = SymbolInfo(SYM, "TEST", "USDT", "TRADING", "PERPETUAL", f, price_precision=2, quantity_precision=3)
    return ReplayMarket({SYM: c}, infos={SYM: info}, spread=spread, warmup_ms=0)


def market(cid, side=Side.BUY, qty="1"):
    return OrderRequest(SYM, side, OrderType.MARKET, cid, quantity=D(qty))


def stop(cid, price, side=Side.SELL, working_type="CONTRACT_PRICE"):
    return OrderRequest(SYM, side, OrderType.STOP_MARKET, cid, stop_price=D(str(price)), close_position=True,
                        working_type=working_type)


def paper(rows, **sim_kw):
    clock = SimClock(T0)
    seen: list = []
    sim = SimExchange(replay(rows), slippage=SlippageModel(D(0)), **sim_kw)
    return PaperExchange(sim, clock=clock, on_event=seen.append), clock, seen


# -- feed-driven -----------------------------------------------------------------------------

async def test_feed_driven_paper_follows_the_clock_and_reports_events():
    ex, clock, seen = paper([100, 100, 100, (100, 100, 95, 96), 96, 96])
    assert ex.simulated and ex.capabilities.name == "paper" and not ex.capabilities.conditional_via_algo
    assert await ex.server_time() == T0
    o = await ex.place_order(market("e1"))
    assert o.status is OrderStatus.FILLED and [e.kind for e in seen] == ["fill"]
    await ex.place_order(stop("sl", 98))
    clock.advance(120)  # two flat minutes: nothing happens
    (p,) = await ex.positions()
    assert p.amount == 1 and p.entry_price == 100
    clock.set(T0 + 4 * M)  # candle 3 dips to 95: the stop fills at 98 on the way
    assert await ex.positions() == [] and await ex.open_orders() == []
    assert [(t.price, t.time) for t in await ex.user_trades(SYM, start_ms=T0)] == [
        (D("100.00"), T0), (D("98.00"), T0 + 3 * M + 8_000)]  # 100 -> 95 over 20 s crosses 98 after 8 s
    assert [e.kind for e in seen] == ["fill", "trigger", "fill"]
    assert [e.kind for e in ex.drain_events()] == ["fill", "trigger", "fill"] and ex.drain_events() == []


async def test_place_order_is_idempotent_per_client_id():
    ex, _, _ = paper([100, 100])
    first = await ex.place_order(market("e1"))
    again = await ex.place_order(market("e1"))
    assert again.order_id == first.order_id and len(await ex.user_trades(SYM)) == 1
    lim = OrderRequest(SYM, Side.BUY, OrderType.LIMIT, "l1", quantity=D(1), price=D(90), time_in_force="GTC")
    a, b = await ex.place_order(lim), await ex.place_order(lim)
    assert a.order_id == b.order_id and [o.client_id for o in await ex.open_orders(SYM)] == ["l1"]


async def test_unknown_orders_are_none_and_cancels_work():
    ex, _, _ = paper([100, 100])
    assert await ex.get_order(SYM, "nope") is None and await ex.cancel_order(SYM, "nope") is None
    await ex.place_order(OrderRequest(SYM, Side.BUY, OrderType.LIMIT, "l1", quantity=D(1), price=D(90),
                                      time_in_force="GTC"))
    assert (await ex.get_order(SYM, "l1")).status is OrderStatus.NEW
    assert (await ex.cancel_order(SYM, "l1")).status is OrderStatus.CANCELED
    assert await ex.cancel_order(SYM, "l1") is None  # already closed
    await ex.place_order(stop("sl", 80))
    await ex.cancel_all(SYM)
    assert await ex.open_orders() == []
    assert await ex.set_leverage(SYM, 7) == 7 and ex.sim.leverage(SYM) == 7


async def test_funding_income_and_balance():
    clock = SimClock(T0)
    ex = PaperExchange(SimExchange(replay([100] * 10, interval="1h"), taker_fee=D(0), funding_rate=D("0.0001")),
                       clock=clock)
    await ex.place_order(market("e1", qty="2"))
    clock.set(T0 + 9 * 3_600_000)
    assert await ex.funding_income(SYM, start_ms=T0) == D("-0.02")  # 2 * 100 * 0.0001 at 08:00
    b = await ex.balance()
    assert b.asset == "USDT" and b.wallet_balance == D("9999.98")
    assert (await ex.balance("BTC")).wallet_balance == 0


async def test_market_data_comes_from_the_sim_at_the_clock():
    ex, clock, _ = paper([(100 + i, 100.5 + i, 99.5 + i, 101 + i) for i in range(10)])
    clock.set(T0 + 7 * M + 30_000)
    k = await ex.klines(SYM, "5m", 10)
    assert list(k.open_time) == [T0, T0 + 5 * M] and not k.last_closed and k.close[-1] == 107.0
    assert (await ex.book_tickers())[SYM].bid == D("107.00")
    assert SYM in (await ex.exchange_info()).symbols and SYM in await ex.tickers_24h()
    assert (await ex.premium_index())[SYM].mark_price == D("107")
    assert await ex.funding_history(SYM) == []


async def test_demo_and_settings():
    s = Settings.defaults().replace(paper_balance=2500.0, taker_fee=0.0004, slippage_bps=2.0, demo_symbols=5,
                                    demo_seed=3)
    opts = sim_options(s)
    assert opts["balance"] == D("2500.0") and opts["taker_fee"] == D("0.0004") and opts["slippage"].bps == D("2.0")
    ex = PaperExchange.demo(s)
    assert isinstance(ex.clock, ScaledClock) and ex.clock.speed == s.demo_speed
    info = await ex.exchange_info()
    assert list(info.symbols) == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]
    assert (await ex.balance()).wallet_balance == 2500
    k = await ex.klines("BTCUSDT", "30m", 120)  # enough history for the bot's indicators at once
    assert len(k) == 120
    other = PaperExchange.demo(s, clock=SimClock(ex.sim.now_ms))  # same seed: the same market
    a = other.sim.feed.candles("BTCUSDT", "5m", other.sim.feed.start_ms, other.sim.now_ms)
    b = ex.sim.feed.candles("BTCUSDT", "5m", ex.sim.feed.start_ms, other.sim.now_ms)
    assert np.array_equal(a.close, b.close)


# -- live-price paper: no signed request, ever ---------------------------------------------------

class _SneakyData:
    async def book_tickers(self):
        return {}

    async def place_order(self, req):  # pragma: no cover - must never be reached
        raise AssertionError


async def test_paper_refuses_anything_that_can_sign():
    rest = client("http://127.0.0.1:9")  # keys set; never connected
    try:
        with pytest.raises(TypeError, match="public-only"):
            ensure_public_only(rest)
        with pytest.raises(TypeError, match="place_order"):
            ensure_public_only(_SneakyData())
        ensure_public_only(rest.public_only())  # the public view passes
        with pytest.raises(TypeError):
            await PaperExchange.live(rest, clock=WallClock())
        with pytest.raises(TypeError, match="LiveFeed"):
            PaperExchange(SimExchange(replay([100, 100])), clock=WallClock(), public=rest.public_only())
    finally:
        await rest.close()


async def test_live_paper_with_keys_configured_sends_no_signed_request():
    # the venue starts at minute 10 with ten minutes of history: 100 until minute 20, then 90
    venue_sim = SimExchange(replay([100] * 20 + [90] * 50, spread=0.0002), start_ms=T0 + 10 * M)
    with LoopbackExchange(venue_sim, venue="binance") as handle:
        rest = client(handle.base_url)  # carries the test API key and secret
        try:
            ex = await PaperExchange.live(rest.public_only(), clock=WallClock(), refresh_s=0.0)
            assert ex.live_prices and SYM in (await ex.exchange_info()).symbols
            assert len(await ex.klines(SYM, "1m", 5)) == 5  # forwarded to the venue
            assert await ex.set_leverage(SYM, 5) == 5
            entry = await ex.place_order(market("e1"))
            assert entry.status is OrderStatus.FILLED and D(100) < entry.avg_price < D("100.1")
            await ex.place_order(stop("sl", 95, working_type="MARK_PRICE"))
            assert len(await ex.positions()) == 1 and len(await ex.open_orders(SYM)) == 1
            handle.advance(10 * M)  # the venue's price drops to 90
            assert await ex.positions() == []  # the next call sees 90: the stop fires at that price
            exit_fill = (await ex.user_trades(SYM))[-1]
            assert D("89.9") < exit_fill.price < D(90)  # the observed price minus half spread and 1 bps
            assert [e.kind for e in ex.drain_events()] == ["fill", "trigger", "fill"]
            # nothing happened on the venue, and nothing signed or keyed reached it
            with handle.lock:
                assert handle.sim.positions() == [] and handle.sim.all_orders() == []
            log = handle.requests()
            paths = {r["path"] for r in log}
            assert {"/fapi/v1/exchangeInfo", "/fapi/v1/ticker/bookTicker", "/fapi/v1/premiumIndex",
                    "/fapi/v1/klines"} <= paths
            assert not [r for r in log if r["signed"] or r["api_key"]]
            # the same client can sign (the keys are there): the request log would show it
            await rest.balance()
            assert {r["path"] for r in handle.requests() if r["signed"]} == {"/fapi/v2/balance"}
        finally:
            await rest.close()


# -- the paper account survives restarts ------------------------------------------------------

async def test_live_paper_account_is_restored_after_a_restart(tmp_path):
    import json

    from mraster_tui.engine.events import MemorySink
    from mraster_tui.engine.factory import PaperAccount

    venue_sim = SimExchange(replay([100] * 20 + [90] * 50, spread=0.0002), start_ms=T0 + 10 * M)
    with LoopbackExchange(venue_sim, venue="binance") as handle:
        public = client(handle.base_url)
        try:
            ex = await PaperExchange.live(public.public_only(), clock=WallClock(), refresh_s=0.0)
            await ex.place_order(market("e1", qty="2"))
            await ex.place_order(stop("sl", 95))
            wallet = (await ex.balance()).wallet_balance
            account = PaperAccount(tmp_path / "paper-account-state.json", MemorySink(), WallClock())
            account.exchange = ex
            account.save()
            saved = json.loads((tmp_path / "paper-account-state.json").read_text())
            # a new process: same public data, the account comes back from the file
            again = await PaperExchange.live(public.public_only(), clock=WallClock(), refresh_s=0.0,
                                             restore=PaperAccount(account.path, MemorySink(), WallClock()).load())
            [pos] = await again.positions()
            assert pos.symbol == SYM and pos.amount == D("2")
            assert [o.client_id for o in await again.open_orders(SYM)] == ["sl"]
            assert (await again.balance()).wallet_balance == wallet
            assert again.account_state()["wallet"] == saved["wallet"]
            # and the restored stop still protects it: the venue drops to 90, the stop fires
            handle.advance(10 * M)
            assert await again.positions() == []
        finally:
            await public.close()


def test_unreadable_paper_account_is_moved_aside_not_dropped(tmp_path):
    from mraster_tui.engine.events import EventKind, MemorySink
    from mraster_tui.engine.factory import PaperAccount

    path = tmp_path / "paper-account-state.json"
    path.write_text('{"version": 1, "wallet": "10')  # truncated by a crash
    sink = MemorySink()
    assert PaperAccount(path, sink, WallClock()).load() is None
    assert not path.exists()
    [aside] = list(tmp_path.glob("paper-account-state.json.corrupt-*"))
    assert aside.read_text() == '{"version": 1, "wallet": "10'
    [err] = sink.of(EventKind.ERROR)
    assert "kept as" in err.message and "\n" not in err.message
