"""Indicator speed against TA-Lib on 1,000,000 candles (goal: each within 3x of TA-Lib's time).

    python bench/bench_indicators.py [--quick]

Each function runs side by side with its TA-Lib counterpart on the same seeded random walk,
alternating calls; a figure is the best of the repetitions.  Times are CPU time of the process
(``time.process_time``), not wall time: on a shared machine a call longer than a scheduler time
slice is almost always preempted, which inflates wall times of the longer-running function and
makes wall-time ratios meaningless under load.  CPU time counts every thread, so a multi-threaded
BLAS gets no credit for using a second core.  Wall times are printed for information.
``--quick`` uses fewer repetitions, same size.  Also printed: the rolling (per-window) forms used
by backtests, on a year of 5m bars.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_main  # noqa: E402

from mraster_tui.engine import indicators as ind  # noqa: E402

CANDLES = 1_000_000
YEAR_5M = 105_120


def _walk(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    high = close * (1 + np.abs(rng.normal(0, 0.0015, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.0015, n)))
    return high, low, close


def _best_ms(fn, reps: int, clock=time.process_time) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best * 1000


def _side_by_side(ours, theirs, reps: int, clock=time.process_time) -> tuple[float, float]:
    """Best times of two functions, measured in alternation so both see the same machine load."""
    ours(), theirs()  # warm-up: caches, allocator
    a, b = [], []
    for _ in range(reps):
        a.append(_best_ms(ours, 1, clock))
        b.append(_best_ms(theirs, 1, clock))
    return min(a), min(b)


def _row(name: str, value: float, unit: str, goal: str, ok: bool | None) -> dict:
    return {"name": name, "value": round(value, 3), "unit": unit, "goal": goal, "ok": ok}


def run(quick: bool) -> list[dict]:
    try:
        import talib
    except ImportError:  # a bench-only dependency
        return [_row("indicators vs TA-Lib", float("nan"), "", "TA-Lib installed (pip install ta-lib)", False)]
    reps = 10 if quick else 30
    high, low, close = _walk(CANDLES)
    pairs = {
        "EMA(21)": (lambda: ind.ema(close, 21), lambda: talib.EMA(close, 21)),
        "EMA(55)": (lambda: ind.ema(close, 55), lambda: talib.EMA(close, 55)),
        "RSI(14)": (lambda: ind.rsi(close, 14), lambda: talib.RSI(close, 14)),
        "ATR(14)": (lambda: ind.atr(high, low, close, 14), lambda: talib.ATR(high, low, close, 14)),
        "ADX(14)": (lambda: ind.adx(high, low, close, 14), lambda: talib.ADX(high, low, close, 14)),
    }
    rows = []
    for name, (ours, theirs) in pairs.items():
        ours_ms, theirs_ms = _side_by_side(ours, theirs, reps)
        wall_ours, wall_theirs = _side_by_side(ours, theirs, max(3, reps // 3), time.perf_counter)
        ratio = ours_ms / theirs_ms
        rows.append(_row(f"{name} 1M candles: ours, CPU", ours_ms, "ms", f"TA-Lib {theirs_ms:.2f} ms", None))
        rows.append(_row(f"{name} 1M candles: ours / TA-Lib, CPU time", ratio, "x", "<= 3x", ratio <= 3.0))
        rows.append(_row(f"{name} 1M candles: ours / TA-Lib, wall time", wall_ours / wall_theirs, "x",
                         f"info ({wall_ours:.2f} vs {wall_theirs:.2f} ms)", None))
    h, lo, c = high[:YEAR_5M], low[:YEAR_5M], close[:YEAR_5M]
    t = _best_ms(lambda: (ind.rolling_ema(c, 21, 360, (0, 1, 4)), ind.rolling_ema(c, 55, 360, (0, 1)),
                          ind.rolling_rsi(c, 14, 360), ind.rolling_atr(h, lo, c, 14, 360)), 3 if quick else 5)
    rows.append(_row("rolling EMA/RSI/ATR, 360-bar windows, 1 year of 5m", t, "ms", "info", None))
    t = _best_ms(lambda: ind.rolling_adx(h, lo, c, 14, 360, (0, 14)), 1 if quick else 3)
    rows.append(_row("rolling ADX, 360-bar windows, 1 year of 5m", t, "ms", "info", None))
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, "fewer repetitions",
                      header=lambda: f"indicators vs TA-Lib, {CANDLES:,} candles, "
                                     f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}",
                      argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
