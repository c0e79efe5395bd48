"""Position sizing and exchange-filter rounding, in exact Decimal arithmetic.

Risk per trade is a budget, not a floor::

    risk_amount = equity * risk_per_trade * size_mult * bucket_mult
    qty         = risk_amount / |entry - stop|

then capped: notional <= equity * leverage * equity_fraction, notional <= max_notional_usdt
(0 = no cap), qty <= the venue's max quantity.  The quantity is floored to the step size
(``MARKET_LOT_SIZE`` for market orders), never rounded up: if it ends up below the venue's
minQty or minNotional, or below ``min_notional_usdt``, the trade is skipped with a reason.
``default_notional * size_mult * bucket_mult`` replaces the risk budget only when equity is
unknown (None).  Caps are checked at the higher of entry and mark price and minimums at the lower,
so both hold whichever price the venue uses.  Since the quantity is floored from
``risk_amount / distance``, the loss at the stop (``qty * distance``) never exceeds the budget.

Pass the stop *after* :func:`round_price`, the price the stop order will really carry.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from mraster_tui.engine.types import SymbolFilters

__all__ = [
    "SizingError", "SizingResult", "bucket_multiplier", "floor_qty", "format_decimal",
    "round_price", "size_position",
]

_PRECISION = 60  # digits: every product and quotient of exchange values here is exact or floored


class SizingError(ValueError):
    """Invalid sizing or rounding arguments (a programming error, never a market condition)."""


@dataclass(frozen=True, slots=True)
class SizingResult:
    """``qty`` is 0 when the trade is skipped, with ``skip_reason`` saying why.

    ``bound`` names the constraint that set the size: ``risk`` (the budget), ``default_notional``
    (equity unknown), ``equity_cap``, ``max_notional`` or ``max_qty``.  ``loss_at_stop`` is
    ``qty * |entry - stop|``, never above ``risk_amount`` when equity is known.
    """

    qty: Decimal
    notional: Decimal
    risk_amount: Decimal
    loss_at_stop: Decimal
    bound: str
    skip_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.skip_reason is None and self.qty > 0

    @property
    def reason(self) -> str | None:
        """Same as ``skip_reason`` (the name the engine reads)."""
        return self.skip_reason


def _dec(value: Any, name: str) -> Decimal:
    try:
        out = value if isinstance(value, Decimal) else Decimal(str(value))
    except (decimal.InvalidOperation, ValueError, TypeError):
        raise SizingError(f"{name} is not a number: {value!r}") from None
    if not out.is_finite():
        raise SizingError(f"{name} is not finite: {value!r}")
    return out


def _step(value: Decimal, name: str) -> Decimal:
    if value <= 0:
        raise SizingError(f"{name} must be positive, got {value}")
    return value


def floor_qty(qty: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of ``step`` not above ``qty`` (``qty >= 0``)."""
    qty, step = _dec(qty, "qty"), _step(_dec(step, "step"), "step")
    if qty < 0:
        raise SizingError(f"qty must not be negative, got {qty}")
    with decimal.localcontext() as ctx:
        ctx.prec = _PRECISION
        return (qty // step) * step


def round_price(price: Decimal, tick: Decimal, *, side: str, purpose: str) -> Decimal:
    """Round a bracket price to the tick so that rounding never adds risk.

    ``purpose="stop"``: toward the entry, i.e. up for a long (the stop is below) and down for a
    short, so the stop distance, hence the loss, can only shrink.  ``purpose="take_profit"``: away
    from the entry (up for a long, down for a short); that does not change the risk and keeps the
    order on the side of the price where it is valid (it never rounds across the entry or mark).
    """
    price, tick = _dec(price, "price"), _step(_dec(tick, "tick"), "tick")
    if side not in ("long", "short"):
        raise SizingError(f"side must be 'long' or 'short', got {side!r}")
    if purpose not in ("stop", "take_profit"):
        raise SizingError(f"purpose must be 'stop' or 'take_profit', got {purpose!r}")
    up = side == "long"  # a long's stop and take-profit both round up, a short's both down
    with decimal.localcontext() as ctx:
        ctx.prec = _PRECISION
        units = (price / tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
        return units * tick


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros (``1E-7`` -> ``0.0000001``)."""
    value = _dec(value, "value")
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def bucket_multiplier(bucket: str, settings: Any) -> Decimal:
    """``size_mult_s`` / ``_m`` / ``_l`` for bucket ``S``/``M``/``L``."""
    name = f"size_mult_{bucket.strip().lower()}"
    if bucket.strip().upper() not in ("S", "M", "L"):
        raise SizingError(f"bucket must be S, M or L, got {bucket!r}")
    return _dec(getattr(settings, name, {"size_mult_s": 1.0, "size_mult_m": 1.4, "size_mult_l": 1.9}[name]),
                name)


def _setting(settings: Any, name: str, default: float) -> Decimal:
    return _dec(getattr(settings, name, default), name)


def size_position(*, equity: Decimal | None, entry: Decimal, stop: Decimal, side: str,
                  bucket_mult: Decimal, filters: SymbolFilters, settings: Any,
                  mark_price: Decimal | None = None) -> SizingResult:
    """Size a market entry (see the module docstring)."""
    entry, stop = _dec(entry, "entry"), _dec(stop, "stop")
    bucket_mult = _dec(bucket_mult, "bucket_mult")
    mark = entry if mark_price is None else _dec(mark_price, "mark_price")
    if entry <= 0 or stop <= 0 or mark <= 0:
        raise SizingError(f"prices must be positive: entry {entry}, stop {stop}, mark {mark}")
    if side not in ("long", "short"):
        raise SizingError(f"side must be 'long' or 'short', got {side!r}")
    if (side == "long" and stop >= entry) or (side == "short" and stop <= entry):
        raise SizingError(f"a {side}'s stop {stop} is on the wrong side of the entry {entry}")
    if bucket_mult < 0:
        raise SizingError(f"bucket_mult must not be negative, got {bucket_mult}")

    step = filters.market_step_size if filters.market_step_size > 0 else filters.step_size
    step = _step(_dec(step, "step size"), "step size")
    # Market orders are bound by MARKET_LOT_SIZE; LOT_SIZE is honoured too, to be safe.
    min_qty = max(filters.market_min_qty, filters.min_qty)
    max_qty = min((q for q in (filters.market_max_qty, filters.max_qty) if q > 0), default=Decimal(0))
    high, low = max(entry, mark), min(entry, mark)

    with decimal.localcontext() as ctx:
        ctx.prec = _PRECISION
        distance = abs(entry - stop)
        scale = _setting(settings, "size_mult", 1.0) * bucket_mult

        def skip(reason: str, risk: Decimal = Decimal(0), bound: str = "risk") -> SizingResult:
            return SizingResult(Decimal(0), Decimal(0), risk, Decimal(0), bound, reason)

        # Candidate quantities, each floored to the step: the budget, then every cap.
        candidates: list[tuple[Decimal, str]] = []
        if equity is None:
            target = _setting(settings, "default_notional", 120.0) * scale
            candidates.append(((target // (entry * step)) * step, "default_notional"))
            risk_amount = Decimal(0)
        else:
            equity = _dec(equity, "equity")
            if equity <= 0:
                return skip(f"equity is {equity}")
            risk_amount = equity * _setting(settings, "risk_per_trade", 0.007) * scale
            candidates.append(((risk_amount // (distance * step)) * step, "risk"))
            cap = equity * _setting(settings, "leverage", 3) * _setting(settings, "equity_fraction", 0.25)
            candidates.append(((cap // (high * step)) * step, "equity_cap"))
        max_notional = _setting(settings, "max_notional_usdt", 300.0)
        if max_notional > 0:
            candidates.append(((max_notional // (high * step)) * step, "max_notional"))
        if max_qty > 0:
            candidates.append(((max_qty // step) * step, "max_qty"))
        qty, bound = min(candidates, key=lambda c: c[0])

        notional = qty * entry
        loss = qty * distance
        if qty <= 0:
            return skip(f"the {bound} limit leaves less than one step ({format_decimal(step)})", risk_amount, bound)
        if qty < min_qty:
            return skip(f"qty {format_decimal(qty)} < venue min qty {format_decimal(min_qty)}", risk_amount, bound)
        if qty * low < filters.min_notional:
            return skip(f"notional {qty * low:.2f} < venue min notional {format_decimal(filters.min_notional)}",
                        risk_amount, bound)
        min_notional = _setting(settings, "min_notional_usdt", 5.0)
        if qty * low < min_notional:
            return skip(f"notional {qty * low:.2f} < ASTER_MIN_NOTIONAL_USDT {format_decimal(min_notional)}",
                        risk_amount, bound)
        return SizingResult(qty, notional, risk_amount, loss, bound)
