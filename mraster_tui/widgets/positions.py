"""Open positions: a DataTable keyed by symbol, updated cell by cell.

A refresh never calls ``clear()`` (that would reset the cursor and the scroll position): rows
that disappeared are removed, new ones added, and only cells whose text changed are updated,
all inside one ``batch_update``.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.content import Content
from textual.events import Resize
from textual.widgets import DataTable

from mraster_tui.engine.events import PositionView
from mraster_tui.widgets.fmt import age, money, num

# (key, header, width); cell text is kept to width - 1 so columns never touch, even with
# no cell padding on narrow terminals
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("symbol", "Symbol", 10),
    ("side", "Side", 6),
    ("qty", "Qty", 8),
    ("entry", "Entry", 8),
    ("mark", "Mark", 8),
    ("upnl", "uPnL", 8),
    ("r", "R", 6),
    ("sl", "SL", 8),
    ("tp", "TP", 8),
    ("bucket", "B", 2),
    ("age", "Age", 5),
)
_RIGHT = {"qty", "entry", "mark", "upnl", "r", "sl", "tp", "age"}
#: total width of the columns with a one-cell padding on each side
WIDE = sum(w for _, _, w in COLUMNS) + 2 * len(COLUMNS)


def _sign_markup(text: str, value: float | None) -> str:
    if value is None or value == 0:
        return text
    return f"[$text-success]{text}[/]" if value > 0 else f"[$text-error]{text}[/]"


def row_markup(p: PositionView, now_ms: int) -> dict[str, str]:
    """The markup of every cell of a position (pure: easy to test, cheap to compare)."""
    w = {k: width - 1 for k, _, width in COLUMNS}
    sym = p.symbol if len(p.symbol) <= w["symbol"] else p.symbol[: w["symbol"] - 1] + "…"
    if not p.protected:  # no stop on the venue: the one thing a trader must see at once
        sym = f"[b $text-error]!{sym[: w['symbol'] - 1]}[/]"
    side = p.side.upper()
    upnl = float(p.upnl)
    return {
        "symbol": sym,
        "side": f"[$text-success]{side}[/]" if side == "LONG" else f"[$text-error]{side}[/]",
        "qty": num(p.qty, w["qty"]),
        "entry": num(p.entry, w["entry"]),
        "mark": num(p.mark, w["mark"]),
        "upnl": _sign_markup(money(upnl, w["upnl"], signed=True), upnl),
        "r": _sign_markup("—" if p.r is None else f"{p.r:+.2f}"[: w["r"]], p.r),
        "sl": num(p.sl, w["sl"]),
        "tp": num(p.tp, w["tp"]),
        "bucket": (p.bucket or "—")[: w["bucket"]],
        "age": age(now_ms - p.opened_at if p.opened_at else None),
    }


def _cell(key: str, markup: str) -> Content:
    content = Content.from_markup(markup)
    return content.right(next(w for k, _, w in COLUMNS if k == key) - 1) if key in _RIGHT else content


class PositionsTable(DataTable):
    """Symbol, side, qty, entry, mark, uPnL, R, SL, TP, bucket and age of every open position."""

    DEFAULT_CSS = """
    PositionsTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self._shown: dict[str, dict[str, str]] = {}

    def on_mount(self) -> None:
        for key, header, width in COLUMNS:
            label = Content(header).right(width - 1) if key in _RIGHT else header
            self.add_column(label, key=key, width=width)

    def on_resize(self, event: Resize) -> None:
        # wide enough: one cell of padding each side; narrow (80 columns): none, the cells
        # themselves keep one space between columns
        self.cell_padding = 1 if event.size.width >= WIDE else 0

    @property
    def symbols(self) -> list[str]:
        """Row keys in display order."""
        return list(self._shown)

    def update_positions(self, positions: Iterable[PositionView], now_ms: int) -> int:
        """Diff ``positions`` into the table; returns the number of cells written."""
        wanted = {p.symbol: row_markup(p, now_ms) for p in positions}
        writes = 0
        with self.app.batch_update():
            for sym in [s for s in self._shown if s not in wanted]:
                self.remove_row(sym)
                del self._shown[sym]
            for sym, cells in wanted.items():
                old = self._shown.get(sym)
                if old is None:
                    self.add_row(*(_cell(k, cells[k]) for k, _, _ in COLUMNS), key=sym)
                    writes += len(cells)
                else:
                    for k, markup in cells.items():
                        if old[k] != markup:
                            self.update_cell(sym, k, _cell(k, markup))
                            writes += 1
                self._shown[sym] = cells
        return writes
