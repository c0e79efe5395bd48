"""TUI speed: cold start to the first frame, and key press -> visible change under log load.

    python bench/bench_tui.py [--quick]

* **Cold start**: a fresh interpreter runs the app (demo engine, headless, 100x30) and reports the
  Textual ``Ready`` event (the DOM is ready and the first frame is composed); the time is measured
  from spawning the process.  Median of several runs.  Goal < 1.5 s.
* **Under load**: an engine stand-in emits 5,000 log records per second (70 % DEBUG, 25 % INFO,
  5 % WARNING, in bursts every 10 ms) and publishes a new snapshot (moving marks) ten times a
  second, for 10 s (3 s with ``--quick``).  Meanwhile Pilot presses keys with a visible effect:
  ``l`` in Pro mode (log level: the log re-renders from its buffer), ``+``/``-`` in Preset mode
  (risk slider: applied and saved to the TOML), ``p`` (mode switch).  The latency of a key is the
  time from posting the key event (as the terminal driver does) to the first frame the compositor
  renders with the change.  Goal p95 < 100 ms.  RSS is sampled throughout; memory is bounded when
  the second half of the run adds (almost) nothing.

The engine stand-in implements the controller interface the App uses (``run_blocking``,
``apply_settings``, ``snapshot``, ``has_open_positions``); the real engine produces far fewer
records.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import bench_main  # noqa: E402

RECORDS_PER_S = 5_000
BURST_S = 0.010
SNAPSHOTS_PER_S = 10
STARTUP_GOAL_S = 1.5
LATENCY_GOAL_MS = 100.0
RSS_GROWTH_GOAL_MB = 20.0


def _row(name: str, value: float, unit: str, goal: str, ok: bool | None) -> dict:
    return {"name": name, "value": round(value, 2), "unit": unit, "goal": goal, "ok": ok}


def _isolated_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASTER_", "FAST_TP_", "FASTTP_", "MRASTER_"))}
    env.update(MRASTER_CONFIG=str(tmp / "config.toml"), MRASTER_SECRETS=str(tmp / "secrets.toml"),
               MRASTER_DATA_DIR=str(tmp / "data"), MRASTER_LOG_DIR=str(tmp / "logs"), PYTHONPATH=str(REPO))
    return env


# -- cold start -------------------------------------------------------------------------------

_STARTUP_CHILD = """
from mraster_tui.app import MrAsterApp
from mraster_tui.config import load_settings

class Timed(MrAsterApp):
    def on_ready(self) -> None:
        print("READY", flush=True)
        self.exit(0)

Timed(load_settings(), demo=True).run(headless=True, size=(100, 30))
"""


def cold_start_s(env: dict[str, str], script: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    _, err = proc.communicate(timeout=60)
    if line.strip() != "READY":
        raise RuntimeError(f"the app did not start: {err.strip().splitlines()[-1:] or proc.returncode}")
    return elapsed


# -- under load -------------------------------------------------------------------------------

class LoadController:
    """Emits RECORDS_PER_S events and SNAPSHOTS_PER_S snapshots until stopped."""

    def __init__(self, settings, sink) -> None:
        from mraster_tui.engine.events import EngineSnapshot, PositionView

        self.settings, self.sink = settings, sink
        self.emitted = 0
        self.started_at = 0.0
        t0 = 1_767_225_600_000
        self._positions = tuple(
            PositionView(sym, "LONG" if i % 2 else "SHORT", Decimal("0.5"), Decimal("100"), Decimal("100"),
                         Decimal(0), 0.0, Decimal("98"), Decimal("104"), "M", t0 - 60_000 * i, True)
            for i, sym in enumerate(("BTCUSDT", "ETHUSDT", "SOLUSDT")))
        self._snap = EngineSnapshot(now_ms=t0, mode="DEMO", venue="load", state="running", positions=self._positions)
        self._lock = threading.Lock()

    def run_blocking(self, stop: threading.Event) -> None:
        from mraster_tui.engine.events import Event, EventKind

        kinds = [(EventKind.SIGNAL_REJECTED, "DEBUG")] * 14 + [(EventKind.DECISION, "INFO")] * 5 + [
            (EventKind.WARNING, "WARNING")]
        next_snap = 0.0
        self.started_at = time.perf_counter()
        n = 0
        while not stop.is_set():
            t = time.perf_counter()
            due = int((t - self.started_at) * RECORDS_PER_S)  # catch up after a slow burst: a steady rate
            while n < due:
                kind, level = kinds[n % len(kinds)]
                self.sink.emit(Event(1_767_225_600_000 + n, kind, level, f"record {n}: spread 0.0031 > 0.0030",
                                     "XRPUSDT"))
                n += 1
            self.emitted = n
            if t >= next_snap:
                next_snap = t + 1 / SNAPSHOTS_PER_S
                mark = Decimal(100) + Decimal(n % 997) / 100
                with self._lock:
                    self._snap = replace(self._snap, now_ms=self._snap.now_ms + 100, cycle=n // 1000,
                                         positions=tuple(replace(p, mark=mark, upnl=(mark - 100) / 2)
                                                         for p in self._positions))
            time.sleep(max(0.0, BURST_S - (time.perf_counter() - t)))

    def apply_settings(self, settings):
        self.settings = settings
        return (), ()

    def snapshot(self):
        with self._lock:
            return self._snap

    @property
    def has_open_positions(self) -> bool:
        return True


async def _measure_load(duration: float, tmp: Path, switches: int) -> dict:
    import psutil
    from textual import events

    from mraster_tui.app import MrAsterApp
    from mraster_tui.config import load_settings, save_config
    from mraster_tui.screens.preset import PresetScreen
    from mraster_tui.screens.pro import ProScreen
    from mraster_tui.widgets.log_pane import LogPane
    from mraster_tui.widgets.slider import StepSlider

    cfg = tmp / "config.toml"
    save_config(cfg, {"paper": True, "ui_pro": True}, preset="mid")
    made: list[LoadController] = []

    def factory(settings, sink):
        made.append(LoadController(settings, sink))
        return made[0]

    app = MrAsterApp(load_settings(cfg), demo=True, controller_factory=factory)
    proc = psutil.Process()
    rss: list[tuple[float, float]] = []
    latencies: dict[str, list[float]] = {"l": [], "+/-": [], "p": []}
    pending: dict = {}

    async with app.run_test(size=(100, 30)) as pilot:
        display = app._display

        def timed_display(screen, renderable):  # every composed frame passes here
            display(screen, renderable)
            if renderable is not None and pending and "done" not in pending and pending["changed"]():
                pending["done"] = time.perf_counter()

        app._display = timed_display
        while not made or not made[0].started_at:
            await asyncio.sleep(0.01)
        t_start = time.perf_counter()

        async def press(key: str, label: str, changed) -> None:
            pending.clear()
            pending["changed"] = changed
            t0 = time.perf_counter()
            app.post_message(events.Key(key, None if len(key) > 1 else key))
            while "done" not in pending:
                if time.perf_counter() - t0 > 5:
                    raise RuntimeError(f"key {key!r} never showed its change")
                await asyncio.sleep(0.001)
            latencies[label].append((pending["done"] - t0) * 1000)
            rss.append((time.perf_counter() - t_start, proc.memory_info().rss / 2**20))
            await asyncio.sleep(0.1)  # a person presses a few keys a second

        half = t_start + duration / 2
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        while time.perf_counter() < half:
            pane = app.screen.query_one(LogPane)
            want = levels[(levels.index(pane.min_level) + 1) % len(levels)]
            await press("l", "l", lambda pane=pane, want=want: pane.min_level == want)
        await press("p", "p", lambda: isinstance(app.screen, PresetScreen) and app.screen.ready)
        step = 1
        while time.perf_counter() < t_start + duration:
            slider = app.screen.query_one("#risk", StepSlider)
            step = -step if not 0.0025 < slider.value + step * 0.0025 < 0.05 else step
            want = round(slider.value + step * 0.0025, 6)
            await press("plus" if step > 0 else "minus", "+/-", lambda s=slider, w=want: abs(s.value - w) < 1e-9)
        for target in (ProScreen, PresetScreen, ProScreen)[:switches]:  # screens exist now: plain switches
            await press("p", "p", lambda target=target: isinstance(app.screen, target))
        elapsed = time.perf_counter() - made[0].started_at
        emitted = made[0].emitted
        await pilot.press("q")
    return {"latencies": latencies, "rss": rss, "rate": emitted / elapsed, "emitted": emitted}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run(quick: bool) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as d:
        tmp = Path(d)
        env = _isolated_env(tmp)
        script = tmp / "startup.py"  # a file: Textual reads an App class's source location
        script.write_text(_STARTUP_CHILD)
        cold_start_s(env, script)  # the first run compiles bytecode: not a cold start of an installed app
        starts = [cold_start_s(env, script) for _ in range(3 if quick else 5)]
        med = statistics.median(starts)
        rows.append(_row("cold start to first frame (median)", med, "s", f"< {STARTUP_GOAL_S} s", med < STARTUP_GOAL_S))
        rows.append(_row("cold start to first frame (max)", max(starts), "s", "", None))

        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            # --quick has few key presses: fewer mode switches keep the key mix comparable
            res = asyncio.run(_measure_load(3.0 if quick else 10.0, tmp, switches=1 if quick else 3))
        finally:
            os.environ.clear()
            os.environ.update(saved)

    rows.append(_row("load: records emitted per second", res["rate"], "rec/s", f"~{RECORDS_PER_S}",
                     res["rate"] >= 0.9 * RECORDS_PER_S))
    everything = [x for xs in res["latencies"].values() for x in xs]
    for label, xs in (("all keys", everything), *res["latencies"].items()):
        if not xs:
            continue
        name = label if label == "all keys" else {"l": "'l' log level (Pro)", "+/-": "'+'/'-' risk (Preset, saves TOML)",
                                                   "p": "'p' mode switch"}[label]
        rows.append(_row(f"key -> change p50, {name} (n={len(xs)})", statistics.median(xs), "ms", "", None))
        p95 = _pct(xs, 0.95)
        rows.append(_row(f"key -> change p95, {name}", p95, "ms", f"< {LATENCY_GOAL_MS:.0f} ms",
                         p95 < LATENCY_GOAL_MS if label == "all keys" else None))
    rss = res["rss"]
    peak = max(v for _, v in rss)
    mid = [v for t, v in rss if t <= rss[-1][0] / 2]
    growth = peak - (max(mid) if mid else rss[0][1])
    rows.append(_row("RSS peak under load", peak, "MiB", "bounded", None))
    rows.append(_row("RSS growth over the second half", growth, "MiB", f"< {RSS_GROWTH_GOAL_MB:.0f} MiB",
                     growth < RSS_GROWTH_GOAL_MB))
    return rows


def main(argv: list[str] | None = None) -> int:
    return bench_main(run, __doc__, "3 s of load and 3 cold starts instead of 10 s and 5", argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
