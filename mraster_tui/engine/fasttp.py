"""FastTP: lock in profit by tightening the stop when a winning position turns against us.

* **Samples.**  The engine samples the mid price of every held symbol at least every few seconds
  (:meth:`FastTP.sample`); ``ret1`` / ``ret3`` are the returns from the latest sample that is at
  least 60 s / 180 s old to the newest sample (clock time, not bars).
* **Trigger** (long; a short is the mirror image): the cooldown has expired,
  ``r_now = (mid - entry) / |entry - initial stop| >= FASTTP_MIN_R`` and
  ``ret1 <= FAST_TP_RET1`` or ``ret3 <= FAST_TP_RET3``.
* **New stop** = ``max(entry + 0.05 R, mid - FASTTP_SNAP_ATR * ATR)`` (short:
  ``min(entry - 0.05 R, mid + SNAP * ATR)``), rounded to the tick toward the price.  It only
  ever tightens: a level not strictly tighter than the current stop is ignored.
* **Never unprotected.**  The new stop is placed first; the old one is cancelled only after the
  new one rests on the venue (if that cancel fails, the guard removes the looser duplicate).
* **Cooldown** ``FASTTP_COOLDOWN_S`` per symbol after a move (kept in the state file).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mraster_tui.engine.events import EventKind
from mraster_tui.engine.executor import Executor
from mraster_tui.engine.ledger import Ledger, LiveTrade

RET1_MS = 60_000
RET3_MS = 180_000
#: samples older than this are dropped
KEEP_MS = 300_000
#: R locked in at least (the "entry + 0.05 R" floor)
LOCK_R = Decimal("0.05")


@dataclass(frozen=True, slots=True)
class FastTPMove:
    symbol: str
    old_stop: Decimal
    new_stop: Decimal
    r_now: float
    ret1: float | None
    ret3: float | None


class MidSampler:
    """Mid-price samples per symbol (clock ms, price)."""

    def __init__(self) -> None:
        self._s: dict[str, deque[tuple[int, float]]] = {}

    def add(self, symbol: str, t_ms: int, mid: float) -> None:
        q = self._s.setdefault(symbol, deque())
        if q and t_ms <= q[-1][0]:
            if t_ms == q[-1][0]:
                q[-1] = (t_ms, mid)
            return
        q.append((t_ms, mid))
        while q and q[0][0] < t_ms - KEEP_MS:
            q.popleft()

    def ret(self, symbol: str, window_ms: int) -> float | None:
        """Return from the newest sample at least ``window_ms`` older than the latest one."""
        q = self._s.get(symbol)
        if not q or len(q) < 2:
            return None
        t_last, p_last = q[-1]
        ref = None
        for t, p in reversed(q):
            if t <= t_last - window_ms:
                ref = p
                break
        if ref is None or ref <= 0:
            return None
        return p_last / ref - 1.0

    def forget(self, keep: set[str]) -> None:
        for sym in [s for s in self._s if s not in keep]:
            del self._s[sym]


class FastTP:
    def __init__(self, ledger: Ledger, executor: Executor, settings: Any, clock: Any, emit: Callable[..., None],
                 save: Callable[[], Awaitable[None]]) -> None:
        self.ledger = ledger
        self.executor = executor
        self.settings = settings
        self.clock = clock
        self.emit = emit
        self._save = save
        self.samples = MidSampler()

    def update_settings(self, settings: Any) -> None:
        self.settings = settings

    def sample(self, symbol: str, t_ms: int, mid: Decimal | float) -> None:
        self.samples.add(symbol, t_ms, float(mid))

    def target(self, trade: LiveTrade, mid: Decimal) -> tuple[float, Decimal] | None:
        """(r_now, new stop) when the trigger fires for ``trade`` at ``mid``, else None."""
        s = self.settings
        r_now = trade.r_at(mid)
        if r_now is None or r_now < float(s.fasttp_min_r):
            return None
        ret1 = self.samples.ret(trade.symbol, RET1_MS)
        ret3 = self.samples.ret(trade.symbol, RET3_MS)
        long = trade.side == "LONG"
        r1, r3 = float(s.fast_tp_ret1), float(s.fast_tp_ret3)
        if long:
            fired = (ret1 is not None and ret1 <= r1) or (ret3 is not None and ret3 <= r3)
        else:
            fired = (ret1 is not None and ret1 >= -r1) or (ret3 is not None and ret3 >= -r3)
        if not fired:
            return None
        risk = trade.risk_per_unit
        snap = Decimal(repr(float(s.fasttp_snap_atr))) * Decimal(repr(trade.atr))
        if long:
            new = max(trade.entry + LOCK_R * risk, mid - snap)
        else:
            new = min(trade.entry - LOCK_R * risk, mid + snap)
        new = self.executor.round_stop(trade.symbol, trade.side, new)
        tighter = new > trade.sl if long else new < trade.sl
        inside = new < mid if long else new > mid
        if not (tighter and inside):
            return None
        return r_now, new

    async def check(self, mids: dict[str, Decimal], now_ms: int) -> list[FastTPMove]:
        """Sample ``mids`` and move the stop of every trade whose trigger fires."""
        live = self.ledger.state.live
        for sym, mid in mids.items():
            if sym in live:
                self.sample(sym, now_ms, mid)
        self.samples.forget(set(live))
        if not bool(self.settings.fast_tp_enabled):
            return []
        moves: list[FastTPMove] = []
        for sym, trade in list(live.items()):
            mid = mids.get(sym)
            if mid is None or not self.ledger.fasttp_ready(sym, now_ms) or trade.sl_client_id is None:
                continue
            hit = self.target(trade, mid)
            if hit is None:
                continue
            r_now, new = hit
            move = await self._move(trade, new, r_now, now_ms)
            if move is not None:
                moves.append(move)
        return moves

    async def _move(self, trade: LiveTrade, new: Decimal, r_now: float, now_ms: int) -> FastTPMove | None:
        old_stop, old_cid = trade.sl, trade.sl_client_id
        ret1 = self.samples.ret(trade.symbol, RET1_MS)
        ret3 = self.samples.ret(trade.symbol, RET3_MS)
        res = await self.executor.place_leg(trade, "stop", new, event=EventKind.FASTTP_MOVED,
                                            note=f" by FastTP (was {old_stop}, r {r_now:.2f})")
        cooldown = now_ms + int(float(self.settings.fasttp_cooldown_s) * 1000)
        if res.order is None:
            # the old stop still protects the position; try again after the cooldown
            self.ledger.set_fasttp_cooldown(trade.symbol, cooldown)
            self.emit(EventKind.WARNING, "WARNING", f"FastTP could not place the new stop {new} "
                      f"({res.error or 'price moved past it'}); the old stop {old_stop} stays", symbol=trade.symbol)
            return None
        trade.fasttp_moves += 1
        self.ledger.set_fasttp_cooldown(trade.symbol, cooldown)
        await self._save()  # the new stop is the one of record before the old one goes
        if old_cid and old_cid != trade.sl_client_id:
            await self.executor.cancel_leg(trade.symbol, old_cid)
        return FastTPMove(trade.symbol, old_stop, trade.sl, r_now, ret1, ret3)
