"""Pro mode: positions, bandit statistics, equity and the verbose filtered log; ``e`` opens the
config editor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll

from mraster_tui.messages import EventBuffer
from mraster_tui.screens.base import DashboardScreen
from mraster_tui.widgets.bandit import DecisionsPanel, PolicyPanel
from mraster_tui.widgets.equity import EquityPanel
from mraster_tui.widgets.keybar import KeyBar
from mraster_tui.widgets.log_pane import LogPane
from mraster_tui.widgets.positions import PositionsTable
from mraster_tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from mraster_tui.config import Settings


class ProScreen(DashboardScreen):
    """| Key | Action |
    | :- | :- |
    | e | Open the config editor. |
    | l | Cycle the log's minimum level. |
    | / | Search the log (text filter). |
    """

    BINDINGS = [
        Binding("e", "app.edit_config", "Editor", id="edit-config", tooltip="Edit every setting (validated, saved atomically)"),
        Binding("l", "log_level", "Level", id="log-level", tooltip="Show only log records at or above the next level"),
        Binding("slash", "log_search", "Search", id="log-search", tooltip="Filter the log by text"),
    ]

    def __init__(self, settings: "Settings", buffer: EventBuffer) -> None:
        super().__init__(id="pro-screen")
        self._settings = settings
        self._buffer = buffer

    def compose(self) -> ComposeResult:
        yield StatusBar()
        with Vertical(id="positions-box", classes="box"):
            yield PositionsTable(id="positions")
        with Horizontal(id="middle"):
            with VerticalScroll(id="policy-box", classes="box") as box:
                box.border_title = "Bandit"
                yield PolicyPanel(id="policy")
            with VerticalScroll(id="decisions-box", classes="box") as box:
                box.border_title = "Decisions"
                yield DecisionsPanel(id="decisions")
            with Vertical(id="equity-box", classes="box") as box:
                box.border_title = "Equity"
                yield EquityPanel()
        with Vertical(id="log-box", classes="box") as box:
            box.border_title = "Log"
            yield LogPane(self._buffer, level=self._settings.loglevel, id="log-pane")
        yield KeyBar()

    def pump(self, buffer: EventBuffer) -> None:
        self.query_one(LogPane).drain()

    def show_settings(self, settings: "Settings") -> None:
        self._settings = settings

    def action_log_level(self) -> None:
        self.query_one(LogPane).cycle_level()

    def action_log_search(self) -> None:
        self.query_one(LogPane).search()
