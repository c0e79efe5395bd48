"""The engine: one object that runs the bot the same way live, in paper, in the demo and in backtests.

Cycle (:meth:`Engine.run_cycle`): universe -> market data -> signals with reasons (all three from
the :class:`~mraster_tui.engine.provider.SignalProvider`) -> risk pre-checks (circuit breaker,
per-symbol failure cooldown, ``max_open_global`` / ``max_open_per_symbol``) -> policy -> sizing ->
entry -> brackets, then one ``cycle`` summary event (symbols scanned, rejected by reason,
decisions, orders).

Scheduling (:meth:`Engine.run`): a full scan right after every ``ASTER_INTERVAL`` candle close
on the venue's clock (``+ ASTER_SCAN_DELAY_SEC``), so a signal on a newly closed candle reaches
the venue within about two seconds; in between, the guard runs every ``ASTER_GUARD_INTERVAL_SEC``,
FastTP samples mids and checks every ``FASTTP_SAMPLE_S`` while positions are open, and a
housekeeping pass (venue clock offset and skew, balance and equity curve, state save) runs every
``ASTER_LOOP_SLEEP``.  A recoverable error is reported and the loop goes on.  When ``stop`` is set
the current step finishes, the state is saved and ``run`` returns; brackets stay on the venue.

Threads: the engine runs on one asyncio loop.  :meth:`snapshot` and :meth:`apply_settings` may be
called from any thread (the snapshot is an immutable object replaced atomically; settings changes
are queued and applied by the loop between steps).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from mraster_tui.config.schema import BY_NAME
from mraster_tui.engine.breaker import BreakerChange, CircuitBreaker
from mraster_tui.engine.decision_log import DecisionLog, DecisionLogError
from mraster_tui.engine.errors import AuthError, IpBanned, VenueError
from mraster_tui.engine.events import Event, EventKind, EventSink, EngineSnapshot, PositionView
from mraster_tui.engine.executor import EntryFailed, Executor
from mraster_tui.engine.fasttp import FastTP
from mraster_tui.engine.guard import Guard, GuardError
from mraster_tui.engine.ledger import ClosedTrade, Ledger, LiveTrade, StateStore
from mraster_tui.engine.policy import BanditPolicy, PolicyStateError
from mraster_tui.engine.provider import LiveSignalProvider, ScanContext, ScanResult, SignalProvider
from mraster_tui.engine.signals import FEATURE_NAMES
from mraster_tui.engine.sizing import SizingError, bucket_multiplier, size_position
from mraster_tui.engine.types import ExchangeInfo, Position, interval_ms

#: FastTP samples mids (and checks its trigger) this often while positions are open
FASTTP_SAMPLE_S = 2.0
#: never loop faster than this in wall seconds (accelerated demo clocks)
MIN_WALL_STEP_S = 0.05
#: stop is checked at least this often (wall seconds) while the engine sleeps
STOP_POLL_S = 0.2
#: the venue clock offset is re-measured this often
TIME_SYNC_S = 300.0
#: exchangeInfo is refreshed this often
INFO_REFRESH_S = 3600.0
#: start-up retries back off up to this many seconds
START_BACKOFF_MAX_S = 30.0
#: the snapshot is rebuilt at most this often (wall seconds), except on state/breaker changes
SNAPSHOT_EVERY_S = 0.1


def _speed(clock: Any) -> float:
    return float(getattr(clock, "speed", 1.0) or 1.0)


class Engine:
    def __init__(self, settings: Any, *, exchange: Any, clock: Any, sink: EventSink, state_path: Path,
                 decision_log_path: Path | None = None, mode: str = "PAPER", policy: BanditPolicy | None = None,
                 provider: SignalProvider | None = None, autosave: bool = True, close_exchange: bool = False,
                 exchange_factory: Callable[[], Awaitable[Any]] | None = None,
                 on_close: Callable[[], Awaitable[None]] | None = None,
                 pinned: dict[str, Any] | None = None) -> None:
        """``exchange`` may be None with an async ``exchange_factory`` (built by :meth:`start`,
        e.g. the live-price paper venue that reads exchangeInfo first).  ``on_close`` is awaited
        by :meth:`shutdown` after the exchange is closed (a transport the exchange wraps).
        ``pinned`` settings keep their value whatever is applied later (the demo's universe)."""
        if exchange is None and exchange_factory is None:
            raise ValueError("give an exchange or an exchange_factory")
        self._pinned = dict(pinned or {})
        settings = self._pin(settings)
        self.settings = settings
        self.exchange = exchange
        self._exchange_factory = exchange_factory
        self._on_close = on_close
        self.clock = clock
        self.sink = sink
        self.mode = mode
        self.autosave = autosave
        self.close_exchange = close_exchange
        self.store = StateStore(state_path)
        self.decision_log = DecisionLog(decision_log_path) if decision_log_path else None
        self.policy: BanditPolicy | None = policy
        self.provider: SignalProvider | None = provider
        self.breaker = CircuitBreaker(guard_fail_limit=int(settings.guard_fail_limit), emit=self._on_breaker)
        self.ledger: Ledger | None = None
        self.executor: Executor | None = None
        self.guard: Guard | None = None
        self.fasttp: FastTP | None = None
        self._started = False
        self._state = "stopped"
        self._cycle = 0
        self._info: ExchangeInfo | None = None
        self._info_ms = 0
        self._offset_ms = 0
        self._offset_ms_at = -10**15
        self._equity: Decimal | None = None
        self._wallet: Decimal | None = None
        self._positions: dict[str, Position] = {}
        self._protected: frozenset[str] = frozenset()
        self._rejections: Counter[str] = Counter()
        self._last_cycle: dict[str, Any] = {}
        self._data_age_s: float | None = None
        self._next_scan_ms: int | None = None
        self._error: str | None = None
        self._settings_queue: deque[Any] = deque()
        self._snap_lock = threading.Lock()
        self._published_at = -1e9
        self._snapshot = EngineSnapshot(mode=mode, venue=self._venue_name(), state="stopped")

    # == events ============================================================================
    def emit(self, kind: EventKind, level: str, message: str, *, symbol: str | None = None, **data: Any) -> None:
        try:
            self.sink.emit(Event(self.clock.now_ms(), kind, level, message, symbol, data))
        except Exception:  # a broken sink must never stop trading  # noqa: BLE001
            pass

    def _on_breaker(self, ch: BreakerChange) -> None:
        if ch.tripped:
            msg = f"circuit breaker ON ({ch.cause}): {ch.detail}; no new entries, protection continues"
        elif ch.active:
            msg = f"breaker cause {ch.cause} cleared ({ch.detail}); still reduce-only: {', '.join(ch.reasons)}"
        else:
            msg = f"circuit breaker OFF: {ch.detail}; entries allowed again"
        self.emit(EventKind.BREAKER, "WARNING" if ch.active else "INFO", msg, cause=ch.cause, active=ch.active,
                  reasons=list(ch.reasons))
        self._publish(force=True)

    def on_venue_event(self, ev: Any) -> None:
        """Callback for the venue layer's events (rate limits, bans, time syncs)."""
        kind = getattr(ev, "kind", "")
        if kind == "ip_banned" and getattr(ev, "until_ms", None):
            self.breaker.banned(int(ev.until_ms), self.clock.now_ms())
        level = "WARNING" if kind in ("ip_banned", "rate_limited") else "DEBUG"
        self.emit(EventKind.RATE_LIMIT if kind in ("ip_banned", "ban_over", "rate_limited", "throttled")
                  else EventKind.NOTICE, level, str(getattr(ev, "message", ev)), venue_event=kind)

    def _venue_name(self) -> str:
        caps = getattr(self.exchange, "capabilities", None)
        return getattr(caps, "name", "") if caps is not None else ""

    # == lifecycle =========================================================================
    async def start(self) -> None:
        """Lock and load the state, read the venue's rules and clock, reconcile.  Raises
        :class:`~mraster_tui.engine.ledger.StateError` (one line) when the state file is locked
        or too new, and :class:`VenueError` when the venue cannot be reached."""
        if self._started:
            return
        self._set_state("starting")
        if self.exchange is None:
            assert self._exchange_factory is not None
            self.exchange = await self._exchange_factory()
        if self.provider is None:
            self.provider = LiveSignalProvider(self.exchange, self.settings, self.clock)
        self.store.acquire()
        try:
            await self._start_locked()
        except BaseException:
            self._started = False
            self.store.release()
            raise
        self._set_state("running")

    async def _start_locked(self) -> None:
        report = self.store.load(self.clock.now_ms())
        for level, msg in report.messages:
            self.emit(EventKind.ERROR if level == "ERROR" else EventKind.WARNING, level, msg)
        self.ledger = Ledger(report.state, history_max=int(self.settings.history_max))
        if self.policy is None:
            self.policy = self._load_policy(report.state.policy)
        self.executor = Executor(self.exchange, self.ledger, self.settings, self.clock, self.emit, self._save,
                                 lambda: self._info.symbols if self._info else {}, on_opened=self._on_opened)
        self.guard = Guard(self.exchange, self.ledger, self.executor, self.clock, self.emit,
                           on_closed=self._on_closed, on_cancelled_entry=self._forget_decision, atr_for=self._atr_for,
                           quote=str(self.settings.quote))
        self.fasttp = FastTP(self.ledger, self.executor, self.settings, self.clock, self.emit, self._save)
        self._started = True
        await self._refresh_info(force=True)
        await self._sync_time()
        await self._refresh_balance(fatal_auth=True)  # the first signed call: a refused key stops here
        await self._step("guard", self.guard_pass)  # reconcile; a failure is reported, not fatal
        st = report.state
        self.emit(EventKind.ENGINE, "INFO",
                  f"engine started ({self.mode}, {self._venue_name() or 'venue'}): {len(st.live)} open, "
                  f"{st.totals.trades} closed trades in the state ({report.source})",
                  mode=self.mode, source=report.source)

    def _load_policy(self, data: dict | None) -> BanditPolicy:
        dim = len(FEATURE_NAMES)
        if data:
            try:
                return BanditPolicy.from_dict(data, self.settings, dim=dim)
            except PolicyStateError as exc:
                self.emit(EventKind.ERROR, "ERROR", f"the saved policy state cannot be used ({exc}); "
                          "starting a fresh policy (the old one stays in the .bak state file)")
        seed = int(self.ledger.state.id_salt, 36) if self.ledger else 0
        return BanditPolicy(self.settings, dim=dim, seed=seed)

    async def shutdown(self) -> None:
        """Save the state, close the decision log and release the state lock (brackets stay).
        Safe to call when the engine never started (it then only closes the transports)."""
        started = self._started
        if started:
            self._set_state("stopping")
            await self._save(force=True)
            self.store.release()
            self._started = False
        if self.decision_log is not None:
            self.decision_log.close()
        if self.close_exchange:
            for closer in (getattr(self.exchange, "close", None), self._on_close):
                if closer is None:
                    continue
                try:
                    await closer()
                except Exception:  # noqa: BLE001 - closing a transport must not fail the shutdown
                    pass
        if started:
            self.emit(EventKind.ENGINE, "INFO", "engine stopped; state saved, brackets left on the venue")
        self._set_state("stopped")

    async def run(self, stop: "asyncio.Event | threading.Event", *, run_once: bool = False) -> None:
        """Run until ``stop`` is set (or one cycle with ``run_once``); see the module docstring."""
        if not await self._start_with_retry(stop):
            await self.shutdown()
            return
        try:
            if run_once:
                await self._step("scan", self.run_cycle)
                await self._step("guard", self.guard_pass)
                return
            await self._loop(stop)
        finally:
            await self.shutdown()

    async def _start_with_retry(self, stop: Any) -> bool:
        delay = 1.0
        while not stop.is_set():
            try:
                await self.start()
                return True
            except AuthError as exc:  # a refused key does not fix itself: stop, say why
                self._error = f"the venue refused the API key or signature ({exc})"
                self.emit(EventKind.ERROR, "ERROR", f"cannot start: {self._error}")
                raise
            except VenueError as exc:
                self._error = str(exc)
                self.emit(EventKind.ERROR, "ERROR", f"cannot start: the venue is not reachable ({exc}); "
                          f"retrying in {delay:.0f} s")
                self._set_state("starting")
                await self._sleep(delay, stop)
                delay = min(START_BACKOFF_MAX_S, delay * 2)
        return False

    async def _loop(self, stop: Any) -> None:
        s = self.settings
        speed = _speed(self.clock)
        now = self.clock.now_ms()
        next_scan = now
        next_guard = now + self._ms(float(s.guard_interval_sec), speed)
        next_fast = now + self._ms(FASTTP_SAMPLE_S, speed)
        next_house = now + self._ms(float(s.loop_sleep), speed)
        while not stop.is_set():
            self._apply_queued_settings()
            s = self.settings
            now = self.clock.now_ms()
            if now >= next_scan:
                await self._step("scan", self.run_cycle)
                next_scan = self._next_scan_ms_local()
                self._next_scan_ms = next_scan
            if stop.is_set():
                break
            now = self.clock.now_ms()
            if now >= next_guard:
                await self._step("guard", self.guard_pass)
                next_guard = self.clock.now_ms() + self._ms(float(s.guard_interval_sec), speed)
            if now >= next_fast:
                await self._step("fasttp", self.fasttp_pass)
                next_fast = self.clock.now_ms() + self._ms(FASTTP_SAMPLE_S, speed)
            if now >= next_house:
                await self._step("housekeeping", self.housekeeping)
                next_house = self.clock.now_ms() + self._ms(float(s.loop_sleep), speed)
            self._publish()
            wake = min(next_scan, next_guard, next_house,
                       next_fast if self.ledger and self.ledger.state.live else next_house)
            await self._sleep(max(0.0, (wake - self.clock.now_ms()) / 1000.0), stop)

    @staticmethod
    def _ms(seconds: float, speed: float) -> int:
        """Clock ms for an interval, never below ``MIN_WALL_STEP_S`` of wall time."""
        return int(max(seconds, MIN_WALL_STEP_S * speed) * 1000)

    async def _sleep(self, seconds: float, stop: Any) -> None:
        """Sleep ``seconds`` of clock time, waking at least every ``STOP_POLL_S`` wall seconds."""
        speed = _speed(self.clock)
        end = self.clock.now_ms() + int(seconds * 1000)
        while not stop.is_set():
            left = (end - self.clock.now_ms()) / 1000.0
            if left <= 0:
                return
            await self.clock.sleep(min(left, STOP_POLL_S * speed))

    async def _step(self, name: str, fn: Any) -> None:
        """Run one step; a recoverable error is reported and never ends the loop."""
        try:
            await fn()
            self._error = None
        except IpBanned as exc:
            self.breaker.banned(exc.until_ms, self.clock.now_ms())
            self.emit(EventKind.ERROR, "ERROR", f"{name}: {exc}")
        except (VenueError, GuardError) as exc:
            self._error = f"{name}: {exc}"
            self.emit(EventKind.ERROR, "ERROR", f"{name} failed: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in one step must not stop protection
            self._error = f"{name}: {type(exc).__name__}: {exc}"
            self.emit(EventKind.ERROR, "ERROR", f"{name} failed unexpectedly: {type(exc).__name__}: {exc}")
        finally:
            self._publish()

    def _next_scan_ms_local(self) -> int:
        """Local clock time of the next scan: the next candle close on the venue's clock plus the
        scan delay."""
        ivl = interval_ms(str(self.settings.interval))
        venue_now = self.clock.now_ms() + self._offset_ms
        next_close = (venue_now // ivl + 1) * ivl
        return next_close + int(float(self.settings.scan_delay_sec) * 1000) - self._offset_ms

    async def _ensure_started(self) -> None:
        """Every step starts here: start if needed, then take queued settings changes."""
        if not self._started:
            await self.start()
        self._apply_queued_settings()

    # == the scan cycle ====================================================================
    async def run_cycle(self) -> dict[str, Any]:
        """One full scan cycle; returns (and emits) the cycle summary."""
        await self._ensure_started()
        assert self.ledger is not None and self.executor is not None and self.policy is not None
        self._cycle += 1
        s = self.settings
        led = self.ledger
        t0 = self.clock.now_ms()
        await self._refresh_info()
        st = led.state
        held = frozenset(st.live) | frozenset(st.pending)
        ctx = ScanContext(s, self.exchange, self.clock, self._cycle, self._info, held)
        scan: ScanResult = await self.provider.scan(ctx, t0)
        if scan.data_age_ms is not None:
            self._data_age_s = scan.data_age_ms / 1000.0
            self.breaker.check_data_age(self._data_age_s, float(s.max_data_age_sec))
        rejected: Counter[str] = Counter(scan.dropped.values())
        candidates = []
        for sym in sorted(scan.symbols):
            ss = scan.symbols[sym]
            sig = ss.signal
            if sym in held:
                rejected["in_position"] += 1
            elif sig is None:
                rejected["no_data"] += 1
            elif getattr(sig, "side", None) is None:
                codes = _reason_codes(sig)
                rejected[codes[0] if codes else "no_signal"] += 1
                self.emit(EventKind.SIGNAL_REJECTED, "DEBUG", "; ".join(_reason_texts(sig)) or "no signal",
                          symbol=sym, reasons=list(codes))
                if self.decision_log is not None:
                    self._log_rejection(sym, sig, ",".join(codes), t0)
            elif not ss.can_open:
                rejected["stale"] += 1
            elif led.failing(sym, t0):
                rejected["fail_cooldown"] += 1
            else:
                candidates.append(ss)
        candidates.sort(key=lambda c: (-_edge(c.signal), c.symbol))
        decisions = {"taken": 0, "skipped": 0}
        entries: list[dict[str, Any]] = []
        capacity = int(s.max_open_global) - len(st.live) - len(st.pending)
        for ss in candidates:
            sym, sig = ss.symbol, ss.signal
            if self.breaker.active:
                rejected["breaker"] += 1
                continue
            if int(s.max_open_per_symbol) < 1:
                rejected["max_open_per_symbol"] += 1
                continue
            if capacity <= 0:
                rejected["max_open_global"] += 1
                continue
            decision = self.policy.decide(np.asarray(sig.features, dtype=np.float64), symbol=sym, now_ms=t0)
            led.count_decision(taken=decision.take, bucket=decision.bucket if decision.take else None)
            self._log_decision(decision, sym, sig, t0)
            self.emit(EventKind.DECISION, "INFO" if decision.take else "DEBUG",
                      f"{'TAKE' if decision.take else 'SKIP'} {_side_word(sig)} bucket {decision.bucket}: "
                      f"{decision.reason}", symbol=sym, take=decision.take, bucket=decision.bucket,
                      decision_id=decision.decision_id)
            if not decision.take:
                decisions["skipped"] += 1
                rejected["policy_skip"] += 1
                continue
            decisions["taken"] += 1
            opened = await self._enter(ss, decision, t0, rejected)
            if opened is not None:
                capacity -= 1
                entries.append({"symbol": sym, "side": opened.side, "qty": str(opened.qty),
                                "entry": str(opened.entry), "sl": str(opened.sl), "tp": str(opened.tp)})
        led.count_rejections(dict(rejected))
        self._rejections.update(rejected)
        summary = {
            "cycle": self._cycle, "time": t0, "elapsed_ms": self.clock.now_ms() - t0,
            "universe": len(scan.universe), "scanned": len(scan.symbols) + len(scan.dropped),
            "candidates": len(candidates), "rejected": dict(sorted(rejected.items())), "decisions": decisions,
            "orders": len(entries), "entries": entries, "open": len(st.live),
            "breaker": list(self.breaker.reasons), "data_age_s": self._data_age_s,
        }
        self._last_cycle = summary
        top = ", ".join(f"{k} {v}" for k, v in rejected.most_common(4))
        self.emit(EventKind.CYCLE, "INFO",
                  f"cycle {self._cycle}: scanned {summary['scanned']}, candidates {len(candidates)}, "
                  f"taken {decisions['taken']}, skipped {decisions['skipped']}, orders {len(entries)}"
                  + (f"; rejected: {top}" if top else ""), **summary)
        await self._save()
        self._publish()
        return summary

    async def _enter(self, ss: Any, decision: Any, now: int, rejected: Counter[str]) -> LiveTrade | None:
        s = self.settings
        sig = ss.signal
        sym = ss.symbol
        info = self._info.symbols.get(sym) if self._info else None
        if info is None:
            rejected["no_symbol_info"] += 1
            self._forget_decision(decision.decision_id)
            return None
        side = _side_word(sig)
        try:
            stop = self.executor.round_stop(sym, side, Decimal(str(sig.stop)))
            sized = size_position(equity=self._equity, entry=Decimal(str(sig.entry_ref)), stop=stop,
                                  side=side.lower(), bucket_mult=bucket_multiplier(decision.bucket, s),
                                  filters=info.filters, settings=s, mark_price=ss.mark)
        except SizingError as exc:
            sized = None
            why = str(exc)
        else:
            why = sized.skip_reason or ""
        if sized is None or not sized.ok:
            rejected["sizing"] += 1
            self._forget_decision(decision.decision_id)
            self.emit(EventKind.SIGNAL_REJECTED, "INFO", f"not sized: {why}", symbol=sym, reasons=["sizing"])
            return None
        try:
            trade = await self.executor.open_position(symbol=sym, side=side, qty=sized.qty, atr=float(sig.atr),
                                                      decision_id=decision.decision_id, bucket=decision.bucket)
        except EntryFailed as exc:
            self.ledger.fail(sym, now + int(float(s.fail_cooldown_sec) * 1000))
            if exc.code != "unknown_outcome":
                self._forget_decision(decision.decision_id)
            rejected[f"order_{exc.code}"] += 1
            self.emit(EventKind.WARNING if exc.code != "unknown_outcome" else EventKind.ERROR,
                      "WARNING" if exc.code != "unknown_outcome" else "ERROR", f"entry failed: {exc}", symbol=sym)
            return None
        return trade

    # == callbacks from executor / guard ===================================================
    def _on_opened(self, trade: LiveTrade) -> None:
        if trade.decision_id and self.policy is not None:
            self.policy.note_entry(trade.decision_id, symbol=trade.symbol, qty=trade.qty, entry=trade.entry,
                                   side=trade.side, stop=trade.sl_initial, time_ms=trade.opened_at)
        self.emit(EventKind.POSITION_OPENED, "INFO",
                  f"{trade.side} {trade.qty} @ {trade.entry} (stop {trade.sl}, TP {trade.tp}, bucket {trade.bucket})",
                  symbol=trade.symbol, trade=dataclasses.replace(trade))  # a copy: events are read elsewhere

    def _on_closed(self, trade: LiveTrade, closed: ClosedTrade) -> None:
        learned = False
        if trade.decision_id and self.policy is not None:
            if closed.exit_source == "fills" and closed.r is not None and math.isfinite(closed.r):
                learned = self.policy.note_exit(trade.decision_id, closed.r)
            else:
                self.policy.note_cancel(trade.decision_id)
        if self.decision_log is not None and trade.decision_id and closed.r is not None:
            try:
                self.decision_log.record_outcome(trade.decision_id, time_ms=closed.closed_at, r=closed.r,
                                                 pnl=str(closed.pnl), fees=str(closed.fees), exit=closed.exit_reason)
            except DecisionLogError as exc:
                self._decision_log_failed(exc)
        r_txt = f"{closed.r:+.2f} R" if closed.r is not None else "R unknown"
        self.emit(EventKind.POSITION_CLOSED, "INFO",
                  f"{closed.side} closed by {closed.exit_reason} @ {closed.exit}: PnL {closed.pnl:+.4f} "
                  f"(fees {closed.fees}, funding {closed.funding}), {r_txt}",
                  symbol=closed.symbol, trade=closed, pnl=closed.pnl, r=closed.r, learned=learned)

    def _forget_decision(self, decision_id: str | None) -> None:
        if decision_id and self.policy is not None:
            self.policy.note_cancel(decision_id)

    def _log_decision(self, decision: Any, sym: str, sig: Any, now: int) -> None:
        if self.decision_log is None:
            return
        try:
            self.decision_log.record_decision(decision, time_ms=now, symbol=sym, features=list(sig.features))
        except DecisionLogError as exc:
            self._decision_log_failed(exc)

    def _log_rejection(self, sym: str, sig: Any, reason: str, now: int) -> None:
        try:
            feats = getattr(sig, "features", None)
            self.decision_log.record_rejection(time_ms=now, symbol=sym, reason=reason,
                                               features=None if feats is None else list(feats))
        except DecisionLogError as exc:
            self._decision_log_failed(exc)

    def _decision_log_failed(self, exc: Exception) -> None:
        self.emit(EventKind.WARNING, "WARNING", f"{exc}; the decision log is off for this run")
        if self.decision_log is not None:
            self.decision_log.close()
        self.decision_log = None

    async def _atr_for(self, symbol: str) -> float | None:
        from mraster_tui.engine.indicators import atr

        try:
            c = (await self.exchange.klines(symbol, str(self.settings.interval), 100)).closed_only()
        except VenueError:
            return None
        if len(c) < 20:
            return None
        value = float(atr(c.high, c.low, c.close, 14)[-1])
        return value if math.isfinite(value) and value > 0 else None

    # == protective passes =================================================================
    async def guard_pass(self) -> None:
        """One bracket-guard pass (reconcile, adopt, repair, OCO)."""
        await self._ensure_started()
        assert self.guard is not None
        try:
            rep = await self.guard.run_pass()
        except GuardError as exc:
            self.breaker.guard_failed(str(exc))
            raise
        self._positions = rep.positions
        self._protected = rep.protected
        if rep.errors:
            self.breaker.guard_failed("; ".join(rep.errors[:3]))
            for e in rep.errors:
                self.emit(EventKind.WARNING, "WARNING", f"guard: {e}")
        else:
            self.breaker.guard_ok()
        if rep.closed:
            await self._refresh_balance()
        await self._save()

    async def fasttp_pass(self) -> None:
        """Sample mids of held symbols and tighten stops where FastTP triggers."""
        await self._ensure_started()
        assert self.ledger is not None and self.fasttp is not None
        if not self.ledger.state.live:
            self.fasttp.samples.forget(set())
            return
        books = await self.exchange.book_tickers()
        mids = {sym: books[sym].mid for sym in self.ledger.state.live if sym in books}
        moves = await self.fasttp.check(mids, self.clock.now_ms())
        if moves:
            await self._save()

    async def housekeeping(self) -> None:
        """Venue clock offset and skew, IP-ban expiry, balance and equity curve, state save."""
        await self._ensure_started()
        now = self.clock.now_ms()
        self.breaker.check_ban(now)
        if now - self._offset_ms_at >= TIME_SYNC_S * 1000:
            await self._sync_time()
        await self._refresh_info()
        await self._refresh_balance()
        await self._save()

    async def _sync_time(self) -> None:
        t0 = self.clock.now_ms()
        server = await self.exchange.server_time()
        t1 = self.clock.now_ms()
        self._offset_ms = int(server - (t0 + t1) // 2)
        self._offset_ms_at = t1
        self.breaker.check_skew(self._offset_ms, int(self.settings.recv_window))

    async def _refresh_info(self, *, force: bool = False) -> None:
        now = self.clock.now_ms()
        if force or self._info is None or now - self._info_ms >= INFO_REFRESH_S * 1000:
            try:
                self._info = await self.exchange.exchange_info()
                self._info_ms = now
            except VenueError:
                if self._info is None:
                    raise

    async def _refresh_balance(self, *, fatal_auth: bool = False) -> None:
        try:
            bal = await self.exchange.balance(str(self.settings.quote))
        except AuthError as exc:
            if fatal_auth:
                raise
            self.emit(EventKind.ERROR, "ERROR", f"the venue refused the API key ({exc})")
            return
        except VenueError as exc:
            self.emit(EventKind.WARNING, "WARNING", f"balance could not be read ({exc})")
            return
        self._wallet, self._equity = bal.wallet_balance, bal.equity
        if self.ledger is not None:
            self.ledger.note_equity(self.clock.now_ms(), float(bal.equity))

    async def _save(self, *, force: bool = False) -> None:
        led = self.ledger
        if led is None or not (force or (self.autosave and led.dirty)):
            return
        if self.policy is not None:
            led.state.policy = self.policy.to_dict()
        try:
            n = self.store.save(led.state)
        except (OSError, TypeError, ValueError) as exc:
            self.emit(EventKind.ERROR, "ERROR", f"state could not be saved to {self.store.path}: {exc}")
            return
        led.dirty = False
        self.emit(EventKind.STATE_SAVED, "DEBUG", f"state saved ({n} bytes)", path=str(self.store.path))

    # == settings ==========================================================================
    def apply_settings(self, settings: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Queue a settings change; returns (applied live, needing a restart) by the schema's
        ``live`` flag.  Thread-safe: the loop applies the live part between two steps."""
        settings = self._pin(settings)
        diff = self.settings.diff(settings)
        live = tuple(sorted(n for n in diff if BY_NAME[n].live))
        restart = tuple(sorted(n for n in diff if not BY_NAME[n].live))
        if live:
            self._settings_queue.append((settings, live))
            if not self._started:
                self._apply_queued_settings()
        return live, restart

    def _pin(self, settings: Any) -> Any:
        return settings.replace(_source="pinned", **self._pinned) if self._pinned else settings

    def _apply_queued_settings(self) -> None:
        while self._settings_queue:
            new, names = self._settings_queue.popleft()
            values = self.settings.values
            values.update({n: getattr(new, n) for n in names})
            sources = self.settings.sources
            sources.update({n: new.source(n) for n in names})
            merged = type(self.settings)(values, sources, config_path=self.settings.config_path,
                                         warnings=self.settings.warnings)
            self.settings = merged
            for part in (self.executor, self.fasttp, self.provider, self.policy):
                upd = getattr(part, "update_settings", None)
                if upd is not None:
                    try:
                        upd(merged)
                    except ValueError as exc:
                        self.emit(EventKind.WARNING, "WARNING", f"setting change not applied: {exc}")
            self.breaker.guard_fail_limit = int(merged.guard_fail_limit)
            if self.ledger is not None:
                self.ledger.history_max = int(merged.history_max)
            self.emit(EventKind.NOTICE, "INFO", f"settings applied live: {', '.join(names)}", names=list(names))

    # == snapshot ==========================================================================
    def _set_state(self, state: str) -> None:
        self._state = state
        self._publish(force=True)

    def snapshot(self) -> EngineSnapshot:
        with self._snap_lock:
            return self._snapshot

    def _publish(self, *, force: bool = False) -> None:
        """Rebuild the snapshot (at most every ``SNAPSHOT_EVERY_S`` wall seconds unless ``force``:
        front ends poll at <= 10 Hz and backtests must not pay for it every cycle)."""
        now = time.monotonic()
        if not force and now - self._published_at < SNAPSHOT_EVERY_S:
            return
        self._published_at = now
        led = self.ledger
        views: list[PositionView] = []
        if led is not None:
            for sym, t in sorted(led.state.live.items()):
                p = self._positions.get(sym)
                mark = p.mark_price if p is not None else t.entry
                upnl = p.unrealized_pnl if p is not None else Decimal(0)
                views.append(PositionView(sym, t.side, t.qty, t.entry, mark, upnl, t.r_at(mark), t.sl, t.tp, t.bucket,
                                          t.opened_at, sym in self._protected))
        rl = getattr(self.exchange, "rate_limit_snapshot", None)
        used = limit = 0
        if callable(rl):
            try:
                r = rl()
                used, limit = r.used_weight, r.weight_limit
            except Exception:  # noqa: BLE001 - the status bar must never break the engine
                pass
        bandit: dict[str, Any] = {}
        if self.policy is not None:
            try:
                bandit = self.policy.stats().as_dict()
            except Exception:  # noqa: BLE001
                bandit = {}
        totals = led.state.totals if led is not None else None
        snap = EngineSnapshot(
            now_ms=self.clock.now_ms(), mode=self.mode, venue=self._venue_name(), state=self._state,
            cycle=self._cycle, next_scan_ms=self._next_scan_ms, weight_used=used, weight_limit=limit,
            data_age_s=self._data_age_s, breaker_active=self.breaker.active, breaker_reasons=self.breaker.reasons,
            equity=self._equity, wallet=self._wallet, positions=tuple(views),
            equity_curve=tuple((int(a), float(b)) for a, b in (led.state.equity_curve[-500:] if led else [])),
            bandit=bandit, rejections=dict(self._rejections), last_cycle=dict(self._last_cycle),
            trades_closed=totals.trades if totals else 0, realized_pnl=totals.pnl if totals else Decimal(0),
            error=self._error)
        with self._snap_lock:
            self._snapshot = snap

    @property
    def has_open_positions(self) -> bool:
        return bool(self.ledger and (self.ledger.state.live or self.ledger.state.pending))


# -- signal helpers (duck-typed on signals.SignalResult) --------------------------------------

def _side_word(sig: Any) -> str:
    side = str(getattr(sig, "side", "") or "").lower()
    return "LONG" if side in ("long", "buy") else "SHORT"


def _edge(sig: Any) -> float:
    v = getattr(sig, "expected_edge_r", 0.0)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def _reason_codes(sig: Any) -> tuple[str, ...]:
    out = []
    for r in getattr(sig, "reasons", ()) or ():
        code = getattr(r, "code", None) or (r[0] if isinstance(r, (tuple, list)) else str(r))
        out.append(str(code))
    return tuple(out)


def _reason_texts(sig: Any) -> list[str]:
    out = []
    for r in getattr(sig, "reasons", ()) or ():
        code = getattr(r, "code", None) or (r[0] if isinstance(r, (tuple, list)) else str(r))
        detail = getattr(r, "detail", None) or (r[1] if isinstance(r, (tuple, list)) and len(r) > 1 else "")
        out.append(f"{code}: {detail}" if detail else str(code))
    return out
