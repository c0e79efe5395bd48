"""The ledger: the engine's state store, trade records and reconciliation with the venue.

State file (``ASTER_STATE_FILE``, resolved under the data dir; JSON, ``schema_version``):

* ``live``: open trades by symbol (entry from the venue's fill, current and initial stop, TP,
  ATR at entry, the client ids of the bracket legs, the policy decision id and bucket);
* ``pending``: entries sent but not yet confirmed (written *before* the order goes out, so a
  crash between submit and fill is resolved by client id on the next start);
* ``history``: closed trades (at most ``history_max``) with entry and exit from the venue's
  fills, fees, funding, realised PnL and R; ``totals`` keep the running sums beyond the trim;
* FastTP cooldowns, per-symbol failure cooldowns, the policy state, decision statistics, the
  equity curve and the client-id counter.

Writes are atomic (:func:`mraster_tui.fsutil.atomic_write_bytes`: temp file, fsync, rename) and
keep the previous good copy as ``<file>.bak``.  A file that cannot be read is **moved aside**
(``<file>.corrupt-<UTC time>``) with a clear message and the ``.bak`` copy is tried next; the
engine never silently starts from an empty state (when no good copy exists it starts fresh but
reports an error naming the preserved file).  A file written by a newer schema is refused.

An exclusive lock (``fcntl.flock`` on ``<file>.lock``) is held while an engine uses the file, so
two engines never share one state: the second one fails with one clear line.

R of a trade = net PnL / (|entry - initial stop| * qty), net PnL = PnL from the exit fills'
prices - commissions of entry and exit fills + funding received (negative when paid).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mraster_tui.engine.types import Fill, Side
from mraster_tui.fsutil import atomic_write_bytes

try:  # POSIX only; elsewhere the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

SCHEMA = "mraster.state"
SCHEMA_VERSION = 1
EQUITY_CURVE_MAX = 2000
ZERO = Decimal(0)


class StateError(Exception):
    """A state-file problem described in one line (unreadable, locked, too new)."""


class StateLocked(StateError):
    """Another engine holds the state file."""


# -- records ------------------------------------------------------------------------------

@dataclass(slots=True)
class LiveTrade:
    """An open position the engine manages.  ``side`` is ``LONG`` or ``SHORT``."""

    symbol: str
    side: str
    qty: Decimal
    entry: Decimal
    sl: Decimal  # the stop currently wanted on the venue
    sl_initial: Decimal  # the stop at entry: 1 R = |entry - sl_initial| per unit
    tp: Decimal
    atr: float
    opened_at: int
    trade_no: int
    entry_client_id: str = ""
    entry_order_id: int = 0
    decision_id: str | None = None
    bucket: str | None = None
    sl_client_id: str | None = None
    tp_client_id: str | None = None
    leg_seq: int = 0  # version counter for bracket client ids
    adopted: bool = False
    fasttp_moves: int = 0

    @property
    def entry_side(self) -> Side:
        return Side.BUY if self.side == "LONG" else Side.SELL

    @property
    def exit_side(self) -> Side:
        return self.entry_side.opposite

    @property
    def risk_per_unit(self) -> Decimal:
        return abs(self.entry - self.sl_initial)

    def r_at(self, price: Decimal) -> float | None:
        risk = self.risk_per_unit
        if risk <= 0:
            return None
        move = (price - self.entry) if self.side == "LONG" else (self.entry - price)
        return float(move / risk)


@dataclass(slots=True)
class PendingEntry:
    """An entry order sent (or about to be sent) whose fill is not yet recorded."""

    symbol: str
    side: str  # LONG | SHORT
    client_id: str
    trade_no: int
    qty: Decimal
    atr: float
    sl_mult: float
    tp_mult: float
    created_at: int
    decision_id: str | None = None
    bucket: str | None = None


@dataclass(slots=True)
class ClosedTrade:
    symbol: str
    side: str
    qty: Decimal
    entry: Decimal
    exit: Decimal
    sl_initial: Decimal
    opened_at: int
    closed_at: int
    gross_pnl: Decimal  # from the fill prices
    fees: Decimal  # commissions of entry and exit fills (quote asset), positive = paid
    funding: Decimal  # funding received (negative = paid)
    pnl: Decimal  # gross - fees + funding
    r: float | None  # pnl / (|entry - sl_initial| * qty); None when the risk is unknown
    exit_reason: str  # stop | take_profit | fasttp_stop | market_close | external | unknown
    exit_source: str  # "fills" (from the venue's fills) | "mark" (fills unavailable: R not learned)
    trade_no: int = 0
    bucket: str | None = None
    decision_id: str | None = None
    adopted: bool = False


def _dec_fields(cls) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls) if f.type in ("Decimal", Decimal))


_DEC = {cls: _dec_fields(cls) for cls in (LiveTrade, PendingEntry, ClosedTrade)}


def _to_json(obj) -> dict[str, Any]:
    out = asdict(obj)
    for k in _DEC[type(obj)]:
        out[k] = str(out[k])
    return out


def _from_json(cls, raw: Any, what: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{what}: expected an object")
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{what}: unknown fields {sorted(unknown)}")
    kw = dict(raw)
    for k in _DEC[cls]:
        if k in kw:
            try:
                kw[k] = Decimal(str(kw[k]))
            except InvalidOperation:
                raise ValueError(f"{what}.{k}: not a number: {kw[k]!r}") from None
            if not kw[k].is_finite():
                raise ValueError(f"{what}.{k}: not finite")
    for k, kind in _PLAIN[cls].items():
        if k in kw:
            kw[k] = _typed(kw[k], kind, f"{what}.{k}")
    try:
        rec = cls(**kw)
    except TypeError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if getattr(rec, "side", "LONG") not in ("LONG", "SHORT") and cls is not ClosedTrade:
        raise ValueError(f"{what}.side: expected LONG or SHORT")
    if cls is not ClosedTrade and rec.qty <= 0:
        raise ValueError(f"{what}.qty: not positive")
    return rec


def _plain_fields(cls) -> dict[str, tuple[type, bool]]:
    """Non-Decimal fields -> (type, None allowed), from the annotations (``"int"``, ``"str | None"``)."""
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    out = {}
    for f in fields(cls):
        ann = str(f.type).replace(" ", "")
        base = ann.removesuffix("|None")
        if base in kinds:
            out[f.name] = (kinds[base], base != ann)
    return out


_PLAIN = {cls: _plain_fields(cls) for cls in (LiveTrade, PendingEntry, ClosedTrade)}


def _typed(v: Any, kind: tuple[type, bool], what: str) -> Any:
    """``v`` checked against a field type: a state file is read back exactly as written, so
    anything else (a string count, a NaN, a bool for a number) means the file is not ours."""
    typ, optional = kind
    if v is None and optional:
        return None
    if typ is float and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    if typ is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if typ in (str, bool) and isinstance(v, typ):
        return v
    raise ValueError(f"{what}: expected {typ.__name__}, got {type(v).__name__}")


# -- the state ------------------------------------------------------------------------------

@dataclass(slots=True)
class Totals:
    trades: int = 0
    wins: int = 0
    pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    sum_r: float = 0.0

    def add(self, t: ClosedTrade) -> None:
        self.trades += 1
        self.wins += 1 if t.pnl > 0 else 0
        self.pnl += t.pnl
        self.fees += t.fees
        self.funding += t.funding
        if t.r is not None and math.isfinite(t.r):
            self.sum_r += t.r


@dataclass(slots=True)
class State:
    created_at: int
    id_salt: str
    next_trade_no: int = 1
    live: dict[str, LiveTrade] = field(default_factory=dict)
    pending: dict[str, PendingEntry] = field(default_factory=dict)
    history: list[ClosedTrade] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    fasttp_cooldown: dict[str, int] = field(default_factory=dict)
    fail_until: dict[str, int] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    decision_stats: dict[str, Any] = field(default_factory=lambda: {
        "taken": 0, "skipped": 0, "rejected_total": 0, "taken_by_bucket": {}, "rejected": {}})
    equity_curve: list[list[float]] = field(default_factory=list)  # [[ts_ms, equity], ...]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the paper venue's account

    @staticmethod
    def fresh(now_ms: int) -> "State":
        return State(created_at=int(now_ms), id_salt=_salt(now_ms))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created_at": self.created_at,
            "id_salt": self.id_salt,
            "next_trade_no": self.next_trade_no,
            "live": {k: _to_json(v) for k, v in self.live.items()},
            "pending": {k: _to_json(v) for k, v in self.pending.items()},
            "history": [_to_json(t) for t in self.history],
            "totals": {**asdict(self.totals), "pnl": str(self.totals.pnl), "fees": str(self.totals.fees),
                       "funding": str(self.totals.funding)},
            "fasttp_cooldown": dict(self.fasttp_cooldown),
            "fail_until": dict(self.fail_until),
            "policy": self.policy,
            "decision_stats": self.decision_stats,
            "equity_curve": self.equity_curve,
            "extra": self.extra,
        }

    @staticmethod
    def from_json(data: Any) -> "State":
        """Parse and validate; raises ValueError (one line) on anything malformed."""
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError("not an mraster state file (schema marker missing)")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise ValueError("schema_version missing")
        if version > SCHEMA_VERSION:
            raise _TooNew(f"written by a newer version (schema {version}; this one reads {SCHEMA_VERSION})")
        try:
            st = State(created_at=int(data["created_at"]), id_salt=str(data["id_salt"]),
                       next_trade_no=int(data["next_trade_no"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"header field {exc} missing or invalid") from None
        if not _SALT_OK(st.id_salt) or st.next_trade_no < 1:
            raise ValueError("id_salt or next_trade_no invalid")
        st.live = {str(k): _from_json(LiveTrade, v, f"live.{k}") for k, v in _mapping(data, "live").items()}
        st.pending = {str(k): _from_json(PendingEntry, v, f"pending.{k}")
                      for k, v in _mapping(data, "pending").items()}
        for part in ("live", "pending"):
            if any(k != rec.symbol for k, rec in getattr(st, part).items()):
                raise ValueError(f"{part}: an entry is filed under another symbol than its own")
        hist = data.get("history", [])
        if not isinstance(hist, list):
            raise ValueError("history: expected a list")
        st.history = [_from_json(ClosedTrade, v, f"history[{i}]") for i, v in enumerate(hist)]
        tot = _mapping(data, "totals")
        try:
            st.totals = Totals(_typed(tot.get("trades", 0), (int, False), "totals.trades"),
                               _typed(tot.get("wins", 0), (int, False), "totals.wins"),
                               Decimal(str(tot.get("pnl", 0))), Decimal(str(tot.get("fees", 0))),
                               Decimal(str(tot.get("funding", 0))),
                               _typed(tot.get("sum_r", 0.0), (float, False), "totals.sum_r"))
        except (TypeError, ValueError, InvalidOperation):
            raise ValueError("totals: invalid numbers") from None
        if not all(x.is_finite() for x in (st.totals.pnl, st.totals.fees, st.totals.funding)):
            raise ValueError("totals: invalid numbers")
        st.fasttp_cooldown = {str(k): _typed(v, (int, False), f"fasttp_cooldown.{k}")
                              for k, v in _mapping(data, "fasttp_cooldown").items()}
        st.fail_until = {str(k): _typed(v, (int, False), f"fail_until.{k}")
                         for k, v in _mapping(data, "fail_until").items()}
        pol = data.get("policy")
        if pol is not None and not isinstance(pol, dict):
            raise ValueError("policy: expected an object")
        st.policy = pol
        ds = data.get("decision_stats")
        if isinstance(ds, dict):
            for k in ("taken", "skipped", "rejected_total"):
                if k in ds:
                    _typed(ds[k], (int, False), f"decision_stats.{k}")
            for k in ("taken_by_bucket", "rejected"):
                if k in ds:
                    if not isinstance(ds[k], dict):
                        raise ValueError(f"decision_stats.{k}: expected an object")
                    for name, n in ds[k].items():
                        _typed(n, (int, False), f"decision_stats.{k}.{name}")
            st.decision_stats.update(ds)
        curve = data.get("equity_curve", [])
        if not isinstance(curve, list) or not all(isinstance(p, list) and len(p) == 2 for p in curve):
            raise ValueError("equity_curve: expected a list of [time, equity] pairs")
        st.equity_curve = [[_typed(p[0], (float, False), "equity_curve"), _typed(p[1], (float, False), "equity_curve")]
                           for p in curve[-EQUITY_CURVE_MAX:]]
        st.extra = _mapping(data, "extra")
        return st


class _TooNew(ValueError):
    pass


def _mapping(data: dict, key: str) -> dict:
    v = data.get(key, {})
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"{key}: expected an object")
    return v


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _salt(now_ms: int) -> str:
    """Four base-36 characters from the creation second: client ids of a state file created
    later (e.g. after a lost state) do not collide with older orders on the venue."""
    n = (int(now_ms) // 1000) % (36 ** 4)
    out = ""
    for _ in range(4):
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out


def _SALT_OK(s: str) -> bool:  # noqa: N802 - reads like a predicate constant
    return len(s) == 4 and all(c in _B36 for c in s)


# -- the store ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoadReport:
    state: State
    #: (level, message) lines the engine turns into events
    messages: tuple[tuple[str, str], ...] = ()
    source: str = "new"  # "file" | "backup" | "new"


class StateStore:
    """Reads and writes the state file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.backup = self.path.with_name(self.path.name + ".bak")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None

    # -- locking ----------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the exclusive lock; :class:`StateLocked` if another engine holds it."""
        if self._lock_fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise StateLocked(f"{self.path}: another mraster-tui engine is using this state file "
                                  "(stop it first, or set ASTER_STATE_FILE to another file)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- reading ----------------------------------------------------------------------
    def load(self, now_ms: int) -> LoadReport:
        messages: list[tuple[str, str]] = []
        main = self._read(self.path)
        if main == "missing":
            bak = self._read(self.backup)
            if isinstance(bak, State):
                messages.append(("WARNING", f"{self.path} is missing; restored the last good copy {self.backup}"))
                return LoadReport(bak, tuple(messages), "backup")
            return LoadReport(State.fresh(now_ms), (), "new")
        if isinstance(main, State):
            return LoadReport(main, (), "file")
        # unreadable: keep it for the user, never overwrite it
        moved = self._move_aside(self.path, now_ms)
        messages.append(("ERROR", f"state file {self.path} is unreadable ({main}); moved it to {moved}"))
        bak = self._read(self.backup)
        if isinstance(bak, State):
            messages.append(("WARNING", f"restored the last good copy {self.backup}; trades since then are "
                                        "recovered from the venue by reconciliation"))
            return LoadReport(bak, tuple(messages), "backup")
        if bak != "missing":
            moved_bak = self._move_aside(self.backup, now_ms)
            messages.append(("ERROR", f"backup {self.backup} is unreadable too ({bak}); moved it to {moved_bak}"))
        messages.append(("ERROR", "starting with an empty state: open positions are adopted from the venue, "
                                  f"trade history and the policy's learning are in {moved}"))
        return LoadReport(State.fresh(now_ms), tuple(messages), "new")

    @staticmethod
    def _read(path: Path) -> State | str:
        """The state, ``"missing"``, or a one-line reason why it cannot be used."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise StateError(f"{path}: cannot read ({exc.strerror or exc})") from None
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError) as exc:
            return f"not valid JSON: {str(exc).splitlines()[0]}"
        except RecursionError:
            return "not valid JSON: nested too deeply"
        try:
            return State.from_json(data)
        except _TooNew as exc:
            raise StateError(f"{path}: {exc}; upgrade mraster-tui or use another ASTER_STATE_FILE") from None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            return str(exc).replace("\n", " ")

    @staticmethod
    def _move_aside(path: Path, now_ms: int) -> Path:
        stamp = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        os.replace(path, target)
        return target

    # -- writing ----------------------------------------------------------------------
    def save(self, state: State) -> int:
        """Write atomically (previous file kept as ``.bak``); returns the byte count."""
        data = json.dumps(state.to_json(), separators=(",", ":"), allow_nan=False, default=_json_default)
        raw = data.encode("utf-8")
        atomic_write_bytes(self.path, raw, mode=0o600, backup_suffix=".bak")
        return len(raw)


def _no_constant(name: str) -> Any:
    """NaN / Infinity are not JSON (the store never writes them: ``allow_nan=False``)."""
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text[:20]} is out of range")
    return v


def _json_default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"cannot store {type(v).__name__} in the state file")


# -- the ledger (in-memory operations on the state) ------------------------------------------

def make_client_id(salt: str, trade_no: int, leg: str, symbol: str) -> str:
    """A deterministic venue client id (<= 36 chars of ``[A-Za-z0-9-]``), e.g.
    ``mrk3x9-12e-BTCUSDT`` (entry), ``mrk3x9-12s2-BTCUSDT`` (second stop)."""
    base = f"mr{salt}-{trade_no}{leg}-"
    return (base + symbol)[:36]


class Ledger:
    """The in-memory state plus the operations the engine performs on it.  Not thread-safe:
    used from the engine's event loop only.  ``dirty`` says whether a save is due."""

    def __init__(self, state: State, *, history_max: int = 250) -> None:
        self.state = state
        self.history_max = int(history_max)
        self.dirty = False

    # -- ids --------------------------------------------------------------------------
    def new_trade_no(self) -> int:
        n = self.state.next_trade_no
        self.state.next_trade_no += 1
        self.dirty = True
        return n

    def client_id(self, trade_no: int, leg: str, symbol: str) -> str:
        return make_client_id(self.state.id_salt, trade_no, leg, symbol)

    def owns(self, trade: LiveTrade, client_id: str, leg: str) -> bool:
        """True when ``client_id`` is a ``leg`` order (``s``/``t``/``x``) of this trade."""
        return client_id.startswith(f"mr{self.state.id_salt}-{trade.trade_no}{leg}")

    def next_leg_id(self, trade: LiveTrade, leg: str) -> str:
        """A fresh client id for a new version of a bracket leg (``s`` stop, ``t`` TP, ``x`` close)."""
        trade.leg_seq += 1
        self.dirty = True
        return self.client_id(trade.trade_no, f"{leg}{trade.leg_seq}", trade.symbol)

    # -- trades -----------------------------------------------------------------------
    def add_pending(self, p: PendingEntry) -> None:
        self.state.pending[p.symbol] = p
        self.dirty = True

    def drop_pending(self, symbol: str) -> PendingEntry | None:
        self.dirty = True
        return self.state.pending.pop(symbol, None)

    def open_trade(self, t: LiveTrade) -> None:
        self.state.live[t.symbol] = t
        self.state.pending.pop(t.symbol, None)
        self.dirty = True

    def record_close(self, trade: LiveTrade, closed: ClosedTrade) -> None:
        self.state.live.pop(trade.symbol, None)
        self.state.history.append(closed)
        if len(self.state.history) > self.history_max:
            del self.state.history[: len(self.state.history) - self.history_max]
        self.state.totals.add(closed)
        self.state.fasttp_cooldown.pop(trade.symbol, None)
        self.dirty = True

    # -- cooldowns --------------------------------------------------------------------
    def fail(self, symbol: str, until_ms: int) -> None:
        self.state.fail_until[symbol] = int(until_ms)
        self.dirty = True

    def failing(self, symbol: str, now_ms: int) -> bool:
        until = self.state.fail_until.get(symbol)
        if until is None:
            return False
        if until <= now_ms:
            del self.state.fail_until[symbol]
            self.dirty = True
            return False
        return True

    def set_fasttp_cooldown(self, symbol: str, until_ms: int) -> None:
        self.state.fasttp_cooldown[symbol] = int(until_ms)
        self.dirty = True

    def fasttp_ready(self, symbol: str, now_ms: int) -> bool:
        return self.state.fasttp_cooldown.get(symbol, 0) <= now_ms

    # -- stats ------------------------------------------------------------------------
    def count_decision(self, *, taken: bool, bucket: str | None) -> None:
        ds = self.state.decision_stats
        if taken:
            ds["taken"] = ds.get("taken", 0) + 1
            tb = ds.setdefault("taken_by_bucket", {})
            if bucket:
                tb[bucket] = tb.get(bucket, 0) + 1
        else:
            ds["skipped"] = ds.get("skipped", 0) + 1
        self.dirty = True

    def count_rejections(self, reasons: dict[str, int]) -> None:
        if not reasons:
            return
        ds = self.state.decision_stats
        rej = ds.setdefault("rejected", {})
        for k, n in reasons.items():
            rej[k] = rej.get(k, 0) + n
            ds["rejected_total"] = ds.get("rejected_total", 0) + n
        self.dirty = True

    def note_equity(self, ts_ms: int, equity: float) -> None:
        curve = self.state.equity_curve
        if curve and curve[-1][1] == equity and ts_ms - curve[-1][0] < 3_600_000:
            return
        curve.append([float(ts_ms), float(equity)])
        if len(curve) > EQUITY_CURVE_MAX:
            del curve[: len(curve) - EQUITY_CURVE_MAX]
        self.dirty = True


# -- close-out from the venue's fills --------------------------------------------------------

def close_from_fills(trade: LiveTrade, fills: list[Fill], *, funding: Decimal | None, now_ms: int,
                     quote: str = "USDT") -> ClosedTrade | None:
    """Build the closed-trade record from the venue's fills of this trade.

    ``fills`` are the symbol's fills since the trade opened (entry fills included when the
    venue still returns them).  Entry fills are those of the entry order (or, for an adopted
    trade, the entry side); exit fills are on the exit side.  Returns None when the exit fills do
    not yet cover the position (the venue may be late; the caller retries).
    """
    exit_side = trade.exit_side
    rel = sorted((f for f in fills if f.time >= trade.opened_at - 1000), key=lambda f: (f.time, f.trade_id))
    entry_fills = [f for f in rel if (f.order_id == trade.entry_order_id and trade.entry_order_id)]
    exits: list[Fill] = []
    remaining = trade.qty
    for f in rel:
        if f.side is exit_side and f not in entry_fills and remaining > 0:
            exits.append(f)
            remaining -= f.qty
    if not exits or remaining > 0:
        return None
    exit_qty = sum((f.qty for f in exits), ZERO)
    exit_value = sum((f.price * f.qty for f in exits), ZERO)
    exit_px = exit_value / exit_qty
    qty = min(exit_qty, trade.qty)
    sign = 1 if trade.side == "LONG" else -1
    realized = sum((f.realized_pnl for f in exits), ZERO)
    if realized != 0:
        gross = realized  # the venue's own number: exactly what the wallet was credited
    else:
        entry_qty = sum((f.qty for f in entry_fills), ZERO)
        entry_value = (sum((f.price * f.qty for f in entry_fills), ZERO) if entry_qty == exit_qty
                       else trade.entry * exit_qty)
        gross = (exit_value - entry_value) * sign
    fees = sum((f.commission for f in entry_fills + exits if f.commission_asset == quote), ZERO)
    fund = funding if funding is not None else ZERO
    pnl = gross - fees + fund
    risk = trade.risk_per_unit * qty
    r = float(pnl / risk) if risk > 0 else None
    return ClosedTrade(
        symbol=trade.symbol, side=trade.side, qty=qty, entry=trade.entry, exit=exit_px,
        sl_initial=trade.sl_initial, opened_at=trade.opened_at, closed_at=max(f.time for f in exits),
        gross_pnl=gross, fees=fees, funding=fund, pnl=pnl, r=r, exit_reason=exit_reason(trade, exit_px),
        exit_source="fills", trade_no=trade.trade_no, bucket=trade.bucket, decision_id=trade.decision_id,
        adopted=trade.adopted)


def close_at_mark(trade: LiveTrade, price: Decimal, now_ms: int, why: str) -> ClosedTrade:
    """A close-out record when the venue has no fills for the exit (e.g. a paper venue that was
    reset).  It is marked ``exit_source="mark"`` and its R is never fed to the policy."""
    sign = 1 if trade.side == "LONG" else -1
    gross = (price - trade.entry) * trade.qty * sign
    return ClosedTrade(
        symbol=trade.symbol, side=trade.side, qty=trade.qty, entry=trade.entry, exit=price,
        sl_initial=trade.sl_initial, opened_at=trade.opened_at, closed_at=now_ms, gross_pnl=gross, fees=ZERO,
        funding=ZERO, pnl=gross, r=None, exit_reason=why, exit_source="mark", trade_no=trade.trade_no,
        bucket=trade.bucket, decision_id=trade.decision_id, adopted=trade.adopted)


def exit_reason(trade: LiveTrade, exit_px: Decimal) -> str:
    """Which leg most plausibly closed the trade, judged by the exit price."""
    d_sl = abs(exit_px - trade.sl)
    d_tp = abs(exit_px - trade.tp)
    tol = max(trade.risk_per_unit * Decimal("0.35"), abs(trade.entry) * Decimal("0.0005"))
    if d_sl <= d_tp and d_sl <= tol:
        return "fasttp_stop" if trade.sl != trade.sl_initial else "stop"
    if d_tp < d_sl and d_tp <= tol:
        return "take_profit"
    return "market_close"
