"""Compact text for numbers, durations and events in narrow terminal cells (no textual imports)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from mraster_tui.engine.events import Event

Number = Decimal | float | int


def num(x: Number | None, width: int = 7, *, signed: bool = False) -> str:
    """``x`` in at most ``width`` characters, keeping as many decimals as fit.

    Large values switch to k/M suffixes; tiny ones to scientific notation, so a price of
    0.00001234 still shows its digits.  ``None`` (unknown) is an em dash.
    """
    if x is None:
        return "—"
    v = float(x)
    if v != v:  # NaN
        return "—"
    sign = "+" if signed and v > 0 else ""
    a = abs(v)
    if a == 0:
        return "0"
    if a < 1e-3:
        for p in range(3, -1, -1):
            s = f"{sign}{v:.{p}e}".replace("e-0", "e-")
            if len(s) <= width:
                return s
    for decimals in range(8, -1, -1):
        s = f"{sign}{v:.{decimals}f}"
        if len(s) <= width:
            return s.rstrip("0").rstrip(".") if "." in s else s
    for div, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        if a >= div * 1000 and suffix != "T":
            continue
        for decimals in (2, 1, 0):
            s = f"{sign}{v / div:.{decimals}f}{suffix}"
            if len(s) <= width:
                return s
    return f"{sign}{v:.0e}"


def money(x: Number | None, width: int = 9, *, signed: bool = False) -> str:
    """A USDT amount with 2 decimals when it fits (``+1.93``, ``-1234.57``), else compact."""
    if x is None:
        return "—"
    text = f"{float(x):+.2f}" if signed else f"{float(x):.2f}"
    return text if len(text) <= width else num(x, width, signed=signed)


def age(ms: int | None) -> str:
    """A duration in at most 4 characters: 45s, 12m, 3h05, 14h, 2d."""
    if ms is None or ms < 0:
        return "—"
    s = int(ms // 1000)
    if s < 60:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h, m = divmod(m, 60)
    if h < 10:
        return f"{h}h{m:02d}"
    if h < 48:
        return f"{h}h"
    return f"{h // 24}d"


def countdown(ms: int | None) -> str:
    """``m:ss`` until an instant (``—`` when unknown, ``now`` when due)."""
    if ms is None:
        return "—"
    if ms <= 0:
        return "now"
    s = int((ms + 999) // 1000)
    m, s = divmod(s, 60)
    if m >= 60:
        return f"{m // 60}h{m % 60:02d}"
    return f"{m}:{s:02d}"


def clock(ts_ms: int) -> str:
    """UTC ``HH:MM:SS`` of an engine timestamp."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%H:%M:%S")


def log_line(e: Event) -> str:
    """One plain line of the Pro log."""
    sym = f" {e.symbol}" if e.symbol else ""
    return f"{clock(e.ts)} {e.level:<7} {e.kind.value:<16}{sym} {e.message}"


def percent(fraction: float, decimals: int = 2) -> str:
    return f"{fraction * 100:.{decimals}f} %"
