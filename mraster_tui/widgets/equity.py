"""Equity curve as a sparkline, with equity, realised PnL and closed trades."""

from __future__ import annotations

from decimal import Decimal

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from mraster_tui.engine.events import EngineSnapshot
from mraster_tui.widgets.fmt import money

#: points of the curve handed to the sparkline (it buckets them to its width)
CURVE_POINTS = 240


def summary_markup(snap: EngineSnapshot) -> str:
    eq = money(snap.equity, 11)
    pnl = float(snap.realized_pnl or Decimal(0))
    pnl_text = money(pnl, 10, signed=True)
    if pnl:
        pnl_text = f"[{'$text-success' if pnl > 0 else '$text-error'}]{pnl_text}[/]"
    upnl = sum((float(p.upnl) for p in snap.positions), 0.0)
    upnl_text = money(upnl, 9, signed=True) if snap.positions else "—"
    return (f"equity [b]{eq}[/b]\nrealised {pnl_text}  open {upnl_text}\n"
            f"[$foreground-muted]{snap.trades_closed} trades closed[/]")


class EquityPanel(Vertical):
    DEFAULT_CSS = """
    EquityPanel {
        height: 1fr;
        & > #equity-summary { height: auto; }
        & > Sparkline { height: 1fr; min-height: 1; margin-top: 1; }
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._summary = ""
        self._curve_key: tuple[int, float | None] = (-1, None)

    def compose(self) -> ComposeResult:
        yield Static("equity —", id="equity-summary")
        yield Sparkline([], id="equity-spark")

    def show(self, snap: EngineSnapshot) -> None:
        summary = summary_markup(snap)
        if summary != self._summary:
            self._summary = summary
            self.query_one("#equity-summary", Static).update(summary)
        curve = snap.equity_curve[-CURVE_POINTS:]
        key = (len(snap.equity_curve), curve[-1][1] if curve else None)
        if key != self._curve_key:
            self._curve_key = key
            values = [v for _, v in curve]
            # a single point would draw a full block: wait for a second one (an empty one is a baseline)
            self.query_one(Sparkline).data = values if len(values) >= 2 else []
