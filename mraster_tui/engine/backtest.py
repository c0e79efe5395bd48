"""Backtests: the same engine (policy included) over history, on a SimExchange under a SimClock.

``load_dataset`` reads kline files or folders (Binance archive CSV with or without header,
freqtrade JSON, ``mraster-tui download`` files; format detected by content, symbol and interval
from the file name), funding files, and an optional higher-timeframe file per symbol (otherwise
the HTF is aggregated from the low timeframe).  Bad data raises ``DataError`` naming file and row.

``run_backtest`` replays it through the real :class:`~mraster_tui.engine.runner.Engine` on a
:class:`~mraster_tui.engine.sim.paper.PaperExchange` (an in-process
:class:`~mraster_tui.engine.sim.exchange.SimExchange` fed by a
:class:`~mraster_tui.engine.sim.market.ReplayMarket`) and a :class:`SimClock`.  Everything after
the signal provider -- policy, risk caps, sizing, executor (entries, brackets from the actual
fill), guard (OCO, repairs), FastTP, ledger (R and PnL from the venue's fills, fees, funding) --
is the live code.

What runs, and when (one scan per closed candle of ``ASTER_INTERVAL``, at close +
``ASTER_SCAN_DELAY_SEC`` like the live scheduler):

* the simulated venue is advanced to the scan time (triggers, fills, funding, liquidations in
  price-path order between scans);
* ``guard_pass()`` when the venue reported anything since the last scan (a bracket filled: the
  trade is closed out from the fills, the other leg cancelled).  Live runs it every few seconds;
  between fills it finds nothing to do in a simulation, so the result is the same;
* ``run_cycle()`` when some symbol's bar passed the vector pre-screen (:func:`prescreen`: every
  rule that needs no book, funding rate or clock) and a position could be opened.  At full
  capacity the cycle is not run and its rejections (``max_open_global`` / ``fail_cooldown``) are
  counted directly; on the other bars the first rejection reason is counted from the pre-screen;
* ``fasttp_pass()`` while a position is open and a stop move is possible (:class:`_FastTPGate`).
  FastTP samples the mid once per scan, so its 60 s / 180 s returns are one-candle returns here
  (live samples every 2 s): FastTP reacts at candle granularity in a backtest.

``every_candle=True`` runs all three on every candle instead; tests prove both give the same
trades and the same rejection counts.  Positions still open at the end are closed at market
(reduce-only) so every trade has venue fills; the wallet change then equals the sum of the
trades' net PnL exactly.

Signals come from :class:`PrecomputedProvider`: indicator series precomputed once per symbol
(``signals.precompute``, emulating each live window's own seeding) and the live rules function
(``signals.evaluate_at``); a test proves it equals ``signals.evaluate_signal`` bar by bar on real
data.  Universe: the data's symbols (the include list is ignored), minus ``exclude_symbols``,
filtered and ranked by 24h quote volume (no rotation).

Determinism: the same data, settings and seed give a byte-identical trade list
(:func:`trades_json_bytes`).  The report (:class:`BacktestReport`) has trades, win rate, total
and mean R, PnL, fees, funding, max drawdown, daily Sharpe and Sortino, exposure, a per-symbol
table, rejections by reason, bucket usage and a plain-text equity curve.  Wall time is measured
(``time.perf_counter``, from the indicator precompute to the last position closed; loading the
files and building the report are not counted) only to report the speed; nothing depends on it.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from mraster_tui.engine import signals as sig
from mraster_tui.engine.clock import SimClock
from mraster_tui.engine.data import DataError, load_files, resample
from mraster_tui.engine.errors import VenueError
from mraster_tui.engine.events import Event, EventKind, LevelFilterSink
from mraster_tui.engine.guard import GuardError
from mraster_tui.engine.ledger import StateError
from mraster_tui.engine.policy import BanditPolicy
from mraster_tui.engine.provider import ScanResult, SymbolScan
from mraster_tui.engine.runner import Engine
from mraster_tui.engine.sim.exchange import SimExchange
from mraster_tui.engine.sim.market import ReplayMarket
from mraster_tui.engine.sim.paper import PaperExchange, sim_options
from mraster_tui.engine.types import Candles, FundingRate, interval_ms

ZERO = Decimal(0)
DAY_MS = 86_400_000
DATA_SUFFIXES = (".json", ".csv", ".zip", ".txt")


class BacktestError(Exception):
    """A backtest that cannot run, described in one line (bad arguments, unusable data)."""


# -- data -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SymbolData:
    """One symbol's history: the low-timeframe candles that drive the simulation, an optional
    higher-timeframe file (else the HTF is aggregated from the LTF), funding rates, and the
    archive's quote volume when the file had it."""

    symbol: str
    ltf: Candles
    htf: Candles | None = None
    funding: tuple[FundingRate, ...] = ()
    quote_volume: np.ndarray | None = None
    files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Dataset:
    symbols: dict[str, SymbolData]
    interval: str  # interval of the LTF candles (the simulation's base candles)
    skipped: tuple[str, ...] = ()  # files not used, with why


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their data files (recursively, sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in DATA_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise BacktestError(f"{p}: no such file or folder")
    if not out:
        raise BacktestError(f"no data files in {', '.join(map(str, paths))}")
    return list(dict.fromkeys(out))


def load_dataset(paths: Sequence[str | Path], *, interval: str = "5m", htf_interval: str = "30m",
                 allow_gaps: bool = False) -> Dataset:
    """Load kline and funding files for a backtest of an ``interval`` strategy.

    Per symbol the coarsest candle file whose interval divides ``interval`` is the simulation's
    base series (the strategy's candles are aggregated from it when it is finer); a file of
    exactly ``htf_interval`` is used as the higher timeframe, otherwise the HTF is aggregated
    from the base series.  Other intervals and mark-price files are skipped (and
    listed).  Bad data raises :class:`~mraster_tui.engine.data.DataError` naming file and row.
    """
    want = interval_ms(interval)
    htf_ms = interval_ms(htf_interval)
    files = load_files(expand_paths(paths), allow_gaps=allow_gaps)
    candles: dict[str, dict[str, tuple[Path, Any]]] = {}
    funding = files.funding
    skipped = [f"{p.name}: mark-price candles (not traded)" for p in files.marks]
    for p, lc in files.candles:
        per = candles.setdefault(lc.symbol, {})
        if lc.interval in per:
            raise DataError(p, f"a second {lc.interval} series for {lc.symbol} (also in {per[lc.interval][0]})")
        per[lc.interval] = (p, lc)
    out: dict[str, SymbolData] = {}
    base_intervals: set[str] = set()
    for sym in sorted(candles):
        per = candles[sym]
        usable = sorted((iv for iv in per if want % interval_ms(iv) == 0), key=interval_ms)
        if not usable:
            skipped.extend(f"{p.name}: {iv} candles cannot drive a {interval} strategy" for iv, (p, _) in per.items())
            continue
        base = usable[-1]  # the coarsest that still divides the strategy interval: fewest steps
        blc = per[base][1]
        htf = per.get(htf_interval)
        for iv, (p, _) in per.items():
            if iv != base and (htf is None or iv != htf_interval):
                skipped.append(f"{p.name}: {iv} candles not used ({base} drives the simulation)")
        rates = funding.pop(sym, [])
        for a, b in zip(rates, rates[1:]):
            if a.funding_time == b.funding_time:
                raise BacktestError(f"{sym}: two funding files both hold the rate at {a.funding_time}")
        out[sym] = SymbolData(sym, blc.candles, htf[1].candles if htf is not None and htf_ms > want else None,
                              tuple(rates), blc.quote_volume, tuple(str(x[0]) for x in per.values()))
        base_intervals.add(base)
    skipped.extend(f"funding for {sym}: no candles of that symbol" for sym in sorted(funding))
    if not out:
        raise BacktestError("no usable candle files (" + "; ".join(skipped[:3]) + ")" if skipped
                            else "no candle files among the data")
    if len(base_intervals) > 1:
        shown = ", ".join(sorted(base_intervals))
        raise BacktestError(f"the symbols' candle files have different intervals ({shown}); give one interval for all")
    return Dataset(out, base_intervals.pop(), tuple(skipped))


# -- trades -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One closed trade of a backtest, from the venue's fills (see the ledger).

    ``signal_close_ms`` is the close time (Binance convention: open + interval - 1) of the
    candle whose signal opened the trade; ``entry_ms`` is the entry fill's time, always later.
    ``pnl = gross_pnl - fees + funding`` (funding received; negative when paid).
    """

    trade_no: int
    symbol: str
    side: str  # LONG | SHORT
    qty: Decimal
    signal_close_ms: int
    entry_ms: int
    entry: Decimal
    exit_ms: int
    exit: Decimal
    sl_initial: Decimal
    gross_pnl: Decimal
    fees: Decimal
    funding: Decimal
    pnl: Decimal
    r: float | None
    exit_reason: str
    bucket: str | None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, Decimal):
                out[k] = str(v)
        return out


def trades_json_bytes(trades: Sequence[TradeRecord]) -> bytes:
    """The canonical serialisation of a trade list (the determinism test compares these bytes)."""
    return json.dumps([t.to_json() for t in trades], separators=(",", ":"), sort_keys=True).encode()


# -- metrics ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EquityCurve:
    """Account equity marked to each candle close of the trading window (float, for charts and
    risk figures; the exact money figures are the Decimal totals of the report).  Open trades are
    marked at the candle close; fees and funding are booked when the trade closes."""

    times: np.ndarray  # int64 epoch ms (candle close times)
    equity: np.ndarray  # float64


def equity_curve(trades: Sequence[TradeRecord], grid_ms: np.ndarray, closes: Mapping[str, np.ndarray],
                 start_equity: float) -> EquityCurve:
    """Mark-to-market equity on ``grid_ms`` (sorted candle close times).

    ``closes[symbol]`` holds that symbol's close price at each grid time (NaN where it has no
    candle: the last known price is used).  A trade counts as open at grid times in
    ``[entry_ms, exit_ms)`` and its net PnL is booked from ``exit_ms`` on.
    """
    eq = np.full(len(grid_ms), float(start_equity))
    filled = {s: _ffill(np.asarray(c, dtype=np.float64)) for s, c in closes.items()}
    for t in trades:
        i0 = int(np.searchsorted(grid_ms, t.entry_ms, side="left"))
        i1 = int(np.searchsorted(grid_ms, t.exit_ms, side="left"))
        sign = 1.0 if t.side == "LONG" else -1.0
        px = filled.get(t.symbol)
        if px is not None and i1 > i0:
            eq[i0:i1] += np.nan_to_num((px[i0:i1] - float(t.entry)) * float(t.qty) * sign)
        eq[i1:] += float(t.pnl)
    return EquityCurve(np.asarray(grid_ms, dtype=np.int64), eq)


def _ffill(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x
    idx = np.where(ok, np.arange(len(x)), 0)
    np.maximum.accumulate(idx, out=idx)
    return x[idx]


def max_drawdown(equity: np.ndarray) -> tuple[float, float]:
    """(largest peak-to-trough fall in money, the same as a fraction of the peak)."""
    if len(equity) == 0:
        return 0.0, 0.0
    peak = np.maximum.accumulate(equity)
    dd = peak - equity
    i = int(np.argmax(dd))
    frac = float(dd[i] / peak[i]) if peak[i] > 0 else 0.0
    # the largest fraction may sit at another point than the largest amount
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(peak > 0, dd / peak, 0.0)
    return float(dd[i]), max(frac, float(rel.max()))


def daily_returns(curve: EquityCurve, start_equity: float) -> np.ndarray:
    """Returns of the equity between consecutive UTC day ends (the first day from the start)."""
    if len(curve.times) == 0:
        return np.zeros(0)
    day = (curve.times - 1) // DAY_MS  # a close at 00:00:00 belongs to the day before
    last_of_day = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    levels = np.r_[float(start_equity), curve.equity[last_of_day]]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.diff(levels) / levels[:-1]
    return r[np.isfinite(r)]


def sharpe_sortino(daily: np.ndarray, periods_per_year: int = 365) -> tuple[float | None, float | None]:
    """Annualised Sharpe and Sortino ratios of daily returns (risk-free rate 0; crypto trades
    365 days a year).  None when undefined (fewer than two days, or no variation / no loss)."""
    if len(daily) < 2:
        return None, None
    mean = float(daily.mean())
    sd = float(daily.std(ddof=1))
    down = float(np.sqrt(np.mean(np.minimum(daily, 0.0) ** 2)))
    scale = math.sqrt(periods_per_year)
    sharpe = mean / sd * scale if sd > 0 else None
    sortino = mean / down * scale if down > 0 else None
    return sharpe, sortino


def exposure(trades: Sequence[TradeRecord], start_ms: int, end_ms: int) -> float:
    """Fraction of the window ``[start_ms, end_ms)`` during which at least one trade was open."""
    span = end_ms - start_ms
    if span <= 0:
        return 0.0
    iv = sorted((max(t.entry_ms, start_ms), min(t.exit_ms, end_ms)) for t in trades)
    covered, cur_s, cur_e = 0, None, None
    for s, e in iv:
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                covered += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        covered += cur_e - cur_s
    return covered / span


@dataclass(frozen=True, slots=True)
class GroupStats:
    trades: int
    wins: int
    total_r: float
    pnl: Decimal
    fees: Decimal
    funding: Decimal

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.trades if self.trades else None

    @property
    def mean_r(self) -> float | None:
        return self.total_r / self.trades if self.trades else None

    def to_json(self) -> dict[str, Any]:
        return {"trades": self.trades, "wins": self.wins, "win_rate": self.win_rate, "total_r": self.total_r,
                "mean_r": self.mean_r, "pnl": str(self.pnl), "fees": str(self.fees), "funding": str(self.funding)}


def group_stats(trades: Iterable[TradeRecord]) -> GroupStats:
    n = wins = 0
    total_r = 0.0
    pnl = fees = funding = ZERO
    for t in trades:
        n += 1
        wins += t.pnl > 0
        total_r += t.r if t.r is not None else 0.0
        pnl += t.pnl
        fees += t.fees
        funding += t.funding
    return GroupStats(n, wins, total_r, pnl, fees, funding)


# -- terminal chart -----------------------------------------------------------------------------

def render_curve(times: np.ndarray, values: np.ndarray, *, width: int = 72, height: int = 12) -> list[str]:
    """A plain-text line chart of ``values`` over ``times`` (no plotting library, works in a pipe).

    Each column shows the last value of its time bucket; consecutive columns are joined by
    vertical strokes so the line reads as continuous.
    """
    if len(values) == 0:
        return ["(no data)"]
    width = max(10, width)
    height = max(3, height)
    label_w = 12
    plot_w = width - label_w - 1
    n = len(values)
    cols = min(plot_w, n)
    edges = np.linspace(0, n, cols + 1).astype(int)
    pts = values[np.maximum(edges[1:] - 1, 0)]
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi - lo < 1e-12:
        hi, lo = hi + 1.0, lo - 1.0
    rows = np.clip(np.round((pts - lo) / (hi - lo) * (height - 1)).astype(int), 0, height - 1)
    grid = [[" "] * cols for _ in range(height)]
    prev = None
    for x, y in enumerate(rows):
        if prev is not None and abs(y - prev) > 1:
            step = 1 if y > prev else -1
            for yy in range(prev + step, y, step):
                grid[yy][x] = "│"
        grid[y][x] = "•"
        prev = y
    out = []
    for r in range(height - 1, -1, -1):
        label = f"{hi:,.2f}" if r == height - 1 else f"{lo:,.2f}" if r == 0 else ""
        out.append(f"{label:>{label_w}}┤" + "".join(grid[r]))
    out.append(" " * label_w + "└" + "─" * cols)
    t0, t1 = _day(int(times[0])), _day(int(times[-1]))
    out.append(" " * (label_w + 1) + t0 + " " * max(1, cols - len(t0) - len(t1)) + t1)
    return out


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


# -- the report -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BacktestReport:
    """Everything a backtest found (``to_json`` for ``--json``, ``render_text`` for the terminal)."""

    symbols: tuple[str, ...]
    interval: str
    htf_interval: str
    start_ms: int  # trading window [start_ms, end_ms)
    end_ms: int
    seed: int
    start_balance: Decimal
    end_balance: Decimal  # the simulated venue's wallet after the last trade was closed
    trades: tuple[TradeRecord, ...]
    totals: GroupStats
    per_symbol: dict[str, GroupStats]
    max_drawdown: float
    max_drawdown_pct: float
    sharpe: float | None
    sortino: float | None
    exposure: float
    rejections: dict[str, int]
    buckets: dict[str, int]  # closed trades per size bucket
    decisions: dict[str, Any]  # the policy's taken / skipped counts and bucket usage
    curve: EquityCurve
    candle_steps: int  # symbols x candles simulated
    cycles: int  # engine scan cycles actually run
    elapsed_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def steps_per_s(self) -> float:
        return self.candle_steps / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        t = self.totals
        return {
            "symbols": list(self.symbols), "interval": self.interval, "htf_interval": self.htf_interval,
            "from": _iso(self.start_ms), "to": _iso(self.end_ms), "seed": self.seed,
            "start_balance": str(self.start_balance), "end_balance": str(self.end_balance),
            "summary": {**t.to_json(), "max_drawdown": self.max_drawdown, "max_drawdown_pct": self.max_drawdown_pct,
                        "sharpe_daily": self.sharpe, "sortino_daily": self.sortino, "exposure": self.exposure},
            "per_symbol": {s: g.to_json() for s, g in self.per_symbol.items()},
            "rejections": dict(self.rejections), "buckets": dict(self.buckets), "decisions": self.decisions,
            "equity_curve": [[int(a), float(b)] for a, b in zip(self.curve.times, self.curve.equity)],
            "trades": [x.to_json() for x in self.trades],
            "run": {"candle_steps": self.candle_steps, "cycles": self.cycles, "elapsed_s": self.elapsed_s,
                    "candle_steps_per_s": self.steps_per_s},
            "settings": self.settings, "notes": list(self.notes),
        }

    def render_text(self, *, plot: bool = True, width: int = 78) -> str:
        t = self.totals
        lines = [
            f"Backtest {', '.join(self.symbols)}  {self.interval} (HTF {self.htf_interval})  "
            f"{_day(self.start_ms)} .. {_day(self.end_ms)} UTC  seed {self.seed}",
            "",
            f"  trades        {t.trades:>10}     win rate      {_pct(t.win_rate):>10}",
            f"  total R       {_num(t.total_r, 2):>10}     mean R        {_num(t.mean_r, 3):>10}",
            f"  PnL (net)     {_money(t.pnl):>10}     fees          {_money(t.fees):>10}",
            f"  funding       {_money(t.funding):>10}     balance       {_money(self.start_balance)} -> "
            f"{_money(self.end_balance)}",
            f"  max drawdown  {_money(self.max_drawdown):>10}     max DD %      {_pct(self.max_drawdown_pct):>10}",
            f"  Sharpe (d)    {_num(self.sharpe, 2):>10}     Sortino (d)   {_num(self.sortino, 2):>10}",
            f"  exposure      {_pct(self.exposure):>10}     cycles        {self.cycles:>10}",
            f"  speed         {self.steps_per_s:>10,.0f} candle-steps/s "
            f"({self.candle_steps:,} in {self.elapsed_s:.2f} s)",
        ]
        if self.per_symbol:
            lines += ["", "  symbol        trades   win %   total R     mean R          PnL         fees      funding"]
            for sym, g in self.per_symbol.items():
                lines.append(f"  {sym:<12} {g.trades:>7} {_pct(g.win_rate):>7} {_num(g.total_r, 2):>9} "
                             f"{_num(g.mean_r, 3):>10} {_money(g.pnl):>12} {_money(g.fees):>12} "
                             f"{_money(g.funding):>12}")
        if self.rejections:
            total = sum(self.rejections.values())
            top = sorted(self.rejections.items(), key=lambda kv: (-kv[1], kv[0]))
            lines += ["", f"  rejections ({total:,})"]
            lines += [f"    {k:<28} {v:>10,}" for k, v in top]
        lines += ["", "  size buckets  " + "  ".join(f"{b}: {n}" for b, n in sorted(self.buckets.items()))
                  if self.buckets else "  size buckets  (no trades)"]
        taken = self.decisions.get("taken_by_bucket") or {}
        if self.decisions:
            lines.append(f"  policy        taken {self.decisions.get('taken', 0)}, "
                         f"skipped {self.decisions.get('skipped', 0)}"
                         + (", by bucket " + ", ".join(f"{b} {n}" for b, n in sorted(taken.items())) if taken else ""))
        if plot and len(self.curve.times):
            lines += ["", "  equity (marked to candle closes)"]
            lines += render_curve(self.curve.times, self.curve.equity, width=width, height=12)
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None, nd: int) -> str:
    return "-" if x is None else f"{x:+.{nd}f}"


def _money(x: Decimal | float) -> str:
    return f"{float(x):,.2f}"


# -- the precomputed signal provider --------------------------------------------------------------

#: first-reason codes of the bars the vector pre-screen rules out, as ``signals._decide`` names them
_PRE_REASONS: tuple[str, ...] = (sig.HISTORY, sig.NO_CROSS, sig.RSI, sig.HTF_TREND, sig.ATR, sig.WICKINESS,
                                 sig.EDGE_R, sig.BAD_DATA)
_CANDIDATE = -1


@dataclass(eq=False)
class _SymbolSeries:
    """One symbol's precomputed view: the signal series plus, per strategy bar, the pre-screened
    direction and the first rejection reason of the bars ruled out."""

    symbol: str
    series: sig.SignalSeries
    close_ms: np.ndarray  # close time of each strategy bar (open + interval)
    candidate: np.ndarray  # int8 +1 long / -1 short / 0 ruled out
    pre_reason: np.ndarray  # int8 index into _PRE_REASONS, or _CANDIDATE


def prescreen(s: sig.SignalSeries, settings: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vector pre-screen of every bar: ``(candidate, first_reason)``.

    ``candidate`` is +1/-1 where every rule that does not depend on the book, the funding rate or
    the clock passes (direction, RSI, HTF trend, ATR, wickiness, expected edge, finite features):
    :func:`signals.evaluate_at` can return a side only there, so a backtest wakes the engine only
    on those bars.  ``first_reason`` is, for the other bars, the index in ``_PRE_REASONS`` of the
    reason the live evaluation names first (the one the engine counts); it assumes the spread and
    funding filters pass, which they do unless the data's spread or funding is extreme.  A test
    proves both equal the live evaluation bar by bar on real data.
    """
    n = len(s)
    ltf = s.ltf
    idx = np.arange(n)
    history = (np.minimum(idx + 1, s.ltf_window) < sig.MIN_LTF_BARS) | (
        np.minimum(s.htf_index + 1, s.htf_window) < sig.MIN_HTF_BARS)
    direction = s.candidates(settings)  # direction, RSI and HTF trend
    fast, fast_prev = s.ema_fast[0], s.ema_fast[1]
    slow, slow_prev = s.ema_slow
    trend = sig._compare_arrays(fast, slow)
    crossed = (trend != 0) & (sig._compare_arrays(fast_prev, slow_prev) != trend)
    align = bool(getattr(settings, "allow_trend_align", True))
    pad = float(getattr(settings, "align_rsi_pad", 1.5)) if align else 0.0
    moving = np.where(crossed | (align & (trend != 0)), trend, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rsi_ok = np.where(moving > 0, s.rsi > float(getattr(settings, "rsi_buy_min", 51.0)) - pad,
                          s.rsi < float(getattr(settings, "rsi_sell_max", 49.0)) + pad)
        h = np.maximum(s.htf_index, 0)
        htf_now, htf_back = s.htf_ema[0][h], s.htf_ema[1][h]
        slope = (htf_now - htf_back) / htf_back
        adx_now, adx_back = s.adx
        edge = np.abs(slope) * 20.0 * (0.5 + np.maximum(adx_now - 20.0, 0.0) / 50.0)
        span = ltf.high - ltf.low
        wick = np.where(span > 0, np.maximum(ltf.high - np.maximum(ltf.open, ltf.close),
                                             np.minimum(ltf.open, ltf.close) - ltf.low) / np.where(span > 0, span, 1),
                        0.0)
        atr_ok = s.atr > 0
        wick_ok = ~(wick > float(getattr(settings, "wickiness_max", 0.985)))
        edge_ok = ~(edge < float(getattr(settings, "min_edge_r", 0.08)))
        finite = np.isfinite(np.stack([adx_now, s.atr / ltf.close, slope, s.rsi, adx_now - adx_back,
                                       (fast - s.ema_fast[2]) / s.ema_fast[2]])).all(axis=0)
    # the live order of the reasons, lowest priority first (a later assignment wins)
    first = np.full(n, _CANDIDATE, dtype=np.int8)
    for failed, code in ((~finite, sig.BAD_DATA), (~edge_ok, sig.EDGE_R), (~wick_ok, sig.WICKINESS),
                         (~atr_ok, sig.ATR), ((moving != 0) & rsi_ok & (direction == 0), sig.HTF_TREND),
                         ((moving != 0) & ~rsi_ok, sig.RSI), (moving == 0, sig.NO_CROSS), (history, sig.HISTORY)):
        first[failed] = _PRE_REASONS.index(code)
    candidate = np.where(first == _CANDIDATE, direction, 0).astype(np.int8)
    return candidate, first


class PrecomputedProvider:
    """A :class:`~mraster_tui.engine.provider.SignalProvider` backed by precomputed indicator
    series (``signals.precompute``), equal to the live provider's evaluation bar by bar.

    It serves the backtest driver's scan times (``scan_ms``).  Per scan it evaluates, with
    ``signals.evaluate_at`` (the live rules function on the precomputed window values), only the
    symbols whose bar passed the pre-screen; the book, mark price and funding rate come from the
    venue (the simulated exchange) as the live path reads them, and the 24h quote volume is the
    venue ticker's.  Universe: the data's symbols minus ``exclude_symbols`` with at least
    ``min_quote_vol_usdt`` of 24h quote volume, ranked by it, the top ``universe_max`` (the include
    list is ignored: the data defines the market; rotation does not apply).
    """

    def __init__(self, names: Sequence[str], symbols: Mapping[str, _SymbolSeries], feed: Any,
                 scan_ms: np.ndarray, bar_idx: np.ndarray, candidate: np.ndarray, in_universe: np.ndarray,
                 quote_volume: np.ndarray, min_quote_vol: float) -> None:
        self.names = list(names)
        self.sym = dict(symbols)
        self.feed = feed
        self.scan_ms = scan_ms
        self.bar_idx = bar_idx
        self.candidate = candidate
        self.in_universe = in_universe
        self.quote_volume = quote_volume
        self.min_qv = min_quote_vol or 1.0
        self.signal_bars: dict[str, int] = {}  # symbol -> bar index of its last evaluated signal
        # per scan, the pre-screened symbols of the universe: _cols[_bounds[j]:_bounds[j + 1]]
        rows, cols = np.nonzero((candidate != 0) & in_universe)
        self._cols: list[int] = cols.tolist()
        self._bounds: list[int] = np.searchsorted(rows, np.arange(len(scan_ms) + 1)).tolist()
        self._scan_index = {t: j for j, t in enumerate(scan_ms.tolist())}
        self._universe: tuple[bytes, tuple[str, ...]] = (b"", ())
        self._rules: tuple[Any, Any] = (None, None)  # (settings, their sig.RuleParams)

    def candidates(self, j: int) -> list[int]:
        """Indices (into ``names``) of the universe's symbols whose bar at scan ``j`` passed the
        pre-screen, held or not."""
        return self._cols[self._bounds[j]:self._bounds[j + 1]]

    def wake(self, j: int, held: Any) -> bool:
        """Whether scan ``j`` has a symbol, not ``held``, that may signal (else a cycle would
        change nothing: held symbols are not scanned)."""
        names = self.names
        return any(names[k] not in held for k in self.candidates(j))

    def _universe_at(self, j: int) -> tuple[str, ...]:
        key = self.in_universe[j].tobytes()  # the universe rarely changes from one scan to the next
        if key != self._universe[0]:
            self._universe = (key, tuple(self.names[k] for k in np.flatnonzero(self.in_universe[j])))
        return self._universe[1]

    def _rule_params(self, settings: Any) -> Any:
        if self._rules[0] is not settings:
            self._rules = (settings, sig.RuleParams.of(settings))
        return self._rules[1]

    async def scan(self, ctx: Any, now_ms: int) -> ScanResult:
        j = self._scan_index.get(now_ms)
        if j is None:
            raise BacktestError(f"no precomputed scan at {_iso(now_ms)}")
        universe = self._universe_at(j)
        wanted = [k for k in self.candidates(j) if self.names[k] not in ctx.held]
        out: dict[str, SymbolScan] = {}
        if wanted:
            paper = ctx.exchange
            paper.sync()  # what book_tickers() does first; then only the books needed are read
            sim = paper.sim
            rules = self._rule_params(ctx.settings)
            bars = self.bar_idx[j]
            for k in wanted:
                s = self.names[k]
                i = int(bars[k])
                rate = self.feed.next_funding(s, now_ms)[1]
                if rate is None:
                    rate = sim.funding_rate if sim.funding_rate is not None else ZERO
                book = sim.book_ticker(s)
                sr = sig.evaluate_at(self.sym[s].series, i, book, float(rate), rules,
                                     qv_score=min(2.5, float(self.quote_volume[j, k]) / self.min_qv), now_ms=now_ms)
                self.signal_bars[s] = i
                out[s] = SymbolScan(s, sr, book, sim.mark_price(s), sr.atr, 0, True)
        return ScanResult(now_ms, universe, out, {}, 0)


# -- the run --------------------------------------------------------------------------------------

class _Collector:
    """The engine's event sink during a backtest: keeps what the report needs, drops the rest."""

    def __init__(self) -> None:
        self.opened: dict[int, Any] = {}  # trade_no -> LiveTrade
        self.signal_bar: dict[int, tuple[str, int]] = {}  # trade_no -> (symbol, bar index)
        self.closed: list[Any] = []  # ledger.ClosedTrade, in close order
        self.rejected: dict[str, int] = {}
        self.cycles = 0
        self.errors: list[str] = []
        self.provider: PrecomputedProvider | None = None

    def emit(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.CYCLE:
            self.cycles += 1
            for k, n in event.data.get("rejected", {}).items():
                self.rejected[k] = self.rejected.get(k, 0) + n
        elif kind is EventKind.POSITION_OPENED:
            t = event.data["trade"]
            self.opened[t.trade_no] = t
            if self.provider is not None and t.symbol in self.provider.signal_bars:
                self.signal_bar[t.trade_no] = (t.symbol, self.provider.signal_bars[t.symbol])
        elif kind is EventKind.POSITION_CLOSED:
            self.closed.append(event.data["trade"])
        elif kind is EventKind.ERROR or (kind is EventKind.BREAKER and event.level == "WARNING"):
            self.errors.append(f"{_iso(event.ts)} {event.message}")


@dataclass(frozen=True, slots=True)
class _Window:
    start_ms: int  # first scan boundary (a candle close)
    end_ms: int  # last boundary; positions still open are closed here
    step_ms: int
    delay_ms: int

    @property
    def scans(self) -> int:
        return (self.end_ms - self.start_ms) // self.step_ms

    def scan_time(self, j: int) -> int:
        return self.start_ms + j * self.step_ms + self.delay_ms


def _strategy_candles(d: SymbolData, interval: str, htf_interval: str) -> tuple[Candles, Candles]:
    ltf = d.ltf if d.ltf.interval == interval else resample(d.ltf, interval).closed_only()
    htf = d.htf if d.htf is not None else resample(ltf, htf_interval).closed_only()
    return ltf, htf


def _window(series: Mapping[str, _SymbolSeries], feed: Any, settings: Any, from_ms: int | None,
            to_ms: int | None) -> _Window:
    step = interval_ms(str(settings.interval))
    if from_ms is None:  # the first close at which every symbol has a full live window
        from_ms = max(int(s.close_ms[min(s.series.ltf_window, len(s.series)) - 1]) for s in series.values())
    start = max(int(from_ms), int(feed.start_ms))
    start = -(-start // step) * step
    end = int(feed.end_ms) if to_ms is None else min(int(to_ms), int(feed.end_ms))
    end -= end % step
    if end - start < step:
        raise BacktestError(f"nothing to trade between {_iso(start)} and {_iso(max(end, start))} "
                            f"(data {_iso(feed.start_ms)} .. {_iso(feed.end_ms)})")
    return _Window(start, end, step, int(round(float(getattr(settings, "scan_delay_sec", 1.0)) * 1000)))


def _quote_volume_24h(d: SymbolData, scan_ms: np.ndarray, feed_start: int) -> np.ndarray:
    """The venue ticker's 24h quote volume at each scan time, computed like the replay feed does
    (base candles opening in ``[t - 24h, t)``, rounded to cents)."""
    c = d.ltf
    q = d.quote_volume if d.quote_volume is not None else c.volume * c.close
    cum = np.r_[0.0, np.cumsum(q)]
    i0 = np.searchsorted(c.open_time, np.maximum(scan_ms - DAY_MS, feed_start), side="left")
    i1 = np.searchsorted(c.open_time, scan_ms, side="left")
    return np.round(cum[np.maximum(i0, i1)] - cum[i0], 2)


def _universe_mask(qv: np.ndarray, symbols: Sequence[str], settings: Any) -> np.ndarray:
    """(scans, symbols) bool: scanned by the provider's universe rule at each scan."""
    excluded = set(getattr(settings, "exclude_symbols", ()))
    ok = qv >= float(getattr(settings, "min_quote_vol_usdt", 0.0))
    ok[:, [i for i, s in enumerate(symbols) if s in excluded]] = False
    top = int(getattr(settings, "universe_max", 1000))
    if top < len(symbols):  # rank by volume (ties by name, the symbols are sorted) and keep the top
        order = np.argsort(np.where(ok, -qv, np.inf), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(len(symbols))[None, :].repeat(len(qv), 0), axis=1)
        ok &= rank < top
    return ok


def _can_enter(engine: Engine) -> bool:
    """Whether a scan cycle could open a position now (else it would only count rejections)."""
    st = engine.ledger.state
    s = engine.settings
    return (engine.breaker.active or int(s.max_open_per_symbol) < 1
            or int(s.max_open_global) - len(st.live) - len(st.pending) > 0)


def _count_full(engine: Engine, provider: PrecomputedProvider, j: int, now_ms: int, out: dict[str, int]) -> None:
    """Count what a scan cycle at full capacity would count for the pre-screened candidates: a
    symbol in its failure cooldown as ``fail_cooldown``, the others as ``max_open_global``
    (the engine's order of checks; the spread and funding filters are assumed to pass, as in
    :func:`prescreen`)."""
    st = engine.ledger.state
    held = st.live.keys() | st.pending.keys()
    for k in provider.candidates(j):
        sym = provider.names[k]
        if sym in held:
            continue
        code = "fail_cooldown" if st.fail_until.get(sym, 0) > now_ms else "max_open_global"
        out[code] = out.get(code, 0) + 1


class _FastTPGate:
    """Skips FastTP passes that cannot matter.  A pass at scan ``j`` can move a stop only when a
    held trade is at least ``fasttp_min_r`` in profit at ``j`` and the one-scan mid return into
    ``j`` is adverse beyond ``fast_tp_ret1`` / ``fast_tp_ret3`` (the pass's 60 s / 180 s returns
    both reach back to the previous scan's sample); the sample taken at ``j`` matters only for such
    a move at ``j + 1``.  Both conditions are checked on bounds of the mid at each scan instant:
    the price path from the candle's open toward its first extreme (the scan is ``scan_delay``
    into the candle), widened by the half spread and a tick, so a needed pass is never skipped."""

    def __init__(self, feed: Any, scan_ms: np.ndarray, settings: Any) -> None:
        self.feed = feed
        self.scan_ms = scan_ms
        self.min_r = float(getattr(settings, "fasttp_min_r", 0.25))
        self.ret = max(float(getattr(settings, "fast_tp_ret1", -0.001)),
                       float(getattr(settings, "fast_tp_ret3", -0.002)))
        self.third = feed.base_ms / 3.0
        self._mid: dict[tuple[str, int], tuple[float, float]] = {}

    def mid_bounds(self, symbol: str, j: int) -> tuple[float, float]:
        key = (symbol, j)
        got = self._mid.get(key)
        if got is None:
            t = int(self.scan_ms[j])
            k = self.feed.index_at(symbol, t)
            _, o, h, lo, _, _, spread, _ = self.feed.candle(symbol, k)
            frac = (t - self.feed.candle(symbol, k)[0]) / self.third
            p_lo, p_hi = (o - frac * (o - lo), o + frac * (h - o)) if 0 <= frac <= 1 else (lo, h)
            tick = float(self.feed.symbol_info(symbol).filters.tick_size)
            hs = spread / 2.0 + 1e-6
            got = self._mid[key] = (p_lo * (1 - hs) - tick, p_hi * (1 + hs) + tick)
            if len(self._mid) > 4096:
                self._mid.clear()
        return got

    def _possible(self, trade: Any, j: int) -> bool:
        if j <= 0 or j >= len(self.scan_ms):
            return j > 0  # past the end: cannot tell cheaply, so do not skip
        risk = float(trade.risk_per_unit)
        if risk <= 0:
            return True
        entry = float(trade.entry)
        lo, hi = self.mid_bounds(trade.symbol, j)
        plo, phi = self.mid_bounds(trade.symbol, j - 1)
        if trade.side == "LONG":
            return (hi - entry) / risk >= self.min_r and lo / phi - 1.0 <= self.ret
        return (entry - lo) / risk >= self.min_r and hi / plo - 1.0 >= -self.ret

    def wanted(self, j: int, live: Mapping[str, Any]) -> bool:
        return any(self._possible(t, j) or self._possible(t, j + 1) for t in live.values())


def run_backtest(dataset: Dataset, settings: Any, *, seed: int = 0, from_ms: int | None = None,
                 to_ms: int | None = None, balance: float | None = None, every_candle: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> BacktestReport:
    """Run the engine over ``dataset`` (see the module docstring) and return the report."""
    return asyncio.run(_run(dataset, settings, seed=seed, from_ms=from_ms, to_ms=to_ms, balance=balance,
                            every_candle=every_candle, progress=progress))


async def _run(dataset: Dataset, settings: Any, *, seed: int, from_ms: int | None, to_ms: int | None,
               balance: float | None, every_candle: bool,
               progress: Callable[[int, int], None] | None) -> BacktestReport:
    wall0 = time.perf_counter()  # the speed counts the indicator precompute and pre-screen too
    interval, htf_interval = str(settings.interval), str(settings.htf_interval)
    step = interval_ms(interval)
    if step % interval_ms(dataset.interval):
        raise BacktestError(f"the data's {dataset.interval} candles cannot drive a {interval} strategy "
                            "(ASTER_INTERVAL must be a multiple of the data interval)")
    if interval_ms(htf_interval) <= step:
        raise BacktestError(f"ASTER_HTF_INTERVAL {htf_interval} must be longer than ASTER_INTERVAL {interval}")
    klines = int(settings.klines)
    ltf_window = klines - 1  # the live path fetches `klines` candles, the last one still forming
    htf_window = int(getattr(settings, "htf_klines", klines)) - 1
    names = sorted(dataset.symbols)
    feed = ReplayMarket({s: dataset.symbols[s].ltf for s in names},
                        {s: dataset.symbols[s].funding for s in names if dataset.symbols[s].funding},
                        quote_volume={s: d.quote_volume for s, d in dataset.symbols.items()
                                      if d.quote_volume is not None})
    series: dict[str, _SymbolSeries] = {}
    for s in names:
        ltf, htf = _strategy_candles(dataset.symbols[s], interval, htf_interval)
        try:
            ss = sig.precompute(ltf, htf, settings, ltf_window=ltf_window, htf_window=htf_window)
        except ValueError as exc:
            raise BacktestError(f"{s}: {exc}") from None
        series[s] = _SymbolSeries(s, ss, ss.ltf.open_time + step, *prescreen(ss, settings))
    win = _window(series, feed, settings, from_ms, to_ms)
    n_scans = win.scans
    scan_ms = win.start_ms + np.arange(n_scans, dtype=np.int64) * step + win.delay_ms
    qv = np.column_stack([_quote_volume_24h(dataset.symbols[s], scan_ms, feed.start_ms) for s in names])
    in_universe = _universe_mask(qv, names, settings)
    bar_idx = np.column_stack([np.searchsorted(series[s].close_ms, scan_ms, side="right") - 1 for s in names])
    cand = np.column_stack([np.where(bar_idx[:, k] >= 0, series[s].candidate[np.maximum(bar_idx[:, k], 0)], 0)
                            for k, s in enumerate(names)])

    start_balance = Decimal(repr(float(balance))) if balance is not None else None
    opts = sim_options(settings)
    if start_balance is not None:
        opts["balance"] = start_balance
    sim = SimExchange(feed, start_ms=win.start_ms, **opts)
    start_wallet = sim.balance().wallet_balance
    clock = SimClock(win.start_ms)
    paper = PaperExchange(sim, clock=clock)
    provider = PrecomputedProvider(names, series, feed, scan_ms, bar_idx, cand, in_universe, qv,
                                   float(getattr(settings, "min_quote_vol_usdt", 0.0)))
    collector = _Collector()
    collector.provider = provider
    policy = BanditPolicy(settings, dim=len(sig.FEATURE_NAMES), seed=int(seed))
    fasttp_on = bool(getattr(settings, "fast_tp_enabled", True))
    fasttp_gate = _FastTPGate(feed, scan_ms, settings)
    extra_rejections: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mraster-backtest-") as tmp:
        engine = Engine(settings, exchange=paper, clock=clock, sink=LevelFilterSink(collector, "INFO"),
                        state_path=Path(tmp) / "state.json", decision_log_path=None, mode="BACKTEST",
                        policy=policy, provider=provider, autosave=False)
        try:
            await engine.start()
            live, pending = engine.ledger.state.live, engine.ledger.state.pending
            for j in range(n_scans):
                t = int(scan_ms[j])
                clock.set(max(t, clock.now_ms()))
                events = paper.sync()
                if every_candle or events:
                    await engine.guard_pass()
                if every_candle:
                    await engine.run_cycle()
                elif provider.wake(j, live.keys() | pending.keys()):
                    if _can_enter(engine):
                        await engine.run_cycle()
                    else:
                        _count_full(engine, provider, j, t, extra_rejections)
                if fasttp_on and live and (every_candle or fasttp_gate.wanted(j, live)):
                    await engine.fasttp_pass()
                if progress is not None and (j & 1023) == 0:
                    progress(j, n_scans)
            clock.set(max(win.end_ms, clock.now_ms()))
            paper.sync()
            await engine.guard_pass()
            for trade in list(live.values()):
                await engine.executor.close_position(trade, "end of the backtest", level="INFO")
            await engine.guard_pass()
            ds = engine.ledger.state.decision_stats  # its rejection counts cover the cycles run only
            decisions = {k: ds.get(k, 0) for k in ("taken", "skipped")} | {
                "taken_by_bucket": dict(sorted(ds.get("taken_by_bucket", {}).items()))}
            unclosed = sorted(live)
            await engine.shutdown()
        except (VenueError, GuardError, StateError) as exc:
            raise BacktestError(f"the engine failed at {_iso(clock.now_ms())}: {exc}") from None
    elapsed = time.perf_counter() - wall0
    if progress is not None:
        progress(n_scans, n_scans)
    for k, n in extra_rejections.items():
        collector.rejected[k] = collector.rejected.get(k, 0) + n
    return _report(dataset, settings, series, feed, win, scan_ms, bar_idx, in_universe, collector, sim,
                   decisions, unclosed, int(seed), elapsed, names, start_wallet)


def _report(dataset: Dataset, settings: Any, series: Mapping[str, _SymbolSeries], feed: Any, win: _Window,
            scan_ms: np.ndarray, bar_idx: np.ndarray, in_universe: np.ndarray, col: _Collector, sim: SimExchange,
            decisions: dict[str, Any], unclosed: list[str], seed: int, elapsed: float,
            names: list[str], start_balance: Decimal) -> BacktestReport:
    step = win.step_ms
    trades: list[TradeRecord] = []
    for c in col.closed:
        opened = col.opened.get(c.trade_no)
        sym_bar = col.signal_bar.get(c.trade_no)
        signal_close = (int(series[c.symbol].series.ltf.open_time[sym_bar[1]]) + step - 1) if sym_bar else -1
        trades.append(TradeRecord(
            trade_no=c.trade_no, symbol=c.symbol, side=c.side, qty=c.qty, signal_close_ms=signal_close,
            entry_ms=c.opened_at, entry=c.entry, exit_ms=c.closed_at, exit=c.exit, sl_initial=c.sl_initial,
            gross_pnl=c.gross_pnl, fees=c.fees, funding=c.funding, pnl=c.pnl, r=c.r, exit_reason=c.exit_reason,
            bucket=c.bucket if c.bucket is not None else getattr(opened, "bucket", None)))
    trades.sort(key=lambda t: (t.entry_ms, t.trade_no))

    # rejections: the engine's counts for the symbols it scanned, plus the pre-checked bars
    scanned = in_universe & (bar_idx >= 0)
    for t in trades:  # a held symbol is not scanned
        k = names.index(t.symbol)
        scanned[(scan_ms > t.entry_ms) & (scan_ms < t.exit_ms), k] = False
    rejections = dict(col.rejected)
    for k, s in enumerate(names):
        rows = np.flatnonzero(scanned[:, k])
        codes = series[s].pre_reason[bar_idx[rows, k]]
        counts = np.bincount(codes[codes >= 0], minlength=len(_PRE_REASONS))
        for code, n in zip(_PRE_REASONS, counts):
            if n:
                rejections[code] = rejections.get(code, 0) + int(n)

    grid = win.start_ms + np.arange(win.scans + 1, dtype=np.int64) * step
    closes = {}
    for s in names:
        ss = series[s]
        i = np.searchsorted(ss.close_ms, grid, side="left")
        ok = (i < len(ss.close_ms)) & (ss.close_ms[np.minimum(i, len(ss.close_ms) - 1)] == grid)
        closes[s] = np.where(ok, ss.series.ltf.close[np.minimum(i, len(ss.close_ms) - 1)], np.nan)
    curve = equity_curve(trades, grid, closes, float(start_balance))
    dd, dd_pct = max_drawdown(curve.equity)
    sharpe, sortino = sharpe_sortino(daily_returns(curve, float(start_balance)))
    per_symbol = {s: group_stats(t for t in trades if t.symbol == s) for s in names}
    buckets: dict[str, int] = {}
    for t in trades:
        buckets[t.bucket or "-"] = buckets.get(t.bucket or "-", 0) + 1
    notes = list(dataset.skipped)
    notes += [f"still open at the end (could not be closed): {', '.join(unclosed)}"] if unclosed else []
    notes += col.errors[:20]
    return BacktestReport(
        symbols=tuple(names), interval=str(settings.interval), htf_interval=str(settings.htf_interval),
        start_ms=win.start_ms, end_ms=win.end_ms, seed=seed, start_balance=start_balance,
        end_balance=sim.balance().wallet_balance, trades=tuple(trades), totals=group_stats(trades),
        per_symbol=per_symbol, max_drawdown=dd, max_drawdown_pct=dd_pct, sharpe=sharpe, sortino=sortino,
        exposure=exposure(trades, win.start_ms, win.end_ms), rejections=dict(sorted(rejections.items())),
        buckets=dict(sorted(buckets.items())), decisions=decisions, curve=curve,
        candle_steps=win.scans * len(names), cycles=col.cycles, elapsed_s=elapsed,
        settings=settings.as_env_json() if hasattr(settings, "as_env_json") else {}, notes=tuple(notes))

