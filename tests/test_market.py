"""Market feeds: the intra-candle path, the synthetic market (determinism and realism) and replay."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from mraster_tui.engine.data import load_candles, resample
from mraster_tui.engine.sim.exchange import SimExchange
from mraster_tui.engine.sim.market import (
    LiveFeed,
    ReplayMarket,
    SyntheticMarket,
    make_symbol_info,
    path_extremes,
    path_price,
)
from mraster_tui.engine.types import Candles, FundingRate
from _sim_fixtures import shared_data

DAY = 86_400_000
H = 3_600_000


def _returns(c: Candles) -> np.ndarray:
    return np.diff(np.log(c.close))


# -- path ---------------------------------------------------------------------------------------

def test_intra_candle_path_goes_through_the_documented_corners():
    up = [0.0, 10.0, 12.0, 9.0, 11.0, 0, 0, 0]  # O 10, H 12, L 9, C 11 over 300 ms: O->L->H->C
    assert [path_price(up, 300, t, True) for t in (0, 50, 100, 150, 200, 250, 300, 400)] == \
        [10.0, 9.5, 9.0, 10.5, 12.0, 11.5, 11.0, 11.0]
    down = [0.0, 10.0, 12.0, 9.0, 9.5, 0, 0, 0]  # down candle: O->H->L->C
    assert path_price(down, 300, 100, False) == 12.0 and path_price(down, 300, 200, False) == 9.0
    # only what the path has touched so far counts: at 150 ms the high (due at 200) is not reached
    assert path_extremes(up, 300, 150, True) == (9.0, 10.5)


# -- synthetic: determinism and laziness --------------------------------------------------------

def test_same_seed_same_market_whatever_the_query_order():
    a = SyntheticMarket(6, seed=11, cache_chunks=3)
    b = SyntheticMarket(6, seed=11)
    late = a.candles("SOLUSDT", "5m", a.default_start_ms + 20 * DAY, a.default_start_ms + 21 * DAY)
    early_a = a.candles("SOLUSDT", "5m", a.start_ms, a.start_ms + DAY)  # regenerated after eviction
    early_b = b.candles("SOLUSDT", "5m", b.start_ms, b.start_ms + DAY)
    for f in ("open_time", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(early_a, f), getattr(early_b, f))
    assert np.array_equal(late.close, b.candles("SOLUSDT", "5m", b.default_start_ms + 20 * DAY,
                                                  b.default_start_ms + 21 * DAY).close)
    other = SyntheticMarket(6, seed=12).candles("SOLUSDT", "5m", b.start_ms, b.start_ms + DAY)
    assert not np.array_equal(other.close, early_b.close)
    assert len(a._cache) <= 3  # bounded memory: only small boundary states are kept for good


def test_symbols_filters_and_scale():
    m = SyntheticMarket(300, seed=2)
    names = m.symbols()
    assert len(names) == len(set(names)) == 300 and names[:3] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert all(n.endswith("USDT") and n.isalnum() for n in names)
    for s in names:
        f = m.symbol_info(s).filters
        price = float(m.candles(s, "1d", m.start_ms, m.start_ms + DAY).open[0]) if s in names[:5] else None
        assert f.min_notional == 5 and f.min_qty == f.step_size and f.market_max_qty < f.max_qty
        if price is not None:
            assert 1e-6 <= float(f.tick_size) / price <= 1e-3
            assert 0.01 <= float(f.step_size) * price <= 10
    assert m.symbol_info("BTCUSDT").filters.tick_size == Decimal("0.1")


def test_24h_volumes_span_a_realistic_range_for_universe_tests():
    m = SyntheticMarket(300, seed=2, history_days=1)
    sim = SimExchange(m)
    qv = {s: float(t.quote_volume) for s, t in sim.tickers_24h().items()}
    vols = np.array(list(qv.values()))
    assert len(qv) == 300 and vols.max() / vols.min() > 1e4
    share = float((vols >= 75_000).mean())
    assert 0.6 < share < 0.95  # a universe of 200 with a 75 000 USDT minimum is meaningful
    assert qv["BTCUSDT"] > 1e9 and qv["BTCUSDT"] >= np.sort(vols)[-10]  # one of the biggest markets
    books = sim.book_tickers()
    spread = {s: float((b.ask - b.bid) / ((b.ask + b.bid) / 2)) for s, b in books.items()}
    assert all(b.bid < b.ask for b in books.values())
    assert spread["BTCUSDT"] < 1e-4 and max(spread.values()) < 0.05
    # thinner markets quote wider spreads
    order = np.argsort(vols)
    sp = np.array([spread[s] for s in qv])
    assert np.corrcoef(np.argsort(order), np.argsort(np.argsort(sp)))[0, 1] < -0.5


# -- synthetic: realism --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def month():
    m = SyntheticMarket(8, seed=4)
    t0 = m.start_ms
    return m, {s: m.candles(s, "5m", t0, t0 + 30 * DAY) for s in m.symbols()}


def test_regimes_switch_and_trends_drift(month):
    m, c5 = month
    up, down, rng = [], [], []
    for s in m.symbols():
        c1h = m.candles(s, "1h", m.start_ms, m.start_ms + 30 * DAY)
        reg = np.array([m.regime_at(s, int(t)) for t in c1h.open_time])
        r = np.log(c1h.close / c1h.open)
        up.append(r[reg == 1])
        down.append(r[reg == 2])
        rng.append(reg)
    regimes = np.concatenate(rng)
    shares = [float((regimes == k).mean()) for k in (0, 1, 2)]
    assert min(shares) > 0.1, shares  # ranges, up trends and down trends all happen
    switches = int(np.sum(regimes[1:] != regimes[:-1]))
    assert switches > 8 * 30 / 2  # several regime changes per symbol and month
    assert np.concatenate(up).mean() > 0 > np.concatenate(down).mean()


def test_volatility_clusters_and_tails_are_fat(month):
    _, c5 = month
    acf_abs, acf_raw, kurt = [], [], []
    for c in c5.values():
        r = _returns(c)
        a = np.abs(r)
        acf_abs.append(np.corrcoef(a[:-1], a[1:])[0, 1])
        acf_raw.append(np.corrcoef(r[:-1], r[1:])[0, 1])
        kurt.append(((r - r.mean()) ** 4).mean() / r.var() ** 2)
    assert np.mean(acf_abs) > 0.1  # big moves follow big moves
    assert abs(np.mean(acf_raw)) < 0.1  # but the direction is not predictable
    assert np.mean(kurt) > 4  # fatter than normal (3)


def test_candles_are_consistent_with_realistic_wicks_and_volumes(month):
    _, c5 = month
    for c in c5.values():
        assert (c.high >= np.maximum(c.open, c.close)).all() and (c.low <= np.minimum(c.open, c.close)).all()
        assert (c.low > 0).all() and (c.volume > 0).all()
        assert np.array_equal(c.open[1:], c.close[:-1])  # continuous trading: no gaps between candles
        rng = c.high - c.low
        wick_share = np.median((rng - np.abs(c.close - c.open)) / rng)
        assert 0.3 < wick_share < 0.8
        # the largest wicks are a few times the typical one (spikes), not orders of magnitude
        ratio = np.percentile(rng / c.close, 99.9) / np.median(rng / c.close)
        assert 3 < ratio < 40
        move = np.abs(_returns(c))
        vol = c.volume[1:] * c.close[1:]
        assert np.corrcoef(move, vol)[0, 1] > 0.2  # volume rises with the size of the move


def test_funding_rates_are_plausible_and_follow_the_regime():
    m = SyntheticMarket(8, seed=4)
    rates, regimes = [], []
    for s in m.symbols():
        for t, r in m.funding_events(s, m.start_ms + 8 * H, m.start_ms + 30 * DAY):
            assert t % (8 * H) == 0
            rates.append(float(r))
            regimes.append(m.regime_at(s, t - 8 * H))
    rates, regimes = np.array(rates), np.array(regimes)
    assert np.abs(rates).max() <= 0.003 and rates.mean() > 0
    assert rates[regimes == 1].mean() > rates[regimes == 0].mean() > rates[regimes == 2].mean()
    t, r = m.next_funding("BTCUSDT", m.default_start_ms + 1)
    assert t == m.default_start_ms + 8 * H and r == m.funding_events("BTCUSDT", t - 1, t)[0][1]


def test_synthetic_market_serves_the_simulated_exchange_for_years_lazily():
    m = SyntheticMarket(3, seed=1, cache_chunks=6)
    sim = SimExchange(m)
    sim.advance_to(sim.now_ms + 365 * DAY)
    k = sim.klines("BTCUSDT", "30m", limit=120)
    assert len(k) == 120 and not k.last_closed and k.open_time[-1] == sim.now_ms
    assert len(m._cache) <= 6


# -- replay ---------------------------------------------------------------------------------------

def _xrp_files():
    return (shared_data("futures", "XRP_USDT_USDT-5m-futures.json"),
            shared_data("futures", "XRP_USDT_USDT-8h-funding_rate.json"),
            shared_data("futures", "XRP_USDT_USDT-1h-mark.json"))


def test_replay_from_files_infers_filters_and_serves_candles_and_funding():
    candles_f, funding_f, mark_f = _xrp_files()
    m = ReplayMarket.from_files([candles_f, funding_f, mark_f])  # the mark file is skipped
    assert m.symbols() == ["XRPUSDT"] and m.base_interval == "5m"
    info = m.symbol_info("XRPUSDT")
    assert info.filters.tick_size == Decimal("0.0001") and info.filters.step_size == Decimal("0.1")
    data = load_candles(candles_f).candles
    assert m.start_ms == data.open_time[0] and m.end_ms == data.open_time[-1] + 300_000
    assert m.default_start_ms == m.start_ms + 3 * DAY
    h = m.candles("XRPUSDT", "1h", m.start_ms, m.end_ms)
    ref = resample(data, "1h").closed_only()
    assert np.array_equal(h.close, ref.close) and np.array_equal(h.open_time, ref.open_time)
    k = m.index_at("XRPUSDT", int(data.open_time[10]) + 1)
    assert k == 10 and m.candle("XRPUSDT", k)[1] == data.open[10]
    ev = m.funding_events("XRPUSDT", 1637193600000, 1637222400007)
    assert ev == [(1637193600017, Decimal("0.0001")), (1637222400007, Decimal("0.0001"))]
    v, q = m.volume_between("XRPUSDT", int(data.open_time[0]), int(data.open_time[3]))
    assert v == pytest.approx(data.volume[:3].sum()) and q == pytest.approx((data.volume[:3] * data.close[:3]).sum())


def test_replay_price_stays_flat_through_a_data_gap_and_jumps_at_the_next_open():
    t0 = 1_704_067_200_000
    ot = np.array([t0, t0 + 60_000, t0 + 240_000], dtype=np.int64)  # minutes 2 and 3 missing
    c = Candles(ot, np.array([10.0, 11, 15]), np.array([10.5, 11.5, 15.5]), np.array([9.5, 10.5, 14.5]),
                np.array([10.2, 11.2, 15.2]), np.ones(3), "1m", True)
    m = ReplayMarket({"GAPUSDT": c}, infos={"GAPUSDT": make_symbol_info("GAPUSDT", 10.0)}, warmup_ms=0)
    sim = SimExchange(m)
    sim.advance_to(t0 + 150_000)
    assert m.index_at("GAPUSDT", t0 + 150_000) == 1 and float(sim.price("GAPUSDT")) == 11.2
    sim.advance_to(t0 + 240_000)
    assert float(sim.price("GAPUSDT")) == 15.0


def test_replay_rejects_inconsistent_series():
    t0 = 1_704_067_200_000
    a = Candles(np.array([t0], dtype=np.int64), *(np.ones(1),) * 5, "1m", True)
    b = Candles(np.array([t0], dtype=np.int64), *(np.ones(1),) * 5, "5m", True)
    with pytest.raises(ValueError, match="one interval"):
        ReplayMarket({"AUSDT": a, "BUSDT": b})
    late = Candles(np.array([t0 + DAY], dtype=np.int64), *(np.ones(1),) * 5, "1m", True)
    with pytest.raises(ValueError, match="do not overlap"):
        ReplayMarket({"AUSDT": a, "BUSDT": late})


# -- live observations ----------------------------------------------------------------------------

def test_live_feed_holds_the_last_observation_and_jumps_at_the_next():
    info = make_symbol_info("BTCUSDT", 50000.0)
    f = LiveFeed({"BTCUSDT": info}, 1000, keep=3)
    assert f.index_at("BTCUSDT", 1000) == -1
    for i, p in enumerate((100.0, 101.0, 99.0, 98.0, 97.0, 96.0, 95.0)):
        f.push(2000 + 1000 * i, "BTCUSDT", p, 0.0002, 0.001)
    k = f.index_at("BTCUSDT", 8500)
    assert k == 6 and f.candle("BTCUSDT", k)[4] == 95.0  # absolute index survives pruning
    assert f.price_range("BTCUSDT", 5, 6) == (95.0, 96.0)
    f.push(8000, "BTCUSDT", 94.0, 0.0002)  # same instant: replaces
    assert f.candle("BTCUSDT", 6)[4] == 94.0
    with pytest.raises(ValueError):
        f.push(7000, "BTCUSDT", 94.0, 0.0002)
    f.set_funding("BTCUSDT", 28_800_000, Decimal("0.0002"))
    assert f.funding_events("BTCUSDT", 8000, 30_000_000) == [(28_800_000, Decimal("0.0002"))]
    assert f.next_funding("BTCUSDT", 9000) == (28_800_000, Decimal("0.0002"))


def test_funding_rate_objects_round_trip_through_replay():
    t0 = 1_704_067_200_000
    c = Candles(t0 + np.arange(600, dtype=np.int64) * 60_000, *(np.full(600, 2.0),) * 4, np.ones(600), "1m", True)
    fr = [FundingRate("XUSDT", t0 + 8 * H + 3, Decimal("0.0003"))]
    m = ReplayMarket({"XUSDT": c}, {"XUSDT": fr}, infos={"XUSDT": make_symbol_info("XUSDT", 2.0)}, warmup_ms=0)
    assert m.next_funding("XUSDT", t0) == (t0 + 8 * H + 3, Decimal("0.0003"))
    assert m.next_funding("XUSDT", t0 + 9 * H) == (t0 + 16 * H, None)  # past the data: the grid, no rate
