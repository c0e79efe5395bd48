"""Typed engine events, event sinks and the read-only engine snapshot.

The engine reports everything it does as :class:`Event` objects sent to an :class:`EventSink`.
Front ends subscribe through a sink: the headless logger prints text or JSON lines, the TUI
posts them as messages.  The engine never holds a reference to a widget.

Events must never carry an API key, a secret or a signature.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import IO, Any, Protocol


class EventKind(str, Enum):
    ENGINE = "engine"  # started / stopped / state change
    CYCLE = "cycle"  # cycle summary: scanned, rejected by reason, decisions, orders
    SIGNAL_REJECTED = "signal_rejected"
    DECISION = "decision"
    ORDER_SUBMITTED = "order_submitted"
    ORDER_FILLED = "order_filled"
    ORDER_CANCELLED = "order_cancelled"
    BRACKET_PLACED = "bracket_placed"
    BRACKET_REPAIRED = "bracket_repaired"
    FASTTP_MOVED = "fasttp_moved"
    POSITION_OPENED = "position_opened"
    POSITION_CLOSED = "position_closed"
    POSITION_ADOPTED = "position_adopted"
    BREAKER = "breaker"
    RATE_LIMIT = "rate_limit"
    STATE_SAVED = "state_saved"
    NOTICE = "notice"
    WARNING = "warning"
    ERROR = "error"


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LEVEL_NO = {lvl: i for i, lvl in enumerate(LEVELS)}

#: kinds shown in the preset mode's curated activity feed (plus every WARNING/ERROR)
CURATED = frozenset({
    EventKind.ORDER_FILLED, EventKind.POSITION_OPENED, EventKind.POSITION_CLOSED,
    EventKind.POSITION_ADOPTED, EventKind.BRACKET_REPAIRED, EventKind.FASTTP_MOVED, EventKind.BREAKER,
    EventKind.NOTICE, EventKind.ENGINE,
})


@dataclass(frozen=True, slots=True)
class Event:
    ts: int  # epoch ms (engine clock)
    kind: EventKind
    level: str
    message: str
    symbol: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def curated(self) -> bool:
        return self.kind in CURATED or LEVEL_NO.get(self.level, 1) >= LEVEL_NO["WARNING"]

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": _iso(self.ts), "level": self.level, "event": self.kind.value,
                               "msg": self.message}
        if self.symbol:
            out["symbol"] = self.symbol
        for k, v in self.data.items():
            if k not in out:
                out[k] = _jsonable(v)
        return out


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, Enum):
        return v.value
    if is_dataclass(v) and not isinstance(v, type):
        return _jsonable(asdict(v))
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:  # NaN is not JSON
        return None
    if hasattr(v, "item") and callable(v.item):  # numpy scalars
        return v.item()
    return v


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class NullSink:
    def emit(self, event: Event) -> None:
        return None


class MemorySink:
    """Keeps the last ``maxlen`` events (tests, the TUI's buffer)."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self.events: deque[Event] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, *kinds: EventKind) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind in kinds]


class FanoutSink:
    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Event) -> None:
        for s in self.sinks:
            s.emit(event)


class LevelFilterSink:
    def __init__(self, inner: EventSink, level: str = "INFO") -> None:
        self.inner = inner
        self.min = LEVEL_NO.get(level.upper(), 1)

    def emit(self, event: Event) -> None:
        if LEVEL_NO.get(event.level, 1) >= self.min:
            self.inner.emit(event)


class TextSink:
    """Readable one-line-per-event output for ``--no-ui`` (and systemd's journal)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        sym = f" {event.symbol}" if event.symbol else ""
        line = f"{_iso(event.ts)} {event.level:<7} {event.kind.value:<16}{sym} {event.message}\n"
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError):  # closed pipe / closed stream: drop, never crash
                pass


class JsonSink:
    """One JSON object per event (``--log-format json``): ``ts``, ``level``, ``event``, ``msg``..."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        line = json.dumps(event.to_json_dict(), separators=(",", ":"), default=str) + "\n"
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass


# -- snapshot ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PositionView:
    symbol: str
    side: str  # "LONG" | "SHORT"
    qty: Decimal
    entry: Decimal
    mark: Decimal
    upnl: Decimal
    r: float | None  # unrealised R against the original stop distance
    sl: Decimal | None
    tp: Decimal | None
    bucket: str | None
    opened_at: int  # epoch ms
    protected: bool  # a stop is on the venue


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """Everything a front end shows, as immutable data.  Cheap to build, safe to hand to
    another thread."""

    now_ms: int = 0
    mode: str = "PAPER"  # PAPER | LIVE | DEMO | BACKTEST
    venue: str = ""
    state: str = "stopped"  # stopped | starting | running | stopping | error
    cycle: int = 0
    next_scan_ms: int | None = None
    weight_used: int = 0
    weight_limit: int = 0
    data_age_s: float | None = None
    breaker_active: bool = False
    breaker_reasons: tuple[str, ...] = ()
    equity: Decimal | None = None
    wallet: Decimal | None = None
    positions: tuple[PositionView, ...] = ()
    equity_curve: tuple[tuple[int, float], ...] = ()
    bandit: dict[str, Any] = field(default_factory=dict)  # BanditPolicy.stats()
    rejections: dict[str, int] = field(default_factory=dict)  # reason -> count since start
    last_cycle: dict[str, Any] = field(default_factory=dict)
    trades_closed: int = 0
    realized_pnl: Decimal = Decimal(0)
    error: str | None = None


def merge_counts(dst: dict[str, int], src: Iterable[str]) -> None:
    for k in src:
        dst[k] = dst.get(k, 0) + 1
