"""The Pro mode's verbose log: filtered by level and by text, fed in batches.

Records live in the shared :class:`EventBuffer` (bounded); this pane keeps a cursor into it and,
on each UI tick, formats the new records once (into its own ring of the same size), and writes
those that pass the filters with one ``Log.write_lines``.  Changing a filter clears the view and
re-renders it from the ring, without formatting anything again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalGroup, Vertical
from textual.reactive import reactive
from textual.widgets import Input, Label, Log

from mraster_tui.engine.events import LEVEL_NO, LEVELS, Event
from mraster_tui.messages import EventBuffer
from mraster_tui.widgets.fmt import log_line

LOG_MAX_LINES = 2_000


def formatted(events: list[Event]) -> list[tuple[int, str, str]]:
    """``(level number, line, lower-cased line)`` of each event."""
    out = []
    for e in events:
        line = log_line(e)
        out.append((LEVEL_NO.get(e.level, 1), line, line.lower()))
    return out


class LogPane(Vertical):
    """Level filter, text filter and the log itself.  The screen binds ``l`` (:meth:`cycle_level`)
    and ``/`` (:meth:`search`) so they work wherever the focus is; ``escape`` here leaves the filter.
    """

    BINDINGS = [
        Binding("escape", "leave_filter", "Leave filter", show=False, id="log-leave-filter",
                tooltip="Leave the text filter; clear it when the log has focus"),
    ]

    DEFAULT_CSS = """
    LogPane {
        height: 1fr;
        & > #log-bar { height: 1; }
        & #log-level { width: auto; padding: 0 1; background: $primary-muted; }
        & #log-filter { border: none; height: 1; width: 1fr; padding: 0 1; }
        & #log-count { width: auto; padding: 0 1; color: $foreground-muted; }
        & > Log { height: 1fr; overflow: auto auto; }
    }
    """

    min_level: reactive[str] = reactive("INFO", init=False)
    needle: reactive[str] = reactive("", init=False)

    def __init__(self, buffer: EventBuffer, *, level: str = "INFO", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.buffer = buffer
        self._seq = 0
        self._lines: deque[tuple[int, str, str]] = deque(maxlen=buffer.maxlen)
        self.shown = 0  # lines currently in the view
        self.set_reactive(LogPane.min_level, level if level in LEVEL_NO else "INFO")

    def compose(self) -> ComposeResult:
        with HorizontalGroup(id="log-bar"):
            yield Label(self._level_text(), id="log-level")
            yield Input(placeholder="/ filter the log by text", id="log-filter", compact=True)
            yield Label("", id="log-count")
        yield Log(max_lines=LOG_MAX_LINES, id="log")

    @property
    def log_view(self) -> Log:
        return self.query_one("#log", Log)

    def _level_text(self) -> str:
        return f"≥ {self.min_level}"

    def on_mount(self) -> None:
        # fill the log after the first frame: the screen shows at once, the lines a moment later
        self.call_after_refresh(self.rerender)

    def _take_in(self) -> list[tuple[int, str, str]]:
        """Format the records that arrived since the last call into the ring; returns them."""
        self._seq, events, _ = self.buffer.since(self._seq, limit=self.buffer.maxlen)
        new = formatted(events)
        self._lines.extend(new)
        return new

    def drain(self) -> int:
        """Write the new records that pass the filters; returns how many lines were written."""
        return self._write(self._take_in())

    def rerender(self) -> int:
        """Clear and redraw from the formatted ring (after a filter change)."""
        self.log_view.clear()
        self.shown = 0
        self._take_in()
        return self._write(self._lines)

    def _write(self, rows: Iterable[tuple[int, str, str]]) -> int:
        level, needle = LEVEL_NO[self.min_level], self.needle.lower()
        lines = [line for lvl, line, low in rows if lvl >= level and (not needle or needle in low)]
        lines = lines[-LOG_MAX_LINES:]
        if lines:
            log = self.log_view
            # follow the tail unless the user is reading back (log focused and scrolled up);
            # Log's own check misses the tail when the first lines came before it had a size
            follow = not log.has_focus or log.is_vertical_scroll_end
            log.write_lines(lines, scroll_end=False)
            if follow:
                log.scroll_end(animate=False, immediate=True, x_axis=False)
            self.shown = min(self.shown + len(lines), LOG_MAX_LINES)
        self.query_one("#log-count", Label).update(f"{self.shown} lines")
        return len(lines)

    def watch_min_level(self) -> None:
        self.query_one("#log-level", Label).update(self._level_text())
        self.rerender()

    def watch_needle(self) -> None:
        self.rerender()

    def cycle_level(self) -> None:
        self.min_level = LEVELS[(LEVELS.index(self.min_level) + 1) % len(LEVELS)]

    def search(self) -> None:
        self.query_one("#log-filter", Input).focus()

    def action_leave_filter(self) -> None:
        box = self.query_one("#log-filter", Input)
        if box.has_focus:
            self.log_view.focus()
        else:
            box.value = ""

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.needle = event.value.strip()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.log_view.focus()
