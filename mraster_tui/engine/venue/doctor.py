"""``mraster-tui doctor``: check the configured venue before going live.

One line per check, ``ok`` / ``warn`` / ``FAIL`` and the finding in plain words; the exit code is
non-zero when a check failed.  Every line passes through the redactor, so neither the key, the
secret nor a signature can be printed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from mraster_tui.engine.clock import WallClock
from mraster_tui.engine.errors import AuthError, InvalidTimestamp, VenueError
from mraster_tui.engine.types import ExchangeInfo
from mraster_tui.engine.venue.rest import RestExchange
from mraster_tui.engine.venue.signing import Redactor

#: a kline fetch slower than this is reported as a warning
SLOW_KLINE_MS = 2000
#: weight use above this fraction of the limit is reported as a warning
BUSY_WEIGHT = 0.8

_AUTH_TEXT = {
    -1022: "the API secret does not match the key (the venue rejected the signature)",
    -2014: "the API key has an invalid format",
    -2015: "the venue rejected the API key: wrong key, this IP is not allowed, or the key lacks futures permission",
}


class _Report:
    def __init__(self, out: Callable[[str], Any], redactor: Redactor) -> None:
        self.out, self.redact, self.failed = out, redactor, 0

    def line(self, status: str, name: str, text: str) -> None:
        if status == "FAIL":
            self.failed += 1
        self.out(self.redact(f"{status:<4}  {name}: {text}"))


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, VenueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _kline_symbol(settings: Any, info: ExchangeInfo | None) -> str:
    wanted = [*tuple(getattr(settings, "include_symbols", ()) or ()), "BTCUSDT"]
    if info is None:
        return wanted[0]
    for sym in wanted:
        if sym in info.symbols and info.symbols[sym].status == "TRADING":
            return sym
    trading = sorted(s for s, i in info.symbols.items() if i.status == "TRADING")
    return trading[0] if trading else wanted[0]


async def run_doctor(settings: Any, *, out: Callable[[str], Any] = print, require_key: bool = True,
                     transport: Any = None) -> int:
    """Run every check against ``settings.exchange_base``; 0 when all passed, else 1.

    ``require_key=False`` (``--public``) turns a missing API key into a skipped check.
    """
    key = getattr(settings, "api_key", "") or None
    secret = getattr(settings, "api_secret", "") or None
    rep = _Report(out, Redactor(key, secret))
    base = str(getattr(settings, "exchange_base", ""))
    clock = WallClock()
    try:
        ex = RestExchange(base, api_key=key, api_secret=secret, venue=getattr(settings, "venue", "auto"),
                          settings=settings, clock=clock, transport=transport)
    except ValueError as exc:
        rep.line("FAIL", "configuration", str(exc))
        return 1
    try:
        await _checks(ex, settings, rep, clock, key, secret, require_key)
    finally:
        await ex.close()
    out(f"doctor: {'all checks passed' if not rep.failed else f'{rep.failed} check(s) failed'}")
    return 1 if rep.failed else 0


async def _checks(ex: RestExchange, settings: Any, rep: _Report, clock: WallClock, key: str | None,
                  secret: str | None, require_key: bool) -> None:
    recv_window = ex.recv_window
    # 1. reachability and clock
    t0 = clock.now_ms()
    try:
        offset = await ex.sync_time()
    except (VenueError, OSError) as exc:
        rep.line("FAIL", "reachability", f"cannot reach {ex.base_url}: {_error_text(exc)}")
        return
    rtt = clock.now_ms() - t0
    text = f"{ex.base_url} answered in {rtt} ms; the venue's clock is {offset:+d} ms from this machine's"
    if abs(offset) > recv_window / 2:
        rep.line("FAIL", "reachability", f"{text}, more than half the recvWindow ({recv_window} ms): "
                 "synchronise this machine's clock (NTP) before trading")
    elif abs(offset) > 1000:
        rep.line("warn", "reachability", f"{text}; consider synchronising this machine's clock")
    else:
        rep.line("ok", "reachability", text)

    # 2. venue and capabilities
    caps = ex.capabilities
    stops = "through the algo-order endpoints" if caps.conditional_via_algo else "on /fapi/v1/order"
    rep.line("ok", "venue", f"{caps.name} ({ex.venue_reason}); stop/take-profit orders go {stops}; "
             f"account endpoint {caps.account_path}")
    info: ExchangeInfo | None = None
    try:
        info = await ex.exchange_info()
        n = sum(1 for s in info.symbols.values() if s.status == "TRADING")
        snap = ex.rate_limit_snapshot()
        limits = f"{snap.weight_limit} weight/min, {snap.order_limit_1m} orders/min"
        if snap.order_limit_10s:
            limits += f", {snap.order_limit_10s} orders/10 s"
        rep.line("ok", "exchange info", f"{n} symbols trading; limits {limits}")
    except VenueError as exc:
        rep.line("FAIL", "exchange info", f"cannot read the symbol list: {_error_text(exc)}")

    # 3. API key: a signed balance read, then the permissions the venue reports
    if not (key and secret):
        missing = "no API key and secret configured (ASTER_API_KEY / ASTER_API_SECRET)"
        if require_key:
            rep.line("FAIL", "API key", f"{missing}; live trading needs them")
        else:
            rep.line("ok", "API key", f"{missing}; skipped (public checks only)")
    else:
        await _key_checks(ex, settings, rep)

    # 4. rate-limit weight
    snap = ex.rate_limit_snapshot()
    status = "warn" if snap.weight_fraction > BUSY_WEIGHT else "ok"
    rep.line(status, "rate limit", f"{snap.used_weight} of {snap.weight_limit} request weight used this minute"
             + (" (another program on this IP is busy)" if status == "warn" else ""))

    # 5. kline latency
    sym = _kline_symbol(settings, info)
    interval = str(getattr(settings, "interval", "5m"))
    limit = int(getattr(settings, "klines", 360))
    t0 = clock.now_ms()
    try:
        candles = await ex.klines(sym, interval, limit)
    except (VenueError, ValueError) as exc:
        rep.line("FAIL", "klines", f"cannot fetch {sym} {interval}: {_error_text(exc)}")
        return
    ms = clock.now_ms() - t0
    status = "warn" if ms > SLOW_KLINE_MS else "ok"
    slow = " (slow)" if status == "warn" else ""
    rep.line(status, "klines", f"{sym} {interval} x{len(candles)} fetched in {ms} ms{slow}")


async def _key_checks(ex: RestExchange, settings: Any, rep: _Report) -> None:
    asset = str(getattr(settings, "quote", "USDT"))
    try:
        bal = await ex.balance(asset)
    except AuthError as exc:
        rep.line("FAIL", "API key", _AUTH_TEXT.get(exc.code or 0, f"the venue rejected the key: {exc}"))
        return
    except InvalidTimestamp:
        rep.line("FAIL", "API key", "the venue rejected the request time even after a clock resync; "
                 "synchronise this machine's clock")
        return
    except VenueError as exc:
        rep.line("FAIL", "API key", f"signed balance read failed: {_error_text(exc)}")
        return
    rep.line("ok", "API key", f"accepted; signed balance read: {asset} wallet {bal.wallet_balance}, "
             f"available {bal.available}")
    try:
        perms = await ex.permissions()
    except VenueError as exc:
        rep.line("FAIL", "permissions", f"cannot read the account: {_error_text(exc)}")
        return
    if perms.can_trade is False:
        rep.line("FAIL", "permissions", f"the venue says this account cannot trade ({perms.source})")
        return
    trade = "trading allowed" if perms.can_trade else "trading permission not reported by the venue"
    extra = ("; note: the venue reports withdrawals enabled on this account — make sure the bot's key "
             "has no withdrawal permission" if perms.can_withdraw else "")
    rep.line("ok", "permissions", f"{trade} ({perms.source}){extra}")


# -- CLI --------------------------------------------------------------------------------

def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("doctor", help="check the venue, clock, API key and limits before going live",
                              description="Checks reachability and clock offset, the venue and its "
                                          "capabilities, the API key (signed balance read) and its "
                                          "permissions, the rate-limit weight used and kline latency.")
    p.add_argument("--config", metavar="PATH", help="config file (default: the usual location)")
    p.add_argument("--base-url", metavar="URL", help="REST endpoint (overrides ASTER_EXCHANGE_BASE)")
    p.add_argument("--venue", choices=("auto", "binance", "aster"), help="venue dialect (overrides ASTER_VENUE)")
    p.add_argument("--public", action="store_true", help="skip the API key checks (paper trading)")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from mraster_tui.config.loader import ConfigError, load_settings

    try:
        settings = load_settings(getattr(args, "config", None),
                                 cli={"exchange_base": getattr(args, "base_url", None),
                                      "venue": getattr(args, "venue", None)})
    except ConfigError as exc:
        print(f"doctor: {exc}")
        return 2
    return asyncio.run(run_doctor(settings, require_key=not getattr(args, "public", False)))
