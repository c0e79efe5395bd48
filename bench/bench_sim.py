"""Simulation core speed: SimExchange.advance_to over 20 symbols of 5m candles, order latency,
kline serving, synthetic generation and file loading.

    python bench/bench_sim.py [--quick]

Backtests run 20 symbols x 1 year of 5m candles (2.1M candle-steps) and must beat
backtesting.py (~140k bars/s here) by 10x, i.e. ~1.4M candle-steps/s for the WHOLE backtest.
The simulated exchange is one part of that budget: idle symbols and positions whose stop and
take-profit are out of reach must cost O(1) per step, a realistic load (a few positions with
3 %/6 % brackets) must run at >= 2M candle-steps/s, and each trade (entry, two legs, fills,
the expiry of the other leg) must cost the simulator less than a millisecond.  Times are CPU times (process_time), so that other work on
the machine does not distort them.
"""

from __future__ import annotations

import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_main  # noqa: E402

from mraster_tui.engine.data import load_candles, write_klines_csv  # noqa: E402
from mraster_tui.engine.sim.exchange import SimExchange  # noqa: E402
from mraster_tui.engine.sim.market import ReplayMarket, SyntheticMarket  # noqa: E402
from mraster_tui.engine.types import OrderRequest, OrderType, Side  # noqa: E402

STEP = 300_000
SYMBOLS = 20


def _row(name: str, value: float, unit: str, goal: str, ok: bool | None) -> dict:
    return {"name": name, "value": round(value, 2), "unit": unit, "goal": goal, "ok": ok}


def _replay(days: int) -> ReplayMarket:
    """20 symbols of 5m candles taken from the synthetic market (generation not timed here)."""
    syn = SyntheticMarket(SYMBOLS, seed=1, base_interval="5m", history_days=1)
    series = {s: syn.candles(s, "5m", syn.start_ms, syn.start_ms + days * 86_400_000) for s in syn.symbols()}
    return ReplayMarket(series, infos={s: syn.symbol_info(s) for s in syn.symbols()}, warmup_ms=86_400_000)


def _bracket(sim: SimExchange, sym: str, n: int, sl: Decimal, tp: Decimal) -> None:
    """Market entry (about 200 USDT) plus closePosition stop and take-profit legs."""
    info = sim.symbol_info(sym).filters
    px = sim.price(sym)
    qty = max(info.min_qty, (Decimal(200) / px / info.step_size).to_integral_value() * info.step_size)
    side = Side.BUY if n % 2 else Side.SELL
    sim.place_order(OrderRequest(sym, side, OrderType.MARKET, f"e{n}", quantity=qty))
    sgn = 1 if side is Side.BUY else -1
    stop = (px * (1 - sgn * sl) / info.tick_size).to_integral_value() * info.tick_size
    take = (px * (1 + sgn * tp) / info.tick_size).to_integral_value() * info.tick_size
    sim.place_order(OrderRequest(sym, side.opposite, OrderType.STOP_MARKET, f"s{n}", stop_price=stop,
                                 close_position=True))
    sim.place_order(OrderRequest(sym, side.opposite, OrderType.TAKE_PROFIT_MARKET, f"t{n}", stop_price=take,
                                 close_position=True))


def _backtest_load(market: ReplayMarket, steps: int, *, max_open: int, sl: str, tp: str) -> dict:
    """advance_to every 5 minutes; flat symbols re-enter (round robin) while fewer than
    ``max_open`` positions are open.  CPU seconds in advance_to and in the order calls."""
    sim = SimExchange(market, balance=Decimal(10_000_000))  # a year of fees must not stop the load
    syms = market.symbols()
    held: set[str] = set()
    n = 0
    t_adv = t_ord = 0.0
    for _ in range(steps):
        t0 = time.process_time()
        events = sim.advance_to(sim.now_ms + STEP)
        t1 = time.process_time()
        t_adv += t1 - t0
        if events or len(held) < max_open:
            closed = {e.symbol for e in events if e.kind == "fill"}
            if closed:
                held = {p.symbol for p in sim.positions()}
            for sym in syms[n % SYMBOLS:] + syms[:n % SYMBOLS]:
                if len(held) >= max_open:
                    break
                if sym not in held:
                    sim.cancel_all(sym)
                    _bracket(sim, sym, n, Decimal(sl), Decimal(tp))
                    held.add(sym)
                    n += 1
            t_ord += time.process_time() - t1
    return {"advance_s": t_adv, "orders_s": t_ord, "trades": n, "rate": steps * SYMBOLS / t_adv}


def run(quick: bool) -> list[dict]:
    days = 30 if quick else 365
    rows = []
    market = _replay(days + 2)
    steps = days * 288

    sim = SimExchange(market)
    t0 = time.process_time()
    for _ in range(steps):
        sim.advance_to(sim.now_ms + STEP)
    idle_us = (time.process_time() - t0) / steps * 1e6
    rows.append(_row("advance_to, 20 idle symbols, per 5m step", idle_us, "us", "O(1): < 2 us", idle_us < 2))

    far = _backtest_load(market, steps, max_open=SYMBOLS, sl="0.3", tp="0.5")
    us = far["advance_s"] / steps * 1e6
    rows.append(_row("advance_to, 20 positions with far stop+TP, per 5m step", us, "us", "skip: < 10 us",
                     us < 10))
    for sl, tp, goal in (("0.03", "0.06", 2e6), ("0.01", "0.02", 0.5e6)):
        r = _backtest_load(market, steps, max_open=4, sl=sl, tp=tp)
        per_day = r["trades"] / days
        rows.append(_row(f"advance_to, <= 4 positions, {float(sl):.0%}/{float(tp):.0%} brackets "
                         f"({per_day:.0f} trades/day)", r["rate"] / 1e6, "M candle-steps/s",
                         f">= {goal / 1e6:g} M/s", r["rate"] >= goal))
        per_trade = (r["advance_s"] + r["orders_s"]) / r["trades"] * 1e6
        rows.append(_row("  sim cost per trade (entry, 2 legs, fills, expiry)", per_trade, "us", "< 1000 us",
                         per_trade < 1000))
    stress = _backtest_load(market, steps, max_open=SYMBOLS, sl="0.01", tp="0.02")
    rows.append(_row(f"stress: 20 positions always, 1%/2% ({stress['trades'] / days:.0f} trades/day)",
                     stress["rate"] / 1e6, "M candle-steps/s", "info", None))

    sim = SimExchange(market)
    sim.advance_to(sim.now_ms + 86_400_000 // 2)
    times = []
    for i in range(200 if quick else 1000):
        sym = market.symbols()[i % SYMBOLS]
        t = time.process_time()
        sim.klines(sym, "5m", 360)
        sim.klines(sym, "30m", 120)
        times.append(time.process_time() - t)
    us = sum(times) / len(times) * 1e6
    rows.append(_row("klines 5m x360 + 30m x120 (forming candle included)", us, "us", "< 150 us", us < 150))

    syn = SyntheticMarket(20, seed=3)
    t = time.process_time()
    for s in syn.symbols():
        syn.candles(s, "1m", syn.default_start_ms, syn.default_start_ms + 1)
    gen_ms = (time.process_time() - t) * 1000 / (20 * 5)
    rows.append(_row("synthetic generation, one symbol-day of 1m", gen_ms, "ms", "< 2 ms", gen_ms < 2))
    t = time.process_time()
    SimExchange(SyntheticMarket(300, seed=3)).tickers_24h()
    s300 = time.process_time() - t
    rows.append(_row("300-symbol synthetic market, first 24h tickers", s300, "s", "< 3 s", s300 < 3))

    c = market.candles(market.symbols()[0], "5m", market.start_ms, market.end_ms)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "BTCUSDT-5m.csv"
        write_klines_csv(p, c)
        t = time.process_time()
        load_candles(p)
        load_s = time.process_time() - t
    rows.append(_row(f"load_candles, archive CSV of {len(c)} rows", load_s, "s", "< 1.5 s per year",
                     load_s < 1.5 * len(c) / 105_120))
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, "one month instead of one year", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
