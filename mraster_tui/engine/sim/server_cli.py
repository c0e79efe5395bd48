"""``mraster-tui sim-exchange``: run the loopback Binance-compatible exchange as a process.

The first line on stdout is the address (``listening on http://127.0.0.1:43121``), flushed, so
a parent process can read it even with ``--port 0``.  Ctrl-C and SIGTERM stop it cleanly (exit
0).  Also runnable as ``python -m mraster_tui.engine.sim.server_cli``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation
from typing import Any

from mraster_tui.engine.sim.testvector import TEST_API_KEY, TEST_API_SECRET, VENUES


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``sim-exchange`` on an ``argparse`` sub-parser collection."""
    p = subparsers.add_parser(
        "sim-exchange", help="run the loopback Binance-compatible test exchange",
        description="A simulated Binance USD-M / AsterDex exchange on loopback HTTP, for tests and demos. "
                    "Faults can also be changed at run time with POST /_control (JSON).")
    _add_arguments(p)
    p.set_defaults(run=run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default 0)")
    p.add_argument("--venue", choices=VENUES, default="binance",
                   help="binance: conditional orders via /fapi/v1/algoOrder; aster: on /fapi/v1/order")
    market = p.add_mutually_exclusive_group()
    market.add_argument("--data", nargs="+", metavar="FILE", default=[],
                        help="replay kline files (Binance CSV, freqtrade JSON...) instead of a synthetic market")
    market.add_argument("--synthetic", action="store_true", help="serve a synthetic market (the default)")
    p.add_argument("--symbols", type=int, default=20, help="symbols of the synthetic market (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic market and the fault RNG")
    p.add_argument("--speed", type=float, default=1.0,
                   help="clock speed: sim time = start + elapsed * SPEED (default 1 = wall clock)")
    p.add_argument("--start-ms", type=int, default=None, help="sim start time in epoch ms (default: now, "
                                                               "or the start of the replay data)")
    p.add_argument("--api-key", default=TEST_API_KEY, help="accepted API key (default: the docs' test vector key)")
    p.add_argument("--api-secret", default=TEST_API_SECRET, help="its secret (default: the test vector secret)")
    p.add_argument("--balance", default="10000", help="starting USDT wallet balance (default 10000)")
    p.add_argument("--weight-limit", type=int, default=2400, help="REQUEST_WEIGHT per minute (default 2400)")
    p.add_argument("--ban-after", type=int, default=3,
                   help="requests tolerated after a 429 in the same minute before a 418 ban (default 3)")
    p.add_argument("--ban-seconds", type=float, default=120.0, help="length of a 418 ban (default 120)")
    faults = p.add_argument_group("fault injection (also: POST /_control)")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    faults.add_argument("--latency-path", action="append", default=[], metavar="PATH=MS",
                        help="added latency for one path (repeatable)")
    faults.add_argument("--error-rate", type=float, default=0.0, help="share of requests failing with a 5xx")
    faults.add_argument("--error-status", type=int, default=503, choices=(500, 502, 503, 504),
                        help="status of those failures (default 503)")
    faults.add_argument("--skew-ms", type=int, default=0, help="server clock offset in ms")
    faults.add_argument("--drop-orders", type=int, default=0, metavar="N",
                        help="accept the next N orders, then drop the connection without an answer")
    faults.add_argument("--unknown-orders", type=int, default=0, metavar="N",
                        help="accept the next N orders, then answer 503 'Unknown error...'")
    faults.add_argument("--force-429", type=int, default=0, metavar="N", help="answer the next N requests with 429")
    faults.add_argument("--force-418", type=int, default=0, metavar="N", help="answer the next N requests with 418")
    faults.add_argument("--garbage", type=int, default=0, metavar="N",
                        help="answer the next N requests with an HTML error page (status 200)")
    faults.add_argument("--fault", action="append", default=[], metavar="JSON",
                        help='any fault rule as JSON, e.g. \'{"kind":"error","path":"/fapi/v1/klines","count":2}\'')


class CliError(ValueError):
    """A bad flag value, reported as one line."""


def _faults_from_args(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.latency_ms:
        changes["latency_ms"] = args.latency_ms
    if args.latency_path:
        paths = {}
        for item in args.latency_path:
            path, sep, ms = item.partition("=")
            try:
                paths[path] = float(ms)
            except ValueError:
                raise CliError(f"--latency-path wants PATH=MS, got {item!r}") from None
            if not sep or not path.startswith("/"):
                raise CliError(f"--latency-path wants PATH=MS, got {item!r}")
        changes["latency_paths"] = paths
    if args.error_rate:
        changes["error_rate"] = args.error_rate
        changes["error_status"] = args.error_status
        changes["seed"] = args.seed
    if args.skew_ms:
        changes["skew_ms"] = args.skew_ms
    rules: list[dict[str, Any]] = []
    order_paths = ["/fapi/v1/order", "/fapi/v1/algoOrder"]
    for flag, kind in ((args.drop_orders, "drop"), (args.unknown_orders, "unknown")):
        if flag:
            rules.append({"kind": kind, "path": order_paths, "method": "POST", "count": flag})
    for flag, kind in ((args.force_429, "429"), (args.force_418, "418"), (args.garbage, "garbage")):
        if flag:
            rules.append({"kind": kind, "count": flag})
    for raw in args.fault:
        try:
            rules.append(json.loads(raw))
        except ValueError:
            raise CliError(f"--fault wants a JSON object, got {raw!r}") from None
    if rules:
        changes["faults"] = rules
    return changes


def _balance(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        raise CliError(f"--balance must be a number >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run until Ctrl-C / SIGTERM; 0 on a clean stop, 2 on bad arguments or data."""
    # imported here: every other mraster-tui command would pay for the server's imports
    from mraster_tui.engine.sim.server import ControlError, LoopbackExchange

    try:
        balance = _balance(args.balance)
        if not args.speed > 0:
            raise CliError("--speed must be > 0")
        if args.symbols < 1:
            raise CliError("--symbols must be >= 1")
        server = LoopbackExchange(
            host=args.host, port=args.port, venue=args.venue, api_key=args.api_key, api_secret=args.api_secret,
            speed=args.speed, start_ms=args.start_ms, synthetic=None if args.data else args.symbols,
            data=args.data, seed=args.seed, balance=balance, weight_limit=args.weight_limit,
            ban_after=args.ban_after, ban_seconds=args.ban_seconds, faults=_faults_from_args(args))
        server.start()
    except (CliError, ControlError, ValueError, OSError) as e:
        print(f"sim-exchange: {e}", file=sys.stderr)
        return 2
    print(f"listening on {server.base_url}", flush=True)
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not stop.wait(0.1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mraster-tui sim-exchange",
                                     description="Run the loopback Binance-compatible test exchange.")
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
