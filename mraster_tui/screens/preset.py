"""Preset mode (the default): Low / Mid / High, risk and leverage sliders, positions, a bandit
digest, equity and a curated activity feed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalGroup, Vertical

from mraster_tui.config.schema import (
    PRESET_LEVERAGE_MAX,
    PRESET_LEVERAGE_MIN,
    PRESET_RISK_MAX,
    PRESET_RISK_MIN,
    PRESET_RISK_STEP,
)
from mraster_tui.messages import EventBuffer
from mraster_tui.screens.base import DashboardScreen
from mraster_tui.widgets.activity import ActivityFeed
from mraster_tui.widgets.bandit import BanditSummary
from mraster_tui.widgets.equity import EquityPanel
from mraster_tui.widgets.fmt import percent
from mraster_tui.widgets.keybar import KeyBar
from mraster_tui.widgets.positions import PositionsTable
from mraster_tui.widgets.preset_bar import PresetBar
from mraster_tui.widgets.slider import StepSlider
from mraster_tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from mraster_tui.config import Settings

_RISK = Binding.Group("Risk", compact=True)
_LEV = Binding.Group("Lev", compact=True)


def leverage_text(x: float) -> str:
    return f"{int(x)}x" if x <= PRESET_LEVERAGE_MAX else f"{int(x)}x (Pro)"


class PresetScreen(DashboardScreen):
    """| Key | Action |
    | :- | :- |
    | - / + | Risk per trade one step (0.25 %) down / up. |
    | [ / ] | Leverage one step down / up. |
    """

    BINDINGS = [
        Binding("minus", "app.risk(-1)", "−", group=_RISK, id="risk-down", tooltip="Risk per trade 0.25 % lower"),
        Binding("plus,equals_sign", "app.risk(1)", "+", group=_RISK, id="risk-up", key_display="+",
                tooltip="Risk per trade 0.25 % higher"),
        Binding("left_square_bracket", "app.leverage(-1)", "−", group=_LEV, id="leverage-down",
                tooltip="Leverage 1x lower"),
        Binding("right_square_bracket", "app.leverage(1)", "+", group=_LEV, id="leverage-up",
                tooltip="Leverage 1x higher"),
    ]

    def __init__(self, settings: "Settings") -> None:
        super().__init__(id="preset-screen")
        self._settings = settings

    def compose(self) -> ComposeResult:
        s = self._settings
        yield StatusBar()
        with HorizontalGroup(id="controls") as controls:
            controls.border_title = "Preset"
            yield PresetBar(s.preset, id="presets")
            yield StepSlider("risk", minimum=PRESET_RISK_MIN, maximum=PRESET_RISK_MAX, step=PRESET_RISK_STEP,
                             value=s.risk_per_trade, fmt=percent, id="risk",
                             tooltip="Risk per trade: -/+ or left/right when focused")
            yield StepSlider("lev", minimum=PRESET_LEVERAGE_MIN, maximum=PRESET_LEVERAGE_MAX, step=1,
                             value=s.leverage, fmt=leverage_text, id="leverage",
                             tooltip="Leverage: [/] or left/right when focused")
        with Vertical(id="positions-box", classes="box"):
            yield PositionsTable(id="positions")
        with Vertical(id="bandit-box", classes="box") as bandit:
            bandit.border_title = "Bandit"
            yield BanditSummary(id="bandit-summary")
        with Horizontal(id="bottom"):
            with Vertical(id="equity-box", classes="box") as eq:
                eq.border_title = "Equity"
                yield EquityPanel()
            with Vertical(id="feed-box", classes="box") as feed:
                feed.border_title = "Activity"
                yield ActivityFeed(id="feed")
        yield KeyBar()

    def pump(self, buffer: EventBuffer) -> None:
        self.query_one(ActivityFeed).drain(buffer)

    def show_settings(self, settings: "Settings") -> None:
        self._settings = settings
        self.query_one(PresetBar).set_active(settings.preset)
        self.query_one("#risk", StepSlider).set_value(settings.risk_per_trade)
        self.query_one("#leverage", StepSlider).set_value(settings.leverage)
