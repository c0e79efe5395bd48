"""Signal rules and reason codes on hand-built candles; TA-Lib checks the features; the backtest
form (precompute + evaluate_at) is checked bar by bar against the live function."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from mraster_tui.config import Settings
from mraster_tui.engine import indicators as ind
from mraster_tui.engine import signals as sig
from mraster_tui.engine.types import BookTicker, Candles, interval_ms
from tests.conftest import shared_data

M5, M30 = 300_000, 1_800_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % M30  # aligned on a 30m boundary


def candles(close, interval="5m", end_close_time=None, wick=0.0004, last_closed=True) -> Candles:
    """Candles from closes: open = previous close, small symmetric wicks."""
    close = np.asarray(close, dtype=np.float64)
    step = M5 if interval == "5m" else M30
    n = len(close)
    end = T0 + 400 * M30 if end_close_time is None else end_close_time
    open_time = end - step * np.arange(n, 0, -1, dtype=np.int64)
    open_ = np.r_[close[:1], close[:-1]]
    high = np.maximum(open_, close) * (1 + wick)
    low = np.minimum(open_, close) * (1 - wick)
    return Candles(open_time, open_, high, low, close, np.ones(n), interval, last_closed)


def trend_closes(n, per_bar, start=100.0):
    return start * np.exp(per_bar * np.arange(n))


def cross_series(direction: str) -> np.ndarray:
    """Closes that fall (rise) for 150 bars then turn, cut right at the EMA21/EMA55 cross bar."""
    sign = 1 if direction == "long" else -1
    steps = np.r_[np.full(150, -sign * 0.002), np.full(150, sign * 0.004)]
    close = 100 * np.exp(np.cumsum(steps))
    fast, slow = ind.ema(close, 21), ind.ema(close, 55)
    diff = sign * (fast - slow)
    k = next(i for i in range(100, len(close)) if diff[i] > 0 >= diff[i - 1])
    return close[:k + 1]


END = T0 + 400 * M30  # close time of the last LTF and HTF candle in the scenarios
NOW = END + 1_000


def book_around(price: float, half_spread: float = 0.0001) -> BookTicker:
    p = Decimal(repr(round(float(price), 6)))
    h = Decimal(repr(round(float(half_spread), 6)))
    return BookTicker("TESTUSDT", p - h, p + h, Decimal(5), Decimal(5), NOW - 500)


def scenario(direction="long", kind="cross"):
    """(ltf, htf, book, funding, settings) where a long/short signal passes every rule."""
    close = cross_series(direction)
    if kind == "trend":  # keep going after the cross: no fresh cross on the last bar
        sign = 1 if direction == "long" else -1
        close = np.r_[close, close[-1] * np.exp(sign * 0.004 * np.arange(1, 11))]
    ltf = candles(close, end_close_time=END)
    htf = candles(trend_closes(120, 0.004 if direction == "long" else -0.004), "30m", end_close_time=END)
    return ltf, htf, book_around(close[-1]), 0.0001, Settings.defaults()


def evaluate(ltf, htf, book, funding, settings, **kw):
    kw.setdefault("now_ms", NOW)
    return sig.evaluate_signal(ltf, htf, book, funding, settings, **kw)


# --------------------------------------------------------------------------- passing signals

@pytest.mark.parametrize("direction", ["long", "short"])
@pytest.mark.parametrize("kind", ["cross", "trend"])
def test_clean_scenarios_pass(direction, kind):
    ltf, htf, book, funding, s = scenario(direction, kind)
    r = evaluate(ltf, htf, book, funding, s, qv_score=1.5)
    assert r.reasons == ()
    assert (r.side, r.direction, r.entry_kind) == (direction, direction, kind)
    assert r.ok and r.candle_time == int(ltf.open_time[-1])


def test_long_entry_stop_take_profit_and_features_by_hand():
    talib = pytest.importorskip("talib")  # the oracle
    ltf, htf, book, funding, s = scenario("long")
    r = evaluate(ltf, htf, book, funding, s, qv_score=1.5)
    h, lo, c = ltf.high, ltf.low, ltf.close
    atr = talib.ATR(h, lo, c, 14)[-1]
    adx = talib.ADX(h, lo, c, 14)
    fast = talib.EMA(c, 21)
    htf_ema = talib.EMA(htf.close, 55)
    assert r.atr == pytest.approx(atr, rel=1e-9)
    assert r.entry_ref == book.ask  # a long pays the ask
    assert r.stop == book.ask - Decimal(repr(1.3 * r.atr))
    assert r.take_profit == book.ask + Decimal(repr(2.0 * r.atr))
    slope = (htf_ema[-1] - htf_ema[-5]) / htf_ema[-5]
    spread = float((book.ask - book.bid) / book.mid)
    expected = {
        "adx": adx[-1], "atr_pct": atr / c[-1], "slope_htf": slope, "rsi": talib.RSI(c, 14)[-1],
        "funding": 0.0001, "qv_score": 1.5, "trend": 1.0, "adx_delta": adx[-1] - adx[-15],
        "ema_slope_ltf": (fast[-1] - fast[-5]) / fast[-5], "spread": spread,
    }
    assert r.feature_names == sig.FEATURE_NAMES and len(r.features) >= 10
    for name, value in expected.items():
        assert r.feature(name) == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert r.expected_edge_r == pytest.approx(abs(slope) * 20 * (0.5 + max(adx[-1] - 20, 0) / 50), rel=1e-9)
    assert not r.features.flags.writeable


def test_short_uses_the_bid_and_mirrored_brackets():
    ltf, htf, book, funding, s = scenario("short")
    r = evaluate(ltf, htf, book, funding, s)
    assert r.side == "short" and r.entry_ref == book.bid
    assert r.stop == book.bid + Decimal(repr(1.3 * r.atr))
    assert r.take_profit == book.bid - Decimal(repr(2.0 * r.atr))
    assert r.feature("trend") == -1.0


@pytest.mark.parametrize("slope, adx, expected", [
    (0.005, 10.0, 0.05),  # 0.005 * 20 * 0.5
    (0.005, 45.0, 0.10),  # 0.005 * 20 * (0.5 + 25/50)
    (-0.01, 20.0, 0.10),  # |slope|
    (0.0, 60.0, 0.0),
])
def test_expected_edge_by_hand(slope, adx, expected):
    assert sig.expected_edge_r(slope, adx) == pytest.approx(expected)


@pytest.mark.parametrize("candle, expected", [
    ((10.0, 12.0, 9.0, 11.0), 1 / 3),  # upper wick 1, lower 1, range 3
    ((10.0, 10.5, 5.0, 10.4), 5.0 / 5.5),
    ((10.0, 10.0, 10.0, 10.0), 0.0),  # no range
])
def test_wickiness_by_hand(candle, expected):
    assert sig.wickiness(*candle) == pytest.approx(expected)


# --------------------------------------------------------------------------- one reason at a time

def _with_last_candle(c: Candles, **changes) -> Candles:
    arrays = {k: getattr(c, k).copy() for k in ("open", "high", "low", "close")}
    for k, v in changes.items():
        arrays[k][-1] = v
    return Candles(c.open_time, arrays["open"], arrays["high"], arrays["low"], arrays["close"], c.volume,
                   c.interval, c.last_closed)


def _case_trend_without_align(ltf, htf, book, funding, s):
    return scenario("long", "trend")[:4] + (s.replace(allow_trend_align=False),)


CASES = {
    # name: (scenario, mutation, expected reason codes)
    "rsi": (("long", "cross"), lambda l, h, b, f, s: (l, h, b, f, s.replace(rsi_buy_min=99)), {"rsi"}),
    "rsi_short": (("short", "cross"), lambda l, h, b, f, s: (l, h, b, f, s.replace(rsi_sell_max=1)), {"rsi"}),
    "no_cross": (("long", "trend"), _case_trend_without_align, {"no_cross"}),
    "htf_trend": (("long", "cross"),
                  lambda l, h, b, f, s: (l, candles(trend_closes(120, -0.004), "30m", END), b, f, s), {"htf_trend"}),
    "htf_trend_short": (("short", "cross"),
                        lambda l, h, b, f, s: (l, candles(trend_closes(120, 0.004), "30m", END), b, f, s),
                        {"htf_trend"}),
    "spread": (("long", "cross"), lambda l, h, b, f, s: (l, h, book_around(float(l.close[-1]), 0.5), f, s),
               {"spread"}),
    "wickiness": (("long", "cross"),
                  lambda l, h, b, f, s: (_with_last_candle(l, high=float(l.close[-1]) * 1.5), h, b, f, s),
                  {"wickiness"}),
    "edge_r": (("long", "cross"), lambda l, h, b, f, s: (l, h, b, f, s.replace(min_edge_r=5.0)), {"edge_r"}),
    "funding_long": (("long", "cross"), lambda l, h, b, f, s: (l, h, b, 0.002, s), {"funding"}),
    "funding_short": (("short", "cross"), lambda l, h, b, f, s: (l, h, b, -0.002, s), {"funding"}),
    "funding_unknown": (("long", "cross"), lambda l, h, b, f, s: (l, h, b, None, s), {"funding"}),
    "no_book": (("long", "cross"), lambda l, h, b, f, s: (l, h, None, f, s), {"no_book"}),
    "bad_book": (("long", "cross"), lambda l, h, b, f, s: (l, h, replace(b, bid=b.ask + 1), f, s), {"bad_book"}),
    "history_ltf": (("long", "cross"), lambda l, h, b, f, s: (l.slice(len(l) - 59, len(l)), h, b, f, s),
                    {"history"}),
    "history_htf": (("long", "cross"), lambda l, h, b, f, s: (l, h.slice(len(h) - 59, len(h)), b, f, s),
                    {"history"}),
    "bad_data_nan": (("long", "cross"), lambda l, h, b, f, s: (_with_last_candle(l, close=math.nan), h, b, f, s),
                     {"bad_data"}),
    "bad_data_inverted": (("long", "cross"),
                          lambda l, h, b, f, s: (_with_last_candle(l, high=float(l.low[-1]) * 0.99), h, b, f, s),
                          {"bad_data"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_rule_rejects_with_its_reason(name):
    (direction, kind), mutate, expected = CASES[name]
    r = evaluate(*mutate(*scenario(direction, kind)))
    assert set(r.reason_codes) == expected, [str(x) for x in r.reasons]
    assert r.side is None and not r.ok
    assert all(x.detail for x in r.reasons)


@pytest.mark.parametrize("direction", ["long", "short"])
def test_funding_filter_disabled_lets_it_through(direction):
    ltf, htf, book, _, s = scenario(direction)
    r = evaluate(ltf, htf, book, 0.05 if direction == "long" else -0.05, s.replace(funding_filter_enabled=False))
    assert r.side == direction
    assert evaluate(ltf, htf, book, None, s.replace(funding_filter_enabled=False)).feature("funding") == 0.0


def test_funding_against_the_other_side_is_fine():
    # A high positive funding rate blocks longs only; a short collects it.
    ltf, htf, book, _, s = scenario("short")
    assert evaluate(ltf, htf, book, 0.05, s).side == "short"


def test_stale_data_and_stale_book():
    ltf, htf, book, funding, s = scenario("long")
    late = NOW + 10 * 60_000  # 10 min after the close: more than 120 s + one 5m interval
    r = evaluate(ltf, htf, book, funding, s, now_ms=late)
    assert set(r.reason_codes) == {"stale"} and "LTF" in r.reasons[0].detail
    within = END + 120_000 + M5 - 1  # just inside max_data_age + one interval
    fresh_book = replace(book, time=within - 1_000)
    assert evaluate(ltf, htf, fresh_book, funding, s, now_ms=within).side == "long"
    old_book = replace(book, time=NOW - 121_000)
    assert evaluate(ltf, htf, old_book, funding, s).reason_codes == ("stale",)
    assert evaluate(ltf, htf, old_book, funding, s, now_ms=None).side == "long"  # no clock, no age check


def test_every_failing_reason_is_recorded():
    ltf, htf, _, _, s = scenario("long")
    ltf = _with_last_candle(ltf, high=float(ltf.close[-1]) * 1.5)
    r = evaluate(ltf, htf, book_around(float(ltf.close[-1]), 5.0), 0.002, s.replace(min_edge_r=5.0))
    assert set(r.reason_codes) == {"spread", "wickiness", "funding", "edge_r"}
    assert r.direction == "long" and r.side is None


def test_flat_market_has_no_stop_distance():
    close = np.full(200, 50.0)
    ltf = candles(close, wick=0.0, end_close_time=END)
    htf = candles(np.full(120, 50.0), "30m", wick=0.0, end_close_time=END)
    r = evaluate(ltf, htf, book_around(50.0), 0.0, Settings.defaults())
    assert {"atr", "no_cross", "edge_r"} <= set(r.reason_codes)
    assert r.side is None and r.stop is None


def test_no_book_uses_the_last_close_as_reference():
    ltf, htf, _, funding, s = scenario("long")
    r = evaluate(ltf, htf, None, funding, s)
    assert r.entry_ref == Decimal(repr(float(ltf.close[-1])))
    assert math.isnan(r.feature("spread")) and "bad_data" not in r.reason_codes


# --------------------------------------------------------------------------- closed candles only

def _append(c: Candles, close: float, last_closed: bool) -> Candles:
    step = interval_ms(c.interval)
    prev = float(c.close[-1])
    return Candles(np.r_[c.open_time, c.open_time[-1] + step], np.r_[c.open, prev],
                   np.r_[c.high, max(prev, close) * 1.001], np.r_[c.low, min(prev, close) * 0.999],
                   np.r_[c.close, close], np.r_[c.volume, 1.0], c.interval, last_closed)


def _same(a: sig.SignalResult, b: sig.SignalResult) -> None:
    assert (a.side, a.reasons, a.entry_ref, a.stop, a.take_profit, a.candle_time) == \
           (b.side, b.reasons, b.entry_ref, b.stop, b.take_profit, b.candle_time)
    np.testing.assert_array_equal(a.features, b.features)


def test_a_forming_candle_never_removes_a_signal():
    ltf, htf, book, funding, s = scenario("long")
    base = evaluate(ltf, htf, book, funding, s, now_ms=None)
    assert base.side == "long"
    crash = float(ltf.close[-1]) * 0.8  # undoes the cross when it counts:
    assert evaluate(_append(ltf, crash, last_closed=True), htf, book, funding, s, now_ms=None).side is None
    _same(evaluate(_append(ltf, crash, last_closed=False), htf, book, funding, s, now_ms=None), base)
    htf_forming = _append(htf, float(htf.close[-1]) * 0.5, last_closed=False)
    _same(evaluate(ltf, htf_forming, book, funding, s, now_ms=None), base)


def test_a_forming_candle_never_creates_a_signal():
    ltf, htf, book, funding, s = scenario("long")
    before = ltf.slice(0, len(ltf) - 1)  # the bar before the cross: no signal yet
    assert evaluate(before, htf, book, funding, s, now_ms=None).side is None
    assert evaluate(ltf, htf, book, funding, s, now_ms=None).side == "long"  # once the cross bar closes
    forming = Candles(ltf.open_time, ltf.open, ltf.high, ltf.low, ltf.close, ltf.volume, "5m", last_closed=False)
    _same(evaluate(forming, htf, book, funding, s, now_ms=None), evaluate(before, htf, book, funding, s, now_ms=None))


def test_a_row_closing_after_now_is_treated_as_forming_whatever_its_flag():
    ltf, htf, book, funding, s = scenario("long")
    before = ltf.slice(0, len(ltf) - 1)
    # The cross bar claims to be closed, but its close time is in the future of now_ms.
    early = END - 1
    r = evaluate(ltf, htf, book, funding, s, now_ms=early)
    assert r.candle_time == int(before.open_time[-1])
    assert r.side is None


# --------------------------------------------------------------------------- backtest form

def _aggregate(c: Candles, k: int, interval: str) -> Candles:
    n = len(c) // k * k
    return Candles(c.open_time[:n:k], c.open[:n:k], c.high[:n].reshape(-1, k).max(1),
                   c.low[:n].reshape(-1, k).min(1), c.close[k - 1:n:k], c.volume[:n].reshape(-1, k).sum(1),
                   interval, True)


def _check_equal_bar_by_bar(ltf: Candles, htf: Candles, s: Settings, ltf_window: int, htf_window: int,
                            bars: range) -> int:
    pre = sig.precompute(ltf, htf, s, ltf_window=ltf_window, htf_window=htf_window)
    candidates = pre.candidates(s)
    htf_close = htf.open_time + M30
    signals = 0
    for i in bars:
        close = float(ltf.close[i])
        book = book_around(close, close * (0.0002 if i % 7 else 0.02))  # some wide spreads too
        funding = (0.0001, -0.002, 0.002, None)[i % 4]
        now = int(ltf.open_time[i]) + M5 + 1_000
        h = int(np.searchsorted(htf_close, now - 1_000, side="right")) - 1
        live = sig.evaluate_signal(ltf.slice(max(0, i - ltf_window + 1), i + 1),
                                   htf.slice(max(0, h - htf_window + 1), h + 1), book, funding, s,
                                   qv_score=0.7, now_ms=now)
        fast = sig.evaluate_at(pre, i, book, funding, s, qv_score=0.7, now_ms=now)
        assert (fast.side, fast.reason_codes, fast.direction, fast.entry_kind, fast.candle_time) == \
               (live.side, live.reason_codes, live.direction, live.entry_kind, live.candle_time), i
        np.testing.assert_allclose(fast.features, live.features, rtol=1e-9, atol=1e-12, equal_nan=True)
        for a, b in ((fast.stop, live.stop), (fast.take_profit, live.take_profit)):
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= abs(b) * Decimal("1e-9")), i
        if live.side:
            signals += 1
            assert candidates[i] == (1 if live.side == "long" else -1), i
    return signals


def test_precompute_equals_live_bar_by_bar_on_a_random_walk():
    rng = np.random.default_rng(42)
    regimes = np.repeat(rng.normal(0, 0.002, 40), 60)  # drifting regimes: crosses and trends
    close = 100 * np.exp(np.cumsum(regimes + rng.normal(0, 0.002, len(regimes))))
    ltf = candles(close, wick=0.001, end_close_time=END)
    htf = _aggregate(ltf.slice(len(ltf) % 6, len(ltf)), 6, "30m")
    s = Settings.defaults().replace(klines=150, min_edge_r=0.02)
    signals = _check_equal_bar_by_bar(ltf, htf, s, 150, 90, range(len(ltf)))
    assert signals > 10  # the comparison covered real signals, not just rejections


def test_precompute_equals_live_on_real_data():
    rows = json.loads(shared_data("futures", "XRP_USDT_USDT-5m-futures.json").read_text())
    ltf = Candles.from_rows(rows, "5m")
    htf = _aggregate(ltf, 6, "30m")
    s = Settings.defaults()
    signals = _check_equal_bar_by_bar(ltf, htf, s, 360, 120, range(350, len(ltf), 2))
    assert signals > 5


def test_precompute_rejects_bad_data_and_short_windows():
    ltf, htf, *_ = scenario("long")
    bad = _with_last_candle(ltf, close=math.nan)
    with pytest.raises(ValueError, match="NaN"):
        sig.precompute(bad, htf, Settings.defaults())
    with pytest.raises(ValueError, match="below"):
        sig.precompute(ltf, htf, Settings.defaults(), ltf_window=30)
    pre = sig.precompute(ltf, htf, Settings.defaults())
    with pytest.raises(IndexError):
        sig.evaluate_at(pre, len(ltf), None, None, Settings.defaults())


def test_the_pure_core_imports_only_numpy_and_the_stdlib():
    import ast
    import sys
    from pathlib import Path

    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    engine = Path(sig.__file__).parent
    for name in ("indicators", "signals", "universe", "sizing"):
        tree = ast.parse((engine / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [f"{node.module}.{a.name}" if node.module == "mraster_tui.engine" else node.module
                        for a in node.names]
            else:
                continue
            for mod in mods:
                # the engine's value types and the indicators are part of the pure core
                assert mod.split(".")[0] in allowed or mod in (
                    "mraster_tui.engine.types", "mraster_tui.engine.indicators"), (name, mod)
