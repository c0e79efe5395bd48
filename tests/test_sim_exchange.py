"""SimExchange: order types, triggers, fills, fees, funding, liquidation and every venue error.

Markets are hand-made 1m candles (ReplayMarket) so every expected price and time below is
worked out by hand in the comment next to it.  Unless a test says otherwise: no spread, no
slippage, taker 0.05 %, maker 0.02 %, leverage 20, price 100.
"""

from __future__ import annotations

import json
from decimal import Decimal as D

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mraster_tui.engine.errors import (
    DuplicateClientId,
    InsufficientMargin,
    MinNotionalError,
    PrecisionError,
    UnknownOrder,
    VenueRejected,
    WouldTrigger,
)
from mraster_tui.engine.sim.exchange import MAINT_TIERS, SimExchange, SlippageModel, maint_margin
from mraster_tui.engine.sim.market import ReplayMarket, SyntheticMarket
from mraster_tui.engine.types import (
    Candles,
    FundingRate,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    SymbolFilters,
    SymbolInfo,
    interval_ms,
)

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC (on the 8 h funding grid)
M = 60_000
SYM = "TESTUSDT"
BUY, SELL = Side.BUY, Side.SELL
MKT, LIM, STOP, TP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET


def info(tick="0.01", step="0.001", min_qty=None, max_qty="1000", market_max="100", min_notional="5"):
    mq = D(min_qty or step)
    f = SymbolFilters(tick_size=D(tick), min_price=D(tick), max_price=D("100000"), step_size=D(step), min_qty=mq,
                      max_qty=D(max_qty), market_step_size=D(step), market_min_qty=mq, market_max_qty=D(market_max),
                      min_notional=D(min_notional))
    return SymbolInfo(SYM, "TEST", "USDT", "TRADING", "PERPETUAL", f, price_precision=2, quantity_precision=3)


def make_sim(rows, *, interval="1m", spread=0.0, premium=0.0, funding=None, bps="0", sym_info=None,
             balance="10000", taker="0.0005", maker="0.0002", intrabar="conservative", funding_rate=None,
             feed_cls=ReplayMarket):
    """rows: a price (flat candle) or (open, high, low, close) per candle, from T0."""
    arr = np.array([(r, r, r, r) if isinstance(r, (int, float)) else r for r in rows], dtype=float)
    n = len(arr)
    ot = (T0 + np.arange(n) * interval_ms(interval)).astype(np.int64)
    c = Candles(ot, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], np.full(n, 1000.0), interval, True)
    feed = feed_cls({SYM: c}, {SYM: funding} if funding else None, infos={SYM: sym_info or info()},
                    spread=spread, premium=premium, warmup_ms=0)
    return SimExchange(feed, balance=D(balance), taker_fee=D(taker), maker_fee=D(maker),
                       slippage=SlippageModel(D(bps)), intrabar=intrabar, funding_rate=funding_rate)


def req(side, typ, cid, qty=None, **kw):
    return OrderRequest(SYM, side, typ, cid, quantity=None if qty is None else D(str(qty)), **kw)


def market(sim, side, qty, cid):
    return sim.place_order(req(side, MKT, cid, qty))


def stop(sim, side, price, cid, typ=STOP, **kw):
    if "qty" not in kw and not kw.get("reduce_only"):
        kw.setdefault("close_position", True)
    return sim.place_order(req(side, typ, cid, kw.pop("qty", None), stop_price=D(str(price)), **kw))


def limit(sim, side, qty, price, cid, tif="GTC", **kw):
    return sim.place_order(req(side, LIM, cid, qty, price=D(str(price)), time_in_force=tif, **kw))


def kinds(events):
    return [(e.kind, e.order.client_id if e.order else None) for e in events]


def code_of(excinfo) -> int:
    return excinfo.value.code


# -- MARKET -----------------------------------------------------------------------------------

def test_market_order_fills_at_book_with_taker_fee_and_binance_like_fill():
    sim = make_sim([100, 100])
    o = market(sim, BUY, 1, "e1")
    assert o.status is OrderStatus.FILLED and o.executed_qty == 1 and o.avg_price == D("100.00")
    (f,) = sim.user_trades(SYM)
    # commission = 100 * 1 * 0.0005 = 0.05; realizedPnl 0 on an opening fill
    assert (f.price, f.qty, f.quote_qty, f.commission, f.commission_asset) == (D("100.00"), 1, D("100.00"), D("0.05"), "USDT")
    assert f.realized_pnl == 0 and f.maker is False and f.order_id == o.order_id and f.time == T0
    (p,) = sim.positions()
    assert p.amount == 1 and p.entry_price == 100 and p.leverage == 20
    b = sim.balance()
    assert b.wallet_balance == D("9999.95")
    # available = wallet + upnl(0) - IM (1*100/20 = 5)
    assert b.available == D("9994.95")
    a = sim.account_summary()  # maintenance: 100 notional * 0.4 % (first tier)
    assert (a.position_initial_margin, a.maint_margin, a.margin_balance) == (5, D("0.4"), D("9999.95"))
    assert a.positions[SYM].notional == 100


def test_market_slippage_is_half_spread_plus_bps_rounded_against_the_order():
    sim = make_sim([100, 100], spread=0.002, bps="2")
    bt = sim.book_tickers()[SYM]
    # bid = floor(100 * 0.999) = 99.90, ask = ceil(100 * 1.001) = 100.10
    assert (bt.bid, bt.ask) == (D("99.90"), D("100.10"))
    # buy: ask * 1.0002 = 100.12002 -> up to the tick: 100.13
    assert market(sim, BUY, 1, "b").avg_price == D("100.13")
    # sell: bid * 0.9998 = 99.88002 -> down: 99.88
    assert market(sim, SELL, 2, "s").avg_price == D("99.88")


def test_position_flip_realises_the_closed_part_only():
    sim = make_sim([100, 101, 101])
    market(sim, BUY, 1, "b")
    sim.advance_to(T0 + M)
    market(sim, SELL, 3, "s")
    f = sim.user_trades(SYM)[-1]
    assert f.realized_pnl == D("1.00")  # 1 * (101 - 100); the other 2 open a short
    (p,) = sim.positions()
    assert p.amount == -2 and p.entry_price == 101
    # wallet = 10000 - 0.05 (entry fee) + 1 - 3*101*0.0005 (0.1515)
    assert sim.balance().wallet_balance == D("10000.7985")


# -- LIMIT ------------------------------------------------------------------------------------

def test_gtc_limit_rests_then_fills_as_maker_at_its_price_when_touched():
    # candle 1 is a down candle: O 100 (t=60s) -> H 100.5 (80s) -> L 98.5 (100s) -> C 99.5 (120s)
    sim = make_sim([100, (100, 100.5, 98.5, 99.5), 99.5])
    o = limit(sim, BUY, 1, 99, "l1")
    assert o.status is OrderStatus.NEW and [x.client_id for x in sim.open_orders()] == ["l1"]
    assert sim.advance_to(T0 + M) == []
    ev = sim.advance_to(T0 + 2 * M)
    assert kinds(ev) == [("fill", "l1")]
    f = ev[0].fill
    # 100.5 -> 98.5 crosses 99 at 3/4 of the H->L leg: 80 s + 0.75 * 20 s = 95 s
    assert f.time == T0 + 95_000 and f.price == D("99.00") and f.maker is True
    assert f.commission == D("0.0198")  # 99 * 0.0002
    assert sim.get_order(SYM, client_id="l1").status is OrderStatus.FILLED


def test_resting_limit_fills_at_limit_price_when_the_market_gaps_through_it():
    sim = make_sim([100, (97, 98, 96, 97.5)])
    limit(sim, BUY, 1, 99, "l1")
    (ev,) = sim.advance_to(T0 + 2 * M)
    assert ev.time == T0 + M and ev.fill.price == D("99.00")


def test_ioc_expires_unless_marketable_and_marketable_gtc_takes_at_the_better_price():
    sim = make_sim([100, 100])
    o = limit(sim, BUY, 1, 99, "ioc1", tif="IOC")
    assert o.status is OrderStatus.EXPIRED and o.executed_qty == 0 and sim.open_orders() == []
    o = limit(sim, BUY, 1, 101, "ioc2", tif="IOC")
    assert o.status is OrderStatus.FILLED and o.avg_price == D("100.00")
    o = limit(sim, SELL, 1, 99, "gtc", tif="GTC")  # marketable: fills at the bid (100), not at 99
    assert o.status is OrderStatus.FILLED and o.avg_price == D("100.00")
    assert sim.user_trades(SYM)[-1].maker is False


def test_post_only_that_would_take_is_rejected_5022():
    sim = make_sim([100, 100])
    with pytest.raises(VenueRejected) as e:
        limit(sim, BUY, 1, 100, "gtx", tif="GTX")
    assert code_of(e) == -5022
    assert limit(sim, BUY, 1, 99, "gtx2", tif="GTX").status is OrderStatus.NEW


# -- conditional orders -----------------------------------------------------------------------

def test_stop_market_on_contract_price_fills_at_the_stop_price():
    # long; candle 1 (100, 100.2, 98, 98.5); conservative long path O->L(80 s)->H->C;
    # 100 -> 98 crosses 99 halfway: t = 60 s + 10 s
    sim = make_sim([100, (100, 100.2, 98, 98.5)])
    market(sim, BUY, 1, "e")
    stop(sim, SELL, 99, "sl", working_type="CONTRACT_PRICE")
    ev = sim.advance_to(T0 + 2 * M)
    assert kinds(ev) == [("trigger", "sl"), ("fill", "sl")]
    f = ev[1].fill
    assert f.time == T0 + 70_000 and f.price == D("99.00") and f.qty == 1
    assert f.realized_pnl == D("-1.00") and f.commission == D("0.0495")
    assert sim.positions() == []
    o = sim.get_order(SYM, client_id="sl")
    assert o.status is OrderStatus.FILLED and o.executed_qty == 1 and o.close_position


def test_triggered_stop_pays_half_spread_plus_bps():
    sim = make_sim([100, (100, 100.2, 98, 98.5)], spread=0.002, bps="1")
    market(sim, BUY, 1, "e")
    stop(sim, SELL, 99, "sl", working_type="CONTRACT_PRICE")
    ev = sim.advance_to(T0 + 2 * M)
    # 99 * (1 - 0.001 - 0.0001) = 98.8911 -> down to the tick: 98.89
    assert ev[-1].fill.price == D("98.89")


def test_stop_crossed_by_a_gap_fills_at_the_open():
    sim = make_sim([100, (97, 97.5, 96, 97)])
    market(sim, BUY, 1, "e")
    stop(sim, SELL, 99, "sl", working_type="CONTRACT_PRICE")
    ev = sim.advance_to(T0 + 2 * M)
    assert ev[-1].fill.price == D("97.00") and ev[-1].time == T0 + M


@pytest.mark.parametrize("mode, first, second", [("conservative", "sl", "tp"), ("path", "tp", "sl")])
def test_stop_and_take_profit_inside_one_bar(mode, first, second):
    # down candle (100, 103, 97, 98): the colour rule walks O->H->L->C (TP first);
    # conservative walks the adverse extreme (the low) first for a long: the stop fills first.
    sim = make_sim([100, (100, 103, 97, 98)], intrabar=mode)
    market(sim, BUY, 1, "e")
    stop(sim, SELL, 98.5, "sl", working_type="CONTRACT_PRICE")
    stop(sim, SELL, 102, "tp", typ=TP, working_type="CONTRACT_PRICE")
    ev = sim.advance_to(T0 + 2 * M)
    assert kinds(ev) == [("trigger", first), ("fill", first), ("trigger", second), ("expire", second)]
    exit_price = ev[1].fill.price
    assert exit_price == (D("98.50") if first == "sl" else D("102.00"))
    assert sim.positions() == [] and sim.open_orders() == []


def test_conservative_mode_still_fills_tp_at_the_open_when_the_open_gapped_beyond_it():
    sim = make_sim([100, (103, 104, 97, 98)])
    market(sim, BUY, 1, "e")
    stop(sim, SELL, 98.5, "sl", working_type="CONTRACT_PRICE")
    stop(sim, SELL, 102, "tp", typ=TP, working_type="CONTRACT_PRICE")
    ev = sim.advance_to(T0 + 2 * M)
    assert kinds(ev)[:2] == [("trigger", "tp"), ("fill", "tp")]
    assert ev[1].fill.price == D("103.00") and ev[1].time == T0 + M


def test_conservative_short_walks_the_high_first():
    # up candle (100, 103, 97, 102): colour rule O->L->H->C would hit the short's TP (98) first
    sim = make_sim([100, (100, 103, 97, 102)])
    market(sim, SELL, 1, "e")
    stop(sim, BUY, 102.5, "sl", working_type="CONTRACT_PRICE")
    stop(sim, BUY, 98, "tp", typ=TP, working_type="CONTRACT_PRICE")
    ev = sim.advance_to(T0 + 2 * M)
    assert kinds(ev)[:2] == [("trigger", "sl"), ("fill", "sl")] and ev[1].fill.price == D("102.50")


def test_working_type_mark_price_vs_contract_price():
    # mark = price * 1.01.  Candle 1 low 98.5: contract reaches 99, mark only 99.485.
    # Candle 2 low 97: mark 97.97 <= 99 -> fires at the contract price 99 / 1.01 = 98.0198 -> 98.01
    rows = [100, (100, 100, 98.5, 99), (99, 99, 97, 97.5)]
    contract = make_sim(rows, premium=0.01)
    mark = make_sim(rows, premium=0.01)
    for sim, wt in ((contract, "CONTRACT_PRICE"), (mark, "MARK_PRICE")):
        market(sim, BUY, 1, "e")
        stop(sim, SELL, 99, "sl", working_type=wt)
    assert kinds(contract.advance_to(T0 + 2 * M))[-1] == ("fill", "sl")
    assert mark.advance_to(T0 + 2 * M) == []
    ev = mark.advance_to(T0 + 3 * M)
    assert ev[-1].fill.price == D("98.01")
    assert mark.get_order(SYM, client_id="sl").working_type == "MARK_PRICE"


def test_would_immediately_trigger_uses_the_working_price():
    sim = make_sim([100, 100], premium=0.01)  # mark 101
    with pytest.raises(WouldTrigger):  # contract 100 <= 100.5: a sell stop would fire now
        stop(sim, SELL, 100.5, "a", working_type="CONTRACT_PRICE")
    assert stop(sim, SELL, 100.5, "b", working_type="MARK_PRICE").status is OrderStatus.NEW


@pytest.mark.parametrize("side, typ, price", [(SELL, STOP, 101), (BUY, STOP, 99), (SELL, TP, 99), (BUY, TP, 101)])
def test_2021_for_every_conditional_direction(side, typ, price):
    sim = make_sim([100, 100])
    with pytest.raises(WouldTrigger) as e:
        stop(sim, side, price, "x", typ=typ, working_type="CONTRACT_PRICE")
    assert code_of(e) == -2021 and str(e.value) == "Order would immediately trigger. (code -2021)"


def test_close_position_closes_the_whole_position_at_trigger_time():
    sim = make_sim([100, 100, (100, 100, 95, 96)])
    market(sim, BUY, 1, "e1")
    stop(sim, SELL, 98, "sl", working_type="CONTRACT_PRICE")
    sim.advance_to(T0 + M)
    market(sim, BUY, 2, "e2")  # the stop covers what is there when it fires: 3
    ev = sim.advance_to(T0 + 3 * M)
    fill = ev[-1].fill
    assert fill.qty == 3 and fill.price == D("98.00") and fill.realized_pnl == D("-6.00")
    assert sim.get_order(SYM, client_id="sl").quantity == 3


def test_close_position_stop_expires_when_flat_at_trigger_time():
    sim = make_sim([100, (100, 100, 95, 96)])
    stop(sim, SELL, 98, "sl", working_type="CONTRACT_PRICE")
    ev = sim.advance_to(T0 + 2 * M)
    assert kinds(ev) == [("trigger", "sl"), ("expire", "sl")]
    assert sim.get_order(SYM, client_id="sl").status is OrderStatus.EXPIRED and sim.positions() == []


def test_reduce_only_rules():
    sim = make_sim([100, (100, 102.5, 99.5, 102), (102, 102, 97, 97.5)])
    with pytest.raises(VenueRejected) as e:  # nothing to reduce
        limit(sim, SELL, 1, 101, "r0", reduce_only=True)
    assert code_of(e) == -2022 and "ReduceOnly Order is rejected." in str(e.value)
    market(sim, BUY, 1, "e")
    with pytest.raises(VenueRejected) as e:  # would increase the long
        limit(sim, BUY, 1, 99, "r1", reduce_only=True)
    assert code_of(e) == -2022
    limit(sim, SELL, 5, 102, "tp", reduce_only=True)  # more than the position: fills 1 only
    ev = sim.advance_to(T0 + 2 * M)
    assert ev[-1].fill.qty == 1 and ev[-1].fill.price == D("102.00") and sim.positions() == []
    # a reduce-only bracket leg expires when the position is closed by the other leg
    market(sim, BUY, 1, "e2")
    limit(sim, SELL, 1, 110, "tp2", reduce_only=True)
    stop(sim, SELL, 98, "sl2", qty=1, reduce_only=True, working_type="CONTRACT_PRICE")
    ev = sim.advance_to(T0 + 3 * M)
    assert kinds(ev) == [("trigger", "sl2"), ("fill", "sl2"), ("expire", "tp2")]
    assert sim.open_orders() == []


def test_4130_second_close_position_order_of_the_same_type_and_side():
    sim = make_sim([100, 100])
    market(sim, BUY, 1, "e")
    stop(sim, SELL, 95, "sl1")
    with pytest.raises(VenueRejected) as e:
        stop(sim, SELL, 96, "sl2")
    assert code_of(e) == -4130
    stop(sim, SELL, 105, "tp1", typ=TP)  # a TP leg is a different type: fine
    stop(sim, SELL, 96, "sl3", qty=1, reduce_only=True)  # reduce-only stops have no such limit
    assert sorted(o.client_id for o in sim.open_orders()) == ["sl1", "sl3", "tp1"]


def test_algo_orders_have_their_own_ids_and_trigger_a_child_order():
    sim = make_sim([100, (100, 100, 97, 98)])
    market(sim, BUY, 1, "e")
    a = sim.place_order(req(SELL, STOP, "e", stop_price=D("99"), close_position=True,
                            working_type="CONTRACT_PRICE"), algo=True)  # same client id: other id space
    assert a.is_algo and a.order_id >= 10 ** 12
    assert [o.is_algo for o in sim.open_orders()] == [True]
    with pytest.raises(VenueRejected) as e:
        sim.place_order(req(BUY, MKT, "m", 1), algo=True)
    assert code_of(e) == -1116
    ev = sim.advance_to(T0 + 2 * M)
    child = sim.algo_actual_order_id(a.order_id)
    assert child is not None and ev[-1].fill.order_id == child
    assert sim.get_order(SYM, order_id=a.order_id, algo=True).status is OrderStatus.FILLED
    plain = sim.get_order(SYM, order_id=child)
    assert plain.client_id == f"algo-{a.order_id}" and plain.executed_qty == 1 and not plain.is_algo
    assert sim.cancel_all(SYM, algo=True) == 0


# -- fees, funding, liquidation ---------------------------------------------------------------

def test_funding_at_8h_with_a_configured_rate_longs_pay_shorts_receive():
    rows = [100] * 10  # 1h candles from T0 (00:00 UTC): funding at 08:00
    long_sim = make_sim(rows, interval="1h", funding_rate=D("0.0001"), taker="0")
    short_sim = make_sim(rows, interval="1h", funding_rate=D("0.0001"), taker="0")
    market(long_sim, BUY, 2, "l")
    market(short_sim, SELL, 2, "s")
    (ev,) = long_sim.advance_to(T0 + 9 * 3_600_000)
    assert ev.kind == "funding" and ev.time == T0 + 8 * 3_600_000 and ev.amount == D("-0.02")  # 2*100*0.0001
    assert long_sim.balance().wallet_balance == D("9999.98")
    assert long_sim.funding_income(SYM, T0) == D("-0.02")
    (ev,) = short_sim.advance_to(T0 + 9 * 3_600_000)
    assert ev.amount == D("0.02")


def test_funding_from_data_uses_the_data_times_and_rates_only():
    tf = T0 + 3 * 3_600_000 + 17  # Binance funding times jitter by a few ms
    sim = make_sim([100] * 10, interval="1h", funding=[FundingRate(SYM, tf, D("0.0005"))], taker="0")
    market(sim, BUY, 2, "l")
    ev = sim.advance_to(T0 + 9 * 3_600_000)
    assert [(e.kind, e.time, e.amount) for e in ev] == [("funding", tf, D("-0.1"))]
    assert [f.funding_time for f in sim.funding_history(SYM)] == [tf]


def test_no_funding_without_data_or_configured_rate():
    sim = make_sim([100] * 10, interval="1h")
    market(sim, BUY, 2, "l")
    assert sim.advance_to(T0 + 9 * 3_600_000) == []


def test_maint_margin_tiers_are_continuous():
    for cap, _, _ in MAINT_TIERS[:-1]:
        assert maint_margin(cap) == maint_margin(cap + D("0.000001")).quantize(D("0.0001"))
    assert maint_margin(D(1000)) == D("4.000")


def test_liquidation_at_maintenance_margin_cancels_orders_and_empties_the_margin():
    # wallet 100, no fees, 20x, long 10 @ 100 (notional 1000, IM 50).  Liquidation when
    # 100 + 10 (P - 100) = 10 P * 0.004  ->  P = 900 / 9.96 = 90.3614...
    sim = make_sim([100, (100, 100, 85, 86)], balance="100", taker="0", maker="0")
    market(sim, BUY, 10, "e")
    (p,) = sim.positions()
    assert p.liquidation_price == D("90.36")
    limit(sim, SELL, 10, 110, "tp", reduce_only=True)
    ev = sim.advance_to(T0 + 2 * M)
    assert [e.kind for e in ev] == ["cancel", "fill", "liquidation"]
    fill = ev[1].fill
    assert fill.price == D("90.36") and fill.realized_pnl == D("-96.40")
    assert ev[1].order.client_id.startswith("autoclose-")
    assert ev[2].amount == D("-3.60")  # clearance fee: the rest of the margin (MM 3.61 > 3.60 left)
    assert sim.balance().wallet_balance == 0 and sim.positions() == [] and sim.open_orders() == []


def test_liquidation_level_is_tracked_through_many_alarms_on_a_slow_slide():
    # wallet 60, no fees, long 10 @ 100: liquidation where 60 + 10 (P - 100) = 0.04 P -> P = 94.378
    # the price slides 0.05 per minute to 94.5 and recovers: many alarm bands, no liquidation;
    # then it slides on to 94: liquidated at the level
    down = list(np.arange(100.0, 94.49, -0.05))
    rows = [(a, max(a, b), min(a, b), b) for a, b in zip(down[:-1], down[1:])]
    rows += [(94.5, 95.0, 94.5, 95.0)] * 3 + [(95.0, 95.0, 94.0, 94.0)]
    sim = make_sim([100.0] + rows, balance="60", taker="0", maker="0")
    market(sim, BUY, 10, "e")
    assert sim.positions()[0].liquidation_price == D("94.37")
    assert sim.advance_to(T0 + (len(rows) - 1) * M) == []  # 94.5 > 94.378: still alive
    assert sim.positions()[0].amount == 10
    ev = sim.advance_to(T0 + (len(rows) + 1) * M)
    assert [e.kind for e in ev] == ["fill", "liquidation"] and ev[0].fill.price == D("94.37")


def test_insufficient_margin_2019_counts_resting_limit_orders():
    sim = make_sim([100, 100], balance="100")
    with pytest.raises(InsufficientMargin) as e:  # 25 * 100 / 20 = 125 > 100
        market(sim, BUY, 25, "big")
    assert code_of(e) == -2019
    assert sim.set_leverage(SYM, 25) == 25 and market(sim, BUY, 25, "ok").status is OrderStatus.FILLED
    sim2 = make_sim([100, 100], balance="100")
    limit(sim2, BUY, 15, 99, "rest")  # reserves 15 * 99 / 20 = 74.25
    with pytest.raises(InsufficientMargin):  # + 6 * 100 / 20 = 30 > 25.75 left
        market(sim2, BUY, 6, "more")
    assert market(sim2, SELL, 5, "fits").status is OrderStatus.FILLED  # 5 * 100 / 20 = 25 <= 25.75


# -- venue errors ------------------------------------------------------------------------------

def test_min_notional_4164_exempts_reduce_only():
    sim = make_sim([100, 100])
    with pytest.raises(MinNotionalError) as e:  # 0.049 * 100 = 4.9 < 5
        market(sim, BUY, "0.049", "tiny")
    assert code_of(e) == -4164 and "no smaller than 5" in str(e.value)
    market(sim, BUY, 1, "e")
    assert sim.place_order(req(SELL, MKT, "ro", D("0.01"), reduce_only=True)).status is OrderStatus.FILLED


@pytest.mark.parametrize("kwargs, code", [
    ({"qty": "0.0001"}, -1111),  # more decimals than the step allows
    ({"qty": "0"}, -4003),
    ({"qty": "150"}, -4005),  # MARKET max qty 100 (MARKET_LOT_SIZE)
    ({"qty": "1", "price": "100.001"}, -1111),
    ({"qty": "1", "price": "0"}, -4001),
    ({"qty": "1", "price": "106"}, -4016),  # buy above mark * 1.05
    ({"qty": "1", "price": "200000"}, -4002),
])
def test_quantity_and_price_filters(kwargs, code):
    sim = make_sim([100, 100])
    qty = D(kwargs["qty"])
    with pytest.raises(VenueRejected) as e:
        if "price" in kwargs:
            limit(sim, BUY, qty, D(kwargs["price"]), "x")
        else:
            market(sim, BUY, qty, "x")
    assert code_of(e) == code


def test_tick_step_and_min_qty_multiples():
    sim = make_sim([100, 100], sym_info=info(tick="0.05", step="0.5", min_qty="1"))
    with pytest.raises(PrecisionError) as e:  # 2 decimals is fine, not a multiple of 0.05
        limit(sim, BUY, 1, "99.02", "a")
    assert code_of(e) == -4014
    with pytest.raises(PrecisionError) as e:
        limit(sim, BUY, "1.3", 99, "b")
    assert code_of(e) == -4023
    with pytest.raises(VenueRejected) as e:
        limit(sim, BUY, "0.5", 99, "c")
    assert code_of(e) == -4004
    with pytest.raises(VenueRejected) as e:
        limit(sim, SELL, 1, "94.95", "d")  # sell below mark * 0.95
    assert code_of(e) == -4024
    with pytest.raises(PrecisionError) as e:
        stop(sim, SELL, "90.02", "e", qty=1)
    assert code_of(e) == -4014
    assert limit(sim, BUY, "1.5", "99.05", "ok").status is OrderStatus.NEW
    assert limit(sim, BUY, 150, "99.05", "above-market-max").status is OrderStatus.NEW  # LOT_SIZE max 1000
    with pytest.raises(VenueRejected) as e:
        limit(sim, BUY, 1500, "99.05", "big")
    assert code_of(e) == -4005


def test_parameter_errors():
    sim = make_sim([100, 100])
    cases = [
        (lambda: sim.place_order(req(BUY, MKT, "a")), -1102),
        (lambda: sim.place_order(req(BUY, LIM, "b", 1, price=D(99))), -1102),  # no timeInForce
        (lambda: sim.place_order(req(BUY, LIM, "c", 1, time_in_force="GTC")), -1102),  # no price
        (lambda: sim.place_order(req(SELL, STOP, "d", 1)), -1102),  # no stopPrice
        (lambda: sim.place_order(req(SELL, STOP, "e", stop_price=D(90))), -1102),  # no qty, no closePosition
        (lambda: sim.place_order(req(SELL, STOP, "f", 1, stop_price=D(90), close_position=True)), -1106),
        (lambda: sim.place_order(req(SELL, MKT, "g", 1, close_position=True)), -1106),
        (lambda: sim.place_order(req(BUY, LIM, "h", 1, price=D(99), time_in_force="XYZ")), -1115),
        (lambda: sim.place_order(req(BUY, MKT, "x" * 37, 1)), -4015),
        (lambda: sim.place_order(req(BUY, MKT, "bad id!", 1)), -1100),
        (lambda: sim.place_order(req(BUY, MKT, "n", D("NaN"))), -1130),
        (lambda: sim.place_order(OrderRequest("NOPEUSDT", BUY, MKT, "i", quantity=D(1))), -1121),
        (lambda: sim.set_leverage(SYM, 0), -4028),
        (lambda: sim.set_leverage(SYM, 126), -4028),
        (lambda: sim.klines(SYM, "7m"), -1120),
        (lambda: sim.klines(SYM, "1m", limit=1501), -1130),
    ]
    for call, code in cases:
        with pytest.raises(VenueRejected) as e:
            call()
        assert code_of(e) == code, call
        assert e.value.http_status == 400 and "\n" not in str(e.value)
    assert sim.open_orders() == [] and sim.user_trades(SYM) == []


def test_duplicate_client_id_4116_open_and_recent_orders():
    sim = make_sim([100] * 3 + [100] * 1500)
    limit(sim, BUY, 1, 99, "dup")
    with pytest.raises(DuplicateClientId) as e:
        limit(sim, BUY, 1, 98, "dup")
    assert code_of(e) == -4116 and len(sim.open_orders()) == 1
    sim.cancel_order(SYM, client_id="dup")
    with pytest.raises(DuplicateClientId):  # placed within the last 24 h
        limit(sim, BUY, 1, 98, "dup")
    market(sim, BUY, 1, "mkt")
    with pytest.raises(DuplicateClientId):  # a resent market order must not fill twice
        market(sim, BUY, 1, "mkt")
    assert len(sim.user_trades(SYM)) == 1
    sim.advance_to(T0 + 1441 * M)
    assert market(sim, BUY, 1, "mkt").status is OrderStatus.FILLED  # a day later the id is free again


def test_unknown_order_2011_on_cancel_and_2013_on_query():
    sim = make_sim([100] * 5000)
    with pytest.raises(UnknownOrder) as e:
        sim.cancel_order(SYM, client_id="nope")
    assert code_of(e) == -2011 and "Unknown order sent." in str(e.value)
    with pytest.raises(UnknownOrder) as e:
        sim.get_order(SYM, order_id=123)
    assert code_of(e) == -2013
    o = market(sim, BUY, 1, "filled")
    with pytest.raises(UnknownOrder) as e:  # a filled order cannot be cancelled...
        sim.cancel_order(SYM, order_id=o.order_id)
    assert code_of(e) == -2011
    assert sim.get_order(SYM, order_id=o.order_id).status is OrderStatus.FILLED  # ...but can be queried
    limit(sim, BUY, 1, 90, "gone")
    assert sim.cancel_order(SYM, client_id="gone").status is OrderStatus.CANCELED
    assert sim.get_order(SYM, client_id="gone").status is OrderStatus.CANCELED
    sim.advance_to(T0 + 3 * 1440 * M + M)  # cancelled without fills: forgotten after 3 days
    with pytest.raises(UnknownOrder):
        sim.get_order(SYM, client_id="gone")
    assert sim.get_order(SYM, client_id="filled").status is OrderStatus.FILLED


def test_cancel_all_and_open_orders():
    sim = make_sim([100, 100])
    limit(sim, BUY, 1, 90, "a")
    limit(sim, BUY, 1, 91, "b")
    sim.place_order(req(BUY, STOP, "c", 1, stop_price=D(110)), algo=True)
    assert [o.client_id for o in sim.open_orders(SYM)] == ["a", "b", "c"]
    assert sim.cancel_all(SYM, algo=False) == 2
    assert [o.client_id for o in sim.open_orders()] == ["c"]
    assert sim.cancel_all(SYM) == 1 and sim.open_orders() == []
    assert [o.status for o in sim.all_orders(SYM)] == [OrderStatus.CANCELED] * 3


def test_user_trades_windows_and_from_id():
    sim = make_sim([100] * 20000)
    for i in range(3):
        market(sim, BUY, 1, f"b{i}")
        sim.advance_to(sim.now_ms + 4 * 1440 * M)
    trades = sim.user_trades(SYM)  # now = day 12: the last 7 days hold only the day-8 trade
    assert [t.time for t in trades] == [T0 + 8 * 1440 * M]
    all_ids = [t.trade_id for t in sim.user_trades(SYM, start_ms=T0)]
    assert len(all_ids) == 2  # start_ms alone: a 7-day window from it
    assert [t.trade_id for t in sim.user_trades(SYM, from_id=all_ids[0] + 1)] == [all_ids[1], all_ids[1] + 1]
    assert len(sim.user_trades(SYM, order_id=sim.get_order(SYM, client_id="b0").order_id)) == 1


# -- market data ------------------------------------------------------------------------------

def test_klines_end_with_the_forming_candle_and_never_show_the_future():
    # 1m base: 10 candles rising 100 -> 109, each (p, p+0.5, p-0.5, p+1)
    rows = [(100 + i, 100.5 + i, 99.5 + i, 101 + i) for i in range(10)]
    sim = make_sim(rows)
    sim.advance_to(T0 + 7 * M + 30_000)  # half way through the 8th 1m candle
    k = sim.klines(SYM, "5m", limit=10)
    assert list(k.open_time) == [T0, T0 + 5 * M] and not k.last_closed
    assert (k.open[0], k.high[0], k.low[0], k.close[0], k.volume[0]) == (100, 104.5, 99.5, 105, 5000)
    # forming: closed 1m candles 5 and 6 (o 105, h 106.5, l 104.5) + the 8th up to now: up
    # candle O 107 -> L 106.5 (20 s) -> H 107.5 (40 s); at 30 s it is half way L->H: 107.0, so
    # the high so far is 107.0 (not the candle's 107.5, which lies in the future)
    assert (k.open[1], k.high[1], k.low[1], k.close[1]) == (105, 107.0, 104.5, 107.0)
    assert k.volume[1] == 2000 + 500  # two closed candles + half of the current one
    assert k.closed_only().close[-1] == 105
    k1 = sim.klines(SYM, "1m", limit=3)
    assert list(k1.open_time) == [T0 + 5 * M, T0 + 6 * M, T0 + 7 * M]
    assert len(sim.klines(SYM, "1m", start_ms=T0, limit=2)) == 2
    assert sim.klines(SYM, "1m", start_ms=T0, limit=2).open_time[0] == T0


def test_book_mark_premium_and_tickers():
    sim = make_sim([100] * 1500, spread=0.001, premium=0.002)
    sim.advance_to(T0 + 1441 * M)
    bt = sim.book_tickers()[SYM]
    assert bt.bid < bt.ask and bt.bid == D("99.95") and bt.ask == D("100.05")
    assert sim.mark_price(SYM) == D("100.2") and sim.premium_index()[SYM].mark_price == D("100.2")
    pi = sim.premium_index()[SYM]
    assert pi.next_funding_time == T0 + 32 * 3_600_000 and pi.last_funding_rate == 0
    t = sim.tickers_24h()[SYM]
    # 24 h of 1m candles: 1440 * 1000 volume, quote = volume * close
    assert t.last_price == 100 and t.volume == 1440 * 1000 and t.quote_volume == 1440 * 1000 * 100
    assert sim.exchange_info().symbols[SYM].filters.tick_size == D("0.01")


# -- determinism, persistence, speed contract ------------------------------------------------

def _scenario(sim: SimExchange, steps: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(steps):
        sym = sim.feed.symbols()[i % 2]
        px = float(sim.price(sym))
        tick = sim.symbol_info(sym).filters.tick_size
        q = (D(repr(round(200.0 / px, 6))) // sim.symbol_info(sym).filters.step_size) * sim.symbol_info(sym).filters.step_size
        r = rng.random()
        try:
            if r < 0.3:
                sim.place_order(OrderRequest(sym, BUY if rng.random() < 0.5 else SELL, MKT, f"m{i}", quantity=q))
            elif r < 0.5:
                sim.place_order(OrderRequest(sym, SELL, STOP, f"s{i}", quantity=q, reduce_only=False,
                                             stop_price=(D(repr(px * 0.995)) // tick) * tick))
            elif r < 0.7:
                sim.place_order(OrderRequest(sym, BUY, LIM, f"l{i}", quantity=q, time_in_force="GTC",
                                             price=(D(repr(px * 0.997)) // tick) * tick))
        except VenueRejected as e:
            out.append(("rejected", e.code))
        out.extend((e.kind, e.time, e.symbol, e.fill.price if e.fill else None, e.amount)
                   for e in sim.advance_to(sim.now_ms + 7 * M))
    return out


def test_deterministic_and_state_round_trip_continues_identically():
    def fresh():
        return SimExchange(SyntheticMarket(["BTCUSDT", "ETHUSDT"], seed=5), funding_rate=D("0.0001"))
    a, b = fresh(), fresh()
    assert _scenario(a, 60, 1) == _scenario(b, 60, 1)
    state = json.loads(json.dumps(a.to_dict()))
    c = SimExchange.from_dict(SyntheticMarket(["BTCUSDT", "ETHUSDT"], seed=5), state)
    assert c.to_dict() == a.to_dict()
    assert c.balance() == a.balance() and c.positions() == a.positions() and c.open_orders() == a.open_orders()
    assert _scenario(a, 40, 2) == _scenario(c, 40, 2)
    assert a.to_dict() == c.to_dict()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000))
def test_wallet_equals_start_plus_realised_minus_fees_plus_funding(seed):
    sim = SimExchange(SyntheticMarket(["BTCUSDT", "ETHUSDT"], seed=seed % 7), funding_rate=D("0.0001"))
    _scenario(sim, 50, seed)
    fills = [f for s in ("BTCUSDT", "ETHUSDT") for f in sim.user_trades(s, start_ms=0, end_ms=sim.now_ms,
                                                                         limit=1000)]
    funding = sum((f.amount for f in sim.funding_payments()), D(0))
    liq_fees = sum((e.amount for e in sim.drain_events() if e.kind == "liquidation"), D(0))
    expect = D(10000) + sum((f.realized_pnl - f.commission for f in fills), D(0)) + funding + liq_fees
    assert sim.balance().wallet_balance == expect
    for p in sim.positions():  # the position equals the signed sum of its fills
        assert p.amount == sum((f.qty if f.side is BUY else -f.qty for f in fills if f.symbol == p.symbol), D(0))


class _CountingReplay(ReplayMarket):
    calls = 0

    def candle(self, symbol, k):
        type(self).calls += 1
        return super().candle(symbol, k)

    def price_range(self, symbol, k0, k1):
        type(self).calls += 1
        return super().price_range(symbol, k0, k1)


def test_idle_symbols_are_never_walked():
    sim = make_sim([100] * 3000, feed_cls=_CountingReplay)
    _CountingReplay.calls = 0
    for i in range(1, 2000):
        assert sim.advance_to(T0 + i * M) == []
    assert _CountingReplay.calls == 0
    limit(sim, BUY, 1, 50, "far")  # far from the price: one range check per step, no path walk
    _CountingReplay.calls = 0
    sim.advance_to(T0 + 2001 * M)
    assert 1 <= _CountingReplay.calls <= 3


def test_quotes_follow_the_clock_even_when_nothing_is_open():
    sim = make_sim([100, 110, 120])
    assert sim.mark_price(SYM) == 100 and sim.price(SYM) == 100
    sim.advance_to(T0 + M)
    assert sim.mark_price(SYM) == 110 and sim.price(SYM) == 110
    limit(sim, BUY, 1, 50, "far")
    sim.advance_to(T0 + 2 * M)
    assert sim.mark_price(SYM) == 120


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1000), st.sampled_from([1, 7, 60, 480]))
def test_the_step_size_does_not_change_what_happens(seed, minutes):
    """Orders placed once, then time advanced in steps of 1 minute... 8 hours, or in one go:
    the same fills, triggers, expiries and funding at the same times and prices."""
    def run(step_min: int):
        sim = SimExchange(SyntheticMarket(["BTCUSDT", "SOLUSDT"], seed=seed), funding_rate=D("0.0001"))
        rng = np.random.default_rng(seed)
        for i, sym in enumerate(("BTCUSDT", "SOLUSDT")):
            f = sim.symbol_info(sym).filters
            px = sim.price(sym)
            q = (D(400) / px / f.step_size).to_integral_value() * f.step_size
            side = BUY if rng.random() < 0.5 else SELL
            sgn = 1 if side is BUY else -1
            lv = [(px * (1 + sgn * D(repr(x))) / f.tick_size).to_integral_value() * f.tick_size
                  for x in (-rng.uniform(0.002, 0.02), rng.uniform(0.002, 0.03), -rng.uniform(0.001, 0.01))]
            sim.place_order(OrderRequest(sym, side, MKT, f"e{i}", quantity=q))
            sim.place_order(OrderRequest(sym, side.opposite, STOP, f"s{i}", stop_price=lv[0], close_position=True))
            sim.place_order(OrderRequest(sym, side.opposite, TP, f"t{i}", stop_price=lv[1], close_position=True))
            sim.place_order(OrderRequest(sym, side, LIM, f"l{i}", quantity=q, price=lv[2], time_in_force="GTC"))
        end = sim.now_ms + 2 * 1440 * M
        out = []
        while sim.now_ms < end:
            out += [(e.kind, e.time, e.symbol, e.order.client_id if e.order else None,
                     e.fill.price if e.fill else None, e.amount) for e in sim.advance_to(min(end, sim.now_ms + step_min * M))]
        return out, sim.balance()
    fine, coarse = run(minutes), run(2 * 1440)
    assert fine == coarse and len(fine[0]) >= 4


def test_time_never_goes_backwards():
    sim = make_sim([100, 100])
    sim.advance_to(T0 + M)
    with pytest.raises(ValueError):
        sim.advance_to(T0)
    assert sim.advance_to(T0 + M) == []
