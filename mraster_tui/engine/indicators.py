"""Technical indicators with TA-Lib's exact definitions, vectorised with numpy.

``ema``, ``rsi``, ``atr`` and ``adx`` take float64 arrays and return arrays of the same length,
NaN during the warm-up, laid out exactly like TA-Lib's output (default compatibility mode, no
unstable period):

==========  =====================================================  ==============
function    definition                                             first value at
==========  =====================================================  ==============
ema(x, n)   k = 2/(n+1), seeded with the SMA of the first n values index n-1
rsi(x, n)   Wilder averages of gains and losses, seeded with SMAs  index n
atr(.., n)  Wilder average of the true range, seeded with its SMA  index n
adx(.., n)  Wilder +DM/-DM (seeded with sums over n-1 bars), DX,   index 2n-1
            then the Wilder average of DX seeded with n DX's mean
==========  =====================================================  ==============

After warm-up the values equal TA-Lib's to ~1e-14 relative (the tests use TA-Lib as the oracle).
Zero tests follow TA-Lib 0.8's scale-free behaviour: RSI is 0 when the average gain and loss are
both exactly 0, and an ADX step is skipped (the previous ADX carries over) when both smoothed
directional movements are exactly 0.  Non-finite input (NaN, inf) raises :class:`IndicatorError`
instead of spreading NaN.

How the recurrences are vectorised
----------------------------------
Every smoothing here is a first-order linear recurrence ``y[i] = a*y[i-1] + g*b[i]``, and there is
no per-candle Python loop.  :class:`_Recurrence` cuts the series into blocks of 16 values and solves
all blocks of a chunk with one matrix product against the 16x16 lower-triangular Toeplitz matrix
``T[j, t] = g*a**(j-t)``.  Its coefficients never exceed 1, so nothing over- or underflows (unlike
the ``cumsum(b * a**-i)`` closed form) and the rounding error is that of short dot products.
The state entering each block follows the same kind of recurrence over the block end values
(factor ``a**16``); it is solved by grouping the blocks by 16 again, with one small dense product
across the groups, and folded into each block's first input before the product.

The series is processed in chunks of 32 768 values, each from the state the previous one left:
inputs such as the true range or the gains are computed chunk by chunk in cache and never stored
whole, so each indicator allocates one large array, its output.  That matters as much as the
arithmetic: large temporaries cost memory bandwidth and page faults on every call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

__all__ = ["IndicatorError", "adx", "adx_delta", "atr", "directional_movement", "ema", "rolling_adx",
           "rolling_atr", "rolling_ema", "rolling_rsi", "rsi", "true_range"]

_BLOCK = 16  # values per block of the recurrence solver
_CHUNK = 1 << 15  # values per chunk: 256 KiB scratch arrays that stay in cache
_TINY = np.finfo(np.float64).smallest_subnormal  # x / max(0, _TINY) == 0 when x == 0


class IndicatorError(ValueError):
    """Bad indicator input: wrong shape, bad period, NaN or inf in the data."""


# --------------------------------------------------------------------------- linear recurrences

@functools.lru_cache(maxsize=256)
def _coefficients(a: float, gain: float, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constant matrices of a block of ``size`` values, read-only and memoised (a pure function
    of its arguments: building them costs more than using them on short series).

    Returns ``(tt, last_row, powers)``: ``tt`` is the transpose of the lower-triangular Toeplitz
    matrix ``T[j, t] = gain * a**(j - t)`` (``t <= j``), ``last_row = T[size - 1]`` and
    ``powers[j] = a**(j + 1)``, the weight at output ``j`` of the state entering the block.
    """
    p = a ** np.arange(size + 1, dtype=np.float64)
    lag = np.subtract.outer(np.arange(size), np.arange(size))
    t = np.where(lag >= 0, gain * p[np.maximum(lag, 0)], 0.0)
    return _frozen(np.ascontiguousarray(t.T), t[-1].copy(), p[1:].copy())


@functools.lru_cache(maxsize=256)
def _group_solver(a_block: float, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(entering, powers)`` such that ``entering @ group_ends + state * powers`` is, for each of
    ``groups`` groups of ``_BLOCK`` blocks (factor ``a_block`` per block), ``a_block`` times the
    state entering the group: the term to fold into the group's first block end."""
    a_group = a_block**_BLOCK
    lag = np.subtract.outer(np.arange(groups), np.arange(groups)) - 1
    entering = np.where(lag >= 0, a_block * a_group ** np.maximum(lag, 0), 0.0)
    return _frozen(entering, a_block * a_group ** np.arange(groups, dtype=np.float64))


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for arr in arrays:
        arr.setflags(write=False)
    return arrays


def _chunks(size: int) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` bounds cutting ``range(size)`` into chunks of at most ``_CHUNK`` values."""
    return ((lo, min(lo + _CHUNK, size)) for lo in range(0, size, _CHUNK))


class _Recurrence:
    """``y[i] = a*y[i-1] + gain*b[i]`` with ``y[-1] = y0``, fed chunk by chunk in order.

    :meth:`step` solves one chunk (at most ``_CHUNK`` values) from the state left by the
    previous one, so inputs can be produced in cache and are never stored whole.  Inside a chunk
    the blocks of ``_BLOCK`` values are solved by one matrix product once the state entering
    each block is known; those states follow the same recurrence over the block end values
    (factor ``a**_BLOCK``), solved by grouping the blocks by ``_BLOCK`` again: one product for
    the group ends, one small dense product for the states entering the groups, one product to
    spread them over the blocks.
    """

    __slots__ = ("a", "gain", "state", "_ends", "_tt", "_last_row", "_a_block", "_group_last",
                 "_group_tt", "_solver")

    def __init__(self, a: float, gain: float, y0: float) -> None:
        self.a, self.gain, self.state = a, gain, float(y0)
        self._ends = np.zeros(-(-_CHUNK // _BLOCK**2) * _BLOCK)  # whole groups of block ends
        self._tt, self._last_row, _ = _coefficients(a, gain, _BLOCK)
        self._a_block = a**_BLOCK
        group_tt, self._group_last, _ = _coefficients(self._a_block, 1.0, _BLOCK)
        # Scaled so that its product is directly the fold into the next block's first input.
        self._group_tt = group_tt * (a / gain)
        self._solver: tuple[int, np.ndarray, np.ndarray] = (0, self._ends, self._ends)

    def step(self, chunk: np.ndarray, dest: np.ndarray) -> None:
        """Write ``y`` for the next ``len(chunk)`` inputs to ``dest``; ``chunk`` is overwritten
        and must not overlap ``dest``."""
        a, gain, state = self.a, self.gain, self.state
        blocks = chunk.shape[0] // _BLOCK
        body = blocks * _BLOCK
        if blocks:
            x = chunk[:body].reshape(blocks, _BLOCK)
            groups = -(-blocks // _BLOCK)
            ends = self._ends[:groups * _BLOCK]
            if blocks % _BLOCK:
                ends[blocks:] = 0.0
            np.matmul(x, self._last_row, out=ends[:blocks])  # block end values from a zero state
            # The states after each block follow the block recurrence (factor a**_BLOCK): solved
            # on groups of blocks, the states entering the groups by one small dense product.
            if self._solver[0] != groups:
                self._solver = (groups, *_group_solver(self._a_block, groups))
            _, entering, powers = self._solver
            grouped = ends.reshape(groups, _BLOCK)
            group_in = entering @ (grouped @ self._group_last)
            group_in += powers * state
            grouped[:, 0] += group_in
            # Fold the state entering each block into its first input: gain*b0 += a*state.
            folds = (grouped @ self._group_tt).reshape(-1)
            x[0, 0] += state * (a / gain)
            x[1:, 0] += folds[:blocks - 1]
            np.matmul(x, self._tt, out=dest[:body].reshape(blocks, _BLOCK))
            state = float(dest[body - 1])
        rest = chunk.shape[0] - body
        if rest:
            tt, _, powers = _coefficients(a, gain, rest)
            np.matmul(chunk[body:], tt, out=dest[body:])
            dest[body:] += state * powers
            state = float(dest[-1])
        self.state = state


def _scan(buf: np.ndarray, a: float, y0: float, gain: float, out: np.ndarray) -> np.ndarray:
    """Solve ``out[i] = a*out[i-1] + gain*buf[i]`` with ``out[-1] = y0``; ``out`` may be ``buf``."""
    rec = _Recurrence(a, gain, y0)
    scratch = np.empty(min(buf.shape[0], _CHUNK))
    for lo, hi in _chunks(buf.shape[0]):
        work = scratch[:hi - lo]
        np.copyto(work, buf[lo:hi])
        rec.step(work, out[lo:hi])
    return out


# --------------------------------------------------------------------------- input checks

def _series(name: str, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    out = tuple(np.ascontiguousarray(arr, dtype=np.float64) for arr in arrays)
    for arr in out:
        if arr.ndim != 1:
            raise IndicatorError(f"{name}: expected 1-D arrays, got shape {arr.shape}")
    if len({arr.shape[0] for arr in out}) > 1:
        raise IndicatorError(f"{name}: inputs differ in length: {[arr.shape[0] for arr in out]}")
    return out


def _period(name: str, n: int, minimum: int = 2) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise IndicatorError(f"{name}: period must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _check_finite(name: str, out: np.ndarray, inputs: tuple[np.ndarray, ...]) -> np.ndarray:
    """Raise on NaN/inf input.  Every recurrence carries a non-finite input through to the last
    output value, so that one value tells whether to look."""
    if np.isfinite(out[-1]):
        return out
    firsts = [int(bad[0]) for bad in (np.flatnonzero(~np.isfinite(arr)) for arr in inputs) if bad.size]
    detail = f"first at index {min(firsts)}" if firsts else "the values overflow"
    raise IndicatorError(f"{name}: input contains NaN or inf ({detail})")


def _quiet(func):
    """Non-finite input is raised as :class:`IndicatorError`; numpy's floating-point warnings on
    the way there (``inf - inf`` in a product) are noise."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return func(*args, **kwargs)
    return wrapper


# --------------------------------------------------------------------------- indicators

@_quiet
def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, ``k = 2/(n+1)``, seeded with the SMA of the first ``n`` values."""
    (x,) = _series("ema", x)
    n = _period("ema", n)
    size = x.shape[0]
    out = np.empty(size)
    out[:n - 1] = np.nan
    if size < n:
        return out
    k = 2.0 / (n + 1)
    out[n - 1] = x[:n].sum() / n
    _scan(x[n:], 1.0 - k, out[n - 1], k, out[n:])
    return _check_finite("ema", out, (x,))


@_quiet
def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's relative strength index (TA-Lib ``RSI``).

    RSI = 100 * avg_gain / (avg_gain + avg_loss), with the denominator smoothed directly as the
    Wilder average of ``|change|`` (the same recurrence, no addition).  No movement at all (both
    averages exactly 0) gives 0, as in TA-Lib.
    """
    (close,) = _series("rsi", close)
    n = _period("rsi", n)
    size = close.shape[0]
    out = np.empty(size)
    out[:n] = np.nan
    if size <= n:
        return out
    first = np.diff(close[:n + 1])
    avg_gain = 100.0 * (np.maximum(first, 0.0).sum() / n)  # 100x: the ratio is then the RSI
    avg_moved = np.abs(first).sum() / n
    out[n] = avg_gain / max(avg_moved, _TINY)
    count = size - n - 1  # bars n+1 .. size-1; bar j's change is close[j] - close[j-1]
    a = (n - 1) / n
    gains = _Recurrence(a, 100.0 / n, avg_gain)
    moves = _Recurrence(a, 1.0 / n, avg_moved)
    gain, moved, smooth = (np.empty(min(count, _CHUNK)) for _ in range(3))
    for lo, hi in _chunks(count):
        g, m, s = gain[:hi - lo], moved[:hi - lo], smooth[:hi - lo]
        np.subtract(close[n + 1 + lo:n + 1 + hi], close[n + lo:n + hi], out=m)
        np.maximum(m, 0.0, out=g)
        np.abs(m, out=m)
        dest = out[n + 1 + lo:n + 1 + hi]
        gains.step(g, dest)
        moves.step(m, s)
        np.maximum(s, _TINY, out=s)
        np.divide(dest, s, out=dest)
    return _check_finite("rsi", out, (close,))


def _true_range_into(high: np.ndarray, low: np.ndarray, close: np.ndarray, start: int,
                     out: np.ndarray, scratch: np.ndarray) -> None:
    """True range of bars ``start .. start+len(out)-1`` into ``out`` (``start >= 1``).

    ``max(h, pc) - min(l, pc)`` performs exactly the subtraction TA-Lib picks among
    ``h-l, |h-pc|, |l-pc|``, so the values are bit-identical for valid candles.
    """
    stop = start + out.shape[0]
    prev = close[start - 1:stop - 1]
    np.minimum(low[start:stop], prev, out=scratch)
    np.maximum(high[start:stop], prev, out=out)
    np.subtract(out, scratch, out=out)


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """TA-Lib ``TRANGE``: ``max(high, prev close) - min(low, prev close)``; NaN at index 0."""
    high, low, close = _series("true_range", high, low, close)
    out = np.empty(high.shape[0])
    out[:1] = np.nan
    if high.shape[0] > 1:
        _true_range_into(high, low, close, 1, out[1:], np.empty(high.shape[0] - 1))
    return out


@_quiet
def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's average true range (TA-Lib ``ATR``): SMA of the first ``n`` true ranges, then Wilder."""
    high, low, close = _series("atr", high, low, close)
    n = _period("atr", n, minimum=1)
    size = close.shape[0]
    out = np.empty(size)
    out[:n] = np.nan
    if size <= n:
        return out
    seed = np.empty(n)
    _true_range_into(high, low, close, 1, seed, np.empty(n))
    out[n] = seed.sum() / n
    rec = _Recurrence((n - 1) / n, 1.0 / n, out[n])
    count = size - n - 1  # bars n+1 .. size-1
    tr, scratch = np.empty(min(count, _CHUNK)), np.empty(min(count, _CHUNK))
    for lo, hi in _chunks(count):
        _true_range_into(high, low, close, n + 1 + lo, tr[:hi - lo], scratch[:hi - lo])
        rec.step(tr[:hi - lo], out[n + 1 + lo:n + 1 + hi])
    return _check_finite("atr", out, (high, low, close))


def _directional_movement_into(high: np.ndarray, low: np.ndarray, start: int, plus: np.ndarray,
                               minus: np.ndarray, wins: np.ndarray) -> None:
    """+DM and -DM of bars ``start .. start+len(plus)-1`` (``start >= 1``); ``wins`` is bool
    scratch of shape ``(2, len(plus))``."""
    stop = start + plus.shape[0]
    np.subtract(high[start:stop], high[start - 1:stop - 1], out=plus)
    np.subtract(low[start - 1:stop - 1], low[start:stop], out=minus)
    plus_wins, minus_wins = wins
    np.greater(plus, minus, out=plus_wins)  # equal moves: neither wins
    np.greater(minus, plus, out=minus_wins)
    np.maximum(plus, 0.0, out=plus)
    plus *= plus_wins
    np.maximum(minus, 0.0, out=minus)
    minus *= minus_wins


def directional_movement(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilder's +DM and -DM per bar, NaN at index 0 (TA-Lib ``PLUS_DM``/``MINUS_DM`` with period 1).

    +DM is the up-move when it is positive and larger than the down-move, else 0; -DM mirrored.
    Equal moves give 0 to both, as in TA-Lib.
    """
    high, low = _series("directional_movement", high, low)
    size = high.shape[0]
    plus, minus = np.empty(size), np.empty(size)
    plus[:1] = minus[:1] = np.nan
    if size > 1:
        _directional_movement_into(high, low, 1, plus[1:], minus[1:], np.empty((2, size - 1), dtype=bool))
    return plus, minus


@_quiet
def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's average directional index (TA-Lib ``ADX``).

    DX = 100*|+DI - -DI| / (+DI + -DI) = 100*|+DM_n - -DM_n| / (+DM_n + -DM_n): the smoothed true
    range cancels out of DX, so only the two directional movements are smoothed.  ``close`` only
    enters TA-Lib's ADX through that true range; it is still validated.  When both smoothed
    movements are exactly 0 the bar's DX counts as 0 in the seed and is skipped afterwards (the
    previous ADX carries over), as in TA-Lib.
    """
    high, low, close = _series("adx", high, low, close)
    n = _period("adx", n)
    size = close.shape[0]
    out = np.empty(size)
    out[:2 * n - 1] = np.nan
    if size < 2 * n:
        return out
    if not np.isfinite(close).all():
        bad = int(np.flatnonzero(~np.isfinite(close))[0])
        raise IndicatorError(f"adx: input contains NaN or inf (first at index {bad})")
    a = (n - 1) / n
    seed_plus, seed_minus = np.empty(n - 1), np.empty(n - 1)
    _directional_movement_into(high, low, 1, seed_plus, seed_minus, np.empty((2, n - 1), dtype=bool))
    # TA-Lib seeds +DM_n/-DM_n with the plain sum over bars 1..n-1 and smooths from bar n on.
    count = size - n
    plus_n = _Recurrence(a, 1.0, seed_plus.sum())
    minus_n = _Recurrence(a, 1.0, seed_minus.sum())
    plus, minus, total = (np.empty(min(count, _CHUNK)) for _ in range(3))
    wins = np.empty((2, min(count, _CHUNK)), dtype=bool)
    # DX / 100 of bar j goes to dx[j - n]; ADX is then smoothed in place over it.
    dx = out[n:]
    skipped: list[np.ndarray] = []  # bars without any directional movement
    for lo, hi in _chunks(count):
        p, m, t, sp = plus[:hi - lo], minus[:hi - lo], total[:hi - lo], dx[lo:hi]
        _directional_movement_into(high, low, n + lo, p, m, wins[:, :hi - lo])
        plus_n.step(p, sp)
        minus_n.step(m, t)
        np.subtract(sp, t, out=p)
        np.add(sp, t, out=t)
        np.abs(p, out=sp)
        zero = t == 0.0
        if zero.any():
            skipped.append(np.flatnonzero(zero) + lo)
        np.maximum(t, _TINY, out=t)
        np.divide(sp, t, out=sp)
    out[2 * n - 1] = 100.0 * (dx[:n].sum() / n)
    main = dx[n:]  # bars 2n ..
    skip = np.concatenate(skipped) - n if skipped else np.empty(0, dtype=np.intp)
    skip = skip[skip >= 0]
    if skip.size:
        _scan_skipping(main, skip, a, out[2 * n - 1], 100.0 / n)
    else:
        _scan(main, a, out[2 * n - 1], 100.0 / n, main)
    out[n:2 * n - 1] = np.nan  # the DX scratch of the warm-up
    return _check_finite("adx", out, (high, low))


def _scan_skipping(buf: np.ndarray, skip: np.ndarray, a: float, y0: float, gain: float) -> None:
    """In-place :func:`_scan` where the steps at indices ``skip`` leave the state unchanged: scan
    the kept steps only, then carry each value forward over the skipped ones."""
    kept = np.ones(buf.shape[0], dtype=bool)
    kept[skip] = False
    values = np.empty(np.count_nonzero(kept) + 1)  # values[k]: the state after k kept steps
    values[0] = y0
    _scan(buf[kept], a, y0, gain, values[1:])
    np.take(values, np.cumsum(kept), out=buf)


def adx_delta(adx_series: np.ndarray, lag: int = 14) -> np.ndarray:
    """The "ADX change" feature: ``adx[i] - adx[i - lag]`` (NaN where either side is NaN)."""
    (adx_series,) = _series("adx_delta", adx_series)
    lag = _period("adx_delta", lag, minimum=1)
    out = np.full(adx_series.shape[0], np.nan)
    out[lag:] = adx_series[lag:] - adx_series[:-lag]
    return out


# --------------------------------------------------------------------------- rolling windows
#
# ``rolling_X(..., window, lags)[k, i]`` is ``X(series[s:i+1])[-1 - lags[k]]`` with
# ``s = max(0, i - window + 1)``: the value the live path computes on the last ``window`` candles,
# for every bar at once.  A window's indicator differs from the full-history one through its seed
# (EMA55 on 120 bars is still 9 % seed), so these are not slices of ``X(series)``.  The linear
# ones use ``y_window(q) = a**(q-p) * (seed_s - F[p]) + F[q]``, where ``F`` is the recurrence over
# the whole series from a zero state and ``p`` the window's seed index; exact zeros (no movement in
# the window) are restored from counts, as the live computation produces them exactly.

def _rolling_mean(x: np.ndarray, n: int) -> np.ndarray:
    """``out[s] = mean(x[s:s+n])`` for ``s = 0 .. len-n``."""
    return np.lib.stride_tricks.sliding_window_view(x, n).sum(axis=1) / n


def _rolling_layout(name: str, size: int, window: int, lags: tuple[int, ...]) -> tuple[
        np.ndarray, np.ndarray, tuple[int, ...]]:
    window = _period(name, window, minimum=1)
    lags = tuple(int(lag) for lag in lags)
    if any(lag < 0 or lag >= window for lag in lags):
        raise IndicatorError(f"{name}: lags must lie in 0..window-1, got {lags}")
    bars = np.arange(size)
    return bars, np.maximum(bars - window + 1, 0), lags


def _rolling_linear(name: str, full: np.ndarray, seeds: np.ndarray, a: float, first: int,
                    window: int, lags: tuple[int, ...], moving: np.ndarray | None) -> np.ndarray:
    """Windowed values of a seeded linear recurrence.

    ``full[q]`` is the recurrence over the whole series from a zero state (NaN where undefined),
    ``seeds[s]`` the seed of a window starting at bar ``s``, placed at bar ``s + first``.
    ``moving`` (optional, per bar): cumulative count of non-zero inputs, to return exact zeros.
    """
    size = full.shape[0]
    bars, starts, lags = _rolling_layout(name, size, window, lags)
    out = np.full((len(lags), size), np.nan)
    for k, lag in enumerate(lags):
        q = bars - lag
        ok = q - starts >= first
        q, s = q[ok], starts[ok]
        p = s + first
        values = a ** (q - p).astype(np.float64) * (seeds[s] - full[p]) + full[q]
        if moving is not None:
            values[moving[q] == moving[s]] = 0.0
        out[k, ok] = values
    return out


@_quiet
def rolling_ema(x: np.ndarray, n: int, window: int, lags: tuple[int, ...] = (0,)) -> np.ndarray:
    """``out[k, i] = ema(x[s:i+1], n)[-1 - lags[k]]``, ``s = max(0, i - window + 1)``."""
    (x,) = _series("rolling_ema", x)
    n = _period("rolling_ema", n)
    size = x.shape[0]
    if size < n:
        return np.full((len(lags), size), np.nan)
    k = 2.0 / (n + 1)
    full = _check_finite("rolling_ema", _scan(x, 1.0 - k, 0.0, k, np.empty(size)), (x,))
    return _rolling_linear("rolling_ema", full, _rolling_mean(x, n), 1.0 - k, n - 1, window, lags, None)


def _bar_series(values: np.ndarray) -> np.ndarray:
    """Per-bar series from per-change values (bar j's value at ``values[j-1]``): NaN at bar 0."""
    out = np.empty(values.shape[0] + 1)
    out[0] = np.nan
    out[1:] = values
    return out


def _moving_count(values: np.ndarray) -> np.ndarray:
    """Cumulative count of non-zero values up to each bar (bar j's value at ``values[j-1]``)."""
    count = np.zeros(values.shape[0] + 1, dtype=np.int64)
    np.cumsum(values != 0.0, out=count[1:])
    return count


@_quiet
def rolling_rsi(close: np.ndarray, n: int, window: int, lags: tuple[int, ...] = (0,)) -> np.ndarray:
    """``out[k, i] = rsi(close[s:i+1], n)[-1 - lags[k]]``, ``s = max(0, i - window + 1)``."""
    (close,) = _series("rolling_rsi", close)
    n = _period("rolling_rsi", n)
    size = close.shape[0]
    if size <= n:
        return np.full((len(lags), size), np.nan)
    a = (n - 1) / n
    change = np.diff(close)
    gain = np.maximum(change, 0.0)
    moved = np.abs(change)
    # Per bar j: the recurrences over bars 1..j from a zero state; seeds of a window at s cover
    # bars s+1..s+n and sit at bar s+n.
    full_gain = _bar_series(_scan(gain, a, 0.0, 100.0 / n, np.empty(size - 1)))
    full_moved = _bar_series(_scan(moved, a, 0.0, 1.0 / n, np.empty(size - 1)))
    _check_finite("rolling_rsi", full_moved, (close,))
    args = (a, n, window, lags)
    avg_gain = _rolling_linear("rolling_rsi", full_gain, 100.0 * _rolling_mean(gain, n), *args,
                               _moving_count(gain))
    avg_moved = _rolling_linear("rolling_rsi", full_moved, _rolling_mean(moved, n), *args,
                                _moving_count(moved))
    return avg_gain / np.maximum(avg_moved, _TINY)


@_quiet
def rolling_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, window: int,
                lags: tuple[int, ...] = (0,)) -> np.ndarray:
    """``out[k, i] = atr(high[s:i+1], low[s:i+1], close[s:i+1], n)[-1 - lags[k]]``."""
    high, low, close = _series("rolling_atr", high, low, close)
    n = _period("rolling_atr", n, minimum=1)
    size = close.shape[0]
    if size <= n:
        return np.full((len(lags), size), np.nan)
    a = (n - 1) / n
    tr = true_range(high, low, close)[1:]
    full = _bar_series(_scan(tr, a, 0.0, 1.0 / n, np.empty(size - 1)))
    _check_finite("rolling_atr", full, (high, low, close))
    return _rolling_linear("rolling_atr", full, _rolling_mean(tr, n), a, n, window, lags,
                           _moving_count(tr))


_ROWS = 1 << 13  # windows per batch in rolling_adx: its state vectors stay in cache


@_quiet
def rolling_adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, window: int,
                lags: tuple[int, ...] = (0,)) -> np.ndarray:
    """``out[k, i] = adx(high[s:i+1], low[s:i+1], close[s:i+1], n)[-1 - lags[k]]``.

    DX is not linear in the window's seed, so full windows are computed directly: one step per
    offset inside the window, vectorised over all windows (``window * len`` work, no per-candle
    Python loop).  Windows that start at bar 0 are plain ``adx`` values.
    """
    high, low, close = _series("rolling_adx", high, low, close)
    n = _period("rolling_adx", n)
    size = close.shape[0]
    bars, starts, lags = _rolling_layout("rolling_adx", size, window, lags)
    out = np.full((len(lags), size), np.nan)
    full = adx(high, low, close, n)
    head = min(window - 1, size)  # bars whose window starts at bar 0
    for k, lag in enumerate(lags):
        if head > lag:
            out[k, lag:head] = full[:head - lag]
    if size < window or window < 2 * n:
        return out
    plus, minus = directional_movement(high, low)
    seed_plus = np.lib.stride_tricks.sliding_window_view(plus[1:], n - 1).sum(axis=1)
    seed_minus = np.lib.stride_tricks.sliding_window_view(minus[1:], n - 1).sum(axis=1)
    a, scale = (n - 1) / n, 100.0 / n
    record = {window - 1 - lag: k for k, lag in enumerate(lags) if window - 1 - lag >= 2 * n - 1}
    rows = size - window + 1  # full windows: row r covers bars r .. r + window - 1
    for lo in range(0, rows, _ROWS):
        hi = min(lo + _ROWS, rows)
        sp, sm = seed_plus[lo:hi].copy(), seed_minus[lo:hi].copy()
        total, dx, level = np.empty(hi - lo), np.empty(hi - lo), np.zeros(hi - lo)
        for offset in range(n, window):
            sp *= a
            sp += plus[lo + offset:hi + offset]
            sm *= a
            sm += minus[lo + offset:hi + offset]
            np.add(sp, sm, out=total)
            idle = total == 0.0  # no directional movement in the window yet
            np.subtract(sp, sm, out=dx)
            np.abs(dx, out=dx)
            np.maximum(total, _TINY, out=total)
            dx /= total
            dx *= scale  # DX / n
            if offset < 2 * n:  # the seed: mean of the first n DX
                level += dx
            elif idle.any():
                np.copyto(level, a * level + dx, where=~idle)
            else:
                level *= a
                level += dx
            if offset in record:
                out[record[offset], lo + window - 1:hi + window - 1] = level
    return out
