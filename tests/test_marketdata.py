"""MarketData over real HTTP against the loopback exchange: concurrency bound, kline cache
(lifetime and candle-close invalidation), shared in-flight reads, outage fallback."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from _venue_fixtures import client, closing, fast_settings, requests, reset_server, start_server

from mraster_tui.engine.clock import SimClock, WallClock
from mraster_tui.engine.marketdata import MarketData

pytestmark = pytest.mark.timeout(60)

N_SYMBOLS = 6


@pytest.fixture(scope="module")
def srv_module():
    yield from closing(start_server("binance", symbols=N_SYMBOLS))


@pytest.fixture
def srv(srv_module):
    reset_server(srv_module)
    return srv_module


@pytest.fixture
async def ex(srv):
    e = client(srv.base_url, settings=fast_settings(http_retries=0))
    yield e
    await e.close()


@pytest.fixture
async def symbols(ex):
    return sorted((await ex.exchange_info()).symbols)


def md_settings(**kw):
    base = {"klines": 120, "kline_cache_sec": 45.0, "max_data_age_sec": 120.0, "fetch_concurrency": 4}
    base.update(kw)
    return fast_settings(http_retries=0, **base)


class CountingExchange:
    """The real client, with a count of klines calls in flight (to observe the bound)."""

    def __init__(self, ex) -> None:
        self.ex, self.inflight, self.max_inflight = ex, 0, 0

    async def klines(self, *a, **kw):
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            return await self.ex.klines(*a, **kw)
        finally:
            self.inflight -= 1

    def __getattr__(self, name):
        return getattr(self.ex, name)


async def test_scan_fetches_everything_concurrently_within_the_bound(srv, ex, symbols) -> None:
    srv.control(latency_ms=30)
    counting = CountingExchange(ex)
    md = MarketData(counting, md_settings(), WallClock())
    srv.clear_requests()
    scan = await md.scan(symbols)
    assert scan.errors == {}
    assert set(scan.snapshots) == set(symbols)
    assert counting.max_inflight == 4  # bounded by fetch_concurrency, and really concurrent
    assert scan.requests == 2 * len(symbols) + 2
    kl = requests(srv, "/fapi/v1/klines")
    assert sorted((r["params"]["symbol"], r["params"]["interval"]) for r in kl) == sorted(
        (s, i) for s in symbols for i in ("5m", "30m"))
    # one all-symbol call each for the book and the premium index
    assert [r["params"] for r in requests(srv, "/fapi/v1/ticker/bookTicker")] == [{}]
    assert [r["params"] for r in requests(srv, "/fapi/v1/premiumIndex")] == [{}]
    snap = scan.snapshots[symbols[0]]
    assert len(snap.ltf) == 120 and snap.ltf.interval == "5m" and snap.htf.interval == "30m"
    assert snap.book is not None and snap.premium is not None and snap.funding_rate is not None
    assert not snap.stale and snap.can_open and snap.problems == ()
    assert 0 <= snap.age_ms < 5000


async def test_kline_cache_lifetime_and_candle_close(srv, ex, symbols) -> None:
    start = (await ex.server_time())
    clock = SimClock(start)
    md = MarketData(ex, md_settings(kline_cache_sec=45), clock)
    first = await md.scan(symbols[:2])
    clock.advance(1)
    srv.clear_requests()
    second = await md.scan(symbols[:2])
    assert second.requests == 2  # only book + premium: klines served from the cache
    assert requests(srv, "/fapi/v1/klines") == []
    s0, s1 = first.snapshots[symbols[0]], second.snapshots[symbols[0]]
    assert s1.ltf is s0.ltf
    assert s1.age_ms >= 1000  # the cached piece's age shows
    # a candle close invalidates the cache before its lifetime ends
    ltf_close = int(s0.ltf.open_time[-1]) + 300_000
    # the close is judged on the venue's clock: local time = venue time - the measured offset
    # (a few ms either way; with the local clock exactly at the close, -1 ms would be before it)
    clock.set(max(clock.now_ms(), ltf_close - ex.time_offset_ms))
    srv.clear_requests()
    third = await md.scan(symbols[:2])
    refetched = {(r["params"]["symbol"], r["params"]["interval"]) for r in requests(srv, "/fapi/v1/klines")}
    assert {(s, "5m") for s in symbols[:2]} <= refetched
    assert third.requests >= 4
    # lifetime: 45 s later everything is refetched
    clock.advance(46)
    srv.clear_requests()
    fourth = await md.scan(symbols[:2])
    assert fourth.requests == 2 * 2 + 2


async def test_concurrent_readers_share_one_request(srv, ex, symbols) -> None:
    srv.control(latency_ms=30)
    md = MarketData(ex, md_settings(), WallClock())
    srv.clear_requests()
    a, b = await asyncio.gather(md.scan(symbols[:3]), md.scan(symbols[:3]))
    assert len(requests(srv, "/fapi/v1/klines")) == 6
    assert len(requests(srv, "/fapi/v1/ticker/bookTicker")) == 1
    assert a.snapshots[symbols[0]].ltf is b.snapshots[symbols[0]].ltf


async def test_outage_returns_last_good_data_flagged_stale(srv, ex, symbols) -> None:
    start = await ex.server_time()
    clock = SimClock(start)
    md = MarketData(ex, md_settings(kline_cache_sec=0, max_data_age_sec=120), clock)
    good = await md.scan(symbols[:2])
    assert all(s.can_open and not s.stale for s in good.snapshots.values())
    # the venue goes down
    srv.control(error_rate=1.0)
    clock.advance(30)
    bad = await md.scan(symbols[:3])
    assert bad.errors.keys() == {symbols[2]}  # never fetched: no data at all
    assert "503" in bad.errors[symbols[2]]
    snap = bad.snapshots[symbols[0]]
    assert snap.stale and snap.age_ms == 30_000
    assert snap.ltf is good.snapshots[symbols[0]].ltf
    assert any("5m klines" in p for p in snap.problems) and any("book tickers" in p for p in snap.problems)
    assert snap.can_open  # 30 s old: still within max_data_age_sec
    clock.advance(91)  # 121 s old now
    worse = await md.scan(symbols[:2])
    assert worse.snapshots[symbols[0]].age_ms == 121_000
    assert not worse.snapshots[symbols[0]].can_open  # too old to open a position
    assert worse.snapshots[symbols[0]].book is not None  # still there for managing positions
    # the venue is back: fresh again
    srv.control(error_rate=0.0)
    clock.advance(1)
    back = await md.scan(symbols[:2])
    assert all(s.can_open and not s.stale and s.age_ms == 0 for s in back.snapshots.values())


def test_bad_interval_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown interval"):
        MarketData(object(), SimpleNamespace(interval="7m"), WallClock())


async def test_refresh_reads_only_the_newest_candles_and_merges_them_exactly(srv, ex, symbols) -> None:
    start = await ex.server_time()
    clock = SimClock(start)
    md = MarketData(ex, md_settings(klines=300), clock)
    await md.scan(symbols[:2])
    for minutes in (5, 25, 60 * 12):  # one candle later, a few later, half a day later (a full read)
        clock.advance(minutes * 60)
        srv.advance(minutes * 60_000)
        srv.clear_requests()
        scan = await md.scan(symbols[:2])
        limits = {(r["params"]["symbol"], r["params"]["interval"]): int(r["params"]["limit"])
                  for r in requests(srv, "/fapi/v1/klines")}
        for sym in symbols[:2]:
            fresh_ltf = await ex.klines(sym, "5m", 300)
            got = scan.snapshots[sym].ltf
            assert len(got) == 300
            assert (got.open_time == fresh_ltf.open_time).all(), minutes
            for f in ("open", "high", "low", "close", "volume"):  # the forming candle moves on meanwhile
                assert (getattr(got, f)[:-1] == getattr(fresh_ltf, f)[:-1]).all(), (minutes, f)
            if minutes < 60:
                assert limits[(sym, "5m")] <= 10  # only the newest candles travelled
            else:
                assert limits[(sym, "5m")] == 300  # too far behind: one full read


async def test_a_history_shorter_than_the_limit_is_refreshed_incrementally_too(srv, ex, symbols) -> None:
    """30m klines: the venue has fewer candles than asked for (a young listing).  The copy is the
    whole history, so a refresh after a close reads only the newest candles and the merged copy
    equals a fresh full read."""
    await ex.sync_time()  # earlier tests moved the server clock: the local clock is venue - offset
    clock = SimClock(await ex.server_time() - ex.time_offset_ms)
    md = MarketData(ex, md_settings(klines=1000), clock)
    first = await md.scan(symbols[:1])
    sym = symbols[0]
    assert len(first.snapshots[sym].htf) < 1000  # the simulated venue has a few days of history
    clock.advance(30 * 60)
    srv.advance(30 * 60_000)
    srv.clear_requests()
    scan = await md.scan(symbols[:1])
    limits = {r["params"]["interval"]: int(r["params"]["limit"]) for r in requests(srv, "/fapi/v1/klines")}
    assert limits["30m"] <= 10
    fresh = await ex.klines(sym, "30m", 1000)
    got = scan.snapshots[sym].htf
    assert len(got) == len(fresh) == len(first.snapshots[sym].htf) + 1
    assert (got.open_time == fresh.open_time).all()
    for f in ("open", "high", "low", "close", "volume"):  # the forming candle moves on meanwhile
        assert (getattr(got, f)[:-1] == getattr(fresh, f)[:-1]).all(), f
