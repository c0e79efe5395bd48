"""Indicators against TA-Lib (the oracle), hand-checked values, edge cases and the window forms."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mraster_tui.engine import indicators as ind
from tests.conftest import shared_data

talib = pytest.importorskip("talib")

RTOL = 1e-9  # the acceptance bound; the measured error is ~1e-14


def walk(n: int, seed: int, scale: float = 100.0, vol: float = 0.003):
    """A seeded random walk of OHLC candles (high >= max(open, close), low <= min(open, close))."""
    rng = np.random.default_rng(seed)
    close = scale * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[close[:1], close[:-1]] * np.exp(rng.normal(0.0, vol / 4, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, vol / 2, n)))
    return high, low, close


def assert_matches(ours: np.ndarray, oracle: np.ndarray, rtol: float = RTOL) -> None:
    assert ours.shape == oracle.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(oracle), err_msg="NaN layout differs")
    ok = ~np.isnan(oracle)
    np.testing.assert_allclose(ours[ok], oracle[ok], rtol=rtol, atol=1e-12)


def all_four(high, low, close, n):
    return [
        (ind.ema(close, n), talib.EMA(close, n)),
        (ind.rsi(close, n), talib.RSI(close, n)),
        (ind.atr(high, low, close, n), talib.ATR(high, low, close, n)),
        (ind.adx(high, low, close, n), talib.ADX(high, low, close, n)),
    ]


# --------------------------------------------------------------------------- against TA-Lib

@pytest.mark.parametrize("size", [0, 1, 2, 13, 14, 15, 16, 17, 27, 28, 29, 33, 60, 360, 1000, 5003])
@pytest.mark.parametrize("n", [2, 14, 21, 55])
def test_random_walks_match_talib(size, n):
    high, low, close = walk(size, seed=size * 100 + n)
    for ours, oracle in all_four(high, low, close, n):
        assert_matches(ours, oracle)


def test_long_series_spanning_many_chunks_matches_talib():
    high, low, close = walk(200_003, seed=7, vol=0.01)
    for ours, oracle in all_four(high, low, close, 14):
        assert_matches(ours, oracle)
    assert_matches(ind.ema(close, 55), talib.EMA(close, 55))


def test_atr_period_one_is_the_true_range():
    high, low, close = walk(100, seed=3)
    assert_matches(ind.atr(high, low, close, 1), talib.ATR(high, low, close, 1))
    assert_matches(ind.true_range(high, low, close), talib.TRANGE(high, low, close), rtol=0)


def test_directional_movement_matches_talib():
    high, low, _ = walk(500, seed=4)
    high[100:110] = high[99]  # flat stretches
    low[100:110] = low[99]
    high[200:210] = high[199] + np.arange(1, 11)  # up-move equal to the down-move: neither counts
    low[200:210] = low[199] - np.arange(1, 11)
    plus, minus = ind.directional_movement(high, low)
    assert_matches(plus, talib.PLUS_DM(high, low, 1), rtol=0)
    assert_matches(minus, talib.MINUS_DM(high, low, 1), rtol=0)


def _load_json(*parts):
    rows = np.array(json.loads(shared_data(*parts).read_text()), dtype=np.float64)
    return rows[:, 2], rows[:, 3], rows[:, 4]


def _load_csv(*parts):
    with shared_data(*parts).open() as f:
        rows = np.array([[float(r["high"]), float(r["low"]), float(r["close"])] for r in csv.DictReader(f)])
    return rows[:, 0], rows[:, 1], rows[:, 2]


@pytest.mark.parametrize("loader, parts", [
    (_load_json, ("futures", "XRP_USDT_USDT-5m-futures.json")),
    (_load_json, ("UNITTEST_BTC-5m.json",)),
    (_load_json, ("UNITTEST_BTC-1m.json",)),
    (_load_json, ("XRP_ETH-5m.json",)),
    (_load_csv, ("other", "skyyona_yona_vanguard_futures", "PIPPINUSDT_5m.csv")),
    (_load_csv, ("other", "skyyona_yona_vanguard_futures", "INUSDT_5m.csv")),
])
def test_real_data_matches_talib(loader, parts):
    high, low, close = loader(*parts)
    for n in (14, 21, 55):
        for ours, oracle in all_four(high, low, close, n):
            assert_matches(ours, oracle)


# --------------------------------------------------------------------------- hand-checked values

def test_ema_by_hand():
    # seed = mean(1, 2, 3) = 2 at index 2; k = 2/4 = 0.5: 0.5*4 + 0.5*2 = 3, then 0.5*5 + 0.5*3 = 4
    out = ind.ema(np.array([1.0, 2, 3, 4, 5]), 3)
    np.testing.assert_array_equal(out[:2], [np.nan, np.nan])
    np.testing.assert_allclose(out[2:], [2.0, 3.0, 4.0], rtol=1e-15)


def test_rsi_by_hand():
    # n = 2.  changes: +1, -1, +2.  Seed at index 2: gain (1+0)/2 = 0.5, loss (0+1)/2 = 0.5 -> 50.
    # Index 3: gain (0.5*1 + 2)/2 = 1.25, loss (0.5*1 + 0)/2 = 0.25 -> 100 * 1.25/1.5 = 83.33..
    out = ind.rsi(np.array([10.0, 11, 10, 12]), 2)
    np.testing.assert_allclose(out[2:], [50.0, 250 / 3], rtol=1e-14)
    assert np.isnan(out[:2]).all()


def test_atr_by_hand():
    # true ranges of bars 1..3: max(h, pc) - min(l, pc)
    high = np.array([10.0, 12, 11, 15])
    low = np.array([9.0, 10, 8, 13])
    close = np.array([9.5, 11, 9, 14])
    # bar1: max(12, 9.5) - min(10, 9.5) = 2.5; bar2: 11 - 8 = 3; bar3: max(15, 9) - min(13, 9) = 6
    out = ind.atr(high, low, close, 2)
    np.testing.assert_allclose(out[2:], [(2.5 + 3) / 2, (2.75 * 1 + 6) / 2], rtol=1e-15)


def test_adx_of_a_steady_uptrend_is_100():
    # Every bar makes a higher high and a higher low: +DM only, so DX = 100 and ADX = 100.
    close = np.arange(1.0, 41.0)
    out = ind.adx(close + 0.5, close - 0.5, close, 5)
    np.testing.assert_allclose(out[9:], 100.0, rtol=1e-14)
    assert np.isnan(out[:9]).all()


def test_adx_delta():
    series = np.array([np.nan, np.nan, 10.0, 12.0, 15.0, 11.0])
    np.testing.assert_array_equal(ind.adx_delta(series, 2), [np.nan] * 4 + [5.0, -1.0])


# --------------------------------------------------------------------------- edge cases

def test_flat_market_matches_talib():
    close = np.full(100, 5.0)
    for ours, oracle in all_four(close, close, close, 14):
        assert_matches(ours, oracle)
    assert ind.rsi(close)[-1] == 0.0  # no movement at all: TA-Lib says 0
    assert ind.adx(close, close, close)[-1] == 0.0


def test_flat_tail_and_flat_head_match_talib():
    high, low, close = walk(300, seed=9)
    for a, b in ((150, 300), (0, 80)):  # a long flat tail, then a flat head (no DM before bar 80)
        close[a:b] = close[max(a - 1, 0)] if a else close[b]
        high[a:b] = low[a:b] = close[a:b]
    for ours, oracle in all_four(high, low, close, 14):
        assert_matches(ours, oracle)


def test_range_without_direction_skips_adx_steps_like_talib():
    # High and low never move, close wanders inside: true range > 0 but no directional movement,
    # then a trend starts; TA-Lib skips the ADX update while both smoothed DMs are exactly 0.
    n = 120
    high, low = np.full(n, 11.0), np.full(n, 9.0)
    close = 10 + np.sin(np.arange(n))
    high[60:] += np.arange(60) * 0.1
    low[60:] += np.arange(60) * 0.1
    close[60:] += np.arange(60) * 0.1
    assert_matches(ind.adx(high, low, close, 5), talib.ADX(high, low, close, 5))
    assert_matches(ind.adx(high, low, close, 14), talib.ADX(high, low, close, 14))


@pytest.mark.parametrize("scale", [1e-8, 1e6])
def test_scale_invariance_matches_talib(scale):
    high, low, close = walk(500, seed=11, scale=scale)
    for ours, oracle in all_four(high, low, close, 14):
        assert_matches(ours, oracle)


@pytest.mark.parametrize("func, args", [
    (ind.ema, lambda x: (x, 5)),
    (ind.rsi, lambda x: (x, 5)),
    (ind.atr, lambda x: (x + 1, x - 1, x, 5)),
    (ind.adx, lambda x: (x + 1, x - 1, x, 5)),
])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_raises_with_the_index(func, args, bad):
    x = np.linspace(10, 20, 100)
    x[42] = bad
    with pytest.raises(ind.IndicatorError, match="index 42"):
        func(*args(x))


def test_nan_close_is_rejected_by_adx_too():
    high, low, close = walk(100, seed=2)
    close[50] = np.nan
    with pytest.raises(ind.IndicatorError, match="index 50"):
        ind.adx(high, low, close, 14)


@pytest.mark.parametrize("call, message", [
    (lambda: ind.ema(np.ones(10), 1), "period must be an integer >= 2"),
    (lambda: ind.rsi(np.ones(10), 0), "period"),
    (lambda: ind.atr(np.ones(10), np.ones(10), np.ones(10), 0), "period must be an integer >= 1"),
    (lambda: ind.adx(np.ones(10), np.ones(10), np.ones(10), 2.5), "period"),
    (lambda: ind.ema(np.ones((3, 3)), 2), "1-D"),
    (lambda: ind.atr(np.ones(10), np.ones(9), np.ones(10), 3), "differ in length"),
    (lambda: ind.rolling_ema(np.ones(10), 3, 5, (5,)), "lags must lie in 0..window-1"),
])
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ind.IndicatorError, match=message):
        call()


def test_inputs_are_not_modified_and_lists_are_accepted():
    high, low, close = walk(300, seed=5)
    copies = [a.copy() for a in (high, low, close)]
    all_four(high, low, close, 14)
    for a, b in zip((high, low, close), copies):
        np.testing.assert_array_equal(a, b)
    assert_matches(ind.ema(list(close), 10), talib.EMA(close, 10))


# --------------------------------------------------------------------------- the recurrence solver

def _naive(b, a, y0, gain):
    out, y = np.empty(len(b)), y0
    for i, v in enumerate(b):
        y = a * y + gain * v
        out[i] = y
    return out


@pytest.mark.parametrize("chunk", [64, 1 << 15])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 255, 256, 257, 1000, 4133])
def test_scan_matches_the_sequential_loop(monkeypatch, chunk, size):
    monkeypatch.setattr(ind, "_CHUNK", chunk)  # small chunks exercise the chunk hand-over
    rng = np.random.default_rng(size)
    for a in (0.0, 0.5, 13 / 14, 54 / 56, 0.9999):
        b = rng.normal(size=size)
        np.testing.assert_allclose(ind._scan(b, a, 3.0, 0.25, np.empty(size)), _naive(b, a, 3.0, 0.25),
                                   rtol=1e-11, atol=1e-12)
        inplace = b.copy()
        ind._scan(inplace, a, 3.0, 0.25, inplace)
        np.testing.assert_allclose(inplace, _naive(b, a, 3.0, 0.25), rtol=1e-11, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=300),
       a=st.floats(0.0, 0.999), y0=st.floats(-1e6, 1e6), gain=st.floats(1e-3, 10.0))
def test_scan_property(values, a, y0, gain):
    b = np.array(values, dtype=np.float64)
    expected = _naive(b, a, y0, gain)
    scale = np.abs(b).sum() * gain + abs(y0) + 1.0
    np.testing.assert_allclose(ind._scan(b, a, y0, gain, np.empty(len(b))), expected, rtol=0, atol=1e-12 * scale)


# --------------------------------------------------------------------------- rolling windows

@pytest.mark.parametrize("window", [30, 61, 120])
def test_rolling_forms_equal_the_window_computation_bar_by_bar(window):
    high, low, close = walk(700, seed=window)
    close[300:400] = close[299]  # a flat stretch longer than the small windows: exact zeros
    high[300:400] = low[300:400] = close[300:400]
    lags = (0, 1, 4, 14)
    rolled = {
        "ema": ind.rolling_ema(close, 21, window, lags),
        "rsi": ind.rolling_rsi(close, 14, window, lags),
        "atr": ind.rolling_atr(high, low, close, 14, window, lags),
        "adx": ind.rolling_adx(high, low, close, 14, window, lags),
    }
    for i in range(len(close)):
        s = max(0, i - window + 1)
        h, lo, c = high[s:i + 1], low[s:i + 1], close[s:i + 1]
        direct = {"ema": ind.ema(c, 21), "rsi": ind.rsi(c, 14), "atr": ind.atr(h, lo, c, 14),
                  "adx": ind.adx(h, lo, c, 14)}
        for name, values in direct.items():
            for k, lag in enumerate(lags):
                want = values[-1 - lag] if len(values) > lag else np.nan
                got = rolled[name][k, i]
                if np.isnan(want):
                    assert np.isnan(got), (name, i, lag)
                else:
                    assert got == pytest.approx(want, rel=1e-10, abs=1e-12), (name, i, lag)


def test_rolling_window_differs_from_the_full_history():
    # The point of the rolling forms: a 120-bar window's EMA55 is still seeded differently.
    _, _, close = walk(1000, seed=1)
    full = ind.ema(close, 55)
    rolled = ind.rolling_ema(close, 55, 120)[0]
    assert np.nanmax(np.abs(rolled[200:] - full[200:]) / full[200:]) > 1e-6
    np.testing.assert_allclose(rolled[:119], full[:119])  # windows that start at bar 0
