"""The one-line status bar: mode badge and venue, engine state and cycle, next scan, API weight,
data freshness and the circuit breaker."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import HorizontalGroup
from textual.content import Content
from textual.widgets import Label

from mraster_tui.engine.events import EngineSnapshot
from mraster_tui.widgets.fmt import countdown


@dataclass(frozen=True, slots=True)
class EngineView:
    """What the App knows about the engine besides its snapshot."""

    mode: str  # PAPER | LIVE | DEMO
    venue: str
    phase: str  # stopped | starting | running | stopping | error (the worker's view)
    max_data_age_s: float = 120.0
    now_ms: int = 0  # the engine clock now, extrapolated from the snapshot (0: unknown)


class StatusBar(HorizontalGroup):
    """Labels keyed by id; each is updated only when its text or its state class changes."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $panel;
        color: $foreground;
        & > Label { padding: 0; height: 1; }
        & > .-sep { color: $foreground-muted; }
        #mode-badge { text-style: bold; }
        #mode-badge.-live { background: $error; color: $text; }
        #mode-badge.-paper { background: $primary; color: $text; }
        #mode-badge.-demo { background: $accent; color: $text; }
        .-ok { color: $text-success; }
        .-warn { color: $text-warning; }
        .-bad { color: $text-error; text-style: bold; }
        .-muted { color: $foreground-muted; }
    }
    """

    _STATE_CLASSES = ("-ok", "-warn", "-bad", "-muted", "-live", "-paper", "-demo")
    _FIELDS = ("mode-badge", "venue", "engine", "breaker", "next", "fresh", "weight")

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: dict[str, tuple[str, str]] = {}

    def compose(self) -> ComposeResult:
        for i, name in enumerate(self._FIELDS):
            if i > 1:
                yield Label(" │ ", classes="-sep")
            yield Label("", id=name)

    def _set(self, name: str, text: str, state: str = "") -> None:
        if self._shown.get(name) == (text, state):
            return
        self._shown[name] = (text, state)
        label = self.query_one(f"#{name}", Label)
        label.update(Content(text))
        label.remove_class(*self._STATE_CLASSES)
        if state:
            label.add_class(state)

    def show(self, snap: EngineSnapshot, view: EngineView) -> None:
        mode = view.mode.upper()
        self._set("mode-badge", f" {mode} ", {"LIVE": "-live", "DEMO": "-demo"}.get(mode, "-paper"))
        self._set("venue", view.venue or snap.venue or "—", "-muted")

        phase = view.phase
        if phase == "running" and snap.state not in ("", "stopped"):
            phase = snap.state
        engine_state = {"running": "-ok", "starting": "-warn", "stopping": "-warn", "error": "-bad"}.get(phase, "-muted")
        cycle = f" #{snap.cycle}" if snap.cycle else ""
        self._set("engine", f"● {phase}{cycle}", engine_state)

        live = view.phase in ("running", "starting")
        now = view.now_ms or snap.now_ms
        due = snap.next_scan_ms - now if (live and snap.next_scan_ms is not None and now) else None
        self._set("next", f"next {countdown(due)}", "" if live else "-muted")

        if snap.weight_limit:
            share = snap.weight_used / snap.weight_limit
            self._set("weight", f"wt {snap.weight_used}/{snap.weight_limit}",
                      "-bad" if share >= 0.9 else "-warn" if share >= 0.7 else "")
        else:
            self._set("weight", "wt —", "-muted")

        if snap.data_age_s is None or not live:
            self._set("fresh", "data —", "-muted")
        else:
            stale = snap.data_age_s > view.max_data_age_s
            self._set("fresh", f"data {snap.data_age_s:.0f}s", "-bad" if stale else "-ok")

        if snap.breaker_active:
            why = ", ".join(snap.breaker_reasons) or "active"
            self._set("breaker", f"BREAKER {why}", "-bad")
        else:
            self._set("breaker", "breaker ok", "-ok" if live else "-muted")
