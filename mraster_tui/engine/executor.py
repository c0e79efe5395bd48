"""Entries and brackets: the only code that opens positions and places protective orders.

* Every order carries a deterministic client id from the ledger (``mr<salt>-<trade no><leg>-<SYMBOL>``,
  at most 36 characters of ``[A-Za-z0-9-]``).  An entry is journaled in the state file as
  *pending* before it is sent, so a crash between submit and fill is resolved by client id.
* Leverage is set on the venue before the first trade on a symbol (once per engine run), and
  exit orders an earlier trade left on the symbol are cancelled before the entry.
* The entry is a MARKET order.  Brackets are computed from the **actual fill price** at the ATR
  multiples: a STOP_MARKET ``closePosition`` stop with ``ASTER_WORKING_TYPE`` and a
  TAKE_PROFIT_MARKET ``closePosition`` take-profit.  Trigger prices are rounded to the tick so that
  rounding never increases risk (``engine/sizing.py``).
* ``-2021`` (would trigger immediately): the current working price (mark or contract price) is
  read; if it is already beyond the wanted level, the leg's job is done by closing at market
  (reduce-only), which is what the triggered order would have done; otherwise it is placed again
  at the wanted level, or ``TRIGGER_GAP_TICKS`` ticks inside the current price when the price is
  closer than that to it.
* A stop that cannot be placed after retries closes the position at market (reduce-only) with an
  error event: a position without a stop is never left behind.
* A leg is a ``closePosition`` order; since the venue keeps only one such order per type and
  side (-4130), a second one (a FastTP move: new stop before the old is cancelled) goes on as a
  reduce-only order for the position size, so the two forms alternate.
* Order submits are never retried blindly: a retry reuses the same client id (the venue layer
  resolves unknown outcomes by client id); a new price gets a new client id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mraster_tui.engine import sizing
from mraster_tui.engine.errors import IpBanned, RateLimited, UnknownOutcome, VenueError, VenueRejected, WouldTrigger
from mraster_tui.engine.events import EventKind
from mraster_tui.engine.ledger import Ledger, LiveTrade, PendingEntry
from mraster_tui.engine.types import Order, OrderRequest, OrderStatus, OrderType, Side, SymbolInfo

#: submit attempts for a bracket leg (same client id while the price is unchanged)
LEG_ATTEMPTS = 3
#: polls of an entry that did not come back FILLED (e.g. an ACK answer)
ENTRY_POLLS = 5
#: ticks kept between a re-placed trigger and the current price after -2021
TRIGGER_GAP_TICKS = 3
#: -4130: a closePosition order of this type and side already exists
CLOSE_POSITION_EXISTS = -4130
#: every client id the engine generates starts with this
CLIENT_PREFIX = "mr"

Emit = Callable[..., None]


class EntryFailed(Exception):
    """The entry did not happen (nothing is open).  ``code`` is a stable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class LegResult:
    """Outcome of placing a bracket leg: ``order`` when it rests on the venue; ``crossed`` when the
    price was already beyond the level (the caller closes or keeps, see ``on_cross``)."""

    order: Order | None
    price: Decimal | None
    crossed: bool = False
    error: str | None = None


class Executor:
    def __init__(self, exchange: Any, ledger: Ledger, settings: Any, clock: Any, emit: Emit,
                 save: Callable[[], Awaitable[None]], infos: Callable[[], dict[str, SymbolInfo]], *,
                 on_opened: Callable[[LiveTrade], None] | None = None) -> None:
        self.exchange = exchange
        self.ledger = ledger
        self.settings = settings
        self.clock = clock
        self.emit = emit
        self._save = save
        self._infos = infos
        self._on_opened = on_opened
        self._leverage_done: dict[str, int] = {}

    def update_settings(self, settings: Any) -> None:
        self.settings = settings

    # -- helpers ----------------------------------------------------------------------
    def tick(self, symbol: str) -> Decimal:
        info = self._infos().get(symbol)
        return info.filters.tick_size if info is not None else Decimal(0)

    def round_stop(self, symbol: str, side: str, price: Decimal) -> Decimal:
        """A stop trigger rounded to the tick toward the entry (less risk)."""
        tick = self.tick(symbol)
        return sizing.round_price(price, tick, side=side.lower(), purpose="stop") if tick > 0 else price

    def round_tp(self, symbol: str, side: str, price: Decimal) -> Decimal:
        tick = self.tick(symbol)
        return sizing.round_price(price, tick, side=side.lower(), purpose="take_profit") if tick > 0 else price

    async def working_price(self, symbol: str) -> Decimal | None:
        """The price the venue compares triggers with (``ASTER_WORKING_TYPE``)."""
        try:
            if str(self.settings.working_type).upper() == "MARK_PRICE":
                p = (await self.exchange.premium_index()).get(symbol)
                return p.mark_price if p is not None else None
            b = (await self.exchange.book_tickers()).get(symbol)
            return b.mid if b is not None else None
        except VenueError:
            return None

    async def ensure_leverage(self, symbol: str) -> None:
        want = int(self.settings.leverage)
        if self._leverage_done.get(symbol) == want:
            return
        got = await self.exchange.set_leverage(symbol, want)
        self._leverage_done[symbol] = want
        self.emit(EventKind.NOTICE, "DEBUG", f"leverage set to {got}x", symbol=symbol, leverage=got)

    # -- entry ------------------------------------------------------------------------
    async def open_position(self, *, symbol: str, side: str, qty: Decimal, atr: float,
                            decision_id: str | None, bucket: str | None) -> LiveTrade:
        """Open ``side`` (LONG/SHORT) with a MARKET order and protect it.  Raises
        :class:`EntryFailed` when nothing was opened; returns the live trade otherwise (it may
        already be closed again if no stop could be placed: ``trade.symbol not in ledger.live``)."""
        s = self.settings
        try:
            await self.ensure_leverage(symbol)
            await self._clear_leftovers(symbol)
        except VenueError as exc:
            raise EntryFailed("prepare", f"could not prepare the entry: {exc}") from None
        trade_no = self.ledger.new_trade_no()
        cid = self.ledger.client_id(trade_no, "e", symbol)
        pending = PendingEntry(symbol=symbol, side=side, client_id=cid, trade_no=trade_no, qty=qty, atr=float(atr),
                               sl_mult=float(s.sl_atr_mult), tp_mult=float(s.tp_atr_mult),
                               created_at=self.clock.now_ms(), decision_id=decision_id, bucket=bucket)
        self.ledger.add_pending(pending)
        await self._save()  # journal before the order leaves
        order_side = Side.BUY if side == "LONG" else Side.SELL
        req = OrderRequest(symbol, order_side, OrderType.MARKET, cid, quantity=qty)
        self.emit(EventKind.ORDER_SUBMITTED, "INFO", f"entry {side} {qty} MARKET ({cid})", symbol=symbol,
                  client_id=cid, side=side, qty=qty)
        try:
            order = await self.exchange.place_order(req)
        except UnknownOutcome as exc:
            # it may exist: the pending entry stays and is resolved by client id later
            raise EntryFailed("unknown_outcome", f"entry outcome unknown, resolved by client id later: {exc}") from None
        except (VenueRejected, RateLimited, IpBanned) as exc:
            self.ledger.drop_pending(symbol)
            raise EntryFailed("rejected", f"entry refused: {exc}") from None
        except VenueError as exc:
            raise EntryFailed("unknown_outcome", f"entry failed: {exc}") from None
        order = await self._await_fill(order)
        if order is None or order.executed_qty <= 0:
            if order is not None and not order.status.open:
                self.ledger.drop_pending(symbol)
                raise EntryFailed("not_filled", f"entry {cid} ended {order.status.value} without a fill")
            raise EntryFailed("unknown_outcome", f"entry {cid} not filled yet; resolved by client id later")
        return await self.protect_new_entry(pending, order)

    async def _clear_leftovers(self, symbol: str) -> None:
        """Cancel exit orders left on the (flat) symbol by an earlier trade before a new entry:
        a leftover closePosition leg would block the new one (-4130) and could close the new
        position at the old trade's level."""
        for o in await self.exchange.open_orders(symbol):
            if o.close_position or o.reduce_only or o.client_id.startswith(CLIENT_PREFIX):
                await self.exchange.cancel_order(symbol, o.client_id, conditional=o.type.conditional)
                self.emit(EventKind.ORDER_CANCELLED, "INFO", f"cancelled leftover {o.type.value} {o.client_id} "
                          "before the entry", symbol=symbol, client_id=o.client_id)

    async def _await_fill(self, order: Order) -> Order | None:
        for _ in range(ENTRY_POLLS):
            if order.status is OrderStatus.FILLED or (not order.status.open and order.executed_qty > 0):
                return order
            if not order.status.open:
                return order
            await self.clock.sleep(0.2)
            try:
                got = await self.exchange.get_order(order.symbol, order.client_id)
            except VenueError:
                continue
            if got is None:
                return None
            order = got
        return order if order.executed_qty > 0 and order.status is OrderStatus.FILLED else None

    async def protect_new_entry(self, pending: PendingEntry, order: Order) -> LiveTrade:
        """Turn a filled entry into a live trade and place its brackets from the fill price."""
        fill = order.avg_price if order.avg_price > 0 else order.price
        atr = Decimal(repr(pending.atr))
        long = pending.side == "LONG"
        sl_raw = fill - atr * Decimal(repr(pending.sl_mult)) if long else fill + atr * Decimal(repr(pending.sl_mult))
        tp_raw = fill + atr * Decimal(repr(pending.tp_mult)) if long else fill - atr * Decimal(repr(pending.tp_mult))
        sl = self.round_stop(pending.symbol, pending.side, sl_raw)
        tp = self.round_tp(pending.symbol, pending.side, tp_raw)
        trade = LiveTrade(symbol=pending.symbol, side=pending.side, qty=order.executed_qty, entry=fill, sl=sl,
                          sl_initial=sl, tp=tp, atr=pending.atr, opened_at=order.update_time or self.clock.now_ms(),
                          trade_no=pending.trade_no, entry_client_id=pending.client_id, entry_order_id=order.order_id,
                          decision_id=pending.decision_id, bucket=pending.bucket)
        self.ledger.open_trade(trade)
        self.emit(EventKind.ORDER_FILLED, "INFO", f"entry filled {trade.side} {trade.qty} @ {fill}",
                  symbol=trade.symbol, client_id=order.client_id, price=fill, qty=trade.qty)
        if self._on_opened is not None:
            self._on_opened(trade)
        await self._save()
        await self.protect(trade)
        return trade

    async def protect(self, trade: LiveTrade, *, stop: bool = True, take_profit: bool = True) -> bool:
        """Place the stop (and TP) of ``trade`` at ``trade.sl`` / ``trade.tp``.  A stop that
        cannot be placed closes the position.  Returns True when the stop rests on the venue."""
        if stop:
            res = await self.place_leg(trade, "stop", trade.sl)
            if res.order is None:
                if res.crossed:
                    await self.close_position(trade, "the price is already beyond the stop")
                else:
                    self.emit(EventKind.ERROR, "ERROR", f"stop could not be placed after {LEG_ATTEMPTS} attempts "
                              f"({res.error}); closing the position at market", symbol=trade.symbol)
                    await self.close_position(trade, "no stop could be placed", level="ERROR")
                return False
        if take_profit:
            res = await self.place_leg(trade, "take_profit", trade.tp)
            if res.order is None and res.crossed:
                await self.close_position(trade, "the price is already beyond the take-profit", level="INFO")
            elif res.order is None:
                self.emit(EventKind.WARNING, "WARNING", f"take-profit not placed ({res.error}); the guard retries",
                          symbol=trade.symbol)
        return True

    # -- bracket legs -----------------------------------------------------------------
    async def place_leg(self, trade: LiveTrade, leg: str, price: Decimal, *, event: EventKind = EventKind.BRACKET_PLACED,
                        note: str = "") -> LegResult:
        """Place a stop (``leg="stop"``) or take-profit at ``price`` (see the module docstring).
        On success ``trade.sl``/``trade.tp`` and the leg's client id are updated (not saved)."""
        is_stop = leg == "stop"
        otype = OrderType.STOP_MARKET if is_stop else OrderType.TAKE_PROFIT_MARKET
        code = "s" if is_stop else "t"
        cid = self.ledger.next_leg_id(trade, code)
        last_error = ""
        close_position = True
        for _attempt in range(LEG_ATTEMPTS):
            if close_position:
                req = OrderRequest(trade.symbol, trade.exit_side, otype, cid, stop_price=price, close_position=True,
                                   working_type=str(self.settings.working_type))
            else:
                req = OrderRequest(trade.symbol, trade.exit_side, otype, cid, quantity=trade.qty, stop_price=price,
                                   reduce_only=True, working_type=str(self.settings.working_type))
            try:
                order = await self.exchange.place_order(req)
            except WouldTrigger as exc:
                last_error = str(exc)
                ref = await self.working_price(trade.symbol)
                if ref is None:
                    continue
                moved = self._inside(trade, is_stop, price, ref)
                if moved is None:
                    return LegResult(None, price, crossed=True, error=last_error)
                price = moved
                cid = self.ledger.next_leg_id(trade, code)
                continue
            except VenueRejected as exc:
                last_error = str(exc)
                if exc.code == CLOSE_POSITION_EXISTS and close_position:
                    # Binance allows one closePosition order per type and side: the new level
                    # goes on as a reduce-only order for the position size (then the old one goes)
                    close_position = False
                    cid = self.ledger.next_leg_id(trade, code)
                    continue
                break  # a definite refusal: the same request would be refused again
            except VenueError as exc:  # unknown outcome / transport: retry with the same client id
                last_error = str(exc)
                await self.clock.sleep(0.3)
                continue
            if is_stop:
                trade.sl, trade.sl_client_id = price, cid
            else:
                trade.tp, trade.tp_client_id = price, cid
            self.ledger.dirty = True
            what = "stop" if is_stop else "take-profit"
            self.emit(event, "INFO", f"{what} {price} placed{note} ({cid})", symbol=trade.symbol, leg=leg,
                      price=price, client_id=cid)
            return LegResult(order, price)
        return LegResult(None, price, error=last_error or "no answer")

    def _inside(self, trade: LiveTrade, is_stop: bool, price: Decimal, ref: Decimal) -> Decimal | None:
        """After -2021: None if ``ref`` is already beyond ``price`` (the leg's job is due now),
        else ``price``, kept at least ``TRIGGER_GAP_TICKS`` ticks inside ``ref``."""
        tick = self.tick(trade.symbol) or abs(ref) * Decimal("0.0001")
        gap = tick * TRIGGER_GAP_TICKS
        long = trade.side == "LONG"
        below = is_stop == long  # a long's stop and a short's TP sit below the price
        if below:
            if ref <= price:
                return None
            moved = min(price, ref - gap)
        else:
            if ref >= price:
                return None
            moved = max(price, ref + gap)
        return (self.round_stop if is_stop else self.round_tp)(trade.symbol, trade.side, moved)

    async def cancel_leg(self, symbol: str, client_id: str) -> bool:
        """Cancel a conditional order; True if it is gone (cancelled or already closed)."""
        try:
            await self.exchange.cancel_order(symbol, client_id, conditional=True)
            return True
        except VenueError as exc:
            self.emit(EventKind.WARNING, "WARNING", f"could not cancel {client_id}: {exc}", symbol=symbol)
            return False

    # -- closing ----------------------------------------------------------------------
    async def close_position(self, trade: LiveTrade, why: str, *, level: str = "WARNING") -> Order | None:
        """Close ``trade`` at market, reduce-only, for the venue's current position size.  The
        close-out record is made by the guard from the venue's fills."""
        qty = trade.qty
        try:
            for p in await self.exchange.positions():
                if p.symbol == trade.symbol:
                    qty = abs(p.amount)
                    break
            else:
                qty = Decimal(0)
        except VenueError:
            pass  # use the recorded size; reduce-only keeps it from ever opening anything
        if qty <= 0:
            return None
        cid = self.ledger.next_leg_id(trade, "x")
        req = OrderRequest(trade.symbol, trade.exit_side, OrderType.MARKET, cid, quantity=qty, reduce_only=True)
        self.emit(EventKind.ORDER_SUBMITTED, level, f"closing at market: {why} ({cid})", symbol=trade.symbol,
                  client_id=cid, qty=qty, reason=why)
        last: VenueError | None = None
        for _ in range(LEG_ATTEMPTS):
            try:
                order = await self.exchange.place_order(req)
            except VenueRejected as exc:
                if exc.code == -2022:  # reduce-only refused: nothing left to close
                    return None
                last = exc
                break
            except VenueError as exc:
                last = exc
                await self.clock.sleep(0.3)
                continue
            self.emit(EventKind.ORDER_FILLED, level, f"closed at market ({why})", symbol=trade.symbol,
                      client_id=cid, price=order.avg_price, qty=order.executed_qty)
            return order
        self.emit(EventKind.ERROR, "ERROR", f"market close failed ({why}): {last}; the guard retries",
                  symbol=trade.symbol)
        return None
