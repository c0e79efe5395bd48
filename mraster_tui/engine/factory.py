"""``build_engine``: picks the venue and wires an :class:`~mraster_tui.engine.runner.Engine`.

* **demo** (``--demo``): a :class:`PaperExchange` on a seeded :class:`SyntheticMarket`
  (``ASTER_DEMO_SYMBOLS``, ``ASTER_DEMO_SEED``) under an accelerated clock (``ASTER_DEMO_SPEED``);
  offline, no network.  The universe is the synthetic market's symbols (the include list is
  ignored) and the demo starts from a fresh state file of its own (``<data dir>/demo/``).
* **paper** (``ASTER_PAPER=true`` or no credentials): a :class:`PaperExchange` fed by the real
  venue's *public* data only (no key is ever given to the client, so nothing can be signed);
  state file ``paper-<ASTER_STATE_FILE>``.  The simulated account (wallet, positions, open
  orders, fills) is saved next to it (``paper-account-<name>``) whenever the engine saves its
  state and at shutdown, and restored on start, so paper positions survive restarts.
* **live** (``ASTER_PAPER=false`` and credentials): :class:`RestExchange` with the keys.

The state file and the decision log resolve under the data dir when relative.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mraster_tui.config.paths import resolve_data_path
from mraster_tui.engine.clock import Clock, WallClock
from mraster_tui.engine.events import Event, EventKind, EventSink
from mraster_tui.engine.ledger import StateLocked, StateStore
from mraster_tui.engine.runner import Engine
from mraster_tui.fsutil import atomic_write_bytes

MODES = ("DEMO", "PAPER", "LIVE")


class FactoryError(Exception):
    """The engine cannot be built as configured (one line)."""


def pick_mode(settings: Any, *, demo: bool, mode_override: str | None = None) -> str:
    if mode_override is not None:
        mode = mode_override.upper()
        if mode not in MODES:
            raise FactoryError(f"unknown mode {mode_override!r} (choose {', '.join(MODES)})")
        if mode == "LIVE" and not settings.has_credentials:
            raise FactoryError("live trading needs ASTER_API_KEY and ASTER_API_SECRET")
        return mode
    if demo:
        return "DEMO"
    return "LIVE" if settings.live_trading else "PAPER"


def state_path_for(settings: Any, mode: str) -> Path:
    path = resolve_data_path(str(settings.state_file))
    if mode == "PAPER":
        return path.with_name(f"paper-{path.name}")
    if mode == "DEMO":
        return path.parent / "demo" / path.name
    return path


def build_engine(settings: Any, *, demo: bool, sink: EventSink, clock: Clock | None = None,
                 mode_override: str | None = None) -> Engine:
    """The engine for these settings (see the module docstring)."""
    mode = pick_mode(settings, demo=demo, mode_override=mode_override)
    state_path = state_path_for(settings, mode)
    decision_log = resolve_data_path(str(settings.decision_log)) if str(settings.decision_log) else None
    if mode == "DEMO":
        return _demo(settings, sink, clock, state_path, decision_log)
    clock = clock or WallClock()
    holder: list[Engine] = []

    def forward(ev: Any) -> None:
        if holder:
            holder[0].on_venue_event(ev)

    from mraster_tui.engine.venue.rest import RestExchange

    if mode == "LIVE":
        exchange = RestExchange(str(settings.exchange_base), api_key=settings.api_key, api_secret=settings.api_secret,
                                venue=str(settings.venue), settings=settings, clock=clock, on_event=forward)
        engine = Engine(settings, exchange=exchange, clock=clock, sink=sink, state_path=state_path,
                        decision_log_path=decision_log, mode=mode, close_exchange=True)
    else:
        # no key, no secret: this client cannot sign anything, and the paper venue only sees its public view
        rest = RestExchange(str(settings.exchange_base), venue=str(settings.venue), settings=settings, clock=clock,
                            on_event=forward)

        account = PaperAccount(paper_account_path(state_path), sink, clock)

        async def paper() -> Any:
            from mraster_tui.engine.sim.paper import PaperExchange, sim_options

            ex = await PaperExchange.live(rest.public_only(), clock=clock, restore=account.load(),
                                          **sim_options(settings))
            account.exchange = ex
            return ex

        async def close() -> None:
            account.save()
            await rest.close()

        engine = Engine(settings, exchange=None, exchange_factory=paper, clock=clock,
                        sink=_SaveAlongside(sink, account), state_path=state_path, decision_log_path=decision_log,
                        mode=mode, close_exchange=True, on_close=close)
    holder.append(engine)
    return engine


def _demo(settings: Any, sink: EventSink, clock: Clock | None, state_path: Path, decision_log: Path | None) -> Engine:
    from mraster_tui.engine.sim.paper import PaperExchange

    _fresh_demo_state(state_path)
    exchange = PaperExchange.demo(settings, clock=clock)
    return Engine(settings, exchange=exchange, clock=exchange.clock, sink=sink, state_path=state_path,
                  decision_log_path=decision_log.with_name(f"demo-{decision_log.name}") if decision_log else None,
                  mode="DEMO", close_exchange=True, pinned={"include_symbols": ()})


def _fresh_demo_state(path: Path) -> None:
    """Each demo run starts a new synthetic market, so it starts from a fresh state too."""
    store = StateStore(path)
    try:
        store.acquire()
    except StateLocked:
        raise FactoryError(f"another demo is running (it holds {path})") from None
    try:
        for p in (path, path.with_name(path.name + ".bak")):
            p.unlink(missing_ok=True)
    finally:
        store.release()


def paper_account_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name.replace("paper-", "paper-account-", 1))


class PaperAccount:
    """Saves and restores the paper venue's simulated account next to the engine's state file.

    A file that cannot be read is moved aside (never silently dropped) and paper trading starts
    with a fresh account; the engine then reconciles its trades against it as with any venue."""

    def __init__(self, path: Path, sink: EventSink, clock: Clock) -> None:
        self.path = path
        self.sink = sink
        self.clock = clock
        self.exchange: Any = None

    def _emit(self, level: str, message: str) -> None:
        kind = EventKind.ERROR if level == "ERROR" else EventKind.WARNING
        self.sink.emit(Event(self.clock.now_ms(), kind, level, message))

    def load(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or "version" not in data:
                raise ValueError("not a paper account file")
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            try:
                self.path.replace(aside)
            except OSError:
                aside = self.path
            self._emit("ERROR", f"paper account {self.path} could not be read ({type(exc).__name__}); "
                                f"kept as {aside.name}, starting a fresh paper account")
            return None

    def save(self) -> None:
        if self.exchange is None:
            return
        try:
            data = json.dumps(self.exchange.account_state(), separators=(",", ":")).encode()
            atomic_write_bytes(self.path, data, mode=0o600)
        except (OSError, TypeError, ValueError) as exc:
            self._emit("ERROR", f"paper account could not be saved to {self.path}: {exc}")


class _SaveAlongside:
    """Passes every event on and saves the paper account whenever the engine saved its state."""

    def __init__(self, inner: EventSink, account: PaperAccount) -> None:
        self.inner = inner
        self.account = account

    def emit(self, event: Event) -> None:
        if event.kind is EventKind.STATE_SAVED:
            self.account.save()
        self.inner.emit(event)
