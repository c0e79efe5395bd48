"""Chaos 4: the venue's clock jumps by +-5 s; signed calls recover through a resync.

``recvWindow`` is 4000 ms, so a 5 s jump either way makes the next signed request fail with
-1021 (too old, or more than 1 s ahead).  What must hold:

* the client (``RestExchange``): every kind of signed call (read, order, conditional order,
  cancel) that meets a jump gets exactly one -1021, resyncs with the server time, is sent again
  and succeeds; an order is placed exactly once;
* the live bot (real process, real HTTP): while the clock jumps back and forth, its signed calls
  keep succeeding after each jump, and no step fails because of it.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from _venue_fixtures import client, fast_settings, min_order, tick_round
from chaos_harness import make_keys, trading_bot, venue_state
from mraster_tui.engine.types import OrderRequest, OrderType, Side

pytestmark = pytest.mark.timeout(90)

SKEW_MS = 5000
RECV_WINDOW = "4000"


async def test_signed_calls_resync_on_each_jump(loopback) -> None:
    key, secret = make_keys(4)
    ex = loopback(synthetic=4, seed=4, api_key=key, api_secret=secret)
    rest = client(ex.base_url, key=key, secret=secret, settings=fast_settings(recv_window=int(RECV_WINDOW)))
    try:
        sym = "BTCUSDT"
        qty, mark, f = await min_order(rest, sym)
        await rest.balance()  # synced at +0
        placed_before = len(venue_state(ex).orders)
        steps = [
            (+SKEW_MS, "read", lambda: rest.balance()),
            (-SKEW_MS, "order", lambda: rest.place_order(OrderRequest(sym, Side.BUY, OrderType.MARKET, "chaos-e1",
                                                                      quantity=qty))),
            (+SKEW_MS, "stop", lambda: rest.place_order(OrderRequest(
                sym, Side.SELL, OrderType.STOP_MARKET, "chaos-s1", stop_price=tick_round(mark * Decimal("0.9"),
                                                                                          f.tick_size),
                close_position=True))),
            (-SKEW_MS, "cancel", lambda: rest.cancel_order(sym, "chaos-s1", conditional=True)),
            (0, "positions", lambda: rest.positions()),
        ]
        for skew, what, call in steps:
            ex.control(skew_ms=skew)
            ex.clear_requests()
            assert await call() is not None
            log = [(r["method"], r["path"], r["code"] if r["status"] != 200 else 200) for r in ex.requests()]
            # one rejection, a resync, the same call again: accepted (a cancel may read the order after)
            assert log[0][2] == -1021 and log[1][1] == "/fapi/v1/time" and log[2][:2] == log[0][:2], \
                f"{what} at skew {skew:+d}: {log}"
            assert all(code == 200 for *_, code in log[1:]), f"{what} at skew {skew:+d}: {log}"
        v = venue_state(ex)
        assert [o.client_id for o in v.orders[placed_before:]] == ["chaos-e1", "chaos-s1"]  # each placed once
        assert sym in v.positions and not v.open_orders
    finally:
        await rest.close()


def test_live_bot_rides_out_clock_jumps(loopback, bots, tmp_path) -> None:
    key, secret = make_keys(44)
    ex = loopback(synthetic=12, seed=5, api_key=key, api_secret=secret)
    bot = trading_bot(ex, tmp_path / "bot", key, secret, bots,
                      settings={"ASTER_RECV_WINDOW": RECV_WINDOW, "ASTER_GUARD_INTERVAL_SEC": "1",
                                "ASTER_LOOP_SLEEP": "1"})
    mark = len(bot.lines)
    for skew in (+SKEW_MS, -SKEW_MS, +SKEW_MS, 0):
        ex.clear_requests()
        ex.control(skew_ms=skew)
        time.sleep(2.2)  # two guard passes and more
        log = ex.requests()
        signed = [r for r in log if r["signed"]]
        rejected = [r for r in signed if r["code"] == -1021]
        assert rejected, f"skew {skew:+d}: no signed request met the jump"
        first = log.index(rejected[0])
        assert any(r["path"] == "/fapi/v1/time" for r in log[first:]), f"skew {skew:+d}: no resync"
        after = [r for r in signed if r["time"] > rejected[-1]["time"]]
        assert after and all(r["status"] == 200 for r in after), \
            f"skew {skew:+d}: signed calls still failing after the resync: {[(r['path'], r['code']) for r in after]}"
        # each rejected call was sent again and went through (one -1021 per call at most)
        assert len(rejected) <= len([r for r in signed if r["status"] == 200])
    failed = [ln.msg for ln in bot.events(since=mark) if ln.obj.get("level") == "ERROR"]
    assert not failed, f"steps failed during the clock jumps: {failed}"
    assert bot.proc.poll() is None and "Traceback" not in bot.stderr
    assert bot.terminate() == 0, bot.tail()
