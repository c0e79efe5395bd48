"""``mraster-tui backtest`` and ``mraster-tui download`` (no textual: plain text on stdout).

Foreseeable problems (bad data, a bad date, an unreachable venue) print one line to stderr and
exit 2; never a traceback.  A progress bar is drawn on stderr only when it is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from mraster_tui.config import ConfigError, load_settings
from mraster_tui.config import paths

EXIT_OK, EXIT_ERROR = 0, 2


class CliError(Exception):
    """A one-line user-facing error (exit 2)."""


def add_parser(subparsers: Any) -> None:
    """Register the ``backtest`` and ``download`` subcommands."""
    bt = subparsers.add_parser(
        "backtest", help="run the engine (policy included) over historical candles",
        description="Replay kline files through the same engine as live trading, on the simulated "
                    "exchange under a simulated clock, and print a report.")
    bt.add_argument("--data", nargs="+", required=True, metavar="PATH",
                    help="kline files or folders (Binance archive CSV, freqtrade JSON, download files); "
                         "funding files (*funding*) are picked up too")
    bt.add_argument("--from", dest="from_", metavar="DATE", help="first candle to trade (UTC date or time; "
                                                                   "earlier candles only warm up indicators)")
    bt.add_argument("--to", metavar="DATE", help="trade up to this time (UTC, exclusive)")
    bt.add_argument("--config", dest="bt_config", metavar="PATH", help="config file (strategy and risk settings)")
    bt.add_argument("--preset", dest="bt_preset", choices=("low", "mid", "high"), help="apply a preset")
    bt.add_argument("--json", dest="json_out", metavar="OUT", help="write the full report (with every trade) as JSON")
    bt.add_argument("--no-plot", action="store_true", help="do not draw the equity curve")
    bt.add_argument("--seed", type=int, default=0, help="seed of the policy's exploration (default 0)")
    bt.add_argument("--balance", type=float, default=None,
                    help="starting USDT balance (default: ASTER_PAPER_BALANCE)")
    bt.add_argument("--allow-gaps", action="store_true", help="accept candle files with gaps")
    bt.add_argument("--every-candle", action="store_true",
                    help="run the engine's scan, guard and FastTP on every candle (slower; same trades)")
    bt.set_defaults(run=run_backtest_cmd)

    dl = subparsers.add_parser(
        "download", help="download klines and funding history from the venue's public API",
        description="Download closed candles (and funding rates) into the data dir, resuming files "
                    "that exist. Only public endpoints are used; no key is needed.")
    dl.add_argument("--symbols", required=True, help="comma-separated symbols, e.g. BTCUSDT,ETHUSDT")
    dl.add_argument("--interval", default="5m", help="candle interval (default 5m)")
    dl.add_argument("--from", dest="from_", required=True, metavar="DATE", help="first candle (UTC date or time)")
    dl.add_argument("--to", metavar="DATE", help="end, exclusive (UTC; default: now)")
    dl.add_argument("--out", metavar="DIR", help="target folder (default: <data dir>/history)")
    dl.add_argument("--base-url", help="REST endpoint (default: ASTER_EXCHANGE_BASE)")
    dl.add_argument("--config", dest="dl_config", metavar="PATH", help="config file")
    dl.add_argument("--no-funding", action="store_true", help="klines only")
    dl.set_defaults(run=run_download_cmd)


# -- helpers ---------------------------------------------------------------------------------------

def parse_time(text: str | None, what: str) -> int | None:
    """Epoch ms from ``2024-01-31``, ``2024-01-31T12:00``, ``2024-01-31 12:00:00`` (UTC) or epoch ms."""
    if text is None:
        return None
    t = text.strip()
    if t.isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{what}: {text!r} is not a date (use YYYY-MM-DD, YYYY-MM-DDTHH:MM or epoch ms)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


class ProgressBar:
    """A one-line progress bar on a terminal; silent when the stream is not a TTY (piped)."""

    def __init__(self, label: str, stream: IO[str] | None = None, *, min_interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.min_interval = min_interval
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, total: int, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval and done < total:
            return
        self._last = now
        width = 30
        frac = min(1.0, done / total) if total > 0 else 0.0
        bar = "█" * int(frac * width) + "░" * (width - int(frac * width))
        count = f"{done:,}/{total:,}" if total > 0 else f"{done:,}"
        self.stream.write(f"\r{self.label} {bar} {frac * 100:5.1f}% {count} {note}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def _settings(config: str | None, preset: str | None):
    try:
        return load_settings(config, cli={"preset": preset} if preset else None)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_ERROR


# -- backtest --------------------------------------------------------------------------------------

def run_backtest_cmd(args: argparse.Namespace) -> int:
    from mraster_tui.engine.backtest import BacktestError, load_dataset, run_backtest
    from mraster_tui.engine.data import DataError

    try:
        settings = _settings(getattr(args, "bt_config", None) or getattr(args, "config", None),
                             getattr(args, "bt_preset", None))
        from_ms = parse_time(args.from_, "--from")
        to_ms = parse_time(args.to, "--to")
        if from_ms is not None and to_ms is not None and to_ms <= from_ms:
            raise CliError("--to must be after --from")
        if args.balance is not None and not 0 < args.balance < 1e15:
            raise CliError(f"--balance must be a positive amount of USDT, got {args.balance:g}")
        dataset = load_dataset([Path(p) for p in args.data], interval=settings.interval,
                               htf_interval=settings.htf_interval, allow_gaps=args.allow_gaps)
        bar = ProgressBar("backtest")
        try:
            report = run_backtest(dataset, settings, seed=args.seed, from_ms=from_ms, to_ms=to_ms,
                                  balance=args.balance, every_candle=args.every_candle, progress=bar.update)
        finally:
            bar.close()
    except (CliError, DataError, BacktestError) as exc:
        return _fail(str(exc))
    print(report.render_text(plot=not args.no_plot))
    if args.json_out:
        out = Path(args.json_out)
        try:
            out.write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            return _fail(f"{out}: cannot write ({exc.strerror or exc})")
        print(f"report written to {out}")
    return EXIT_OK


# -- download --------------------------------------------------------------------------------------

def run_download_cmd(args: argparse.Namespace) -> int:
    from mraster_tui.engine.download import DownloadError, download
    from mraster_tui.engine.errors import VenueError
    from mraster_tui.engine.venue.rest import RestExchange

    try:
        settings = _settings(getattr(args, "dl_config", None) or getattr(args, "config", None), None)
        start = parse_time(args.from_, "--from")
        end = parse_time(args.to, "--to") or int(time.time() * 1000)
        assert start is not None
        out = Path(args.out) if args.out else paths.data_dir() / "history"
        base = args.base_url or settings.exchange_base
        symbols = [s for s in args.symbols.split(",") if s.strip()]
        bar = ProgressBar("download")

        def progress(sym: str, what: str, done: int, total: int) -> None:
            bar.update(done, total, f"{sym} {what}")

        async def go():
            try:
                rest = RestExchange(base, venue=settings.venue, settings=settings)
            except ValueError as exc:
                raise CliError(str(exc)) from None
            try:
                return await download(rest.public_only(), symbols, args.interval, start, end, out,
                                      funding=not args.no_funding, progress=progress)
            finally:
                await rest.close()

        try:
            results = asyncio.run(go())
        finally:
            bar.close()
    except (CliError, DownloadError, VenueError) as exc:
        return _fail(str(exc))
    for r in results:
        span = ""
        if r.first_ms is not None and r.last_ms is not None:
            span = f" {_fmt_ms(r.first_ms)} .. {_fmt_ms(r.last_ms)}"
        state = "resumed" if r.resumed else "new"
        print(f"{r.path}: {r.kind} +{r.added} rows ({r.rows} total, {state}){span}")
    return EXIT_OK


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
