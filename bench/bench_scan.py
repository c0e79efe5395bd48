"""Bench: one market-data scan of 40 symbols (5m and 30m klines, all-symbol book tickers and
premium index) against the loopback exchange with 50 ms of added latency per request.

Prints the scan's wall time next to the sequential equivalent and a single request's latency.
Goal: scan wall time < 4x a single request's latency, request weight within the budget.
The loopback exchange runs as a separate process (its CPU must not share the client's GIL).
At concurrency 64, the 80 kline reads go out in two latency waves; what is left on top of
them is the client's CPU (about 1.3 ms per request: the httpx stack, JSON decoding and
parsing the rows into numpy), serialised on one core.

    python bench/bench_scan.py [--quick]

``--quick`` estimates the sequential time as (requests x single latency) instead of measuring it.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_main  # noqa: E402

from mraster_tui.config import Settings
from mraster_tui.engine.clock import WallClock
from mraster_tui.engine.marketdata import MarketData
from mraster_tui.engine.sim.server import TEST_API_KEY, TEST_API_SECRET, LoopbackProcess
from mraster_tui.engine.venue.ratelimit import RateLimitGovernor
from mraster_tui.engine.venue.rest import RestExchange

SYMBOLS = 40
LATENCY_MS = 50
GOAL_RATIO = 4.0
#: concurrency used for the goal figure: ASTER_FETCH_CONCURRENCY's default (the venue's weight
#: budget is the limit, not its connection count); the figure at the schema's maximum (all the
#: reads of a scan in one wave) is also shown
CONCURRENCY = Settings.defaults().fetch_concurrency
ONE_WAVE = 128


async def _scan_figures(base_url: str, quick: bool) -> dict[str, float]:
    clock = WallClock()
    settings = Settings.defaults().replace(fetch_concurrency=CONCURRENCY)
    gov = RateLimitGovernor(clock)
    ex = RestExchange(base_url, api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, venue="binance",
                      settings=settings, clock=clock, governor=gov)
    try:
        info = await ex.exchange_info()
        symbols = sorted(info.symbols)[:SYMBOLS]
        await ex.sync_time()
        # warm-up (discarded): opens the keep-alive connections and lets the simulated venue
        # generate its candles, which a real venue has ready
        await MarketData(ex, settings, clock).scan(symbols)
        singles = []
        for sym in symbols[:5]:
            t0 = time.perf_counter()
            await ex.klines(sym, settings.interval, settings.klines)
            singles.append((time.perf_counter() - t0) * 1000)
        single = statistics.median(singles)
        used_before = gov.snapshot().used_weight

        md = MarketData(ex, settings, clock)
        t0, c0 = time.perf_counter(), time.process_time()
        scan = await md.scan(symbols)
        wall = (time.perf_counter() - t0) * 1000
        cpu = (time.process_time() - c0) * 1000
        assert not scan.errors, scan.errors
        scan_weight = gov.snapshot().used_weight - used_before

        # steady state: every later scan (after each candle close) refreshes the cached history
        # with incremental reads of the newest candles; kline_cache_sec=0 makes every kline refresh
        md_warm = MarketData(ex, settings.replace(kline_cache_sec=0), clock)
        await md_warm.scan(symbols)
        warm_before = gov.snapshot().used_weight
        t0 = time.perf_counter()
        warm = await md_warm.scan(symbols)
        wall_warm = (time.perf_counter() - t0) * 1000
        assert not warm.errors, warm.errors
        warm_weight = gov.snapshot().used_weight - warm_before

        wide = settings.replace(fetch_concurrency=ONE_WAVE)
        ex_wide = RestExchange(base_url, api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, venue="binance",
                               settings=wide, clock=clock, governor=gov)
        try:
            await ex_wide.sync_time()
            await MarketData(ex_wide, wide, clock).scan(symbols)  # opens its connections
            t0 = time.perf_counter()
            await MarketData(ex_wide, wide, clock).scan(symbols)  # cold again: a new cache
            wall_one_wave = (time.perf_counter() - t0) * 1000
        finally:
            await ex_wide.close()

        if quick:
            sequential = scan.requests * single
        else:
            t0 = time.perf_counter()
            for sym in symbols:
                await ex.klines(sym, settings.interval, settings.klines)
                await ex.klines(sym, settings.htf_interval, settings.klines)
            await ex.book_tickers()
            await ex.premium_index()
            sequential = (time.perf_counter() - t0) * 1000
        snap = gov.snapshot()
        return {"single": single, "wall": wall, "cpu_per_request": cpu / scan.requests, "wall_warm": wall_warm,
                "warm_weight": warm_weight,
                "wall_one_wave": wall_one_wave, "sequential": sequential,
                "requests": scan.requests, "scan_weight": scan_weight, "used": snap.used_weight,
                "limit": snap.weight_limit, "budget": int(snap.weight_limit * (1 - gov.safety_margin))}
    finally:
        await ex.close()


def run(quick: bool) -> list[dict]:
    # a separate process, so that the server's work does not compete with the client for the GIL
    with LoopbackProcess(["--venue", "binance", "--symbols", str(SYMBOLS), "--seed", "1",
                          "--latency-ms", str(LATENCY_MS)]) as srv:
        f = asyncio.run(_scan_figures(srv.base_url, quick))
    ratio = f["wall"] / f["single"]
    return [
        {"name": "scan_40_symbols_wall (cold, full history)", "value": round(f["wall"], 1), "unit": "ms",
         "goal": f"< {GOAL_RATIO:g}x single ({GOAL_RATIO * f['single']:.0f} ms)", "ok": ratio < GOAL_RATIO},
        {"name": "scan_vs_single_ratio", "value": round(ratio, 2), "unit": "x", "goal": f"< {GOAL_RATIO:g}",
         "ok": ratio < GOAL_RATIO},
        {"name": "scan_40_symbols_warm (after a candle close)", "value": round(f["wall_warm"], 1), "unit": "ms",
         "goal": f"< {GOAL_RATIO:g}x single ({GOAL_RATIO * f['single']:.0f} ms)",
         "ok": f["wall_warm"] / f["single"] < GOAL_RATIO},
        {"name": "warm_scan_vs_single_ratio", "value": round(f["wall_warm"] / f["single"], 2), "unit": "x",
         "goal": f"< {GOAL_RATIO:g}", "ok": f["wall_warm"] / f["single"] < GOAL_RATIO},
        {"name": "warm_scan_weight", "value": f["warm_weight"], "unit": "weight", "goal": "info", "ok": None},
        {"name": "single_kline_request", "value": round(f["single"], 1), "unit": "ms",
         "goal": f"~{LATENCY_MS} ms added latency", "ok": None},
        {"name": "client_cpu_per_request", "value": round(f["cpu_per_request"], 2), "unit": "ms",
         "goal": "info", "ok": None},
        {"name": "sequential_equivalent" + ("_estimated" if quick else ""), "value": round(f["sequential"], 1),
         "unit": "ms", "goal": "info", "ok": None},
        {"name": f"scan_wall_at_concurrency_{ONE_WAVE} (one wave, cold)", "value": round(f["wall_one_wave"], 1),
         "unit": "ms", "goal": "info", "ok": None},
        {"name": "scan_requests", "value": f["requests"], "unit": "requests", "goal": "2 per symbol + 2", "ok":
            f["requests"] == 2 * SYMBOLS + 2},
        {"name": "scan_weight", "value": f["scan_weight"], "unit": "weight",
         "goal": f"<= budget {f['budget']} of {f['limit']}/min", "ok": f["scan_weight"] <= f["budget"]},
        {"name": "weight_used_this_minute", "value": f["used"], "unit": "weight",
         "goal": f"<= budget {f['budget']} of {f['limit']}/min", "ok": f["used"] <= f["budget"]},
    ]


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, "estimate the sequential time instead of measuring it",
                      header=lambda: f"bench_scan: {SYMBOLS} symbols, {LATENCY_MS} ms added latency per request, concurrency {CONCURRENCY}", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
