"""Entry signals: a pure function from closed candles, book, funding and settings to a decision
with every reason it was refused, the policy's feature vector, ATR, stop and take-profit.

Rules (on closed candles only; a forming candle is dropped before anything is computed)
--------------------------------------------------------------------------------------
* Indicators: EMA(21) and EMA(55) of the low-timeframe (LTF) close, RSI(14), ATR(14), ADX(14) on
  the LTF; EMA(55) of the higher-timeframe (HTF) close.  TA-Lib definitions
  (:mod:`mraster_tui.engine.indicators`) computed over the candles given (the last ``klines``).
* Direction: *long* when EMA21 crosses above EMA55 on the last closed bar (at or below on the bar
  before, above now), or, with ``allow_trend_align``, whenever EMA21 is above EMA55 (a trend
  continuation).  *Short* mirrors it.  EMAs within ``EQUAL_RTOL`` of each other count as equal.
* The direction must be confirmed by RSI (long: RSI > ``rsi_buy_min``, or > ``rsi_buy_min -
  align_rsi_pad`` with trend-align on, since a crossing trend is also a continuation; short:
  RSI < ``rsi_sell_max`` (+ pad)) and by the HTF trend: HTF EMA55 rising over the last 4 HTF bars
  for a long, falling for a short.
* Filters, each with its own reason: bid/ask spread ``(ask - bid) / mid`` above
  ``max(spread_bps_max, 0.5 * ATR / close)`` (a fraction, not bps); wickiness (larger wick /
  range of the last closed candle) above ``wickiness_max``; expected edge below ``min_edge_r``;
  funding (when enabled) above ``funding_max_long`` for a long or below ``-funding_max_short``
  for a short; too little history; stale data; no book; a zero ATR (no stop distance).
* Every failing reason is recorded, not just the first; ``side`` is set only when there is none.

Entry, stop, take-profit: the entry reference is the ask for a long and the bid for a short (the
mid when there is no direction, the last close when there is no book); the stop sits
``sl_atr_mult`` ATRs and the take-profit ``tp_atr_mult`` ATRs away from it.  They are Decimals,
not yet rounded to the tick (:func:`mraster_tui.engine.sizing.round_price` does that).

Expected edge (in R)
--------------------
``edge_r = |slope_htf| * 20 * (0.5 + max(ADX - 20, 0) / 50)`` with
``slope_htf = (EMA55_htf[-1] - EMA55_htf[-5]) / EMA55_htf[-5]``: the original bot's heuristic,
kept as the baseline.  It grows with the strength of the higher-timeframe trend (4-bar relative
slope; 0.5 % over 4 HTF bars gives 0.05 R at ADX <= 20) and with trend quality above ADX 20
(ADX 45 doubles it).  It is a ranking heuristic, not a calibrated expectation: the policy's
alpha model learns the calibrated one from outcomes.

Features (raw; the policy standardises them), in ``FEATURE_NAMES`` order: ``adx``; ``atr_pct`` =
ATR / last close (a fraction); ``slope_htf``; ``rsi``; ``funding`` (lastFundingRate, 0 when
unknown); ``qv_score`` (given by the caller); ``trend`` = sign(EMA21 - EMA55); ``adx_delta`` =
ADX[-1] - ADX[-15]; ``ema_slope_ltf`` = (EMA21[-1] - EMA21[-5]) / EMA21[-5]; ``spread`` (a
fraction, NaN without a book).  A non-finite feature (other than the spread of a missing book)
rejects the signal with reason ``bad_data``.

Backtests: :func:`precompute` + :func:`evaluate_at` give, for bar ``i`` of a full series, exactly
what :func:`evaluate_signal` gives on the window of candles the live path would see then (the
rolling indicators emulate each window's own seeding, see ``indicators.rolling_*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from mraster_tui.engine import indicators as ind
from mraster_tui.engine.types import BookTicker, Candles, interval_ms

__all__ = [
    "ADX_DELTA_BARS", "FEATURE_NAMES", "MIN_HTF_BARS", "MIN_LTF_BARS", "REASON_CODES", "Reason",
    "RuleParams", "SignalResult", "SignalSeries", "evaluate_at", "evaluate_signal", "expected_edge_r", "precompute",
    "wickiness",
]

EMA_FAST, EMA_SLOW, RSI_PERIOD, ATR_PERIOD, ADX_PERIOD = 21, 55, 14, 14, 14
HTF_EMA = 55
HTF_SLOPE_BARS = 4  # HTF trend: EMA55 now vs 4 HTF bars ago
LTF_SLOPE_BARS = 4  # ema_slope_ltf: EMA21 now vs 4 bars ago
ADX_DELTA_BARS = 14  # adx_delta: ADX now minus ADX 14 bars ago
MIN_LTF_BARS = 60  # closed LTF candles needed: EMA55 warm-up + the cross bar, with a margin
MIN_HTF_BARS = 60  # closed HTF candles needed: EMA55 warm-up + the 4-bar slope, with a margin
EQUAL_RTOL = 1e-12  # EMAs (and HTF EMA moves) closer than this, relatively, count as equal

FEATURE_NAMES: tuple[str, ...] = (
    "adx", "atr_pct", "slope_htf", "rsi", "funding", "qv_score", "trend", "adx_delta",
    "ema_slope_ltf", "spread",
)

# Reason codes, stable strings (logs, decision records and backtest reports count them).
HISTORY, STALE, BAD_DATA, NO_BOOK, BAD_BOOK = "history", "stale", "bad_data", "no_book", "bad_book"
NO_CROSS, RSI, HTF_TREND = "no_cross", "rsi", "htf_trend"
SPREAD, WICKINESS, EDGE_R, FUNDING, ATR = "spread", "wickiness", "edge_r", "funding", "atr"
REASON_CODES: tuple[str, ...] = (
    HISTORY, STALE, BAD_DATA, NO_BOOK, BAD_BOOK, NO_CROSS, RSI, HTF_TREND, SPREAD, WICKINESS,
    EDGE_R, FUNDING, ATR,
)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a signal was refused: a stable ``code`` and a human ``detail``."""

    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True, slots=True)
class SignalResult:
    """The outcome of one evaluation.

    ``side`` is ``"long"``/``"short"`` when every rule passed, else None with ``reasons`` saying
    why.  ``direction`` is the EMA direction found before the filters (None when there is none)
    and ``entry_kind`` tells ``"cross"`` from ``"trend"`` (continuation).  ``candle_time`` is the
    open time of the last closed LTF candle used (one signal per candle: use it to deduplicate).
    """

    side: str | None
    reasons: tuple[Reason, ...]
    features: np.ndarray = field(compare=False, repr=False)
    direction: str | None = None
    entry_kind: str | None = None
    atr: float = math.nan
    entry_ref: Decimal | None = None
    stop: Decimal | None = None
    take_profit: Decimal | None = None
    expected_edge_r: float = math.nan
    candle_time: int | None = None
    spread: float | None = None
    feature_names: tuple[str, ...] = FEATURE_NAMES

    @property
    def ok(self) -> bool:
        return self.side is not None

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def feature(self, name: str) -> float:
        return float(self.features[self.feature_names.index(name)])

    def summary(self) -> str:
        """One line for logs: the side, or every reason."""
        if self.side:
            kind = f" ({self.entry_kind})" if self.entry_kind else ""
            return f"{self.side}{kind} entry {self.entry_ref} stop {self.stop} tp {self.take_profit}"
        return "; ".join(str(r) for r in self.reasons)


# --------------------------------------------------------------------------- shared rule engine

@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything the rules read, from whichever computation (live window or precomputed)."""

    ltf_count: int
    htf_count: int
    last_open_time: int | None  # last closed LTF candle
    htf_last_open_time: int | None
    ltf_interval_ms: int
    htf_interval_ms: int
    candle: tuple[float, float, float, float] | None  # open, high, low, close of the last bar
    ema_fast: tuple[float, float, float] = (math.nan,) * 3  # now, 1 bar ago, LTF_SLOPE_BARS ago
    ema_slow: tuple[float, float] = (math.nan,) * 2  # now, 1 bar ago
    rsi: float = math.nan
    atr: float = math.nan
    adx: tuple[float, float] = (math.nan,) * 2  # now, ADX_DELTA_BARS ago
    htf_ema: tuple[float, float] = (math.nan,) * 2  # now, HTF_SLOPE_BARS ago
    bad_data: str | None = None  # why the candles cannot be used


def wickiness(open_: float, high: float, low: float, close: float) -> float:
    """Larger wick / range of one candle; 0 for a candle without range."""
    span = high - low
    if span <= 0:
        return 0.0
    return max(high - max(open_, close), min(open_, close) - low) / span


def expected_edge_r(slope_htf: float, adx: float) -> float:
    """The expected-edge estimator (see the module docstring)."""
    return abs(slope_htf) * 20.0 * (0.5 + max(adx - 20.0, 0.0) / 50.0)


def _compare(a: float, b: float) -> int:
    """Sign of ``a - b``, 0 when they agree to ``EQUAL_RTOL``."""
    if abs(a - b) <= EQUAL_RTOL * max(abs(a), abs(b)):
        return 0
    return 1 if a > b else -1


def _setting(settings: Any, name: str, default: Any) -> Any:
    return getattr(settings, name, default)


@dataclass(frozen=True, slots=True)
class RuleParams:
    """The settings the rules read, resolved once (a missing one takes its default).

    :func:`evaluate_signal` and :func:`evaluate_at` accept one in place of the settings; a
    caller evaluating many bars with the same settings (a backtest) builds it once with
    :meth:`of` instead of paying the settings lookups on every evaluation."""

    max_data_age_sec: float
    allow_trend_align: bool
    align_rsi_pad: float
    rsi_buy_min: float
    rsi_sell_max: float
    spread_bps_max: float
    wickiness_max: float
    min_edge_r: float
    funding_filter_enabled: bool
    funding_max_long: float
    funding_max_short: float
    sl_atr_mult: float
    tp_atr_mult: float

    @classmethod
    def of(cls, settings: Any) -> "RuleParams":
        if isinstance(settings, cls):
            return settings
        return cls(
            max_data_age_sec=float(_setting(settings, "max_data_age_sec", 120.0)),
            allow_trend_align=bool(_setting(settings, "allow_trend_align", True)),
            align_rsi_pad=float(_setting(settings, "align_rsi_pad", 1.5)),
            rsi_buy_min=float(_setting(settings, "rsi_buy_min", 51.0)),
            rsi_sell_max=float(_setting(settings, "rsi_sell_max", 49.0)),
            spread_bps_max=float(_setting(settings, "spread_bps_max", 0.009)),
            wickiness_max=float(_setting(settings, "wickiness_max", 0.985)),
            min_edge_r=float(_setting(settings, "min_edge_r", 0.08)),
            funding_filter_enabled=bool(_setting(settings, "funding_filter_enabled", True)),
            funding_max_long=float(_setting(settings, "funding_max_long", 0.001)),
            funding_max_short=float(_setting(settings, "funding_max_short", 0.001)),
            sl_atr_mult=float(_setting(settings, "sl_atr_mult", 1.3)),
            tp_atr_mult=float(_setting(settings, "tp_atr_mult", 2.0)),
        )


def _nan_features() -> np.ndarray:
    features = np.full(len(FEATURE_NAMES), np.nan)
    features.setflags(write=False)
    return features


def _decide(snap: _Snapshot, book: BookTicker | None, funding_rate: float | None, settings: Any,
            qv_score: float, now_ms: int | None) -> SignalResult:
    rp = RuleParams.of(settings)
    reasons: list[Reason] = []

    def add(code: str, detail: str) -> None:
        reasons.append(Reason(code, detail))

    # -- data: history, sanity, staleness, book -----------------------------------------
    if snap.bad_data:
        add(BAD_DATA, snap.bad_data)
    if snap.ltf_count < MIN_LTF_BARS or snap.htf_count < MIN_HTF_BARS:
        add(HISTORY, f"{snap.ltf_count} closed LTF and {snap.htf_count} closed HTF candles, "
                     f"need {MIN_LTF_BARS} and {MIN_HTF_BARS}")
    if now_ms is not None:
        max_age = rp.max_data_age_sec * 1000.0
        for label, opened, span in (("LTF", snap.last_open_time, snap.ltf_interval_ms),
                                    ("HTF", snap.htf_last_open_time, snap.htf_interval_ms)):
            if opened is not None and now_ms - (opened + span) > max_age + span:
                add(STALE, f"last closed {label} candle closed {(now_ms - opened - span) / 1000:.0f} s "
                           f"ago (limit {(max_age + span) / 1000:.0f} s)")
        if book is not None and book.time and now_ms - book.time > max_age:
            add(STALE, f"book is {(now_ms - book.time) / 1000:.0f} s old (limit {max_age / 1000:.0f} s)")
    spread = mid = None
    if book is None:
        add(NO_BOOK, "no best bid/ask")
    elif not (0 < book.bid <= book.ask):
        add(BAD_BOOK, f"unusable book: bid {book.bid} ask {book.ask}")
    else:
        mid = book.mid
        spread = float((book.ask - book.bid) / mid)

    computed = snap.candle is not None and not snap.bad_data and HISTORY not in {r.code for r in reasons}
    if not computed:
        return SignalResult(None, tuple(reasons), _nan_features(), candle_time=snap.last_open_time, spread=spread)

    # -- direction and its confirmations --------------------------------------------------
    o, h, lo, c = snap.candle
    fast, fast_prev, fast_back = snap.ema_fast
    slow, slow_prev = snap.ema_slow
    trend = _compare(fast, slow)
    crossed = trend != 0 and _compare(fast_prev, slow_prev) != trend
    align = rp.allow_trend_align
    pad = rp.align_rsi_pad if align else 0.0
    direction = kind = None
    if trend and (crossed or align):
        direction = "long" if trend > 0 else "short"
        kind = "cross" if crossed else "trend"
    else:
        add(NO_CROSS, "EMA21 equals EMA55" if trend == 0 else
            f"no EMA21/EMA55 cross on the last closed bar (EMA21 {'above' if trend > 0 else 'below'}, "
            "trend-align off)")
    htf_now, htf_back = snap.htf_ema
    htf_trend = _compare(htf_now, htf_back)
    slope_htf = (htf_now - htf_back) / htf_back
    if direction == "long":
        limit = rp.rsi_buy_min - pad
        if not snap.rsi > limit:
            add(RSI, f"RSI {snap.rsi:.2f} <= {limit:g} for a long")
        if htf_trend <= 0:
            add(HTF_TREND, f"HTF EMA55 not rising (slope {slope_htf:+.5f} over {HTF_SLOPE_BARS} bars)")
    elif direction == "short":
        limit = rp.rsi_sell_max + pad
        if not snap.rsi < limit:
            add(RSI, f"RSI {snap.rsi:.2f} >= {limit:g} for a short")
        if htf_trend >= 0:
            add(HTF_TREND, f"HTF EMA55 not falling (slope {slope_htf:+.5f} over {HTF_SLOPE_BARS} bars)")

    # -- filters ---------------------------------------------------------------------------
    atr = snap.atr
    if not atr > 0:
        add(ATR, f"ATR is {atr:g}: no stop distance")
    if spread is not None:
        limit = max(rp.spread_bps_max, 0.5 * atr / c)
        if spread > limit:
            add(SPREAD, f"spread {spread:.5f} of mid > {limit:.5f}")
    wick = wickiness(o, h, lo, c)
    wick_max = rp.wickiness_max
    if wick > wick_max:
        add(WICKINESS, f"wickiness {wick:.3f} > {wick_max:g}")
    adx_now, adx_back = snap.adx
    edge = expected_edge_r(slope_htf, adx_now)
    min_edge = rp.min_edge_r
    if edge < min_edge:
        add(EDGE_R, f"expected edge {edge:.3f} R < {min_edge:g}")
    funding = 0.0 if funding_rate is None else float(funding_rate)
    if direction and rp.funding_filter_enabled:
        max_long = rp.funding_max_long
        max_short = rp.funding_max_short
        if funding_rate is None:
            add(FUNDING, "funding rate unknown")
        elif direction == "long" and funding > max_long:
            add(FUNDING, f"funding {funding:+.5f} > {max_long:g}: longs pay")
        elif direction == "short" and funding < -max_short:
            add(FUNDING, f"funding {funding:+.5f} < -{max_short:g}: shorts pay")

    # -- features, entry, brackets ------------------------------------------------------------
    values = [
        adx_now, atr / c, slope_htf, snap.rsi, funding, float(qv_score), float(trend),
        adx_now - adx_back, (fast - fast_back) / fast_back, math.nan if spread is None else spread,
    ]
    features = np.array(values)
    features.setflags(write=False)
    if not all(map(math.isfinite, values)):
        bad = [name for name, value in zip(FEATURE_NAMES, values)
               if not math.isfinite(value) and not (name == "spread" and spread is None)]
        if bad:
            add(BAD_DATA, f"non-finite features: {', '.join(bad)}")

    if book is not None and spread is not None:
        entry = book.ask if direction == "long" else book.bid if direction == "short" else mid
    else:
        entry = Decimal(repr(c))
    stop = take_profit = None
    if direction and atr > 0 and math.isfinite(atr):
        sign = Decimal(1) if direction == "long" else Decimal(-1)
        stop = entry - sign * Decimal(repr(rp.sl_atr_mult * atr))
        take_profit = entry + sign * Decimal(repr(rp.tp_atr_mult * atr))
        if stop <= 0 or take_profit <= 0:
            add(ATR, f"ATR {atr:g} puts the {'stop' if stop <= 0 else 'take-profit'} at or below 0")
    return SignalResult(
        side=direction if not reasons else None, reasons=tuple(reasons), features=features,
        direction=direction, entry_kind=kind, atr=atr, entry_ref=entry, stop=stop,
        take_profit=take_profit, expected_edge_r=edge, candle_time=snap.last_open_time, spread=spread,
    )


# --------------------------------------------------------------------------- live evaluation

def _closed(candles: Candles, now_ms: int | None) -> Candles:
    """Closed rows only: drop a row flagged as forming, and with ``now_ms`` a last row whose
    close time has not passed yet (whatever its flag says)."""
    candles = candles.closed_only()
    if now_ms is not None and len(candles) and int(candles.open_time[-1]) + interval_ms(candles.interval) > now_ms:
        candles = candles.slice(0, len(candles) - 1, last_closed=True)
    return candles


def _data_problem(candles: Candles, label: str) -> str | None:
    """A reason the candles cannot be used, or None."""
    if not len(candles):
        return None
    ohlc = np.stack([candles.open, candles.high, candles.low, candles.close])
    if not np.isfinite(ohlc).all():
        return f"{label} candles contain NaN or inf"
    if (ohlc <= 0).any() or (candles.high < candles.low).any() or (
            candles.high < np.maximum(candles.open, candles.close)).any() or (
            candles.low > np.minimum(candles.open, candles.close)).any():
        return f"{label} candles with non-positive prices or open/close outside [low, high]"
    if len(candles) > 1 and (np.diff(candles.open_time) <= 0).any():
        return f"{label} candle times are not strictly increasing"
    return None


def evaluate_signal(ltf: Candles, htf: Candles, book: BookTicker | None, funding_rate: float | None,
                    settings: Any, *, qv_score: float = 0.0, now_ms: int | None = None) -> SignalResult:
    """Evaluate the entry rules on the given candles (see the module docstring).

    ``ltf``/``htf``: the last ``klines`` candles of each timeframe, oldest first; a forming last
    candle is dropped.  ``funding_rate``: premiumIndex ``lastFundingRate`` (None when unknown).
    ``now_ms`` (venue time) enables the staleness checks; without it data age is not checked.
    """
    ltf, htf = _closed(ltf, now_ms), _closed(htf, now_ms)
    problem = _data_problem(ltf, "LTF") or _data_problem(htf, "HTF")
    base = dict(
        ltf_count=len(ltf), htf_count=len(htf),
        last_open_time=int(ltf.open_time[-1]) if len(ltf) else None,
        htf_last_open_time=int(htf.open_time[-1]) if len(htf) else None,
        ltf_interval_ms=interval_ms(ltf.interval), htf_interval_ms=interval_ms(htf.interval),
        bad_data=problem,
    )
    if problem or len(ltf) < MIN_LTF_BARS or len(htf) < MIN_HTF_BARS:
        return _decide(_Snapshot(candle=None, **base), book, funding_rate, settings, qv_score, now_ms)
    close = ltf.close
    fast = ind.ema(close, EMA_FAST)
    slow = ind.ema(close, EMA_SLOW)
    adx = ind.adx(ltf.high, ltf.low, close, ADX_PERIOD)
    htf_ema = ind.ema(htf.close, HTF_EMA)
    snap = _Snapshot(
        candle=(float(ltf.open[-1]), float(ltf.high[-1]), float(ltf.low[-1]), float(close[-1])),
        ema_fast=(float(fast[-1]), float(fast[-2]), float(fast[-1 - LTF_SLOPE_BARS])),
        ema_slow=(float(slow[-1]), float(slow[-2])),
        rsi=float(ind.rsi(close, RSI_PERIOD)[-1]),
        atr=float(ind.atr(ltf.high, ltf.low, close, ATR_PERIOD)[-1]),
        adx=(float(adx[-1]), float(adx[-1 - ADX_DELTA_BARS])),
        htf_ema=(float(htf_ema[-1]), float(htf_ema[-1 - HTF_SLOPE_BARS])),
        **base,
    )
    return _decide(snap, book, funding_rate, settings, qv_score, now_ms)


# --------------------------------------------------------------------------- backtest form

@dataclass(frozen=True, slots=True, eq=False)
class SignalSeries:
    """Indicator values of every bar's live window, precomputed by :func:`precompute`.

    Row ``i`` holds what :func:`evaluate_signal` computes on ``ltf[s:i+1]`` (``s = max(0,
    i - ltf_window + 1)``) and on the ``htf_window`` HTF candles closed by the close of bar ``i``.
    """

    ltf: Candles
    htf: Candles
    ltf_window: int
    htf_window: int
    htf_index: np.ndarray  # per LTF bar: index of the last HTF candle closed by its close, -1 if none
    ema_fast: np.ndarray  # (3, n): now, 1 bar ago, LTF_SLOPE_BARS ago
    ema_slow: np.ndarray  # (2, n)
    rsi: np.ndarray
    atr: np.ndarray
    adx: np.ndarray  # (2, n): now, ADX_DELTA_BARS ago
    htf_ema: np.ndarray  # (2, n_htf), per HTF window end: now, HTF_SLOPE_BARS ago

    def __len__(self) -> int:
        return len(self.ltf)

    def candidates(self, settings: Any) -> np.ndarray:
        """Per bar: +1/-1 where the EMA direction, RSI and HTF trend allow a long/short, else 0.

        A necessary condition: :func:`evaluate_at` can only return a side where this is
        non-zero, so a backtest may skip the other bars (their reasons are then not counted).
        """
        fast, fast_prev = self.ema_fast[0], self.ema_fast[1]
        slow, slow_prev = self.ema_slow
        trend = _compare_arrays(fast, slow)
        crossed = (trend != 0) & (_compare_arrays(fast_prev, slow_prev) != trend)
        align = bool(_setting(settings, "allow_trend_align", True))
        pad = float(_setting(settings, "align_rsi_pad", 1.5)) if align else 0.0
        moving = crossed | (align & (trend != 0))
        h = self.htf_index
        htf_trend = np.zeros(len(self), dtype=np.int8)
        has_htf = h >= 0
        htf_trend[has_htf] = _compare_arrays(self.htf_ema[0][h[has_htf]], self.htf_ema[1][h[has_htf]])
        with np.errstate(invalid="ignore"):
            long_ = moving & (trend > 0) & (self.rsi > float(_setting(settings, "rsi_buy_min", 51.0)) - pad) & (
                htf_trend > 0)
            short = moving & (trend < 0) & (self.rsi < float(_setting(settings, "rsi_sell_max", 49.0)) + pad) & (
                htf_trend < 0)
        return long_.astype(np.int8) - short.astype(np.int8)


def _compare_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vector form of :func:`_compare` (NaN compares as 0)."""
    with np.errstate(invalid="ignore"):
        out = np.sign(a - b).astype(np.int8)
        out[~(np.abs(a - b) > EQUAL_RTOL * np.maximum(np.abs(a), np.abs(b)))] = 0
    return out


def precompute(ltf: Candles, htf: Candles, settings: Any, *, ltf_window: int | None = None,
               htf_window: int | None = None) -> SignalSeries:
    """Indicator values of every bar's live window, for :func:`evaluate_at`.

    ``ltf``/``htf``: full histories (a forming last row is dropped).  ``ltf_window`` /
    ``htf_window``: how many closed candles the live path evaluates (default ``settings.klines``);
    use what the market-data layer really passes, or the values differ from the live ones.
    Raises ``ValueError`` on unusable data (NaN, inverted candles, unsorted times).
    """
    ltf, htf = ltf.closed_only(), htf.closed_only()
    for candles, label in ((ltf, "LTF"), (htf, "HTF")):
        problem = _data_problem(candles, label)
        if problem:
            raise ValueError(f"precompute: {problem}")
    klines = int(_setting(settings, "klines", 360))
    ltf_window = klines if ltf_window is None else int(ltf_window)
    htf_window = klines if htf_window is None else int(htf_window)
    if ltf_window < MIN_LTF_BARS or htf_window < MIN_HTF_BARS:
        raise ValueError(f"precompute: windows of {ltf_window} LTF / {htf_window} HTF candles are below "
                         f"the {MIN_LTF_BARS}/{MIN_HTF_BARS} the rules need")
    close, high, low = ltf.close, ltf.high, ltf.low
    ltf_close_time = ltf.open_time + interval_ms(ltf.interval)
    htf_close_time = htf.open_time + interval_ms(htf.interval)
    return SignalSeries(
        ltf=ltf, htf=htf, ltf_window=ltf_window, htf_window=htf_window,
        htf_index=np.searchsorted(htf_close_time, ltf_close_time, side="right") - 1,
        ema_fast=ind.rolling_ema(close, EMA_FAST, ltf_window, (0, 1, LTF_SLOPE_BARS)),
        ema_slow=ind.rolling_ema(close, EMA_SLOW, ltf_window, (0, 1)),
        rsi=ind.rolling_rsi(close, RSI_PERIOD, ltf_window)[0],
        atr=ind.rolling_atr(high, low, close, ATR_PERIOD, ltf_window)[0],
        adx=ind.rolling_adx(high, low, close, ADX_PERIOD, ltf_window, (0, ADX_DELTA_BARS)),
        htf_ema=ind.rolling_ema(htf.close, HTF_EMA, htf_window, (0, HTF_SLOPE_BARS)),
    )


def evaluate_at(series: SignalSeries, i: int, book: BookTicker | None, funding_rate: float | None,
                settings: Any, *, qv_score: float = 0.0, now_ms: int | None = None) -> SignalResult:
    """:func:`evaluate_signal` for bar ``i`` of a precomputed series (its window at that bar)."""
    if not 0 <= i < len(series):
        raise IndexError(f"bar {i} outside the series of {len(series)} candles")
    ltf, htf = series.ltf, series.htf
    h = int(series.htf_index[i])
    ltf_count = min(i + 1, series.ltf_window)
    htf_count = min(h + 1, series.htf_window)
    last_open, htf_last_open = int(ltf.open_time[i]), int(htf.open_time[h]) if h >= 0 else None
    ltf_ms, htf_ms = interval_ms(ltf.interval), interval_ms(htf.interval)
    if ltf_count < MIN_LTF_BARS or htf_count < MIN_HTF_BARS:
        snap = _Snapshot(ltf_count, htf_count, last_open, htf_last_open, ltf_ms, htf_ms, None)
    else:
        snap = _Snapshot(  # .tolist() gives the same Python floats as float() of each element
            ltf_count, htf_count, last_open, htf_last_open, ltf_ms, htf_ms,
            (ltf.open[i].item(), ltf.high[i].item(), ltf.low[i].item(), ltf.close[i].item()),
            tuple(series.ema_fast[:, i].tolist()), tuple(series.ema_slow[:, i].tolist()),
            series.rsi[i].item(), series.atr[i].item(), tuple(series.adx[:, i].tolist()),
            tuple(series.htf_ema[:, h].tolist()),
        )
    return _decide(snap, book, funding_rate, settings, qv_score, now_ms)
