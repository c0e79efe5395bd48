"""The bridge from the engine thread to the UI, and the app-wide messages.

The engine runs in a thread worker and reports through an :class:`~mraster_tui.engine.events.EventSink`.
The TUI's sink is :class:`EventBuffer`: a bounded, thread-safe ring of events.  ``emit`` only
appends under a lock (no call into Textual, no ``call_from_thread`` per record), and the UI drains
it on a timer in one batch, so a storm of 5,000 records per second costs the UI one
``Log.write_lines`` per tick, and memory stays bounded whatever the engine does.

Messages defined here travel between the App and its screens; widget-owned messages are nested
in their widgets (``StepSlider.Changed``).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from itertools import islice

from textual.message import Message

from mraster_tui.engine.events import Event

#: engine events kept for the log pane and the activity feed
EVENT_BUFFER_MAX = 5_000


class EventBuffer:
    """A bounded ring of engine events; ``emit`` is called from the engine thread.

    Every event gets a sequence number; a reader remembers the last one it saw and asks for what
    came after (:meth:`since`).  A reader that fell more than ``maxlen`` behind gets the newest
    ``maxlen`` events and the count of those it missed.
    """

    def __init__(self, maxlen: int = EVENT_BUFFER_MAX) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._seq = 0
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            self._seq += 1

    @property
    def seq(self) -> int:
        """Sequence number of the newest event (0 before the first)."""
        return self._seq

    def since(self, seq: int, limit: int | None = None) -> tuple[int, list[Event], int]:
        """``(newest_seq, events after seq oldest first, missed)``; at most ``limit`` events (the newest)."""
        with self._lock:
            new = self._seq - seq
            if new <= 0:
                return self._seq, [], 0
            n = min(new, len(self._events))
            if limit is not None:
                n = min(n, limit)
            missed = new - n
            tail = list(islice(reversed(self._events), n))
            head = self._seq
        tail.reverse()
        return head, tail, missed

    def snapshot(self) -> list[Event]:
        """Every buffered event, oldest first."""
        with self._lock:
            return list(self._events)


@dataclass
class SettingSubmitted(Message):
    """The config editor asks the App to validate, save and apply one value (raw text)."""

    name: str
    raw: str


@dataclass
class RestartRequested(Message):
    """A screen asks the App to restart the engine (the App confirms when positions are open)."""

    reason: str = ""
