"""Backtest speed: the full engine over synthetic 5m candles vs backtesting.py on the same data.

Workload: 20 synthetic symbols x 365 days of 5m candles (~2.1M candle-steps; ``--quick``: 20 x 30
days).  Printed figures:

* ``ours_full``: candle-steps/s of ``mraster-tui backtest`` with the whole strategy (bandit
  policy, FastTP, default settings);
* ``ours_rules``: the same engine with the policy off (take every signal), FastTP off and one
  position per symbol -- exactly the entry and bracket rules backtesting.py runs;
* ``backtesting.py``: the same entry and bracket rules written as a backtesting.py ``Strategy``
  (indicators precomputed in ``init``, rules evaluated per bar in ``next``), one run per symbol;
* the ratios ours/backtesting.py (goal >= 10x) and, on a shared slice (the first days), whether
  both took identical trade decisions (symbol, signal candle, side).

Run: ``python bench/bench_backtest.py [--quick]`` (needs ``pip install backtesting``, a bench-only
dependency).  ``run(quick)`` returns the rows for ``bench/run_all``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_main  # noqa: E402

from mraster_tui.config import Settings  # noqa: E402
from mraster_tui.engine import signals as sig  # noqa: E402
from mraster_tui.engine.backtest import BacktestReport, Dataset, SymbolData, run_backtest  # noqa: E402
from mraster_tui.engine.data import resample  # noqa: E402
from mraster_tui.engine.sim.market import SyntheticMarket  # noqa: E402
from mraster_tui.engine.types import Candles, FundingRate, interval_ms  # noqa: E402

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
DAY_MS = 86_400_000
GOAL_RATIO = 10.0
SLICE_DAYS = 3  # the shared slice on which trade decisions must be identical


def synthetic_dataset(n_symbols: int, days: int, seed: int = 3) -> Dataset:
    """``days`` of 5m candles (plus two days of warm-up) and the feed's funding rates."""
    market = SyntheticMarket(n_symbols, seed=seed, start_ms=T0, base_interval="5m", history_days=2)
    end = T0 + days * DAY_MS
    out = {}
    for s in market.symbols():
        c = market.candles(s, "5m", market.start_ms, end)
        rates = tuple(FundingRate(s, t, r) for t, r in market.funding_events(s, market.start_ms, end))
        tick = float(market.symbol_info(s).filters.tick_size)  # prices on the tick, like a venue's
        c = Candles(c.open_time, *(np.round(getattr(c, f) / tick) * tick for f in ("open", "high", "low", "close")),
                    c.volume, c.interval, True)
        out[s] = SymbolData(s, c, funding=rates)
    return Dataset(out, "5m")


def settings_full() -> Settings:
    return Settings.defaults()


def settings_rules(n_symbols: int) -> Settings:
    """The rules backtesting.py can express: no policy, no FastTP, one position per symbol."""
    return Settings.defaults().replace(bandit_enabled=False, fast_tp_enabled=False,
                                       max_open_global=min(100, n_symbols))


# -- backtesting.py ---------------------------------------------------------------------------------

def _rule_arrays(ltf, settings) -> dict[str, np.ndarray]:
    """Per-bar inputs of the rules, from the same windowed indicator series the engine uses."""
    htf = resample(ltf, str(settings.htf_interval)).closed_only()
    klines = int(settings.klines)
    s = sig.precompute(ltf, htf, settings, ltf_window=klines - 1, htf_window=klines - 1)
    h = np.maximum(s.htf_index, 0)
    idx = np.arange(len(s))
    history = (np.minimum(idx + 1, s.ltf_window) < sig.MIN_LTF_BARS) | (
        np.minimum(s.htf_index + 1, s.htf_window) < sig.MIN_HTF_BARS)
    return {"fast": s.ema_fast[0], "fast_prev": s.ema_fast[1], "slow": s.ema_slow[0], "slow_prev": s.ema_slow[1],
            "rsi": s.rsi, "atr": s.atr, "adx": s.adx[0], "htf_now": s.htf_ema[0][h], "htf_back": s.htf_ema[1][h],
            "history": history.astype(np.float64)}


def _sign(a: float, b: float) -> int:
    if abs(a - b) <= sig.EQUAL_RTOL * max(abs(a), abs(b)):
        return 0
    return 1 if a > b else -1


def run_backtesting_py(dataset: Dataset, settings: Settings) -> tuple[float, dict[str, list[tuple[int, str]]],
                                                                     dict[str, list[tuple[int, int]]]]:
    """Run the rules on every symbol with backtesting.py; returns (seconds incl. the indicator
    precompute, decisions per symbol: (signal candle open time, side), and per symbol the spans
    ``[first, last)`` of candle open times whose close found a position open)."""
    import pandas as pd
    from backtesting import Backtest, Strategy

    st = settings
    rsi_buy, rsi_sell = float(st.rsi_buy_min), float(st.rsi_sell_max)
    pad = float(st.align_rsi_pad) if st.allow_trend_align else 0.0
    align = bool(st.allow_trend_align)
    wick_max, min_edge = float(st.wickiness_max), float(st.min_edge_r)
    sl_mult, tp_mult = float(st.sl_atr_mult), float(st.tp_atr_mult)
    spread, spread_max = 0.0002, float(st.spread_bps_max)  # the replay feed's constant spread
    fund_long, fund_short = float(st.funding_max_long), float(st.funding_max_short)
    decisions: dict[str, list[tuple[int, str]]] = {}
    held: dict[str, list[tuple[int, int]]] = {}
    elapsed = 0.0
    step = interval_ms("5m")

    for sym, d in dataset.symbols.items():
        t0 = time.perf_counter()
        c = d.ltf
        times = c.open_time
        f_times = np.array([f.funding_time for f in d.funding], dtype=np.int64)
        f_rates = np.array([float(f.funding_rate) for f in d.funding])
        log: list[tuple[int, str]] = []

        a = _rule_arrays(c, st)  # plain numpy arrays, indexed by bar (cheaper than self.I()[-1])
        nxt = np.searchsorted(f_times, times + step + 1000, side="right")
        rates = np.where(nxt < len(f_rates), f_rates[np.minimum(nxt, len(f_rates) - 1)], 0.0)
        fast_a, fast_p, slow_a, slow_p = a["fast"], a["fast_prev"], a["slow"], a["slow_prev"]
        rsi_a, atr_a, adx_a, hist = a["rsi"], a["atr"], a["adx"], a["history"]
        htf_n, htf_b = a["htf_now"], a["htf_back"]
        op, hi_a, lo_a, cl_a = c.open, c.high, c.low, c.close

        class Rules(Strategy):
            def init(self) -> None:
                pass

            def next(self) -> None:
                i = len(self.data) - 1
                if self.position or hist[i]:
                    return
                trend = _sign(fast_a[i], slow_a[i])
                if trend == 0:
                    return
                crossed = _sign(fast_p[i], slow_p[i]) != trend
                if not (crossed or align):
                    return
                rsi, htf = rsi_a[i], _sign(htf_n[i], htf_b[i])
                if trend > 0 and not (rsi > rsi_buy - pad and htf > 0):
                    return
                if trend < 0 and not (rsi < rsi_sell + pad and htf < 0):
                    return
                atr = atr_a[i]
                o, h, lo, cl = op[i], hi_a[i], lo_a[i], cl_a[i]
                if not atr > 0 or spread > max(spread_max, 0.5 * atr / cl):
                    return
                span = h - lo
                if span > 0 and max(h - max(o, cl), min(o, cl) - lo) / span > wick_max:
                    return
                slope = (htf_n[i] - htf_b[i]) / htf_b[i]
                if abs(slope) * 20.0 * (0.5 + max(adx_a[i] - 20.0, 0.0) / 50.0) < min_edge:
                    return
                rate = rates[i]
                if (trend > 0 and rate > fund_long) or (trend < 0 and rate < -fund_short):
                    return
                log.append((int(times[i]), "LONG" if trend > 0 else "SHORT"))
                if trend > 0:
                    self.buy(size=0.01, sl=cl - sl_mult * atr, tp=cl + tp_mult * atr)
                else:
                    self.sell(size=0.01, sl=cl + sl_mult * atr, tp=cl - tp_mult * atr)

        df = pd.DataFrame({"Open": c.open, "High": c.high, "Low": c.low, "Close": c.close, "Volume": c.volume},
                          index=pd.to_datetime(times, unit="ms"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = Backtest(df, Rules, cash=1e12, commission=0.0005, finalize_trades=True).run()
        elapsed += time.perf_counter() - t0
        decisions[sym] = log
        tr = stats._trades
        held[sym] = [(int(times[a]), int(times[b])) for a, b in zip(tr["EntryBar"], tr["ExitBar"])]
    return elapsed, decisions, held


# -- comparison -------------------------------------------------------------------------------------

def our_decisions(report: BacktestReport) -> tuple[dict[str, list[tuple[int, str]]], dict[str, list[tuple[int, int]]]]:
    """Our decisions (signal candle open time, side) and held spans, in backtesting.py's terms:
    a trade whose signal candle is ``b`` holds from candle ``b + 1`` up to the candle it exits in."""
    step = interval_ms(report.interval)
    dec: dict[str, list[tuple[int, str]]] = {s: [] for s in report.symbols}
    held: dict[str, list[tuple[int, int]]] = {s: [] for s in report.symbols}
    for t in report.trades:
        b = t.signal_close_ms + 1 - step
        dec[t.symbol].append((b, t.side))
        held[t.symbol].append((b + step, (t.exit_ms // step) * step))
    return dec, held


def compare(ours: tuple[dict, dict], theirs: tuple[dict, dict], start_ms: int, end_ms: int,
            step: int) -> tuple[int, int]:
    """Entry decisions on the candles of ``[start_ms, end_ms)`` where neither framework held a
    position (so both were free to decide): (candles where both decided the same, candles where
    either entered).  Exits may differ slightly (our entry fills at the ask plus slippage and the
    brackets follow the fill; backtesting.py fills at the next open), which shifts later flat
    periods, so only the candles both saw flat are compared."""
    same = either = 0
    for sym in ours[0]:
        mine = dict(ours[0][sym])
        other = dict(theirs[0].get(sym, []))
        for b in range(start_ms, end_ms, step):
            if any(a <= b < e for a, e in ours[1][sym]) or any(a <= b < e for a, e in theirs[1].get(sym, [])):
                continue
            x, y = mine.get(b), other.get(b)
            if x is None and y is None:
                continue
            either += 1
            same += x == y
    return same, either


class EngineTimer:
    """Wall time spent inside the live engine's own entry points during a backtest (scan cycle,
    guard pass, FastTP pass: policy, sizing, executor, guard, ledger and the simulated venue
    calls they make), to show where the floor of the same-engine design is: even if everything
    around these calls cost nothing, a backtest cannot be faster than ``steps / engine time``."""

    METHODS = ("run_cycle", "guard_pass", "fasttp_pass")

    def __init__(self) -> None:
        self.seconds = {m: 0.0 for m in self.METHODS}
        self.calls = {m: 0 for m in self.METHODS}

    def __enter__(self) -> "EngineTimer":
        from mraster_tui.engine.runner import Engine

        self._saved = {m: getattr(Engine, m) for m in self.METHODS}
        for m, fn in self._saved.items():
            async def timed(engine, *a, _fn=fn, _m=m, **kw):
                t0 = time.perf_counter()
                try:
                    return await _fn(engine, *a, **kw)
                finally:
                    self.seconds[_m] += time.perf_counter() - t0
                    self.calls[_m] += 1
            setattr(Engine, m, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        from mraster_tui.engine.runner import Engine

        for m, fn in self._saved.items():
            setattr(Engine, m, fn)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def run(quick: bool) -> list[dict]:
    days = 30 if quick else 365
    n = 20
    data = synthetic_dataset(n, days)
    full = run_backtest(data, settings_full(), seed=1)
    rules = run_backtest(data, settings_rules(n), seed=1)
    with EngineTimer() as timer:  # a second, instrumented run of the full strategy: the floor
        timed = run_backtest(data, settings_full(), seed=1)
    bt_s, bt_dec, bt_held = run_backtesting_py(data, settings_rules(n))
    steps = rules.candle_steps
    bt_rate = steps / bt_s
    step = interval_ms(rules.interval)
    window_start = rules.start_ms - step
    both, either = compare(our_decisions(rules), (bt_dec, bt_held), window_start,
                           window_start + SLICE_DAYS * DAY_MS, step)
    rows = [
        {"name": "backtest_full_candle_steps_per_s", "value": round(full.steps_per_s), "unit": "steps/s",
         "goal": f">= {GOAL_RATIO:g}x backtesting.py", "ok": full.steps_per_s >= GOAL_RATIO * bt_rate},
        {"name": "backtest_rules_candle_steps_per_s", "value": round(rules.steps_per_s), "unit": "steps/s",
         "goal": f">= {GOAL_RATIO:g}x backtesting.py", "ok": rules.steps_per_s >= GOAL_RATIO * bt_rate},
        {"name": "backtesting_py_candle_steps_per_s", "value": round(bt_rate), "unit": "steps/s",
         "goal": "baseline", "ok": True},
        {"name": "ratio_full_vs_backtesting_py", "value": round(full.steps_per_s / bt_rate, 2), "unit": "x",
         "goal": f">= {GOAL_RATIO:g}", "ok": full.steps_per_s / bt_rate >= GOAL_RATIO},
        {"name": "ratio_rules_vs_backtesting_py", "value": round(rules.steps_per_s / bt_rate, 2), "unit": "x",
         "goal": f">= {GOAL_RATIO:g}", "ok": rules.steps_per_s / bt_rate >= GOAL_RATIO},
        {"name": f"identical_decisions_first_{SLICE_DAYS}_days", "value": f"{both}/{either}", "unit": "entries",
         "goal": "all identical", "ok": either > 0 and both == either},
        {"name": "candle_steps", "value": steps, "unit": "steps", "goal": f"{n} symbols x {days} days", "ok": True},
        {"name": "trades_full/rules/backtesting_py", "value": f"{len(full.trades)}/{len(rules.trades)}/"
         f"{sum(len(v) for v in bt_dec.values())}", "unit": "trades", "goal": "-", "ok": True},
        {"name": "full: cycles / guard passes / FastTP passes", "value": "/".join(
            str(timer.calls[m]) for m in EngineTimer.METHODS), "unit": "calls", "goal": "info", "ok": None},
        {"name": "full: us per engine call (cycle / guard / FastTP)", "value": "/".join(
            f"{1e6 * timer.seconds[m] / max(1, timer.calls[m]):.0f}" for m in EngineTimer.METHODS),
         "unit": "us", "goal": "info", "ok": None},
        {"name": "full: share of the run inside engine calls", "value": round(timer.total / timed.elapsed_s, 2),
         "unit": "", "goal": "info", "ok": None},
        {"name": "full: ceiling if everything else were free", "value": round(steps / timer.total / bt_rate, 2),
         "unit": "x", "goal": f">= {GOAL_RATIO:g} needed", "ok": steps / timer.total >= GOAL_RATIO * bt_rate},
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, "20 symbols x 30 days instead of 365", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
