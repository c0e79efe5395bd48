"""The state store, trade records from fills, and the circuit breaker (real files, no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from mraster_tui.engine.breaker import CLOCK_SKEW, GUARD_FAILURES, IP_BAN, STALE_DATA, CircuitBreaker
from mraster_tui.engine.ledger import (
    ClosedTrade,
    Ledger,
    LiveTrade,
    PendingEntry,
    State,
    StateError,
    StateLocked,
    StateStore,
    close_at_mark,
    close_from_fills,
    make_client_id,
)
from mraster_tui.engine.types import Fill, Side

T0 = 1_700_000_000_000
D = Decimal


def _trade(**kw) -> LiveTrade:
    base = dict(symbol="BTCUSDT", side="LONG", qty=D("0.010"), entry=D("100.0"), sl=D("98.0"), sl_initial=D("98.0"),
                tp=D("104.0"), atr=1.5, opened_at=T0, trade_no=7, entry_client_id="mrabcd-7e-BTCUSDT",
                entry_order_id=11, decision_id="d1-0-BTCUSDT", bucket="M")
    base.update(kw)
    return LiveTrade(**base)


def _fill(tid, oid, side, price, qty, fee, t, pnl="0") -> Fill:
    p, q = D(price), D(qty)
    return Fill("BTCUSDT", tid, oid, side, p, q, p * q, D(fee), "USDT", D(pnl), t)


def _state_with_everything() -> State:
    st = State.fresh(T0)
    st.live["BTCUSDT"] = _trade()
    st.pending["ETHUSDT"] = PendingEntry("ETHUSDT", "SHORT", "mrabcd-8e-ETHUSDT", 8, D("0.5"), 3.25, 1.3, 2.0, T0,
                                         "d2-0-ETHUSDT", "S")
    st.history.append(ClosedTrade("SOLUSDT", "SHORT", D("2"), D("50"), D("49"), D("51"), T0, T0 + 1, D("2"), D("0.1"),
                                  D("-0.01"), D("1.89"), 0.945, "take_profit", "fills", 3, "L", "d0", False))
    st.totals.add(st.history[0])
    st.fasttp_cooldown["BTCUSDT"] = T0 + 45_000
    st.fail_until["XRPUSDT"] = T0 + 60_000
    st.policy = {"schema": "mraster.policy", "x": [0.1, 0.2]}
    st.equity_curve = [[float(T0), 10000.0]]
    return st


# -- the store -------------------------------------------------------------------------------

def test_round_trip_is_exact(tmp_path):
    store = StateStore(tmp_path / "state.json")
    st = _state_with_everything()
    store.save(st)
    rep = store.load(T0)
    assert rep.source == "file" and rep.messages == ()
    assert rep.state.to_json() == st.to_json()
    assert rep.state.live["BTCUSDT"].qty == D("0.010")  # Decimal kept exactly, trailing zero too
    assert oct(os.stat(tmp_path / "state.json").st_mode & 0o777) == "0o600"


def test_missing_file_means_a_fresh_state(tmp_path):
    rep = StateStore(tmp_path / "nope.json").load(T0)
    assert rep.source == "new" and rep.messages == () and rep.state.live == {}
    assert len(rep.state.id_salt) == 4


def test_previous_good_copy_is_kept(tmp_path):
    store = StateStore(tmp_path / "state.json")
    st = State.fresh(T0)
    store.save(st)
    st.next_trade_no = 42
    store.save(st)
    assert json.loads((tmp_path / "state.json.bak").read_text())["next_trade_no"] == 1
    assert json.loads((tmp_path / "state.json").read_text())["next_trade_no"] == 42


@pytest.mark.parametrize("garbage", [b"", b"{\"schema\": \"mraster.state\", \"schema_ver", b"\x00\xff\xfe",
                                     b"[1, 2, 3]", b'{"schema": "mraster.state", "schema_version": 1}'])
def test_corrupt_file_is_moved_aside_and_backup_restored(tmp_path, garbage):
    path = tmp_path / "state.json"
    store = StateStore(path)
    good = _state_with_everything()
    store.save(good)
    store.save(good)  # now the .bak holds a good copy too
    path.write_bytes(garbage)
    rep = store.load(T0)
    assert rep.source == "backup"
    assert rep.state.to_json() == good.to_json()
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage  # the original is kept, untouched
    levels = [lvl for lvl, _ in rep.messages]
    assert levels[0] == "ERROR" and "unreadable" in rep.messages[0][1] and str(aside[0]) in rep.messages[0][1]
    assert not path.exists()  # nothing was silently written in its place


def test_corrupt_file_without_good_backup_starts_fresh_loudly(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    (tmp_path / "state.json.bak").write_text("also broken")
    rep = StateStore(path).load(T0)
    assert rep.source == "new" and rep.state.live == {}
    text = " ".join(m for _, m in rep.messages)
    assert "moved it to" in text and "empty state" in text and "adopted from the venue" in text
    assert len(list(tmp_path.glob("state.json.corrupt-*"))) == 1
    assert len(list(tmp_path.glob("state.json.bak.corrupt-*"))) == 1


def test_state_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "state.json"
    data = State.fresh(T0).to_json()
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(StateError, match="newer version"):
        StateStore(path).load(T0)
    assert path.exists()  # never moved or overwritten


def test_a_second_engine_cannot_take_the_lock(tmp_path):
    a = StateStore(tmp_path / "state.json")
    b = StateStore(tmp_path / "state.json")
    a.acquire()
    with pytest.raises(StateLocked, match="another mraster-tui engine"):
        b.acquire()
    # and from another process
    code = ("import sys\nfrom mraster_tui.engine.ledger import StateStore, StateLocked\n"
            f"s = StateStore({str(tmp_path / 'state.json')!r})\n"
            "try:\n    s.acquire()\nexcept StateLocked as e:\n    print('LOCKED', e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 3 and "LOCKED" in out.stdout
    a.release()
    b.acquire()  # free again
    b.release()


# -- client ids --------------------------------------------------------------------------------

def test_client_ids_are_valid_and_short():
    import re

    rx = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
    for sym in ("BTCUSDT", "1000SHIBUSDT", "A" * 40):
        for leg in ("e", "s1", "t12", "x3"):
            cid = make_client_id("zz99", 123456789, leg, sym)
            assert rx.match(cid) and len(cid) <= 36
    assert make_client_id("ab12", 7, "e", "BTCUSDT") == "mrab12-7e-BTCUSDT"
    led = Ledger(State.fresh(T0))
    t = _trade()
    ids = {led.next_leg_id(t, "s") for _ in range(5)}
    assert len(ids) == 5  # every new version is a new id


# -- close-out from fills ------------------------------------------------------------------------

def test_long_stopped_out_r_from_fills_and_fees():
    t = _trade()  # long 0.010 @ 100, stop 98 -> risk 0.02 USDT
    fills = [_fill(1, 11, Side.BUY, "100.0", "0.010", "0.0005", T0),
             _fill(2, 12, Side.SELL, "97.9", "0.004", "0.000196", T0 + 5000, pnl="-0.0084"),
             _fill(3, 12, Side.SELL, "97.9", "0.006", "0.000294", T0 + 5001, pnl="-0.0126")]
    c = close_from_fills(t, fills, funding=D("-0.0001"), now_ms=T0 + 9000)
    assert c is not None
    assert c.exit == D("97.9") and c.qty == D("0.010")
    assert c.gross_pnl == D("-0.0210")  # the venue's realised PnL
    assert c.fees == D("0.000990")  # 0.0005 entry + 0.00049 exit
    assert c.pnl == D("-0.0210") - D("0.000990") - D("0.0001")
    # hand check: -0.02209 / 0.02 = -1.1045 R
    assert c.r == pytest.approx(-1.1045)
    assert c.exit_reason == "stop" and c.exit_source == "fills" and c.closed_at == T0 + 5001


def test_short_take_profit_without_realized_field_uses_prices():
    t = _trade(side="SHORT", entry=D("100"), sl=D("102"), sl_initial=D("102"), tp=D("96"), qty=D("1"))
    fills = [_fill(1, 11, Side.SELL, "100", "1", "0.05", T0), _fill(2, 13, Side.BUY, "96", "1", "0.048", T0 + 1)]
    c = close_from_fills(t, fills, funding=None, now_ms=T0 + 2)
    assert c.gross_pnl == D("4") and c.fees == D("0.098") and c.funding == 0
    assert c.r == pytest.approx((4 - 0.098) / 2)
    assert c.exit_reason == "take_profit"


def test_no_exit_fills_yet_means_not_closed():
    t = _trade()
    assert close_from_fills(t, [_fill(1, 11, Side.BUY, "100", "0.010", "0", T0)], funding=None, now_ms=T0) is None
    partial = [_fill(2, 12, Side.SELL, "99", "0.004", "0", T0 + 1)]
    assert close_from_fills(t, partial, funding=None, now_ms=T0) is None


def test_fasttp_stop_is_named_and_mark_close_is_flagged():
    t = _trade(sl=D("100.5"))  # the stop was moved up by FastTP
    c = close_from_fills(t, [_fill(2, 12, Side.SELL, "100.5", "0.010", "0", T0 + 1, pnl="0.005")], funding=None,
                         now_ms=T0)
    assert c.exit_reason == "fasttp_stop" and c.r == pytest.approx(0.25)
    m = close_at_mark(t, D("101"), T0 + 5, "unknown")
    assert m.exit_source == "mark" and m.r is None and m.pnl == D("0.010")


def test_history_is_trimmed_but_totals_keep_counting():
    led = Ledger(State.fresh(T0), history_max=3)
    for i in range(5):
        t = _trade(trade_no=i)
        led.open_trade(t)
        led.record_close(t, close_at_mark(t, D("101"), T0 + i, "x"))
    assert len(led.state.history) == 3 and [h.trade_no for h in led.state.history] == [2, 3, 4]
    assert led.state.totals.trades == 5 and led.state.totals.pnl == D("0.050")


def test_cooldowns_expire():
    led = Ledger(State.fresh(T0))
    led.fail("BTCUSDT", T0 + 1000)
    assert led.failing("BTCUSDT", T0 + 999)
    assert not led.failing("BTCUSDT", T0 + 1000) and "BTCUSDT" not in led.state.fail_until
    led.set_fasttp_cooldown("BTCUSDT", T0 + 500)
    assert not led.fasttp_ready("BTCUSDT", T0 + 499) and led.fasttp_ready("BTCUSDT", T0 + 500)


# -- the breaker -----------------------------------------------------------------------------------

def test_breaker_trips_on_each_cause_and_clears_itself():
    changes = []
    b = CircuitBreaker(guard_fail_limit=3, emit=changes.append)
    b.check_data_age(30, 120)
    assert not b.active
    b.check_data_age(121, 120)
    assert b.active and b.reasons == (STALE_DATA,)
    b.check_data_age(130, 120)  # still stale: no second event
    b.check_skew(5001, 10000)
    assert b.reasons == (CLOCK_SKEW, STALE_DATA)
    b.guard_failed("x")
    b.guard_failed("x")
    assert GUARD_FAILURES not in b.reasons
    b.guard_failed("x")
    assert GUARD_FAILURES in b.reasons
    b.banned(T0 + 60_000, T0)
    assert IP_BAN in b.reasons
    b.check_ban(T0 + 59_999)
    assert IP_BAN in b.reasons
    b.check_ban(T0 + 60_000)
    b.check_skew(-4999, 10000)
    b.guard_ok()
    b.check_data_age(2, 120)
    assert not b.active and b.reasons == ()
    trips = [(c.cause, c.tripped) for c in changes]
    assert trips == [(STALE_DATA, True), (CLOCK_SKEW, True), (GUARD_FAILURES, True), (IP_BAN, True),
                     (IP_BAN, False), (CLOCK_SKEW, False), (GUARD_FAILURES, False), (STALE_DATA, False)]
    assert changes[-1].active is False and changes[-2].active is True
