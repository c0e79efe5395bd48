"""The bracket guard: one pass reconciles the ledger with the venue and repairs protection.

A pass (every ``ASTER_GUARD_INTERVAL_SEC``, at start and after reconnects):

1. reads the venue's positions; **a failed read aborts the pass** (it is never "all closed");
2. resolves pending entries by client id (filled -> live trade with brackets; unknown -> dropped);
3. closes out live trades whose position is gone, from the venue's fills (entry, exit, fees,
   funding, PnL, R); if the fills do not show up within ``CLOSE_OUT_PASSES`` passes the trade is
   closed at the mark price and flagged (its R is then never learned from);
4. adopts venue positions the ledger does not know (existing legs are kept; missing ones are
   computed from the ATR) and protects them;
5. makes every open position have exactly one stop and one take-profit on the exit side: a
   missing leg is re-placed (a stop that cannot be placed closes the position), wrong-side legs
   and duplicates are cancelled (the trade's own legs are preferred to foreign ones, and of the
   stops the tightest is kept), and always *after* anything missing was placed;
6. cancels leftover orders on flat symbols (our own and exit-type orders): the OCO emulation,
   when one leg filled the other goes here.

Open orders are read per symbol of interest (weight 1 each) and for all symbols every
``FULL_SWEEP_PASSES`` passes, to stay well inside the venue's weight budget.  Each repair is an
event; a pass that could not finish its work counts as a guard failure for the breaker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mraster_tui.engine.errors import VenueError
from mraster_tui.engine.events import EventKind
from mraster_tui.engine.executor import CLIENT_PREFIX, Executor
from mraster_tui.engine.ledger import ClosedTrade, Ledger, LiveTrade, close_at_mark, close_from_fills
from mraster_tui.engine.types import Order, OrderType, Position

CLOSE_OUT_PASSES = 6
FULL_SWEEP_PASSES = 12
#: beyond this many symbols of interest one all-symbol read is cheaper than per-symbol reads
PER_SYMBOL_MAX = 8
#: fallback ATR as a fraction of the price when an adopted position's ATR cannot be computed
FALLBACK_ATR_FRACTION = Decimal("0.005")
#: a pending entry the venue does not show (yet) is kept this long before it is forgotten
PENDING_GRACE_MS = 60_000


class GuardError(Exception):
    """A guard pass could not do its work (the breaker counts these)."""


@dataclass(slots=True)
class GuardReport:
    positions: dict[str, Position] = field(default_factory=dict)
    closed: list[ClosedTrade] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    repairs: int = 0
    protected: frozenset[str] = frozenset()
    errors: list[str] = field(default_factory=list)


class Guard:
    def __init__(self, exchange: Any, ledger: Ledger, executor: Executor, clock: Any, emit: Callable[..., None], *,
                 on_closed: Callable[[LiveTrade, ClosedTrade], None],
                 on_cancelled_entry: Callable[[str | None], None],
                 atr_for: Callable[[str], Awaitable[float | None]], quote: str = "USDT") -> None:
        self.exchange = exchange
        self.ledger = ledger
        self.executor = executor
        self.clock = clock
        self.emit = emit
        self.on_closed = on_closed
        self.on_cancelled_entry = on_cancelled_entry
        self.atr_for = atr_for
        self.quote = quote
        self._passes = 0
        self._close_tries: dict[str, int] = {}

    # -- the pass ---------------------------------------------------------------------
    async def run_pass(self) -> GuardReport:
        """One pass (see the module docstring).  Raises :class:`GuardError` when the positions
        cannot be read; per-symbol problems are collected in ``report.errors``."""
        rep = GuardReport()
        try:
            rep.positions = {p.symbol: p for p in await self.exchange.positions()}
        except VenueError as exc:
            raise GuardError(f"positions could not be read ({exc}); nothing is assumed closed") from None
        self._passes += 1
        await self._resolve_pending(rep)
        just_closed = await self._close_out(rep)
        orders = await self._read_orders(rep, just_closed)
        if orders is None:
            return rep
        await self._adopt(rep, orders)
        protected: set[str] = set()
        for sym, trade in list(self.ledger.state.live.items()):
            if sym not in rep.positions:
                continue
            try:
                if await self._check_legs(trade, orders.get(sym, []), rep):
                    protected.add(sym)
            except VenueError as exc:
                rep.errors.append(f"{sym}: {exc}")
        await self._clean_flat(rep, orders, just_closed)
        rep.protected = frozenset(protected)
        return rep

    # -- pending entries --------------------------------------------------------------
    async def _resolve_pending(self, rep: GuardReport) -> None:
        now = self.clock.now_ms()
        for sym, p in list(self.ledger.state.pending.items()):
            try:
                order = await self.exchange.get_order(sym, p.client_id)
            except VenueError as exc:
                rep.errors.append(f"{sym}: pending entry {p.client_id} could not be looked up ({exc})")
                continue
            young = now - p.created_at < PENDING_GRACE_MS  # the venue may not show everything yet
            if order is not None and order.status.open:
                continue  # still working: next pass
            if order is not None and order.executed_qty > 0:
                if sym in rep.positions:
                    self.emit(EventKind.NOTICE, "WARNING", f"entry {p.client_id} filled while unconfirmed; "
                              "protecting it now", symbol=sym)
                    await self.executor.protect_new_entry(p, order)
                    continue
                if young:
                    continue
                why = "filled, but the venue shows no position (an adopted position takes over if one appears)"
            elif order is None and young:
                continue
            else:
                why = "never filled"
            self.ledger.drop_pending(sym)
            self.on_cancelled_entry(p.decision_id)
            self.emit(EventKind.NOTICE, "WARNING", f"entry {p.client_id} {why}; forgotten", symbol=sym)

    # -- close-outs -------------------------------------------------------------------
    async def _close_out(self, rep: GuardReport) -> set[str]:
        closed_syms: set[str] = set()
        for sym, trade in list(self.ledger.state.live.items()):
            pos = rep.positions.get(sym)
            if pos is not None and pos.side is not None and pos.side is trade.entry_side:
                if abs(pos.amount) != trade.qty:
                    self.emit(EventKind.WARNING, "WARNING", f"position size changed on the venue: "
                              f"{trade.qty} -> {abs(pos.amount)}", symbol=sym)
                    trade.qty = abs(pos.amount)
                    self.ledger.dirty = True
                self._close_tries.pop(sym, None)
                continue
            closed = await self._closed_record(trade, rep)
            if closed is None:
                continue
            self.ledger.record_close(trade, closed)
            self._close_tries.pop(sym, None)
            closed_syms.add(sym)
            rep.closed.append(closed)
            self.on_closed(trade, closed)
        return closed_syms

    async def _closed_record(self, trade: LiveTrade, rep: GuardReport) -> ClosedTrade | None:
        sym = trade.symbol
        now = self.clock.now_ms()
        try:
            fills = await self.exchange.user_trades(sym, start_ms=trade.opened_at - 1000, limit=1000)
            funding = await self.exchange.funding_income(sym, start_ms=trade.opened_at, end_ms=now)
        except VenueError as exc:
            rep.errors.append(f"{sym}: fills could not be read ({exc})")
            fills, funding = None, None
        if fills is not None:
            closed = close_from_fills(trade, fills, funding=funding, now_ms=now, quote=self.quote)
            if closed is not None:
                return closed
        tries = self._close_tries.get(sym, 0) + 1
        self._close_tries[sym] = tries
        if tries < CLOSE_OUT_PASSES:
            return None
        mark = await self.executor.working_price(sym) or trade.entry
        self.emit(EventKind.WARNING, "WARNING", "the venue shows no exit fills for a closed position; "
                  f"recorded at {mark} and not learned from", symbol=sym)
        return close_at_mark(trade, mark, now, "unknown")

    # -- orders -----------------------------------------------------------------------
    async def _read_orders(self, rep: GuardReport, just_closed: set[str]) -> dict[str, list[Order]] | None:
        st = self.ledger.state
        interest = set(rep.positions) | set(st.live) | just_closed
        full = self._passes % FULL_SWEEP_PASSES == 1 or len(interest) > PER_SYMBOL_MAX
        try:
            if full:
                got = await self.exchange.open_orders()
            elif interest:
                parts = await asyncio.gather(*(self.exchange.open_orders(s) for s in sorted(interest)))
                got = [o for part in parts for o in part]
            else:
                got = []
        except VenueError as exc:
            rep.errors.append(f"open orders could not be read ({exc})")
            return None
        out: dict[str, list[Order]] = {}
        for o in got:
            if o.status.open:
                out.setdefault(o.symbol, []).append(o)
        return out

    # -- adoption ---------------------------------------------------------------------
    async def _adopt(self, rep: GuardReport, orders: dict[str, list[Order]]) -> None:
        st = self.ledger.state
        for sym, pos in rep.positions.items():
            if sym in st.live or sym in st.pending or pos.side is None:
                continue
            side = "LONG" if pos.amount > 0 else "SHORT"
            exit_side = pos.side.opposite
            legs = [o for o in orders.get(sym, []) if o.side is exit_side]
            stops = [o for o in legs if o.type is OrderType.STOP_MARKET]
            tps = [o for o in legs if o.type is OrderType.TAKE_PROFIT_MARKET]
            atr_f = await self.atr_for(sym)
            ref = pos.mark_price if pos.mark_price > 0 else pos.entry_price
            atr = Decimal(repr(atr_f)) if atr_f and atr_f > 0 else ref * FALLBACK_ATR_FRACTION
            s = self.executor.settings
            k_sl, k_tp = Decimal(repr(float(s.sl_atr_mult))), Decimal(repr(float(s.tp_atr_mult)))
            long = side == "LONG"
            # from the worse of entry and mark, so the stop can always be placed
            base_sl = min(pos.entry_price, ref) if long else max(pos.entry_price, ref)
            base_tp = max(pos.entry_price, ref) if long else min(pos.entry_price, ref)
            sl = self.executor.round_stop(sym, side, base_sl - k_sl * atr if long else base_sl + k_sl * atr)
            tp = self.executor.round_tp(sym, side, base_tp + k_tp * atr if long else base_tp - k_tp * atr)
            if stops:
                best = _tightest(stops, long)
                sl = best.stop_price
            if tps:
                tp = tps[0].stop_price
            trade = LiveTrade(symbol=sym, side=side, qty=abs(pos.amount), entry=pos.entry_price, sl=sl, sl_initial=sl,
                              tp=tp, atr=float(atr), opened_at=pos.update_time or self.clock.now_ms(),
                              trade_no=self.ledger.new_trade_no(), adopted=True,
                              sl_client_id=_tightest(stops, long).client_id if stops else None,
                              tp_client_id=tps[0].client_id if tps else None)
            self.ledger.open_trade(trade)
            rep.adopted.append(sym)
            self.emit(EventKind.POSITION_ADOPTED, "WARNING",
                      f"adopted a {side} {trade.qty} @ {trade.entry} the state did not know (stop {sl}, TP {tp})",
                      symbol=sym, trade=dataclasses.replace(trade))

    # -- legs -------------------------------------------------------------------------
    async def _check_legs(self, trade: LiveTrade, orders: list[Order], rep: GuardReport) -> bool:
        """Exactly one stop and one TP on the exit side; True when a stop rests on the venue."""
        sym = trade.symbol
        long = trade.side == "LONG"
        cond = [o for o in orders if o.type.conditional]
        for o in cond:
            if o.side is not trade.exit_side:
                await self._cancel(o, "on the wrong side of the position", rep)
        stops = [o for o in cond if o.side is trade.exit_side and o.type is OrderType.STOP_MARKET]
        tps = [o for o in cond if o.side is trade.exit_side and o.type is OrderType.TAKE_PROFIT_MARKET]
        if not stops:
            res = await self.executor.place_leg(trade, "stop", trade.sl, event=EventKind.BRACKET_REPAIRED,
                                                note=" (was missing)")
            rep.repairs += 1
            if res.order is None:
                if res.crossed:
                    await self.executor.close_position(trade, "the stop was missing and the price is beyond it")
                else:
                    self.emit(EventKind.ERROR, "ERROR", f"missing stop could not be re-placed ({res.error}); "
                              "closing the position at market", symbol=sym)
                    await self.executor.close_position(trade, "no stop could be placed", level="ERROR")
                    rep.errors.append(f"{sym}: stop could not be placed ({res.error})")
                return False
        else:
            # this trade's own stops first (a leftover of an earlier trade is not its stop); of
            # those the tightest: after a FastTP move the new stop wins even if the state lost it
            own = [o for o in stops if self.ledger.owns(trade, o.client_id, "s")]
            keep = _tightest(own or stops, long)
            if keep.client_id != trade.sl_client_id or keep.stop_price != trade.sl:
                trade.sl, trade.sl_client_id = keep.stop_price, keep.client_id
                self.ledger.dirty = True
            for o in stops:
                if o is not keep:
                    await self._cancel(o, "a duplicate stop", rep)
        if not tps:
            res = await self.executor.place_leg(trade, "take_profit", trade.tp, event=EventKind.BRACKET_REPAIRED,
                                                note=" (was missing)")
            rep.repairs += 1
            if res.order is None and res.crossed:
                await self.executor.close_position(trade, "the take-profit was missing and the price is beyond it",
                                                   level="INFO")
            elif res.order is None:
                rep.errors.append(f"{sym}: take-profit could not be placed ({res.error})")
        else:
            own = [o for o in tps if self.ledger.owns(trade, o.client_id, "t")]
            keep = next((o for o in tps if o.client_id == trade.tp_client_id), None) or min(
                own or tps, key=lambda o: abs(o.stop_price - trade.tp))
            if keep.client_id != trade.tp_client_id or keep.stop_price != trade.tp:
                trade.tp, trade.tp_client_id = keep.stop_price, keep.client_id
                self.ledger.dirty = True
            for o in tps:
                if o is not keep:
                    await self._cancel(o, "a duplicate take-profit", rep)
        return True

    async def _cancel(self, o: Order, why: str, rep: GuardReport, *, kind: EventKind = EventKind.BRACKET_REPAIRED) -> None:
        try:
            await self.exchange.cancel_order(o.symbol, o.client_id, conditional=o.type.conditional)
        except VenueError as exc:
            rep.errors.append(f"{o.symbol}: could not cancel {o.client_id} ({exc})")
            return
        rep.repairs += 1
        what = {OrderType.STOP_MARKET: "stop", OrderType.TAKE_PROFIT_MARKET: "take-profit"}.get(o.type, o.type.value)
        self.emit(kind, "INFO", f"cancelled {what} {o.stop_price or o.price} ({o.client_id}): {why}",
                  symbol=o.symbol, client_id=o.client_id)

    async def _clean_flat(self, rep: GuardReport, orders: dict[str, list[Order]], just_closed: set[str]) -> None:
        st = self.ledger.state
        for sym, lst in orders.items():
            if sym in rep.positions or sym in st.pending or sym in st.live:
                continue
            for o in lst:
                if not (o.client_id.startswith(CLIENT_PREFIX) or o.close_position or o.reduce_only):
                    continue  # somebody else's entry order: not ours to cancel
                why = ("OCO: the other leg closed the position" if sym in just_closed
                       else "left over on a flat symbol")
                await self._cancel(o, why, rep, kind=EventKind.ORDER_CANCELLED)


def _tightest(stops: list[Order], long: bool) -> Order:
    """The stop that risks least: the highest for a long, the lowest for a short."""
    return max(stops, key=lambda o: o.stop_price) if long else min(stops, key=lambda o: o.stop_price)

