"""``mraster-tui download``: klines and funding history from a venue's PUBLIC REST API into the
data dir, in the format ``engine/data.py`` reads (and ``mraster-tui backtest`` takes).

Files (one per symbol; see :mod:`mraster_tui.engine.data`):

* ``<SYMBOL>-<interval>.csv``: the Binance public-archive kline CSV with its header line, closed
  candles only, oldest first.  Columns the port's ``Candles`` does not carry are synthesised
  like :func:`mraster_tui.engine.data.write_klines_csv` does (quote volume = volume x close,
  trade count and taker volumes 0).
* ``<SYMBOL>-funding.csv``: ``funding_time,funding_rate`` (epoch ms, the rate as the venue sent
  it), shared by every interval of the symbol.

Behaviour:

* **Resumable.**  An existing file is validated with the normal loader and the download continues
  after its last row; rows are appended and fsynced batch by batch, so an interrupted run loses at
  most the batch in flight.  A torn last line (a crash mid-write) is cut off before resuming.
  Only closed candles are written (a candle still forming on the venue's clock is left for the
  next run), so a resumed file never holds a candle that changed later.
* **Rate-limit aware.**  Every request goes through the venue client's rate-limit governor (the
  budget shared by the whole process, honouring ``Retry-After`` and bans), asks for 1000 candles
  (the cheapest weight per candle on Binance) and requests are sent one at a time.
* **Public only.**  It takes anything with the public market-data calls (``server_time``,
  ``klines``, ``funding_history``): a :class:`~mraster_tui.engine.venue.rest.RestExchange` without
  keys or its ``public_only()`` view.  Nothing is ever signed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mraster_tui.engine.data import DataError, download_file_name, load_candles, load_funding
from mraster_tui.engine.types import Candles, FundingRate, interval_ms

KLINES_PER_REQUEST = 1000
FUNDING_PER_REQUEST = 1000
KLINE_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                "taker_buy_volume,taker_buy_quote_volume,ignore")
FUNDING_HEADER = "funding_time,funding_rate"

#: progress callback: (symbol, what, done, total) with ``what`` "klines" or "funding"
Progress = Callable[[str, str, int, int], None]


class DownloadError(Exception):
    """A download problem in one line (bad arguments, an existing file that cannot be resumed)."""


class PublicMarketData(Protocol):
    async def server_time(self) -> int: ...

    async def klines(self, symbol: str, interval: str, limit: int, *,
                     start_ms: int | None = None, end_ms: int | None = None) -> Candles: ...

    async def funding_history(self, symbol: str, *, start_ms: int | None = None,
                              end_ms: int | None = None, limit: int = 1000) -> list[FundingRate]: ...


@dataclass(frozen=True, slots=True)
class FileResult:
    symbol: str
    kind: str  # "klines" | "funding"
    path: Path
    added: int  # rows written by this run
    rows: int  # rows in the file now
    resumed: bool  # the file existed and was continued
    first_ms: int | None  # first and last time in the file
    last_ms: int | None


def funding_file_name(symbol: str) -> str:
    """``BTCUSDT-funding.csv`` (recognised as funding by the loader)."""
    return f"{symbol.upper()}-funding.csv"


async def download(venue: PublicMarketData, symbols: Sequence[str], interval: str, start_ms: int, end_ms: int,
                   out_dir: str | os.PathLike, *, funding: bool = True,
                   progress: Progress | None = None) -> list[FileResult]:
    """Download klines (and funding history) of ``symbols`` for candles opening in
    ``[start_ms, end_ms)`` into ``out_dir``; see the module docstring."""
    step = _interval(interval)
    if end_ms <= start_ms:
        raise DownloadError(f"empty date range: the end must be after the start ({start_ms} >= {end_ms})")
    syms = _symbols(symbols)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"{out}: cannot create the folder ({exc.strerror or exc})") from None
    now = await venue.server_time()
    closed_end = min(end_ms, (now // step) * step)  # a candle is closed once open + step <= now
    results: list[FileResult] = []
    for sym in syms:
        results.append(await _download_klines(venue, sym, interval, step, start_ms, closed_end,
                                              out / download_file_name(sym, interval), progress))
        if funding:
            results.append(await _download_funding(venue, sym, start_ms, min(end_ms, now),
                                                   out / funding_file_name(sym), progress))
    return results


def _interval(interval: str) -> int:
    try:
        return interval_ms(interval)
    except ValueError as exc:
        raise DownloadError(str(exc)) from None


def _symbols(symbols: Sequence[str]) -> list[str]:
    syms = [s.strip().upper() for s in symbols if s.strip()]
    if not syms:
        raise DownloadError("no symbols given")
    bad = [s for s in syms if not s.isalnum()]
    if bad:
        raise DownloadError(f"not a symbol: {bad[0]!r}")
    return list(dict.fromkeys(syms))


# -- klines ---------------------------------------------------------------------------------------

async def _download_klines(venue: PublicMarketData, sym: str, interval: str, step: int, start_ms: int,
                           end_ms: int, path: Path, progress: Progress | None) -> FileResult:
    first = -(-start_ms // step) * step  # the first candle opening at or after the start
    existing = _existing_candles(path, sym, interval)
    resumed = existing is not None and len(existing) > 0
    if resumed:
        assert existing is not None
        cursor = int(existing.open_time[-1]) + step
        first_ms: int | None = int(existing.open_time[0])
        rows = len(existing)
    else:
        _write_new(path, KLINE_HEADER)
        cursor, first_ms, rows = first, None, 0
    total = max(0, (end_ms - max(cursor, first)) // step)
    added = 0
    last_ms = int(existing.open_time[-1]) if resumed and existing is not None else None
    cursor = max(cursor, first)
    while cursor < end_ms:
        batch = await venue.klines(sym, interval, KLINES_PER_REQUEST, start_ms=cursor, end_ms=end_ms - 1)
        keep = (batch.open_time >= cursor) & (batch.open_time < end_ms)
        if not keep.any():
            break  # nothing more on the venue in the range (not listed yet, or the end)
        lines = [_kline_line(batch, int(i), step) for i in keep.nonzero()[0]]
        _append(path, lines)
        added += len(lines)
        rows += len(lines)
        last_ms = int(batch.open_time[keep][-1])
        if first_ms is None:
            first_ms = int(batch.open_time[keep][0])
        cursor = last_ms + step
        if progress is not None:
            progress(sym, "klines", added, total)
    if progress is not None:
        progress(sym, "klines", added, added)
    return FileResult(sym, "klines", path, added, rows, resumed, first_ms, last_ms)


def _existing_candles(path: Path, sym: str, interval: str) -> Candles | None:
    if not path.exists():
        return None
    _cut_torn_line(path)
    if _data_lines(path) == 0:
        return None
    try:
        return load_candles(path, symbol=sym, interval=interval, allow_gaps=True).candles
    except DataError as exc:
        raise DownloadError(f"cannot resume: {exc} (move the file away to download afresh)") from None


def _kline_line(c: Candles, i: int, step: int) -> str:
    t = int(c.open_time[i])
    o, h, lo, cl, v = (repr(float(a[i])) for a in (c.open, c.high, c.low, c.close, c.volume))
    qv = repr(float(c.volume[i] * c.close[i]))
    return f"{t},{o},{h},{lo},{cl},{v},{t + step - 1},{qv},0,0,0,0"


# -- funding --------------------------------------------------------------------------------------

async def _download_funding(venue: PublicMarketData, sym: str, start_ms: int, end_ms: int, path: Path,
                            progress: Progress | None) -> FileResult:
    existing = _existing_funding(path, sym)
    resumed = bool(existing)
    if resumed:
        cursor = existing[-1].funding_time + 1
        first_ms: int | None = existing[0].funding_time
        last_ms: int | None = existing[-1].funding_time
        rows = len(existing)
    else:
        _write_new(path, FUNDING_HEADER)
        cursor, first_ms, last_ms, rows = start_ms, None, None, 0
    added = 0
    while cursor < end_ms:
        batch = [f for f in await venue.funding_history(sym, start_ms=cursor, end_ms=end_ms - 1,
                                                        limit=FUNDING_PER_REQUEST)
                 if cursor <= f.funding_time < end_ms]
        batch.sort(key=lambda f: f.funding_time)
        if not batch:
            break
        _append(path, [f"{f.funding_time},{f.funding_rate}" for f in batch])
        added += len(batch)
        rows += len(batch)
        first_ms = batch[0].funding_time if first_ms is None else first_ms
        last_ms = batch[-1].funding_time
        cursor = last_ms + 1
        if progress is not None:
            progress(sym, "funding", added, 0)
    return FileResult(sym, "funding", path, added, rows, resumed, first_ms, last_ms)


def _existing_funding(path: Path, sym: str) -> list[FundingRate]:
    if not path.exists():
        return []
    _cut_torn_line(path)
    if _data_lines(path) == 0:
        return []
    try:
        return load_funding(path, symbol=sym)
    except DataError as exc:
        raise DownloadError(f"cannot resume: {exc} (move the file away to download afresh)") from None


# -- files ----------------------------------------------------------------------------------------

def _write_new(path: Path, header: str) -> None:
    try:
        with path.open("w", encoding="utf-8", newline="") as f:
            f.write(header + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise DownloadError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _append(path: Path, lines: list[str]) -> None:
    try:
        with path.open("a", encoding="utf-8", newline="") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise DownloadError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _cut_torn_line(path: Path) -> None:
    """Drop a partial last line (no newline: the previous run died while writing it)."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    with path.open("r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


def _data_lines(path: Path) -> int:
    """Lines after the header."""
    with path.open("rb") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)
