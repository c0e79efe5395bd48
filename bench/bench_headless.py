"""Headless run-once for a 200-symbol universe on the loopback exchange: wall time and peak RSS.

    python bench/bench_headless.py [--quick]

A loopback exchange serving a 200-symbol synthetic market runs as a subprocess; then
``python -m mraster_tui --no-ui --live --run-once`` (test keys, ASTER_UNIVERSE_MAX=200, no
volume floor) is timed from spawn to exit, and its RSS is sampled every 10 ms.  The run
includes interpreter start-up, state load, exchangeInfo, time sync, reconciliation, the scan
(2 x 200 kline requests, book tickers, premium index), signals, policy and the final guard pass.
The rest of the wall time is the loopback server generating the synthetic klines (the engine's
own CPU time is printed too).  ``--quick`` uses 40 symbols.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import bench_main  # noqa: E402

from mraster_tui.engine.sim.server import TEST_API_KEY, TEST_API_SECRET, LoopbackProcess  # noqa: E402

WALL_GOAL_S = 10.0
RSS_GOAL_MB = 300.0


def _measure(symbols: int) -> tuple[float, float, dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as tmp, LoopbackProcess(
            ["--synthetic", "--symbols", str(symbols)], cwd=ROOT, env=env) as server:
        run_env = dict(env, ASTER_EXCHANGE_BASE=server.base_url, ASTER_VENUE="binance", ASTER_API_KEY=TEST_API_KEY,
                       ASTER_API_SECRET=TEST_API_SECRET, ASTER_PAPER="false", ASTER_INCLUDE_SYMBOLS="",
                       ASTER_UNIVERSE_MAX=str(symbols), ASTER_MIN_QUOTE_VOL_USDT="0", ASTER_LOG_FORMAT="json",
                       MRASTER_DATA_DIR=tmp, MRASTER_CONFIG=f"{tmp}/config.toml")
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen([sys.executable, "-m", "mraster_tui", "--no-ui", "--live", "--run-once"], cwd=ROOT,
                                env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ps = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        out, err = proc.communicate()
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # only the engine was waited for
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if proc.returncode != 0:
            raise RuntimeError(f"run-once failed (exit {proc.returncode}): {err.strip()[-400:]}")
        cycle = next(json.loads(line) for line in out.splitlines() if '"event":"cycle"' in line)
        return wall, peak / 2**20, cpu, cycle


def run(quick: bool) -> list[dict]:
    n = 40 if quick else 200
    wall, rss, cpu, cycle = _measure(n)
    return [
        {"name": f"headless run-once, {n} symbols (wall)", "value": round(wall, 2), "unit": "s",
         "goal": f"< {WALL_GOAL_S:g} s", "ok": wall < WALL_GOAL_S},
        {"name": f"headless run-once, {n} symbols (peak RSS)", "value": round(rss, 1), "unit": "MB",
         "goal": f"< {RSS_GOAL_MB:g} MB", "ok": rss < RSS_GOAL_MB},
        {"name": f"  of which the scan cycle ({cycle['scanned']} scanned)", "value": round(cycle["elapsed_ms"] / 1000, 2),
         "unit": "s", "goal": "-", "ok": None},
        {"name": "  engine CPU time (user + sys)", "value": round(cpu, 2), "unit": "s", "goal": "-", "ok": None},
    ]


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, "40 symbols instead of 200", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
