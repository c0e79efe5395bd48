"""Fixed data and a stand-in engine controller for the TUI tests (tests only).

``FakeController`` implements the part of ``EngineController`` the App uses: ``run_blocking``
blocks until the stop event is set (like the real one), ``apply_settings`` answers by the
schema's ``live`` flag and records what it got, ``snapshot`` returns fixed data.
"""

from __future__ import annotations

import threading
from decimal import Decimal as D
from pathlib import Path

from mraster_tui.config import BY_NAME, Settings, preset_values
from mraster_tui.engine.events import EngineSnapshot, Event, EventKind, PositionView
from mraster_tui.messages import EventBuffer

T0 = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC

BANDIT = {
    "bandit_enabled": True, "decisions": 57, "taken": 14, "errors": 0, "exits": 9, "pending": 2, "skips_in_row": 3,
    "arms": [
        {"model": "gate", "arm": "TAKE", "pulls": 14, "updates": 9, "mean_reward": 0.21, "ucb": 0.64},
        {"model": "gate", "arm": "SKIP", "pulls": 43, "updates": 57, "mean_reward": 0.0, "ucb": 0.12},
        {"model": "size", "arm": "S", "pulls": 6, "updates": 9, "mean_reward": 0.05, "ucb": 0.18},
        {"model": "size", "arm": "M", "pulls": 5, "updates": 9, "mean_reward": 0.11, "ucb": 0.31},
        {"model": "size", "arm": "L", "pulls": 3, "updates": 9, "mean_reward": -0.02, "ucb": 0.22},
    ],
    "bucket_usage": {"S": 6, "M": 5, "L": 3},
    "reason_counts": {"gate_take": 12, "gate_skip": 43, "explore_stall": 2},
    "alpha": {"enabled": True, "ready": False, "trained": 9, "warmup": 40, "confidence": 0.0, "min_conf": 0.22},
    "recent": [
        {"decision_id": "d55", "symbol": "SOLUSDT", "time_ms": T0 - 900_000, "take": True, "bucket": "S",
         "reason": "explore_stall: 8 skips in a row", "r": 1.21},
        {"decision_id": "d56", "symbol": "BTCUSDT", "time_ms": T0 - 600_000, "take": True, "bucket": "M",
         "reason": "gate_take: ucb +0.640 >= skip 0.120, bucket M", "r": None},
        {"decision_id": "d57", "symbol": "ETHUSDT", "time_ms": T0 - 300_000, "take": False, "bucket": "S",
         "reason": "gate_skip: ucb -0.100 < skip 0.120", "r": None},
    ],
}

BTC = PositionView("BTCUSDT", "LONG", D("0.012"), D("67012.5"), D("67250.1"), D("2.85"), 0.42, D("66500"),
                   D("68100"), "M", T0 - 3_720_000, True)
ETH = PositionView("ETHUSDT", "SHORT", D("0.35"), D("3521.40"), D("3530.12"), D("-3.05"), -0.21, D("3560.2"),
                   D("3460.0"), "S", T0 - 600_000, True)


def snapshot(*, positions: tuple[PositionView, ...] = (BTC, ETH), state: str = "running", mode: str = "DEMO",
             cycle: int = 42, bandit: dict | None = None) -> EngineSnapshot:
    curve = tuple((T0 - (60 - i) * 300_000, 10_000.0 + 3 * i + (i % 7) * 4 - (i % 5) * 6) for i in range(60))
    return EngineSnapshot(
        now_ms=T0, mode=mode, venue="synthetic", state=state, cycle=cycle, next_scan_ms=T0 + 42_000,
        weight_used=120, weight_limit=2400, data_age_s=3.0, equity=D("10184.32"), wallet=D("10184.52"),
        positions=positions, equity_curve=curve, bandit=BANDIT if bandit is None else bandit,
        rejections={"no_cross": 311, "spread": 12, "edge_r": 40, "funding": 3, "wickiness": 7},
        trades_closed=9, realized_pnl=D("184.52"))


EVENTS = (
    Event(T0 - 900_000, EventKind.POSITION_OPENED, "INFO", "LONG 0.012 @ 67012.5 (M), SL 66500 TP 68100", "BTCUSDT"),
    Event(T0 - 800_000, EventKind.ORDER_FILLED, "INFO", "SELL 0.35 @ 3521.40", "ETHUSDT"),
    Event(T0 - 700_000, EventKind.SIGNAL_REJECTED, "DEBUG", "no_cross", "XRPUSDT"),
    Event(T0 - 600_000, EventKind.FASTTP_MOVED, "INFO", "stop 66500 -> 66880", "BTCUSDT"),
    Event(T0 - 500_000, EventKind.WARNING, "WARNING", "bookTicker slow (1.2 s)", "SOLUSDT"),
    Event(T0 - 400_000, EventKind.POSITION_CLOSED, "INFO", "closed +1.21 R, pnl +14.20 USDT", "SOLUSDT"),
    Event(T0 - 300_000, EventKind.CYCLE, "INFO", "cycle 42: 24 scanned, 22 rejected, 2 decisions, 1 order"),
)


def filled_buffer() -> EventBuffer:
    buf = EventBuffer()
    for e in EVENTS:
        buf.emit(e)
    return buf


def mid_settings(config_path: Path, **changes) -> Settings:
    """What ``load_settings`` gives for a config file holding ``preset = "mid"`` and ``changes``
    (built without touching the disk, so the path can be a fixed, made-up one)."""
    s = Settings(Settings.defaults().values, config_path=config_path)
    s = s.replace(_source="preset:mid", **preset_values("mid"))
    return s.replace(_source=f"file:{config_path}", preset="mid", **changes)


class FakeController:
    """Stands in for ``EngineController`` (see the module docstring)."""

    def __init__(self, settings: Settings, sink, snap: EngineSnapshot | None = None, *, fail: str | None = None,
                 state_error: str | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self.applied: list[Settings] = []
        self.snap = snap if snap is not None else snapshot()
        self.fail = fail
        self.state_error = state_error
        self.state = "stopped"
        self.last_error: str | None = None
        self.started = threading.Event()
        self.stopped = threading.Event()

    def run_blocking(self, stop: threading.Event) -> None:
        self.state = "running"
        self.started.set()
        if self.fail:
            raise RuntimeError(self.fail)
        if self.state_error:
            self.state, self.last_error = "error", self.state_error
            return
        stop.wait()
        self.state = "stopped"
        self.stopped.set()

    def apply_settings(self, settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
        diff = self.settings.diff(settings)
        self.settings = settings
        self.applied.append(settings)
        return (tuple(sorted(n for n in diff if BY_NAME[n].live)),
                tuple(sorted(n for n in diff if not BY_NAME[n].live)))

    def snapshot(self) -> EngineSnapshot:
        return self.snap

    @property
    def has_open_positions(self) -> bool:
        return bool(self.snap.positions)
