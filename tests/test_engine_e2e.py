"""End to end: the engine in LIVE mode with test keys -> RestExchange -> real HTTP -> the loopback
exchange (a SimExchange on a crafted replay market whose long signal appears at its start).

The engine's clock is the loopback's clock (``VenueClock``), so ``handle.advance(ms)`` moves both."""

from __future__ import annotations

import asyncio
import re
import time
from decimal import ROUND_CEILING, Decimal

import pytest

from _engine_fixtures import SYMBOL, live_engine, live_settings, loopback
from mraster_tui.engine.breaker import CLOCK_SKEW, GUARD_FAILURES, IP_BAN
from mraster_tui.engine.decision_log import read_decision_log
from mraster_tui.engine.events import EventKind
from mraster_tui.engine.guard import GuardError
from mraster_tui.engine.ledger import PendingEntry
from mraster_tui.engine.types import OrderRequest, OrderStatus, OrderType, Side

pytestmark = pytest.mark.timeout(60)

CID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


def _posts(handle, path: str) -> list[dict]:
    return [r for r in handle.requests() if r["method"] == "POST" and r["path"] == path]


def _open(handle, symbol=SYMBOL):
    with handle.lock:
        return handle.sim.open_orders(symbol)


async def _entered(engine):
    summary = await engine.run_cycle()
    assert summary["orders"] == 1, summary
    return engine.ledger.state.live[SYMBOL]


async def test_signal_entry_brackets_stop_hit_exit_and_r_from_fills(tmp_path):
    h = loopback("crash")
    engine, sink = live_engine(h, tmp_path, decision_log=tmp_path / "decisions.jsonl")
    try:
        await engine.start()
        trade = await _entered(engine)
        # the entry: one MARKET order with a valid deterministic client id, leverage set first
        log = h.requests()
        lev = next(i for i, r in enumerate(log) if r["path"] == "/fapi/v1/leverage")
        entry = next(i for i, r in enumerate(log) if r["path"] == "/fapi/v1/order" and r["method"] == "POST")
        assert lev < entry and log[lev]["params"]["leverage"] == "3"
        assert log[entry]["params"]["type"] == "MARKET" and CID.match(log[entry]["params"]["newClientOrderId"])
        # brackets from the ACTUAL fill at the ATR multiples, stop rounded toward the entry
        with h.lock:
            fills = h.sim.user_trades(SYMBOL)
        assert len(fills) == 1 and fills[0].price == trade.entry
        tick = Decimal("0.01")
        want_sl = ((trade.entry - Decimal(repr(1.3 * trade.atr))) / tick).to_integral_value(ROUND_CEILING) * tick
        assert trade.sl == trade.sl_initial == want_sl < trade.entry < trade.tp
        legs = {o.type: o for o in _open(h)}
        assert set(legs) == {OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET}
        stop = legs[OrderType.STOP_MARKET]
        assert stop.close_position and stop.working_type == "MARK_PRICE" and stop.stop_price == trade.sl
        assert stop.is_algo  # binance venue: conditional orders through the algo service
        algo_posts = _posts(h, "/fapi/v1/algoOrder")
        assert {p["params"]["type"] for p in algo_posts} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
        assert all(p["params"]["closePosition"] == "true" for p in algo_posts)

        # the market crashes through the stop; the next guard pass closes the trade out from fills
        h.advance(20 * 60_000)
        await engine.guard_pass()
        assert SYMBOL not in engine.ledger.state.live
        closed = engine.ledger.state.history[-1]
        with h.lock:
            fills = h.sim.user_trades(SYMBOL)
        exit_f = fills[1:]
        assert sum(f.qty for f in exit_f) == trade.qty
        gross = sum(f.realized_pnl for f in exit_f)
        fees = sum(f.commission for f in fills)
        risk = (trade.entry - trade.sl_initial) * trade.qty
        assert closed.exit_source == "fills" and closed.exit_reason == "stop"
        assert closed.gross_pnl == gross and closed.fees == fees and closed.pnl == gross - fees
        assert closed.r == pytest.approx(float((gross - fees) / risk))
        assert -1.8 < closed.r < -1.0  # a stop plus slippage and fees costs a bit more than 1 R
        assert closed.exit == exit_f[0].price <= trade.sl
        ev = sink.of(EventKind.POSITION_CLOSED)[-1]
        assert ev.data["trade"] == closed and ev.data["learned"] is True
        # OCO: the take-profit left behind was cancelled
        assert _open(h) == []
        assert any("OCO" in e.message for e in sink.of(EventKind.ORDER_CANCELLED))
        with h.lock:
            assert h.sim.positions() == []
        # the decision log has the TAKE and its outcome, keyed by the decision id
        log = read_decision_log(tmp_path / "decisions.jsonl")
        taken = [d for d in log.decisions if d["action"] == "TAKE"]
        assert [d["decision_id"] for d in taken] == [trade.decision_id]
        assert log.outcomes[trade.decision_id]["r"] == pytest.approx(closed.r)
        assert any(d["action"] == "REJECT" and d["symbol"] == "CALMUSDT" for d in log.decisions)
    finally:
        await engine.shutdown()
        h.stop()


async def test_caps_and_the_failure_cooldown_block_entries(tmp_path):
    h = loopback("hold")
    engine, sink = live_engine(h, tmp_path, live_settings(h.base_url, max_open_global=0, fail_cooldown_sec=60))
    try:
        await engine.start()
        summary = await engine.run_cycle()
        assert summary["orders"] == 0 and summary["rejected"]["max_open_global"] == 1
        engine.apply_settings(engine.settings.replace(max_open_global=2))
        h.fault("error", path="/fapi/v1/leverage", status=503, count=10)  # the entry cannot be prepared
        summary = await engine.run_cycle()
        assert summary["orders"] == 0 and summary["rejected"]["order_prepare"] == 1
        h.control(clear_faults=True)
        summary = await engine.run_cycle()  # the symbol sits out its failure cooldown
        assert summary["orders"] == 0 and summary["rejected"]["fail_cooldown"] == 1
        h.advance(61_000)
        summary = await engine.run_cycle()
        assert summary["orders"] == 1
        with h.lock:
            assert len([o for o in h.sim.all_orders(SYMBOL) if o.type is OrderType.MARKET]) == 1
    finally:
        await engine.shutdown()
        h.stop()


async def test_take_profit_fill_cancels_the_stop_oco(tmp_path):
    h = loopback("tp")
    engine, sink = live_engine(h, tmp_path)
    try:
        await engine.start()
        trade = await _entered(engine)
        h.advance(6 * 60_000)
        with h.lock:
            assert h.sim.positions() == []  # the TP filled on the venue
            still = h.sim.open_orders(SYMBOL)
        assert [o.type for o in still] == [OrderType.STOP_MARKET]  # the venue left the stop
        await engine.guard_pass()
        assert _open(h) == []
        closed = engine.ledger.state.history[-1]
        assert closed.exit_reason == "take_profit" and closed.r > 1.0
        assert abs(closed.exit - trade.tp) <= trade.tp * Decimal("0.0005")  # market fill: slippage only
        cancelled = sink.of(EventKind.ORDER_CANCELLED)
        assert len(cancelled) == 1 and cancelled[0].data["client_id"] == trade.sl_client_id
        assert "OCO" in cancelled[0].message
    finally:
        await engine.shutdown()
        h.stop()


async def test_a_stop_deleted_on_the_venue_is_repaired_within_one_guard_interval(tmp_path):
    h = loopback("hold")
    settings = live_settings(h.base_url, guard_interval_sec=1.0)
    engine, sink = live_engine(h, tmp_path, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        for _ in range(200):
            if len(_open(h)) == 2:
                break
            await asyncio.sleep(0.02)
        trade = engine.ledger.state.live[SYMBOL]
        with h.lock:
            h.sim.cancel_order(SYMBOL, client_id=trade.sl_client_id, algo=True)
        deleted = time.monotonic()
        repaired_after = None
        while time.monotonic() - deleted < 3.0:
            stops = [o for o in _open(h) if o.type is OrderType.STOP_MARKET]
            if stops:
                repaired_after = time.monotonic() - deleted
                break
            await asyncio.sleep(0.02)
        assert repaired_after is not None and repaired_after <= 1.0 + 0.3, repaired_after
        assert stops[0].stop_price == trade.sl_initial and stops[0].client_id != "x"
        for _ in range(50):  # the venue has the stop; the engine reports it once the answer arrived
            rep = sink.of(EventKind.BRACKET_REPAIRED)
            if rep:
                break
            await asyncio.sleep(0.02)
        assert rep and "was missing" in rep[-1].message
        assert len([o for o in _open(h) if o.type is OrderType.TAKE_PROFIT_MARKET]) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        h.stop()
    assert engine.snapshot().state == "stopped"
    assert (tmp_path / "state.json").exists()


async def test_a_new_entry_clears_the_previous_trades_leftover_leg(tmp_path):
    h = loopback("tp")
    engine, sink = live_engine(h, tmp_path)
    try:
        await engine.start()
        old = await _entered(engine)
        h.advance(6 * 60_000)  # the TP closed it; the old closePosition stop is still on the venue
        assert [o.client_id for o in _open(h)] == [old.sl_client_id]
        await engine.guard_pass()  # closes the trade out (and would cancel the leftover) ...
        with h.lock:  # ... but say another leftover closePosition stop sits there again
            h.sim.place_order(OrderRequest(SYMBOL, Side.SELL, OrderType.STOP_MARKET, "mrzzzz-99s1-TESTUSDT",
                                           stop_price=Decimal("1.00"), close_position=True), algo=True)
        new = await engine.executor.open_position(symbol=SYMBOL, side="LONG", qty=Decimal("1.00"), atr=0.35,
                                                  decision_id=None, bucket="S")
        legs = {o.type: o for o in _open(h)}
        assert legs[OrderType.STOP_MARKET].client_id == new.sl_client_id  # its own closePosition stop
        assert legs[OrderType.STOP_MARKET].close_position and len(_open(h)) == 2
        assert any("leftover" in e.message for e in sink.of(EventKind.ORDER_CANCELLED))
    finally:
        await engine.shutdown()
        h.stop()


async def test_guard_cancels_duplicates_and_wrong_side_legs(tmp_path):
    h = loopback("hold")
    engine, sink = live_engine(h, tmp_path)
    try:
        await engine.start()
        trade = await _entered(engine)
        with h.lock:  # somebody adds a looser reduce-only stop and a BUY stop (wrong side for a long)
            h.sim.place_order(OrderRequest(SYMBOL, Side.SELL, OrderType.STOP_MARKET, "manual-1", quantity=trade.qty,
                                           stop_price=trade.sl - Decimal("1"), reduce_only=True), algo=True)
            h.sim.place_order(OrderRequest(SYMBOL, Side.BUY, OrderType.STOP_MARKET, "manual-2", quantity=trade.qty,
                                           stop_price=trade.entry + Decimal("5")), algo=True)
        assert len(_open(h)) == 4
        await engine.guard_pass()
        left = _open(h)
        assert sorted(o.client_id for o in left) == sorted([trade.sl_client_id, trade.tp_client_id])
        msgs = " | ".join(e.message for e in sink.of(EventKind.BRACKET_REPAIRED))
        assert "wrong side" in msgs and "duplicate stop" in msgs
    finally:
        await engine.shutdown()
        h.stop()


async def test_fasttp_tightens_never_loosens_and_a_stop_exists_at_every_instant(tmp_path):
    h = loopback("fasttp")
    settings = live_settings(h.base_url, fasttp_cooldown_s=30.0, tp_atr_mult=12.0)  # the TP stays out of reach
    engine, sink = live_engine(h, tmp_path, settings)
    try:
        await engine.start()
        trade = await _entered(engine)
        initial = trade.sl
        stops_seen = [trade.sl]
        for _ in range(40):  # 40 x 15 s = 10 minutes in 15 s steps, mids sampled at each
            h.advance(15_000)
            await engine.fasttp_pass()
            live = engine.ledger.state.live.get(SYMBOL)
            if live is None:
                break
            if live.sl != stops_seen[-1]:
                stops_seen.append(live.sl)
            await engine.guard_pass()
        moves = sink.of(EventKind.FASTTP_MOVED)
        assert moves, "FastTP never triggered"
        assert all(b > a for a, b in zip(stops_seen, stops_seen[1:]))  # only ever tighter
        assert stops_seen[1] > trade.entry > initial  # profit locked in above the entry
        # the venue's order history: at every instant between entry and exit a stop was open
        with h.lock:
            orders = [o for o in h.sim.all_orders(SYMBOL) if o.type is OrderType.STOP_MARKET]
            fills = h.sim.user_trades(SYMBOL)
        t_in, t_out = fills[0].time, fills[-1].time
        spans = sorted((o.time, o.update_time if not o.status.open else 10**15) for o in orders)
        covered = t_in
        for a, b in spans:
            assert a <= covered + 250, f"no stop between {covered} and {a}"  # one HTTP round trip at most
            covered = max(covered, b)
        assert covered >= t_out
        # and the new stop was placed BEFORE the old one was cancelled (request log order)
        log = h.requests()
        posts = [(i, r) for i, r in enumerate(log) if r["method"] == "POST" and r["path"] == "/fapi/v1/algoOrder"
                 and r["params"].get("triggerPrice") == str(stops_seen[1])]
        # a second closePosition stop is refused (-4130), so the new level goes on reduce-only first
        assert [r["status"] for _, r in posts] == [400, 200] and posts[1][1]["params"]["reduceOnly"] == "true"
        old_del = next(i for i, r in enumerate(log) if r["method"] == "DELETE" and r["path"] == "/fapi/v1/algoOrder")
        assert posts[1][0] < old_del
        closed = engine.ledger.state.history[-1]
        assert closed.exit_reason == "fasttp_stop" and closed.gross_pnl > 0
    finally:
        await engine.shutdown()
        h.stop()


async def test_a_failed_positions_read_closes_nothing_and_trips_the_breaker(tmp_path):
    h = loopback("hold")
    settings = live_settings(h.base_url, guard_fail_limit=2)
    engine, sink = live_engine(h, tmp_path, settings)
    try:
        await engine.start()
        trade = await _entered(engine)
        h.clear_requests()
        h.fault("error", path="/fapi/v2/positionRisk", status=503, count=4)
        for _ in range(2):
            with pytest.raises(GuardError, match="nothing is assumed closed"):
                await engine.guard_pass()
        assert engine.ledger.state.live[SYMBOL] is trade  # nothing closed, nothing re-entered
        assert engine.ledger.state.history == []
        sent = [r for r in h.requests() if r["method"] in ("POST", "DELETE")]
        assert sent == []  # no order, no cancel
        assert engine.breaker.active and GUARD_FAILURES in engine.breaker.reasons
        assert engine.snapshot().breaker_active
        # the venue is healthy again: the next pass clears the breaker by itself
        await engine.guard_pass()
        assert not engine.breaker.active
        kinds = [(e.data["cause"], e.data["active"]) for e in sink.of(EventKind.BREAKER)]
        assert kinds == [(GUARD_FAILURES, True), (GUARD_FAILURES, False)]
        with h.lock:
            assert len(h.sim.open_orders(SYMBOL)) == 2 and h.sim.positions()
    finally:
        await engine.shutdown()
        h.stop()


async def test_breaker_blocks_entries_on_skew_and_ban_then_clears(tmp_path):
    h = loopback("hold")
    settings = live_settings(h.base_url)
    engine, sink = live_engine(h, tmp_path, settings)
    try:
        await engine.start()
        h.control(skew_ms=6000)  # beyond recv_window / 2 = 5000
        await engine._sync_time()
        assert engine.breaker.reasons == (CLOCK_SKEW,)
        summary = await engine.run_cycle()
        assert summary["orders"] == 0 and summary["rejected"].get("breaker") == 1
        h.control(skew_ms=0)
        await engine._sync_time()
        assert not engine.breaker.active
        # a 418 ban: every request stops, the breaker shows it until the ban is over
        h.fault("418", retry_after=1, count=1)
        with pytest.raises(Exception):
            await engine.exchange.server_time()
        await engine.housekeeping()  # the venue layer's ban event reached the breaker
        assert IP_BAN in engine.breaker.reasons
        await asyncio.sleep(1.2)
        engine.breaker.check_ban(engine.clock.now_ms())
        assert IP_BAN not in engine.breaker.reasons
        summary = await engine.run_cycle()
        assert summary["orders"] == 1
    finally:
        await engine.shutdown()
        h.stop()


async def test_entry_resolved_by_client_id_after_a_lost_answer(tmp_path):
    h = loopback("hold")
    engine, sink = live_engine(h, tmp_path)
    try:
        await engine.start()
        h.fault("drop", path="/fapi/v1/order", method="POST", count=1)
        summary = await engine.run_cycle()
        assert summary["orders"] == 1
        with h.lock:
            entries = [o for o in h.sim.all_orders(SYMBOL) if o.type is OrderType.MARKET]
            assert len(entries) == 1 and entries[0].status is OrderStatus.FILLED  # exactly one order
            assert len(h.sim.open_orders(SYMBOL)) == 2
    finally:
        await engine.shutdown()
        h.stop()


async def test_a_stop_that_cannot_be_placed_closes_the_position_at_market(tmp_path):
    h = loopback("hold")
    engine, sink = live_engine(h, tmp_path)
    try:
        await engine.start()
        h.fault("error", path="/fapi/v1/algoOrder", method="POST", status=503, count=100)
        summary = await engine.run_cycle()
        assert summary["orders"] == 1
        with h.lock:
            assert h.sim.positions() == []  # closed at once
            closes = [o for o in h.sim.all_orders(SYMBOL) if o.type is OrderType.MARKET and o.reduce_only]
        assert len(closes) == 1 and closes[0].status is OrderStatus.FILLED
        errors = [e.message for e in sink.of(EventKind.ERROR)]
        assert any("stop could not be placed" in m and "closing the position at market" in m for m in errors)
        h.control(clear_faults=True)
        await engine.guard_pass()
        closed = engine.ledger.state.history[-1]
        assert closed.exit_reason == "market_close" and closed.exit_source == "fills"
        assert _open(h) == []
    finally:
        await engine.shutdown()
        h.stop()


async def test_a_missing_stop_already_crossed_closes_at_market(tmp_path):
    h = loopback("crash")
    engine, sink = live_engine(h, tmp_path)
    try:
        await engine.start()
        trade = await _entered(engine)
        with h.lock:  # the stop vanishes, then the market falls through its level
            h.sim.cancel_order(SYMBOL, client_id=trade.sl_client_id, algo=True)
        h.advance(11 * 60_000)
        with h.lock:
            assert h.sim.positions()  # no stop on the venue: still open, below the stop level
            assert h.sim.mark_price(SYMBOL) < trade.sl
        await engine.guard_pass()  # -2021 on the re-placement: the stop's job is due, close now
        with h.lock:
            assert h.sim.positions() == []
        assert any("beyond it" in e.message for e in sink.of(EventKind.ORDER_SUBMITTED))
        await engine.guard_pass()
        assert engine.ledger.state.history[-1].exit_reason in ("market_close", "stop")
        assert _open(h) == []
    finally:
        await engine.shutdown()
        h.stop()


async def test_a_journaled_entry_is_resolved_by_client_id_after_a_crash(tmp_path):
    h = loopback("hold")
    first, _ = live_engine(h, tmp_path)
    try:
        await first.start()
        led = first.ledger
        now = first.clock.now_ms()
        sent = PendingEntry(SYMBOL, "LONG", led.client_id(led.new_trade_no(), "e", SYMBOL), 1, Decimal("1.00"), 0.35,
                            1.3, 2.0, now, "d9-x", "M")
        never = PendingEntry("CALMUSDT", "SHORT", led.client_id(led.new_trade_no(), "e", "CALMUSDT"), 2,
                             Decimal("2.0"), 0.1, 1.3, 2.0, now - 61_000, None, "S")
        led.add_pending(sent)
        led.add_pending(never)
        await first._save(force=True)
    finally:
        await first.shutdown()  # "crash" after the journal write ...
    with h.lock:  # ... while the venue executed the entry
        h.sim.place_order(OrderRequest(SYMBOL, Side.BUY, OrderType.MARKET, sent.client_id, quantity=Decimal("1.00")))
    engine, sink = live_engine(h, tmp_path)
    try:
        await engine.start()  # reconciliation resolves both by client id
        st = engine.ledger.state
        assert st.pending == {}
        trade = st.live[SYMBOL]
        assert trade.entry_client_id == sent.client_id and trade.decision_id == "d9-x" and not trade.adopted
        assert sorted(o.type.value for o in _open(h)) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
        assert "CALMUSDT" not in st.live
        notes = " | ".join(e.message for e in sink.of(EventKind.NOTICE))
        assert "filled while unconfirmed" in notes and f"{never.client_id} never filled" in notes
        assert sink.of(EventKind.POSITION_OPENED)[0].data["trade"].entry_client_id == sent.client_id
    finally:
        await engine.shutdown()
        h.stop()


async def test_a_refused_api_key_stops_the_start_with_one_clear_error(tmp_path):
    """A wrong secret does not fix itself: the engine does not retry forever or run a blind
    cycle, it stops with the reason (headless turns it into exit code 1)."""
    import threading

    from mraster_tui.engine.errors import AuthError

    with loopback("hold") as handle:
        settings = live_settings(handle.base_url, api_secret="0" * 64)
        engine, sink = live_engine(handle, tmp_path, settings)
        with pytest.raises(AuthError):
            await asyncio.wait_for(engine.run(threading.Event(), run_once=True), timeout=20)
        [err] = [e for e in sink.of(EventKind.ERROR) if "refused the API key" in e.message]
        assert "0" * 64 not in err.message and "\n" not in err.message
        assert engine.snapshot().last_cycle == {}  # no cycle ran
        with handle.lock:
            assert handle.sim.all_orders() == []
