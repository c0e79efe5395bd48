"""Policy latency: LinUCB choose+update at d = 12, BanditPolicy decide / note_exit, state save.

    python bench/bench_policy.py [--quick]

LinUCB figures are the median over batches of the mean time per call; policy figures are
per-call medians and 99th percentiles.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import bench_main  # noqa: E402

from mraster_tui.config import Settings  # noqa: E402
from mraster_tui.engine.policy import BanditPolicy, LinUCB  # noqa: E402

DIM = 11  # features; the policy adds a bias term, so its models work at d = 12


def _per_op_us(fn, n: int, batches: int) -> float:
    for i in range(min(n, 500)):  # warm-up: caches, allocator, branch predictors
        fn(i)
    times = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for i in range(n):
            fn(i)
        times.append((time.perf_counter_ns() - t0) / n / 1000)
    return statistics.median(times)


def _row(name: str, value: float, unit: str, goal: str, ok: bool | None) -> dict:
    return {"name": name, "value": round(value, 2), "unit": unit, "goal": goal, "ok": ok}


def run(quick: bool) -> list[dict]:
    n, batches = (2_000, 3) if quick else (10_000, 5)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(n, DIM + 1))
    rows = []

    for k in (2, 3):
        model = LinUCB([f"a{i}" for i in range(k)], DIM + 1, alpha=1.0)

        def step(i, model=model):
            x = xs[i]
            model.update(model.choose(x), x, 0.1)

        us = _per_op_us(step, n, batches)
        rows.append(_row(f"linucb choose+update d=12 k={k}", us, "us", "< 50 us", us < 50))

    # decide and note_exit timed call by call on one policy, trades closing at once
    policy = BanditPolicy(Settings.defaults(), dim=DIM, seed=0)
    feats = rng.normal(size=(n * batches, DIM))
    rs = rng.normal(size=n * batches)
    t_decide, t_exit = [], []
    for i in range(n * batches):
        t0 = time.perf_counter_ns()
        d = policy.decide(feats[i], symbol="BTCUSDT", now_ms=i)
        t1 = time.perf_counter_ns()
        t_decide.append(t1 - t0)
        if d.take:
            t1 = time.perf_counter_ns()
            policy.note_exit(d.decision_id, float(rs[i]))
            t_exit.append(time.perf_counter_ns() - t1)
    for name, ts in (("decide", t_decide), ("note_exit", t_exit)):
        us = statistics.median(ts) / 1000
        p99 = float(np.percentile(ts, 99)) / 1000
        rows.append(_row(f"policy {name} d=12 (median)", us, "us", "< 500 us", us < 500))
        rows.append(_row(f"policy {name} d=12 (p99)", p99, "us", "< 2000 us", p99 < 2000))

    t0 = time.perf_counter()
    text = json.dumps(policy.to_dict(), allow_nan=False)
    BanditPolicy.from_dict(json.loads(text), Settings.defaults())
    ms = (time.perf_counter() - t0) * 1000
    rows.append(_row(f"policy state save+load ({len(text) // 1024} KiB)", ms, "ms", "< 50 ms", ms < 50))
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, "fewer iterations", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
