"""Candle close -> entry order accepted, on the loopback exchange over real HTTP.

    python bench/bench_latency.py [--quick]

The engine runs its real loop (LIVE mode, RestExchange, the loopback exchange's test keys) on a
crafted market whose first long signal appears when a candle closes 3 s after the start; the
figure is the venue's acceptance time of the MARKET entry minus that close time (both on the
venue's clock).  It includes ASTER_SCAN_DELAY_SEC (default 1 s), the scan (klines of the
universe, book, premium index), the signal, policy, sizing and the order round trip.
Goal: < 2 s + one round trip (the round trip is measured on GET /fapi/v1/time).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench._common import bench_main  # noqa: E402

import httpx  # noqa: E402

from _engine_fixtures import FIVE_MIN, SYMBOL, T_START, live_engine, live_settings, loopback  # noqa: E402
from mraster_tui.engine.types import OrderType  # noqa: E402

LEAD_MS = 3_000  # the engine starts this long before the signal candle closes


async def _one(tmp: Path) -> tuple[float, float]:
    close = T_START + FIVE_MIN
    h = loopback("late", start=close - LEAD_MS)
    engine, _sink = live_engine(h, tmp, live_settings(h.base_url, scan_delay_sec=1.0))  # the default delay
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        entry = None
        deadline = time.monotonic() + LEAD_MS / 1000 + 15
        while entry is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            with h.lock:
                entry = next((o for o in h.sim.all_orders(SYMBOL) if o.type is OrderType.MARKET), None)
        if entry is None:
            raise RuntimeError("no entry order reached the venue")
        rtts = []
        with httpx.Client(base_url=h.base_url) as c:
            for _ in range(20):
                t = time.perf_counter()
                c.get("/fapi/v1/time").raise_for_status()
                rtts.append((time.perf_counter() - t) * 1000)
        return float(entry.time - close), statistics.median(rtts)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        h.stop()


def run(quick: bool) -> list[dict]:
    runs = 1 if quick else 5
    lat, rtt = [], []
    for i in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            a, b = asyncio.run(_one(Path(tmp)))
        lat.append(a)
        rtt.append(b)
    worst, rt = max(lat), statistics.median(rtt)
    goal = 2000 + rt
    return [
        {"name": "candle close -> entry accepted (median)", "value": round(statistics.median(lat), 1), "unit": "ms",
         "goal": f"< 2000 ms + 1 RTT ({goal:.1f} ms)", "ok": statistics.median(lat) < goal},
        {"name": f"candle close -> entry accepted (worst of {runs})", "value": round(worst, 1), "unit": "ms",
         "goal": f"< {goal:.1f} ms", "ok": worst < goal},
        {"name": "one round trip (GET /fapi/v1/time, median)", "value": round(rt, 2), "unit": "ms", "goal": "-",
         "ok": None},
    ]


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, "one run instead of five", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
