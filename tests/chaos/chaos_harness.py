"""The chaos harness (its pytest fixtures are in ``conftest.py``).

* ``loopback`` (fixture) starts the loopback exchange in this process, so the venue can be
  inspected atomically under its lock.
* :class:`Bot` runs the real ``mraster-tui --no-ui --live`` in a child process (through
  ``_bot.py``, optionally with an accelerated clock matching the exchange's ``speed``, and as a
  warm standby) with JSON-lines logs at DEBUG, reads its events as they come, and can
  ``kill -9`` it, also the instant a given event shows up.
* :func:`venue_state` is one consistent snapshot of positions, orders and fills;
  :func:`read_state`, :func:`closed_trade_nos` and :func:`final_reconcile` hold the state file
  against it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import string
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from mraster_tui.engine.ledger import State
from mraster_tui.engine.sim.server import LoopbackExchange, LoopbackProcess
from mraster_tui.engine.types import Fill, Order, OrderType, Position, Side

REPO = Path(__file__).resolve().parents[2]
BOT = Path(__file__).with_name("_bot.py")

#: strategy settings under which nearly every scanned symbol is a candidate and the policy takes
#: every one (bandit off): chaos needs trades, not good trades.  FastTP fires on any pull-back.
BUSY_TRADER = {
    "ASTER_INTERVAL": "1m", "ASTER_HTF_INTERVAL": "5m", "ASTER_KLINES": "150", "ASTER_INCLUDE_SYMBOLS": "",
    "ASTER_RSI_BUY_MIN": "0", "ASTER_RSI_SELL_MAX": "100", "ASTER_MIN_EDGE_R": "-10", "ASTER_WICKINESS_MAX": "1",
    "ASTER_SPREAD_BPS_MAX": "1", "ASTER_FUNDING_FILTER_ENABLED": "false", "ASTER_BANDIT_ENABLED": "false",
    "ASTER_MAX_OPEN_GLOBAL": "3", "ASTER_FAIL_COOLDOWN_SEC": "0", "ASTER_HISTORY_MAX": "100000",
    "FASTTP_MIN_R": "0", "FAST_TP_RET1": "0", "FAST_TP_RET3": "0", "FASTTP_SNAP_ATR": "0.1", "FASTTP_COOLDOWN_S": "0",
    "ASTER_GUARD_INTERVAL_SEC": "15", "ASTER_LOOP_SLEEP": "30", "ASTER_HTTP_TIMEOUT": "5",
    "ASTER_HTTP_BACKOFF": "0.05",
}


#: bot clock vs. venue clock when comparing a recorded close time with the venue's (clock ms)
CLOCK_TOLERANCE_MS = 3000


def make_keys(seed: int) -> tuple[str, str]:
    """A fresh API key and secret (64 letters and digits each, like the venue's)."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choices(alphabet, k=64)), "".join(rng.choices(alphabet, k=64))


# -- the loopback exchange -----------------------------------------------------------------

# -- the bot as a child process -------------------------------------------------------------

@dataclass
class Line:
    raw: str
    obj: dict[str, Any] | None

    @property
    def event(self) -> str | None:
        return self.obj.get("event") if self.obj else None

    @property
    def msg(self) -> str:
        return str(self.obj.get("msg", "")) if self.obj else self.raw


@dataclass
class _Watch:
    pred: Callable[[Line], bool]
    delay: float
    fired: threading.Event = field(default_factory=threading.Event)


class Bot:
    """``mraster-tui --no-ui --live`` in a child process (see the module docstring)."""

    def __init__(self, base_url: str, home: Path, key: str, secret: str, *, speed: float = 1.0,
                 settings: dict[str, str] | None = None, args: tuple[str, ...] = ("--no-ui", "--live"),
                 log_level: str = "DEBUG", hold: bool = False) -> None:
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "MRASTER_DATA_DIR": str(home / "data"), "MRASTER_CONFIG": str(home / "config.toml"),
            "MRASTER_SECRETS": str(home / "secrets.toml"), "MRASTER_LOG_DIR": str(home / "logs"),
            "ASTER_EXCHANGE_BASE": base_url, "ASTER_API_KEY": key, "ASTER_API_SECRET": secret,
            "ASTER_PAPER": "false", "ASTER_LOG_FORMAT": "json", "ASTER_LOGLEVEL": log_level,
            "CHAOS_SPEED": repr(float(speed)), "CHAOS_HOLD": "1" if hold else "0",
        }
        env.update(settings or {})
        self.proc = subprocess.Popen([sys.executable, str(BOT), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=home, env=env, text=True,
                                     bufsize=1)
        self.lines: list[Line] = []
        self.err: list[str] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._watches: list[_Watch] = []
        self._readers = [threading.Thread(target=self._read_out, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._readers:
            t.start()

    def go(self) -> "Bot":
        """Start a warm standby (``hold=True``): it has imported everything and starts now."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self

    # reading
    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            raw = raw.rstrip("\n")
            try:
                obj = json.loads(raw)
                obj = obj if isinstance(obj, dict) else None
            except ValueError:
                obj = None
            line = Line(raw, obj)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
                due = [w for w in self._watches if not w.fired.is_set() and w.pred(line)]
            for w in due:
                if w.delay > 0:
                    time.sleep(w.delay)  # the reader pauses too: nothing else to do until the kill
                self.kill9()
                w.fired.set()
        with self._cond:
            self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._lock:
                self.err.append(raw)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "\n".join(ln.raw for ln in self.lines)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self.err)

    def events(self, kind: str | None = None, since: int = 0) -> list[Line]:
        with self._lock:
            return [ln for ln in self.lines[since:] if ln.obj is not None and (kind is None or ln.event == kind)]

    def wait_for(self, pred: Callable[[Line], bool], timeout: float, *, since: int = 0, what: str = "") -> Line:
        """The first line from index ``since`` on matching ``pred``; AssertionError on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for ln in self.lines[since:]:
                    if pred(ln):
                        return ln
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._readers[0].is_alive()):
                    break
                self._cond.wait(min(left, 0.1))
        raise AssertionError(f"bot: no {what or 'matching line'} within {timeout} s (exit {self.proc.poll()}); "
                             f"last lines:\n{self.tail()}")

    def tail(self, n: int = 15) -> str:
        with self._lock:
            out = [ln.raw[:300] for ln in self.lines[-n:]]
        return "\n".join(out) + ("\nstderr: " + self.stderr[-1500:] if self.err else "")

    # stopping
    def kill_on(self, pred: Callable[[Line], bool], delay: float = 0.0) -> _Watch:
        """SIGKILL the bot ``delay`` seconds after the first new line matching ``pred``."""
        w = _Watch(pred, delay)
        with self._lock:
            self._watches.append(w)
        return w

    def kill9(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        """Wait for the bot to exit by itself; its exit code."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"bot did not exit within {timeout} s; last lines:\n{self.tail()}") from None
        for t in self._readers:
            t.join(5)
        return rc

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"bot did not exit within {timeout} s of SIGTERM; last lines:\n{self.tail()}")
        for t in self._readers:
            t.join(5)
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill9()
        for t in self._readers:
            t.join(5)
        for s in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


# -- the venue's state -----------------------------------------------------------------------

@dataclass(frozen=True)
class VenueState:
    now_ms: int
    positions: dict[str, Position]
    open_orders: tuple[Order, ...]
    orders: tuple[Order, ...]  # every order ever placed, oldest first
    fills: dict[str, tuple[Fill, ...]]

    def stops(self, symbol: str) -> list[Order]:
        """Open stops on the exit side of ``symbol``'s position that would close all of it."""
        pos = self.positions.get(symbol)
        if pos is None or pos.side is None:
            return []
        return [o for o in self.open_orders if o.symbol == symbol and o.type is OrderType.STOP_MARKET
                and o.side is pos.side.opposite and o.status.open
                and (o.close_position or (o.reduce_only and o.quantity >= abs(pos.amount)))]

    def unprotected(self) -> list[str]:
        return sorted(s for s in self.positions if not self.stops(s))


def venue_state(handle: LoopbackExchange) -> VenueState:
    """One consistent snapshot of the loopback venue (taken under its lock, after catching up
    with the server clock so every trigger due by now has fired)."""
    with handle.lock:
        handle.venue.tick()
        sim = handle.sim
        positions = {p.symbol: p for p in sim.positions()}
        syms = sorted(sim.exchange_info().symbols)
        return VenueState(sim.now_ms, positions, tuple(sim.open_orders()), tuple(sim.all_orders()),
                          {s: tuple(sim.user_trades(s, from_id=0, limit=1000)) for s in syms})


# -- the state file against the venue --------------------------------------------------------

def read_state(path: Path) -> State | None:
    """The state file as the next start will read it (None when it does not exist yet); raises
    on any corruption."""
    if not path.exists():
        return None
    try:
        return State.from_json(json.loads(path.read_bytes()))
    except (ValueError, KeyError, TypeError) as exc:
        raise AssertionError(f"{path}: corrupt state file ({type(exc).__name__}: {exc})") from None


def closed_trades(v: VenueState, salt: str) -> dict[int, int]:
    """Trade number -> venue time of the close, for the bot's entries (client id
    ``mr<salt>-<n>e-...``) whose position the venue has closed since: replaying each symbol's
    fills, a trade ends when the net position it belongs to returns to zero (entries stacked onto
    an open position end with it)."""
    entry = re.compile(rf"^mr{salt}-(\d+)e-")
    trade_of = {o.order_id: int(m.group(1)) for o in v.orders if (m := entry.match(o.client_id))}
    closed: dict[int, int] = {}
    for fills in v.fills.values():
        net, running = Decimal(0), set()
        for f in sorted(fills, key=lambda f: (f.time, f.trade_id)):
            if f.order_id in trade_of:
                running.add(trade_of[f.order_id])
            net += f.qty if f.side is Side.BUY else -f.qty
            if net == 0:
                closed.update(dict.fromkeys(running, f.time))
                running = set()
    return closed


def closed_trade_nos(v: VenueState, salt: str) -> set[int]:
    return set(closed_trades(v, salt))


def final_reconcile(ex: LoopbackExchange, home: Path, key: str, secret: str, bots: list[Bot], *,
                    speed: float = 1.0, settings: dict[str, str] | None = None) -> State:
    """After the bot stopped: one more start that only reconciles (``--run-once``, no entries),
    then state and venue must agree exactly.  Returns the final state."""
    pre = venue_state(ex)
    last = Bot(ex.base_url, home, key, secret, speed=speed, args=("--no-ui", "--live", "--run-once"),
               settings={**(settings or {}), "ASTER_MAX_OPEN_GLOBAL": "0"})
    bots.append(last)
    assert last.wait(30) == 0, last.tail()
    post = venue_state(ex)
    state = read_state(home / "data" / "aster_state.json")
    assert state is not None and not state.pending, state and state.pending
    assert not post.unprotected(), f"positions without a stop: {post.unprotected()}"
    assert set(post.positions) <= set(state.live) <= set(pre.positions), \
        (sorted(post.positions), sorted(state.live), sorted(pre.positions))
    for sym, pos in post.positions.items():
        assert abs(pos.amount) == state.live[sym].qty, (sym, pos, state.live[sym])
    recorded = [t.trade_no for t in state.history]
    assert len(recorded) == len(set(recorded)), f"a trade recorded twice: {recorded}"
    missing = closed_trade_nos(pre, state.id_salt) - set(recorded)
    assert not missing, f"trades closed on the venue but not in history: {missing}"
    venue_closed = closed_trades(post, state.id_salt)
    phantom = {t.trade_no: (t.closed_at, venue_closed.get(t.trade_no)) for t in state.history
               if t.trade_no not in venue_closed or t.closed_at < venue_closed[t.trade_no] - CLOCK_TOLERANCE_MS}
    assert not phantom, f"trades recorded as closed before the venue closed them (recorded, venue): {phantom}"
    adopted = [t.symbol for t in [*state.live.values(), *state.history] if t.adopted]
    assert not adopted, f"the state lost track of positions (adopted back from the venue): {adopted}"
    entries = Counter(o.client_id for o in post.orders if re.match(r"^mr[0-9a-z]{4}-\d+e-", o.client_id))
    dup = {cid: n for cid, n in entries.items() if n > 1}
    assert not dup, f"client ids used for more than one entry: {dup}"
    return state


def trading_bot(ex: LoopbackExchange | LoopbackProcess, home: Path, key: str, secret: str, bots: list[Bot], *, speed: float = 1.0,
                settings: dict[str, str] | None = None, positions: int = 1, timeout: float = 20.0) -> Bot:
    """A live bot that has opened at least ``positions`` positions and placed their brackets."""
    bot = Bot(ex.base_url, home, key, secret, speed=speed, settings={**BUSY_TRADER, **(settings or {})})
    bots.append(bot)
    bot.wait_for(lambda ln: ln.event == "cycle", timeout, what="a first scan cycle")
    opened = len(bot.events("position_opened"))
    assert opened >= positions, f"the first cycle opened {opened} positions, wanted {positions}:\n{bot.tail()}"
    return bot
