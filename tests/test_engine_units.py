"""FastTP rules, scheduling, live settings, the factory's venue choice (paper never signs) and the
controller (real demo engine in a thread)."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from _engine_fixtures import SYMBOL, loopback
from mraster_tui.config import Settings
from mraster_tui.engine.clock import SimClock
from mraster_tui.engine.controller import EngineController
from mraster_tui.engine.events import EventKind, MemorySink
from mraster_tui.engine.executor import Executor
from mraster_tui.engine.factory import FactoryError, build_engine, pick_mode
from mraster_tui.engine.fasttp import FastTP, MidSampler
from mraster_tui.engine.ledger import Ledger, LiveTrade, State
from mraster_tui.engine.runner import Engine
from mraster_tui.engine.sim.market import make_symbol_info
from mraster_tui.engine.sim.server import TEST_API_KEY, TEST_API_SECRET

D = Decimal
T = 1_700_000_000_000


# -- FastTP ----------------------------------------------------------------------------------

def test_returns_use_the_newest_sample_at_least_a_window_old():
    s = MidSampler()
    for dt, p in ((0, 100.0), (30_000, 101.0), (60_000, 102.0), (90_000, 99.0)):
        s.add("X", T + dt, p)
    assert s.ret("X", 60_000) == pytest.approx(99.0 / 101.0 - 1)  # vs the sample at +30 s
    assert s.ret("X", 90_000) == pytest.approx(99.0 / 100.0 - 1)
    assert s.ret("X", 180_000) is None  # not enough history: no trigger
    s.add("X", T + 90_000 + 299_000, 98.0)  # samples older than 300 s are dropped: 0, 30 and 60 s go
    assert s.ret("X", 60_000) == pytest.approx(98.0 / 99.0 - 1)
    assert s.ret("X", 299_000) == pytest.approx(98.0 / 99.0 - 1) and s.ret("X", 300_000) is None


def _fasttp(side: str, entry: str, sl: str, **over) -> tuple[FastTP, LiveTrade]:
    s = Settings.defaults().replace(**over)
    info = make_symbol_info("XUSDT", 100.0, tick=D("0.01"))
    led = Ledger(State.fresh(T))
    ex = Executor(None, led, s, SimClock(T), lambda *a, **k: None, None, lambda: {"XUSDT": info})
    trade = LiveTrade(symbol="XUSDT", side=side, qty=D("1"), entry=D(entry), sl=D(sl), sl_initial=D(sl),
                      tp=D("200"), atr=1.0, opened_at=T, trade_no=1, sl_client_id="s")
    return FastTP(led, ex, s, SimClock(T), lambda *a, **k: None, None), trade


def test_long_trigger_and_new_stop_hand_checked():
    f, t = _fasttp("LONG", "100", "98.7")  # 1 R = 1.3
    f.sample("XUSDT", T, D("101.00"))
    f.sample("XUSDT", T + 60_000, D("100.80"))  # ret1 = -0.198 % <= -0.1 %, r_now = 0.8 / 1.3 = 0.615
    r_now, new = f.target(t, D("100.80"))
    assert r_now == pytest.approx(0.8 / 1.3)
    assert new == D("100.55")  # max(100 + 0.05 * 1.3, 100.80 - 0.25 * 1.0)
    t.sl = D("100.60")  # already tighter: never loosened
    assert f.target(t, D("100.80")) is None
    t.sl = D("98.7")
    assert f.target(t, D("100.20")) is None  # r_now 0.15 < FASTTP_MIN_R 0.25


def test_short_is_the_mirror_image():
    f, t = _fasttp("SHORT", "100", "101.3")
    f.sample("XUSDT", T, D("99.00"))
    f.sample("XUSDT", T + 60_000, D("99.20"))  # adverse for a short: +0.2 %
    r_now, new = f.target(t, D("99.20"))
    assert r_now == pytest.approx(0.8 / 1.3) and new == D("99.45")  # min(100 - 0.065, 99.20 + 0.25)
    t.sl = D("99.40")
    assert f.target(t, D("99.20")) is None


def test_no_trigger_without_an_adverse_move():
    f, t = _fasttp("LONG", "100", "98.7")
    f.sample("XUSDT", T, D("100.7"))
    f.sample("XUSDT", T + 60_000, D("100.8"))  # still rising
    assert f.target(t, D("100.8")) is None


@hsettings(max_examples=150, deadline=None)
@given(side=st.sampled_from(["LONG", "SHORT"]), sl_off=st.floats(0.05, 5), mids=st.lists(
    st.floats(90, 110), min_size=2, max_size=12), snap=st.floats(0, 2), min_r=st.floats(0, 2))
def test_a_fasttp_stop_is_always_tighter_and_inside_the_price(side, sl_off, mids, snap, min_r):
    sl = 100 - sl_off if side == "LONG" else 100 + sl_off
    f, t = _fasttp(side, "100", f"{sl:.2f}", fasttp_snap_atr=snap, fasttp_min_r=min_r)
    for i, m in enumerate(mids):
        f.sample("XUSDT", T + i * 30_000, D(f"{m:.2f}"))
    mid = D(f"{mids[-1]:.2f}")
    hit = f.target(t, mid)
    if hit is not None:
        _, new = hit
        if side == "LONG":
            assert t.sl < new < mid
        else:
            assert mid < new < t.sl
        assert new % D("0.01") == 0


# -- scheduling and settings --------------------------------------------------------------------

def _engine(tmp_path, **over) -> Engine:
    s = Settings.defaults().replace(**over)
    return Engine(s, exchange=object(), clock=SimClock(T), sink=MemorySink(), state_path=tmp_path / "s.json")


def test_scans_are_scheduled_after_each_candle_close_on_venue_time(tmp_path):
    e = _engine(tmp_path, interval="5m", scan_delay_sec=1.0)
    e.clock.set(1_700_000_123_456)  # local time
    e._offset_ms = 2_500  # the venue is 2.5 s ahead
    # venue now = ...125_956 -> next 5m close at 1_700_000_100_000 + 300_000 = ...400_000 (venue)
    assert e._next_scan_ms_local() == 1_700_000_400_000 + 1_000 - 2_500
    e._offset_ms = -4_000
    assert e._next_scan_ms_local() == 1_700_000_400_000 + 1_000 + 4_000


def test_apply_settings_splits_live_and_restart(tmp_path):
    e = _engine(tmp_path)
    new = e.settings.replace(leverage=4, fasttp_min_r=0.5, interval="15m", state_file="other.json")
    live, restart = e.apply_settings(new)
    assert live == ("fasttp_min_r", "leverage") and restart == ("interval", "state_file")
    assert e.settings.leverage == 4 and e.settings.fasttp_min_r == 0.5
    assert e.settings.interval == "5m" and e.settings.state_file == "aster_state.json"  # wait for a restart
    assert e.settings.source("leverage") == "runtime"


# -- factory -------------------------------------------------------------------------------------

def test_mode_choice():
    s = Settings.defaults()
    keys = s.replace(api_key="k" * 64, api_secret="s" * 64)
    assert pick_mode(s, demo=False) == "PAPER"  # no keys: always paper
    assert pick_mode(keys, demo=False) == "LIVE"  # seed default paper=false with keys: live
    assert pick_mode(keys.replace(paper=True), demo=False) == "PAPER"
    assert pick_mode(keys, demo=True) == "DEMO"
    with pytest.raises(FactoryError, match="needs ASTER_API_KEY"):
        pick_mode(s, demo=False, mode_override="live")


async def test_paper_mode_with_keys_sends_no_signed_request(tmp_path, monkeypatch):
    monkeypatch.setenv("MRASTER_DATA_DIR", str(tmp_path))
    h = loopback("hold", start=int(time.time() * 1000))  # live public prices = the venue's clock
    try:
        s = Settings.defaults().replace(exchange_base=h.base_url, venue="binance", api_key=TEST_API_KEY,
                                        api_secret=TEST_API_SECRET, paper=True, include_symbols="", klines=120,
                                        decision_log="", bandit_enabled=False)
        sink = MemorySink()
        engine = build_engine(s, demo=False, sink=sink)
        assert engine.mode == "PAPER" and engine.store.path.name == "paper-aster_state.json"
        await engine.run(asyncio.Event(), run_once=True)
        assert engine.snapshot().last_cycle["orders"] == 1  # the paper venue filled a simulated entry
        log = h.requests()
        assert log and not any(r["signed"] or r["api_key"] for r in log)
        assert not any(r["method"] != "GET" for r in log)
        with h.lock:
            assert h.sim.positions() == [] and h.sim.all_orders() == []  # nothing reached the "venue"
        assert SYMBOL in engine.ledger.state.live
    finally:
        h.stop()


# -- controller ----------------------------------------------------------------------------------

def test_controller_runs_the_demo_in_a_thread_and_stops_cleanly(tmp_path, monkeypatch):
    monkeypatch.setenv("MRASTER_DATA_DIR", str(tmp_path))
    sink = MemorySink()
    s = Settings.defaults().replace(demo_speed=600.0, decision_log="")
    c = EngineController(s, demo=True, sink=sink)
    assert c.state == "stopped" and c.snapshot().state == "stopped"
    c.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and c.snapshot().cycle < 1:
        time.sleep(0.05)
    snap = c.snapshot()
    assert snap.cycle >= 1 and snap.mode == "DEMO" and snap.state == "running"
    live, restart = c.apply_settings(s.replace(risk_per_trade=0.01, klines=200))
    assert live == ("risk_per_trade",) and restart == ("klines",)
    deadline = time.monotonic() + 10  # the engine's loop applies it between two steps
    while time.monotonic() < deadline and not any(
            e.kind is EventKind.NOTICE and "risk_per_trade" in e.message for e in sink.events):
        time.sleep(0.02)
    assert c._engine.settings.risk_per_trade == 0.01 and c._engine.settings.klines == 360
    assert c._engine.settings.include_symbols == ()  # the demo's universe stays pinned
    assert c.stop(timeout=15) is True
    assert c.state == "stopped" and c.snapshot().state == "stopped"
    assert (tmp_path / "demo" / "aster_state.json").exists()


def test_controller_reports_a_factory_failure_without_raising():
    sink = MemorySink()

    def broken(*a, **k):
        raise FactoryError("no venue configured")

    c = EngineController(Settings.defaults(), sink=sink, factory=broken)
    c.run_blocking(threading.Event())
    assert c.state == "error" and "no venue configured" in c.snapshot().error
    assert sink.of(EventKind.ERROR)[-1].message.endswith("no venue configured")


def test_after_minus_2021_a_leg_is_due_or_kept_three_ticks_inside_the_price():
    f, t = _fasttp("LONG", "100", "98")
    ex = f.executor
    assert ex._inside(t, True, D("98.00"), D("97.99")) is None  # the price is already through the stop
    assert ex._inside(t, True, D("98.00"), D("98.50")) == D("98.00")  # far enough: unchanged
    assert ex._inside(t, True, D("98.00"), D("98.02")) == D("97.99")  # 3 ticks under the price
    assert ex._inside(t, False, D("105.00"), D("105.00")) is None  # the TP is due
    assert ex._inside(t, False, D("105.00"), D("104.99")) == D("105.02")
    f, s = _fasttp("SHORT", "100", "102")
    assert f.executor._inside(s, True, D("102.00"), D("101.99")) == D("102.02")
    assert f.executor._inside(s, True, D("102.00"), D("102.00")) is None
