"""Kline and funding-rate file loaders, the download file format, and resampling.

Formats are detected by content, not by extension:

* **Binance public data archive** (data.binance.vision ``futures/um`` klines): CSV with 12
  columns ``open_time,open,high,low,close,volume,close_time,quote_volume,count,
  taker_buy_volume,taker_buy_quote_volume,ignore``, with or without that header line.  A ``.zip``
  holding one such CSV (as the archive ships them) is read directly.  Open times in
  microseconds (the archive's format since 2025) are converted to milliseconds.
* **freqtrade JSON**: ``[[t_ms, open, high, low, close, volume], ...]``.  A ``null`` volume (the
  ``*-mark.json`` files) reads as 0; a ``null`` price is an error.
* **Simple CSV** with the header ``open_time,open,high,low,close,volume``; ``open_time`` is
  epoch ms or a naive ``YYYY-MM-DD HH:MM:SS`` datetime taken as UTC.  Without a header, six
  numeric columns are read in that order.
* **Funding rates** (:func:`load_funding`): freqtrade's ``*-funding_rate.json`` (column 1 holds
  the rate, columns 2-5 are 0), the Binance archive ``fundingRate`` CSV
  (``calc_time,funding_interval_hours,last_funding_rate``), or a CSV
  ``funding_time,funding_rate`` (header optional).

**The download format** (what ``mraster-tui download`` writes, :func:`write_klines_csv`): the
Binance archive CSV with its header line, one file per symbol and interval, named
``<SYMBOL>-<interval>.csv`` (e.g. ``BTCUSDT-5m.csv``), closed candles only.  It round-trips
through :func:`load_candles` and any tool that reads the Binance archive reads it too.

Bad data raises :class:`DataError` naming the file and the row (1-based: the line number for
CSV, the element number for JSON): unsorted or duplicate timestamps, timestamps off the
interval grid, gaps (unless ``allow_gaps=True``; the gaps are then returned in
:attr:`LoadedCandles.gaps`), a wrong column count, non-numeric values, NaN/inf, non-positive
prices, negative volume, and a high/low that does not contain the open and close.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from mraster_tui.engine.types import INTERVAL_MS, Candles, FundingRate, interval_ms

#: 1970-01-01 was a Thursday; Binance's weekly candles open on Monday 00:00 UTC.
_WEEK_OFFSET_MS = 4 * 86_400_000

_KLINE_HEADER = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                 "count", "taker_buy_volume", "taker_buy_quote_volume", "ignore")
_TIME_KEYS = ("open_time", "timestamp", "time", "date", "datetime")
_FUNDING_TIME_KEYS = ("funding_time", "fundingtime", "calc_time", "time", "timestamp")
_FUNDING_RATE_KEYS = ("funding_rate", "fundingrate", "last_funding_rate", "rate")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_KIND_WORDS = ("funding", "rate", "mark", "futures", "spot", "klines", "index", "premium")


class DataError(ValueError):
    """A data file cannot be used.  ``str()`` is one line: ``<file>[ row N]: <problem>``."""

    def __init__(self, path: str | Path, message: str, row: int | None = None) -> None:
        self.path = str(path)
        self.row = row
        where = f"{self.path} row {row}" if row is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Gap:
    """Missing candles: ``missing`` candles after the candle opening at ``after_ms`` (file row ``row``)."""

    after_ms: int
    missing: int
    row: int


@dataclass(frozen=True, slots=True)
class FileName:
    symbol: str | None
    interval: str | None
    kind: str  # "candles" | "funding" | "mark"


@dataclass(frozen=True, slots=True)
class LoadedCandles:
    path: Path
    symbol: str
    interval: str
    candles: Candles
    fmt: str  # "binance-csv" | "freqtrade-json" | "simple-csv"
    gaps: tuple[Gap, ...] = ()
    quote_volume: np.ndarray | None = None  # from the archive's column 8 when present


# -- file names -----------------------------------------------------------------------------

def parse_file_name(path: str | Path) -> FileName:
    """Symbol, interval and kind from a data file name.

    ``XRP_USDT_USDT-5m-futures.json`` -> XRPUSDT 5m; ``XRP_USDT_USDT-8h-funding_rate.json`` ->
    funding; ``...-1h-mark.json`` -> mark; ``INUSDT_5m.csv`` -> INUSDT 5m;
    ``BTCUSDT-5m-2024-01.csv`` (archive) -> BTCUSDT 5m; ``UNITTEST_BTC-5m.json`` -> UNITTESTBTC.
    """
    name = Path(path).name
    stem = re.sub(r"(\.(json|csv|txt|zip|gz))+$", "", name, flags=re.IGNORECASE)
    tokens = [t for t in re.split(r"[-_]", stem) if t]
    lower = stem.lower()
    kind = "funding" if "funding" in lower else "mark" if re.search(r"(^|[-_])mark($|[-_])", lower) else "candles"
    idx = next((i for i, t in enumerate(tokens) if t in INTERVAL_MS), None)
    interval = tokens[idx] if idx is not None else None
    if idx is None:  # e.g. XRPUSDT-funding.csv: the symbol ends at the first kind/date word
        idx = next((i for i, t in enumerate(tokens) if t.lower().startswith(_KIND_WORDS) or t.isdigit()),
                   len(tokens))
    sym_tokens = tokens[:idx]
    # freqtrade futures pairs repeat the settle currency: XRP_USDT_USDT
    if len(sym_tokens) >= 3 and sym_tokens[-1].upper() == sym_tokens[-2].upper():
        sym_tokens = sym_tokens[:-1]
    symbol = "".join(sym_tokens).upper() or None
    if symbol is not None and not re.fullmatch(r"[A-Z0-9]{1,26}(USDT|USDC|BUSD|USD|BTC|ETH|BNB)", symbol):
        symbol = None  # not a pair name: the caller must pass symbol=
    return FileName(symbol, interval, kind)


# -- reading --------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/")]
                if len(members) != 1:
                    raise DataError(path, f"a zip must hold exactly one file, found {len(members)}")
                return zf.read(members[0]).decode("utf-8-sig")
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise DataError(path, f"cannot read: {e}") from None


def _num(path: Path, row: int, value, what: str) -> float:
    if value is None:
        raise DataError(path, f"missing {what}", row)
    if isinstance(value, bool):
        raise DataError(path, f"non-numeric {what} {value!r}", row)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(path, f"non-numeric {what} {value!r}", row) from None
    if not math.isfinite(x):
        raise DataError(path, f"{what} is {value!r} (NaN/inf)", row)
    return x


def _time_value(path: Path, row: int, value) -> int:
    """Epoch ms from an int/float/numeric string (ms or µs) or a naive UTC datetime string."""
    if isinstance(value, str) and not re.fullmatch(r"\s*-?\d+(\.\d*)?\s*", value):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DataError(path, f"bad timestamp {value!r}", row) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int((dt - _EPOCH).total_seconds() * 1000)
    t = _num(path, row, value, "timestamp")
    if t > 1e14:  # microseconds (Binance archive since 2025)
        t /= 1000.0
    return int(t)


def _rows_from_json(path: Path, text: str) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(data, list):
        raise DataError(path, "expected a JSON array of [t, o, h, l, c, v] rows")
    return data


def _csv_rows(text: str) -> list[list[str]]:
    return [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]


def _is_header(row: list[str]) -> bool:
    first = row[0].strip()
    return bool(first) and not re.fullmatch(r"-?\d+(\.\d*)?([eE][-+]?\d+)?", first) and not re.match(r"\d{4}-\d\d-\d\d", first)


def _parse_candle_rows(path: Path, rows, first_row: int, ncols: int | None, cols: tuple[int, ...]) -> np.ndarray:
    """(n, 6) float array [t, o, h, l, c, v]; rows are sequences; row numbers start at first_row."""
    out = np.empty((len(rows), 6), dtype=np.float64)
    names = ("open", "high", "low", "close", "volume")
    for i, r in enumerate(rows):
        rown = first_row + i
        if not isinstance(r, (list, tuple)):
            raise DataError(path, f"expected a row array, got {type(r).__name__}", rown)
        if ncols is not None and len(r) != ncols:
            raise DataError(path, f"expected {ncols} columns, found {len(r)}", rown)
        if len(r) <= max(cols):
            raise DataError(path, f"expected at least {max(cols) + 1} columns, found {len(r)}", rown)
        out[i, 0] = _time_value(path, rown, r[cols[0]])
        for j, name in enumerate(names, start=1):
            v = r[cols[j]]
            if name == "volume" and v is None:
                v = 0.0  # freqtrade mark-price files carry no volume
            out[i, j] = _num(path, rown, v, name)
    return out


def _check_candles(path: Path, arr: np.ndarray, interval: str | None, first_row: int,
                   allow_gaps: bool, name_interval: str | None) -> tuple[str, tuple[Gap, ...]]:
    n = arr.shape[0]
    if n == 0:
        raise DataError(path, "no candles in file")
    o, h, l, c, v = arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5]
    bad = np.flatnonzero((o <= 0) | (h <= 0) | (l <= 0) | (c <= 0))
    if bad.size:
        raise DataError(path, "non-positive price", first_row + int(bad[0]))
    bad = np.flatnonzero(v < 0)
    if bad.size:
        raise DataError(path, "negative volume", first_row + int(bad[0]))
    bad = np.flatnonzero((h < np.maximum(o, c)) | (l > np.minimum(o, c)) | (l > h))
    if bad.size:
        i = int(bad[0])
        raise DataError(path, f"high/low do not contain open/close (o={o[i]} h={h[i]} l={l[i]} c={c[i]})",
                        first_row + i)
    t = arr[:, 0].astype(np.int64)
    d = np.diff(t)
    bad = np.flatnonzero(d < 0)
    if bad.size:
        raise DataError(path, "timestamps not sorted (earlier than the row before)", first_row + int(bad[0]) + 1)
    bad = np.flatnonzero(d == 0)
    if bad.size:
        raise DataError(path, "duplicate timestamp", first_row + int(bad[0]) + 1)
    if interval is None:
        interval = name_interval
    if interval is None:
        if n < 2:
            raise DataError(path, "cannot tell the interval of a single candle; pass interval=")
        vals, counts = np.unique(d, return_counts=True)
        step = int(vals[int(np.argmax(counts))])
        interval = next((k for k, ms in INTERVAL_MS.items() if ms == step), None)
        if interval is None:
            raise DataError(path, f"candles are {step} ms apart, which is no known interval")
    step = interval_ms(interval)
    bad = np.flatnonzero(d % step != 0)
    if bad.size:
        raise DataError(path, f"timestamp off the {interval} grid", first_row + int(bad[0]) + 1)
    gap_idx = np.flatnonzero(d > step)
    gaps = tuple(Gap(int(t[i]), int(d[i] // step) - 1, first_row + int(i)) for i in gap_idx)
    if gaps and not allow_gaps:
        g = gaps[0]
        when = datetime.fromtimestamp(g.after_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
        total = sum(x.missing for x in gaps)
        raise DataError(path, f"gap of {g.missing} {interval} candle(s) after {when} UTC "
                              f"({len(gaps)} gap(s), {total} candles missing; pass allow_gaps=True to accept)",
                        g.row)
    return interval, gaps


def load_candles(path: str | Path, *, symbol: str | None = None, interval: str | None = None,
                 allow_gaps: bool = False) -> LoadedCandles:
    """Load a kline file (format detected by content).  ``symbol``/``interval`` override what
    the file name says; without either the interval is read from the timestamps."""
    p = Path(path)
    if interval is not None:
        interval_ms(interval)  # ValueError on an unknown interval
    fname = parse_file_name(p)
    text = _read_text(p)
    stripped = text.lstrip()
    quote_volume = None
    if stripped.startswith(("[", "{")):
        rows = _rows_from_json(p, stripped)
        if rows and all(isinstance(r, (list, tuple)) and len(r) >= 6 and r[2] == 0 and r[3] == 0 and r[4] == 0
                        for r in rows[: min(len(rows), 5)]):
            raise DataError(p, "this is a funding-rate file (high/low/close are 0); load it with load_funding")
        try:
            arr = np.asarray(rows, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 6 or not np.isfinite(arr).all():
                raise ValueError
        except (ValueError, TypeError):
            arr = _parse_candle_rows(p, rows, 1, 6, (0, 1, 2, 3, 4, 5))
        fmt = "freqtrade-json"
        first_row = 1
    else:
        rows = _csv_rows(text)
        if not rows:
            raise DataError(p, "empty file")
        header = None
        if _is_header(rows[0]):
            header = [h.strip().lower() for h in rows[0]]
            rows = rows[1:]
        first_row = 2 if header is not None else 1
        ncols = len(header) if header is not None else len(rows[0]) if rows else 0
        if header is not None:
            tcol = next((header.index(k) for k in _TIME_KEYS if k in header), None)
            missing = [k for k in ("open", "high", "low", "close", "volume") if k not in header]
            if tcol is None or missing:
                raise DataError(p, f"header lacks {', '.join(missing) or 'open_time'}; expected "
                                   "open_time,open,high,low,close,volume[,...]", 1)
            cols = (tcol, *(header.index(k) for k in ("open", "high", "low", "close", "volume")))
            fmt = "binance-csv" if ncols == 12 else "simple-csv"
            if fmt == "binance-csv" and "quote_volume" in header:
                qv_col = header.index("quote_volume")
            else:
                qv_col = None
        else:
            if ncols not in (6, 12):
                raise DataError(p, f"expected 6 or 12 columns, found {ncols}", 1)
            cols = (0, 1, 2, 3, 4, 5)
            fmt = "binance-csv" if ncols == 12 else "simple-csv"
            qv_col = 7 if ncols == 12 else None
        arr = _parse_candle_rows(p, rows, first_row, ncols, cols)
        if qv_col is not None:
            quote_volume = np.array([_num(p, first_row + i, r[qv_col], "quote_volume") for i, r in enumerate(rows)])
    interval, gaps = _check_candles(p, arr, interval, first_row, allow_gaps, fname.interval)
    sym = symbol or fname.symbol
    if not sym:
        raise DataError(p, "cannot tell the symbol from the file name; pass symbol=")
    candles = Candles(arr[:, 0].astype(np.int64), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy(),
                      arr[:, 4].copy(), arr[:, 5].copy(), interval, True)
    return LoadedCandles(p, sym.upper(), interval, candles, fmt, gaps, quote_volume)


def load_funding(path: str | Path, *, symbol: str | None = None) -> list[FundingRate]:
    """Funding-rate history, oldest first (format detected by content)."""
    p = Path(path)
    text = _read_text(p)
    stripped = text.lstrip()
    pairs: list[tuple[int, int, object]] = []  # (row, time, rate)
    if stripped.startswith("["):
        for i, r in enumerate(_rows_from_json(p, stripped), start=1):
            if not isinstance(r, (list, tuple)) or len(r) < 2:
                raise DataError(p, "expected [time, rate, ...] rows", i)
            if len(r) >= 6 and any(x not in (0, 0.0, None) for x in r[2:5]):
                raise DataError(p, "columns 2-4 are not 0: this looks like a candle file, not funding rates", i)
            pairs.append((i, _time_value(p, i, r[0]), r[1]))
    else:
        rows = _csv_rows(text)
        if not rows:
            raise DataError(p, "empty file")
        tcol, rcol, first = 0, 1, 1
        if _is_header(rows[0]):
            header = [h.strip().lower() for h in rows[0]]
            tcol = next((header.index(k) for k in _FUNDING_TIME_KEYS if k in header), None)
            rcol = next((header.index(k) for k in _FUNDING_RATE_KEYS if k in header), None)
            if tcol is None or rcol is None:
                raise DataError(p, "header needs a time column (funding_time/calc_time) and a rate column "
                                   "(funding_rate/last_funding_rate)", 1)
            rows, first = rows[1:], 2
        width = max(tcol, rcol) + 1
        for i, r in enumerate(rows, start=first):
            if len(r) < width:
                raise DataError(p, f"expected at least {width} columns, found {len(r)}", i)
            pairs.append((i, _time_value(p, i, r[tcol]), r[rcol].strip()))
    sym = (symbol or parse_file_name(p).symbol or "").upper()
    if not sym:
        raise DataError(p, "cannot tell the symbol from the file name; pass symbol=")
    out: list[FundingRate] = []
    prev = None
    for row, t, raw in pairs:
        x = _num(p, row, raw, "funding rate")
        if abs(x) >= 1:
            raise DataError(p, f"funding rate {raw!r} is not a fraction", row)
        if prev is not None and t <= prev:
            raise DataError(p, "duplicate timestamp" if t == prev else "timestamps not sorted", row)
        prev = t
        try:
            rate = Decimal(raw) if isinstance(raw, str) else Decimal(repr(float(raw)))
        except InvalidOperation:
            raise DataError(p, f"non-numeric funding rate {raw!r}", row) from None
        out.append(FundingRate(sym, t, rate))
    if not out:
        raise DataError(p, "no funding rates in file")
    return out


def sniff(path: str | Path) -> str:
    """``"candles"``, ``"funding"`` or ``"mark"`` for a data file (name first, then content)."""
    p = Path(path)
    kind = parse_file_name(p).kind
    if kind != "candles":
        return kind
    text = _read_text(p).lstrip()
    if text.startswith("["):
        rows = _rows_from_json(p, text)[:5]
        if rows and all(isinstance(r, list) and len(r) >= 6 and r[2] == r[3] == r[4] == 0 for r in rows):
            return "funding"
    else:
        rows = _csv_rows(text[:4096])
        if rows and _is_header(rows[0]):
            header = [h.strip().lower() for h in rows[0]]
            if any(k in header for k in _FUNDING_RATE_KEYS):
                return "funding"
    return "candles"


@dataclass(frozen=True, slots=True)
class DataFiles:
    """What :func:`load_files` read: candle series (with their file), funding rates per symbol
    (sorted by time) and the mark-price files it left alone (they are never traded)."""

    candles: tuple[tuple[Path, LoadedCandles], ...]
    funding: dict[str, list[FundingRate]]
    marks: tuple[Path, ...]


def load_files(paths: Iterable[str | Path], *, allow_gaps: bool = False) -> DataFiles:
    """Read kline and funding files, each by the kind :func:`sniff` detects; bad data raises
    :class:`DataError` naming file and row.  Which series a caller uses is its own choice."""
    candles: list[tuple[Path, LoadedCandles]] = []
    funding: dict[str, list[FundingRate]] = {}
    marks: list[Path] = []
    for raw in paths:
        p = Path(raw)
        kind = sniff(p)
        if kind == "mark":
            marks.append(p)
        elif kind == "funding":
            rates = load_funding(p)
            funding.setdefault(rates[0].symbol, []).extend(rates)
        else:
            candles.append((p, load_candles(p, allow_gaps=allow_gaps)))
    for rates in funding.values():
        rates.sort(key=lambda f: f.funding_time)
    return DataFiles(tuple(candles), funding, tuple(marks))


# -- writing (the download format) ----------------------------------------------------------

def _fmt(x: float) -> str:
    return repr(float(x))


def write_klines_csv(path: str | Path, candles: Candles, *, quote_volume: np.ndarray | None = None) -> None:
    """Write closed candles as a Binance-archive CSV with header (the download format).

    Columns the data does not have are synthesised: quote volume = volume x close when not
    given, trade count and taker volumes 0.  Written to a temp file and renamed (atomic).
    """
    c = candles.closed_only()
    step = interval_ms(c.interval)
    qv = quote_volume if quote_volume is not None else c.volume * c.close
    if len(qv) < len(c):
        raise ValueError("quote_volume is shorter than the candles")
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(_KLINE_HEADER)
        for i in range(len(c)):
            t = int(c.open_time[i])
            w.writerow((t, _fmt(c.open[i]), _fmt(c.high[i]), _fmt(c.low[i]), _fmt(c.close[i]), _fmt(c.volume[i]),
                        t + step - 1, _fmt(qv[i]), 0, "0", "0", "0"))
        f.flush()
    tmp.replace(p)


def download_file_name(symbol: str, interval: str) -> str:
    """File name of the download format: ``BTCUSDT-5m.csv``."""
    interval_ms(interval)
    return f"{symbol.upper()}-{interval}.csv"


# -- resampling -----------------------------------------------------------------------------

def bucket_offset_ms(interval: str) -> int:
    """Alignment of ``interval`` buckets relative to the epoch (weekly candles open on Monday)."""
    return _WEEK_OFFSET_MS if interval == "1w" else 0


def bucket_start(t_ms: int, interval: str) -> int:
    step = interval_ms(interval)
    off = bucket_offset_ms(interval)
    return (t_ms - off) // step * step + off


def resample(candles: Candles, interval: str) -> Candles:
    """Aggregate candles to a higher ``interval`` (buckets aligned like Binance: UTC, weeks on Monday).

    A leading bucket that starts before the data is dropped; the trailing bucket is returned
    as the forming candle (``last_closed=False``) unless all its base candles are present and
    closed, so only complete buckets count as closed.  Interior gaps are aggregated from the
    candles that exist.
    """
    src = interval_ms(candles.interval)
    dst = interval_ms(interval)
    if dst == src:
        return candles
    if dst < src or dst % src:
        raise ValueError(f"cannot resample {candles.interval} candles to {interval}")
    if len(candles) == 0:
        return Candles.empty(interval)
    off = bucket_offset_ms(interval)
    ot = candles.open_time
    bid = (ot - off) // dst
    starts = np.flatnonzero(np.r_[True, bid[1:] != bid[:-1]])
    ends = np.r_[starts[1:], len(ot)]
    b_ot = bid[starts] * dst + off
    first_complete = int(ot[0]) == int(b_ot[0])
    last_end = int(ot[-1]) + src
    last_complete = candles.last_closed and last_end == int(b_ot[-1]) + dst
    o = candles.open[starts]
    h = np.maximum.reduceat(candles.high, starts)
    lo = np.minimum.reduceat(candles.low, starts)
    c = candles.close[ends - 1]
    v = np.add.reduceat(candles.volume, starts)
    s = 0 if first_complete else 1
    if s >= len(starts):
        return Candles.empty(interval)
    return Candles(b_ot[s:].astype(np.int64), o[s:], h[s:], lo[s:], c[s:], v[s:], interval, bool(last_complete))
