"""The preset mode's curated activity feed: fills, positions, FastTP moves, warnings, notices.

A glance, not a log: it shows the newest lines that fit, each cut to the panel's width (the Pro
log keeps every record in full).  One Static re-rendered only when curated events arrive, which
stays cheap under a storm of records.
"""

from __future__ import annotations

from collections import deque

from textual.content import Content
from textual.widgets import Static

from mraster_tui.engine.events import Event, EventKind
from mraster_tui.messages import EventBuffer
from mraster_tui.widgets.fmt import clock

#: lines kept (more than any panel shows)
FEED_MAX_LINES = 100
#: at most this many new lines per drain (5 a second): a longer backlog (a storm, or the feed was
#: hidden) is summarised in one line
FEED_CATCHUP = 20

_GLYPH = {
    EventKind.ORDER_FILLED: ("✔", "$text-success"),
    EventKind.POSITION_OPENED: ("▶", "$text-success"),
    EventKind.POSITION_CLOSED: ("■", "$text-accent"),
    EventKind.POSITION_ADOPTED: ("↺", "$text-accent"),
    EventKind.BRACKET_REPAIRED: ("⚒", "$text-warning"),
    EventKind.FASTTP_MOVED: ("⇡", "$text-accent"),
    EventKind.BREAKER: ("⛔", "$text-error"),
    EventKind.ENGINE: ("●", "$foreground-muted"),
    EventKind.NOTICE: ("i", "$text-primary"),
}


def feed_line(e: Event) -> Content:
    """One coloured line: time, glyph, symbol, message."""
    if e.level == "ERROR":
        glyph, style = "✖", "$text-error"
    elif e.level == "WARNING":
        glyph, style = "⚠", "$text-warning"
    else:
        glyph, style = _GLYPH.get(e.kind, ("·", "$foreground"))
    sym = f"{e.symbol} " if e.symbol else ""
    return Content.assemble((clock(e.ts), "$foreground-muted"), " ", (glyph, style), " ", (sym, "bold"), e.message)


class ActivityFeed(Static):
    """Reads curated events from the shared :class:`EventBuffer` (its own cursor), newest at the bottom."""

    DEFAULT_CSS = """
    ActivityFeed {
        height: 1fr;
        background: $surface;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self._seq = 0
        self._lines: deque[Content] = deque(maxlen=FEED_MAX_LINES)

    @property
    def texts(self) -> list[str]:
        """The kept lines as plain text, oldest first."""
        return [line.plain for line in self._lines]

    def drain(self, buffer: EventBuffer) -> int:
        """Take the curated events that arrived since the last call; returns how many."""
        self._seq, events, _ = buffer.since(self._seq)
        curated = [e for e in events if e.curated]
        if not curated:
            return 0
        if len(curated) > FEED_CATCHUP:
            skipped = len(curated) - FEED_CATCHUP
            self._lines.append(Content.styled(f"… {skipped} earlier events: see the log in Pro mode",
                                              "$foreground-muted"))
            curated = curated[-FEED_CATCHUP:]
        self._lines.extend(feed_line(e) for e in curated)
        self._show()
        return len(curated)

    def _show(self) -> None:
        rows = self.size.height or FEED_MAX_LINES
        self.update(Content("\n").join(list(self._lines)[-rows:]))

    def on_resize(self) -> None:
        self._show()
