"""Chaos 5: a 429 storm, then a 418 IP ban, on a live trading bot (real process, real HTTP).

The bot trades with open positions (guard every second, FastTP sampling, housekeeping) when the
loopback exchange answers the next requests with 429 (``Retry-After: 1``) and then bans the IP
(418, "IP banned until <ms>", ``Retry-After: 2``).  What must hold, read from the exchange's own
request log and the bot's events:

* after each 429 nothing more is sent until its ``Retry-After`` has passed (requests already in
  flight excepted);
* after the 418 nothing at all is sent until the ban ends; then the bot carries on (signed
  requests succeed again);
* the circuit breaker shows the ban (``ip_ban`` on while banned, off after), and the rate-limit
  events are reported;
* nothing is lost: the bot never exits, no trade is closed or forgotten because of it, and after
  a clean stop the state and the venue agree exactly (every position with its stop).
"""

from __future__ import annotations

import time

import pytest

from chaos_harness import final_reconcile, make_keys, read_state, trading_bot, venue_state

pytestmark = pytest.mark.timeout(120)

#: requests already sent when the 429/418 answer arrived may still land this long after it
IN_FLIGHT_MS = 300
FAST_GUARD = {"ASTER_GUARD_INTERVAL_SEC": "1", "ASTER_LOOP_SLEEP": "1"}


def _arrivals(log: list[dict], after: int, before: int) -> list[dict]:
    return [r for r in log if after < r["time"] < before]


def test_429_storm_and_418_ban(loopback, bots, tmp_path) -> None:
    key, secret = make_keys(5)
    ex = loopback(synthetic=12, seed=5, api_key=key, api_secret=secret)
    home = tmp_path / "bot"
    bot = trading_bot(ex, home, key, secret, bots, settings=FAST_GUARD)
    live_before = set(read_state(home / "data" / "aster_state.json").live)
    assert live_before

    # -- a storm of 429s: each one must pause every request for its Retry-After (1 s)
    ex.clear_requests()
    ex.fault("429", count=3, retry_after=1)
    deadline = time.monotonic() + 10
    while ex.control()["faults"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ex.control()["faults"], "the bot stopped sending requests altogether"
    time.sleep(0.5)
    log = ex.requests()
    storms = [r for r in log if r["status"] == 429]
    assert len(storms) == 3
    for r in storms:
        early = [x for x in _arrivals(log, r["time"] + IN_FLIGHT_MS, r["time"] + 1000) if x is not r]
        assert not early, f"requests sent during the 429 cool-down: {[(x['method'], x['path']) for x in early]}"

    # -- a 418 ban: nothing at all until it ends, then business as usual
    ex.clear_requests()
    ex.fault("418", count=1, retry_after=2)
    time.sleep(3.5)
    log = ex.requests()
    bans = [r for r in log if r["status"] == 418]
    assert len(bans) == 1
    ban = bans[0]
    until = ban["time"] + 2000  # "IP banned until <now + Retry-After>" (server clock = wall clock here)
    during = _arrivals(log, ban["time"] + IN_FLIGHT_MS, until)
    assert not during, f"requests sent while banned: {[(x['method'], x['path'], x['time'] - ban['time']) for x in during]}"
    resumed = [r for r in log if r["time"] >= until and r["signed"] and r["status"] == 200]
    assert resumed, "no signed request succeeded after the ban ended"

    # -- the breaker showed it, and let go after the ban
    breaker = [ln.obj for ln in bot.events("breaker")]
    on = [b for b in breaker if b.get("cause") == "ip_ban" and b.get("active") and "ip_ban" in b.get("reasons", [])]
    off = [b for b in breaker if b.get("cause") == "ip_ban" and "ip_ban" not in b.get("reasons", [])]
    assert on and off, f"breaker events: {breaker}"
    venue_events = {ln.obj.get("venue_event") for ln in bot.events("rate_limit")}
    assert {"rate_limited", "ip_banned"} <= venue_events, venue_events

    # -- nothing lost: still running, nothing closed by the outage, state and venue agree
    assert bot.proc.poll() is None, bot.tail()
    closed = [ln.obj for ln in bot.events("position_closed")]
    assert all(c["trade"]["exit_source"] == "fills" for c in closed), closed
    v = venue_state(ex)
    still = read_state(home / "data" / "aster_state.json")
    gone = live_before - set(still.live)
    recorded = {t.symbol for t in still.history}
    assert gone <= recorded and not (gone & set(v.positions)), (gone, recorded, sorted(v.positions))
    assert "Traceback" not in bot.stderr
    assert bot.terminate() == 0, bot.tail()
    final_reconcile(ex, home, key, secret, bots, settings=FAST_GUARD)
