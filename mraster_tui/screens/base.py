"""The common shape of the two mode screens: they render what the App hands them and do no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.events import Mount
from textual.screen import Screen

from mraster_tui.engine.events import EngineSnapshot
from mraster_tui.messages import EventBuffer
from mraster_tui.widgets.bandit import BanditSummary, DecisionsPanel, PolicyPanel
from mraster_tui.widgets.equity import EquityPanel
from mraster_tui.widgets.positions import PositionsTable
from mraster_tui.widgets.status_bar import EngineView, StatusBar

if TYPE_CHECKING:
    from mraster_tui.config import Settings


class DashboardScreen(Screen[None]):
    """A mode screen.  The App calls :meth:`show_snapshot` (at most a few times a second),
    :meth:`pump` (new log records) and :meth:`show_settings`; the screen routes them to its widgets.
    """

    # nothing focused at first: every key reaches the app, and the table's cursor does not
    # cover the first position's colours
    AUTO_FOCUS = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.ready = False  # composed and mounted: the App may render into it
        self.rendered = False  # has shown a snapshot at least once

    @on(Mount)
    def _mark_ready(self) -> None:
        self.ready = True

    def show_snapshot(self, snap: EngineSnapshot, view: EngineView) -> None:
        self.query_one(StatusBar).show(snap, view)
        self.query_one(PositionsTable).update_positions(snap.positions, snap.now_ms)
        box = self.query_one("#positions-box")
        box.border_title = f"Positions {len(snap.positions)}" if snap.positions else "Positions (none open)"
        for panel in self.query(EquityPanel):
            panel.show(snap)
        for policy in self.query(PolicyPanel):
            policy.show(snap.bandit)
        for summary in self.query(BanditSummary):
            summary.show(snap.bandit, snap.rejections)
        for decisions in self.query(DecisionsPanel):
            decisions.show(snap.bandit, snap.rejections)

    def pump(self, buffer: EventBuffer) -> None:
        """New engine events are waiting in ``buffer``."""

    def show_settings(self, settings: "Settings") -> None:
        """The effective settings changed."""
