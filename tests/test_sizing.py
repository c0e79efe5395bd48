"""Sizing: hand-checked cases, skip reasons, rounding directions, and hypothesis properties
(no cap exceeded, qty a multiple of the step, loss at the stop within the risk budget)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given, settings as hsettings, strategies as st

from mraster_tui.config import Settings
from mraster_tui.engine import sizing
from mraster_tui.engine.sizing import (
    SizingError, bucket_multiplier, floor_qty, format_decimal, round_price, size_position,
)
from mraster_tui.engine.types import SymbolFilters

D = Decimal


def filters(step="0.1", min_qty="0.1", max_qty="1000000", min_notional="5", tick="0.0001") -> SymbolFilters:
    return SymbolFilters(D(tick), D(tick), D("100000"), D(step), D(min_qty), D(max_qty), D(step), D(min_qty),
                         D(max_qty), D(min_notional))


S = Settings.defaults()  # risk 0.007, leverage 3, equity fraction 0.25, max notional 300, min 5


def size(**kw):
    args = dict(equity=D("1000"), entry=D("1.2000"), stop=D("1.1900"), side="long", bucket_mult=D("1"),
                filters=filters(), settings=S)
    args.update(kw)
    return size_position(**args)


# --------------------------------------------------------------------------- by hand

def test_risk_budget_is_the_binding_limit():
    # 10 000 * 0.007 = 70 USDT at risk; 70 / 0.01 = 7000 -> notional 8400: above the caps, so
    # lift them: leverage 5, fraction 1, no max notional.
    s = S.replace(leverage=5, equity_fraction=1.0, max_notional_usdt=0)
    r = size(equity=D("10000"), settings=s)
    assert (r.qty, r.bound, r.risk_amount, r.loss_at_stop) == (D("7000"), "risk", D("70"), D("70"))
    assert r.notional == D("8400") and r.ok and r.reason is None


def test_max_notional_caps():
    r = size()  # 7 USDT at risk -> 700 units (840 USDT); equity cap 750 USDT; max notional 300
    assert (r.qty, r.bound) == (D("250"), "max_notional")
    assert r.notional == D("300") and r.loss_at_stop == D("2.5")


def test_equity_cap():
    r = size(equity=D("10"))  # cap 10 * 3 * 0.25 = 7.5 USDT -> 6.25 units, floored to 6.2
    assert (r.qty, r.bound) == (D("6.2"), "equity_cap")


def test_bucket_and_size_mult_scale_the_budget():
    s = S.replace(leverage=5, equity_fraction=1.0, max_notional_usdt=0, size_mult=0.5)
    r = size(equity=D("10000"), settings=s, bucket_mult=D("1.9"))  # 70 * 0.5 * 1.9 = 66.5
    assert r.risk_amount == D("66.5") and r.qty == D("6650")


def test_default_notional_only_when_equity_unknown():
    r = size(equity=None)  # 120 USDT / 1.2 = 100 units; no budget
    assert (r.qty, r.bound, r.risk_amount) == (D("100"), "default_notional", D("0"))
    assert size(equity=None, bucket_mult=D("1.4")).qty == D("140")


def test_short_position():
    r = size(side="short", entry=D("1.2000"), stop=D("1.2100"), equity=D("100"))
    # 0.7 USDT at risk / 0.01 = 70 units (84 USDT) > the equity cap 100 * 3 * 0.25 = 75 USDT: 62.5
    assert (r.qty, r.bound, r.loss_at_stop) == (D("62.5"), "equity_cap", D("0.625"))
    r = size(side="short", entry=D("1.2000"), stop=D("1.2100"), equity=D("100"),
             settings=S.replace(leverage=5, equity_fraction=1.0))
    assert (r.qty, r.bound, r.loss_at_stop) == (D("70"), "risk", D("0.7"))


def test_mark_price_caps_at_the_higher_and_minimums_at_the_lower_price():
    r = size(mark_price=D("1.5"))  # max notional 300 at 1.5 -> 200 units
    assert r.qty == D("200")
    low_mark = size(equity=D("10"), mark_price=D("0.6"), filters=filters(min_notional="5"),
                    settings=S.replace(equity_fraction=0.2))  # cap 6 USDT at 1.2 -> 5 units; 5 * 0.6 = 3 < 5
    assert low_mark.qty == 0 and "venue min notional" in low_mark.skip_reason


@pytest.mark.parametrize("kw, reason", [
    (dict(equity=D("0")), "equity is 0"),
    (dict(equity=D("1"), settings=S.replace(leverage=1)), "venue min notional"),  # cap 0.25 USDT
    (dict(filters=filters(min_qty="500")), "venue min qty"),
    (dict(filters=filters(min_notional="1"), equity=D("5"), settings=S.replace(min_notional_usdt=4)),
     "ASTER_MIN_NOTIONAL_USDT"),
    (dict(filters=filters(step="1000")), "less than one step"),
])
def test_too_small_orders_are_skipped_never_rounded_up(kw, reason):
    r = size(**kw)
    assert r.qty == 0 and not r.ok and reason in r.skip_reason


@pytest.mark.parametrize("kw, message", [
    (dict(stop=D("1.2100")), "wrong side"),
    (dict(side="short"), "wrong side"),
    (dict(stop=D("1.2000")), "wrong side"),
    (dict(entry=D("0")), "positive"),
    (dict(side="buy"), "'long' or 'short'"),
    (dict(bucket_mult=D("-1")), "negative"),
    (dict(entry="abc"), "not a number"),
    (dict(filters=filters(step="0", min_qty="0")), "step size must be positive"),
])
def test_invalid_arguments_raise(kw, message):
    with pytest.raises(SizingError, match=message):
        size(**kw)


# --------------------------------------------------------------------------- rounding helpers

@pytest.mark.parametrize("side, purpose, expected", [
    ("long", "stop", D("1.235")),  # up, toward the entry above: less risk
    ("short", "stop", D("1.234")),  # down, toward the entry below
    ("long", "take_profit", D("1.235")),  # away from the entry: stays valid
    ("short", "take_profit", D("1.234")),
])
def test_round_price_direction(side, purpose, expected):
    assert round_price(D("1.23456"), D("0.001"), side=side, purpose=purpose) == expected
    assert round_price(D("1.234"), D("0.001"), side=side, purpose=purpose) == D("1.234")  # on the tick


def test_round_price_with_odd_ticks_and_bad_arguments():
    assert round_price(D("101"), D("5"), side="long", purpose="stop") == D("105")
    assert round_price(D("101"), D("5"), side="short", purpose="stop") == D("100")
    with pytest.raises(SizingError):
        round_price(D("1"), D("0"), side="long", purpose="stop")
    with pytest.raises(SizingError):
        round_price(D("1"), D("0.1"), side="long", purpose="entry")


def test_floor_qty_and_format_decimal():
    assert floor_qty(D("1.23456"), D("0.001")) == D("1.234")
    assert floor_qty(D("7"), D("2.5")) == D("5.0")
    assert floor_qty(D("0.0009"), D("0.001")) == 0
    assert [format_decimal(D(x)) for x in ("1E-7", "100", "1.500", "0.000", "-2.50")] == \
           ["0.0000001", "100", "1.5", "0", "-2.5"]


def test_bucket_multiplier():
    assert [bucket_multiplier(b, S) for b in "SML"] == [D("1.0"), D("1.4"), D("1.9")]
    with pytest.raises(SizingError):
        bucket_multiplier("XL", S)


# --------------------------------------------------------------------------- properties

steps = st.sampled_from(["1", "0.1", "0.001", "0.00001", "5", "0.5", "25"])
prices = st.decimals(min_value=D("0.00001"), max_value=D("100000"), places=5)


@hsettings(max_examples=300, deadline=None)
@given(equity=st.decimals(min_value=D("0.01"), max_value=D("10000000"), places=2),
       entry=prices, distance_pct=st.decimals(min_value=D("0.0005"), max_value=D("0.5"), places=4),
       side=st.sampled_from(["long", "short"]), step=steps, bucket=st.sampled_from(["0.5", "1", "1.4", "1.9"]),
       risk=st.sampled_from([0.001, 0.007, 0.02, 0.1]), leverage=st.integers(1, 125),
       fraction=st.sampled_from([0.05, 0.25, 1.0]), max_notional=st.sampled_from([0, 50, 300, 1e6]),
       mark_move=st.decimals(min_value=D("-0.05"), max_value=D("0.05"), places=3))
def test_size_properties(equity, entry, distance_pct, side, step, bucket, risk, leverage, fraction,
                         max_notional, mark_move):
    distance = (entry * distance_pct).quantize(D("0.00001"))
    assume(distance > 0)
    stop = entry - distance if side == "long" else entry + distance
    assume(stop > 0)
    mark = entry * (1 + mark_move)
    s = S.replace(risk_per_trade=risk, leverage=leverage, equity_fraction=fraction, max_notional_usdt=max_notional)
    f = filters(step=step, min_qty=step, max_qty="1000000000", min_notional="5")
    r = size_position(equity=equity, entry=entry, stop=stop, side=side, bucket_mult=D(bucket), filters=f,
                      settings=s, mark_price=mark)
    step_d = D(step)
    high, low = max(entry, mark), min(entry, mark)
    assert r.qty >= 0 and r.qty % step_d == 0  # a whole number of steps
    assert r.qty * high <= equity * leverage * D(repr(fraction))  # the equity cap holds at both prices
    if max_notional:
        assert r.qty * high <= D(repr(max_notional))
    budget = equity * D(repr(risk)) * D(bucket)
    assert r.qty * distance <= budget  # the loss at the stop never exceeds the budget
    assert r.loss_at_stop == r.qty * distance and r.risk_amount == budget
    if r.ok:
        assert r.qty >= step_d and r.qty * low >= 5
        assert r.skip_reason is None and r.notional == r.qty * entry
    else:
        assert r.qty == 0 and r.skip_reason
    # Never rounded up: one more step would break the budget or a cap, or it was skipped as too small.
    if r.ok and r.bound == "risk":
        assert (r.qty + step_d) * distance > budget


@hsettings(max_examples=300, deadline=None)
@given(price=prices, tick=st.sampled_from(["0.1", "0.01", "0.0001", "0.00000001", "5", "0.5"]),
       side=st.sampled_from(["long", "short"]), purpose=st.sampled_from(["stop", "take_profit"]))
def test_round_price_properties(price, tick, side, purpose):
    t = D(tick)
    out = round_price(price, t, side=side, purpose=purpose)
    assert out % t == 0 and abs(out - price) < t
    if side == "long":
        assert out >= price  # a long's stop moves up toward the entry; its TP away from it
    else:
        assert out <= price


def test_no_float_leaks_into_the_arithmetic():
    r = size(equity=D("1234.56"), settings=S.replace(max_notional_usdt=0, leverage=10, equity_fraction=1.0))
    assert all(isinstance(v, Decimal) for v in (r.qty, r.notional, r.risk_amount, r.loss_at_stop))
    assert r.risk_amount == D("1234.56") * D("0.007")  # exact, not 8.641919999999999
    assert sizing.format_decimal(r.qty) == "864.1"
