"""``mraster-tui download`` against the loopback exchange over real HTTP: files in the format the
loaders read, the same candles as the venue serves, resume (incl. a torn last line), only closed
candles, 429 handled by the client's governor, and the CLI's one-line errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mraster_tui.backtest_cli import parse_time
from mraster_tui.cli import main
from mraster_tui.engine.data import load_candles, load_funding
from mraster_tui.engine.download import DownloadError, download, funding_file_name
from mraster_tui.engine.sim.exchange import SimExchange
from mraster_tui.engine.sim.market import SyntheticMarket
from mraster_tui.engine.sim.server import start_in_thread
from mraster_tui.engine.venue.rest import RestExchange

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC: the server's clock starts here
DAY = 86_400_000
STEP = 300_000


@pytest.fixture()
def server():
    market = SyntheticMarket(3, seed=11, start_ms=T0, base_interval="1m")
    sim = SimExchange(market, start_ms=T0)
    url, handle = start_in_thread(sim, start_ms=T0)
    try:
        yield url, handle, market
    finally:
        handle.stop()


def _run(url: str, *args, **kw):
    async def go():
        rest = RestExchange(url)
        try:
            return await download(rest.public_only(), *args, **kw)
        finally:
            await rest.close()
    return asyncio.run(go())


def _requests(handle, path: str) -> list[dict]:
    return [r for r in handle.requests() if r["path"] == path]


def test_download_writes_loader_format_equal_to_the_venue(server, tmp_path):
    url, handle, market = server
    res = _run(url, ["BTCUSDT", "ethusdt"], "5m", T0 - 2 * DAY, T0, tmp_path)
    kl = {r.symbol: r for r in res if r.kind == "klines"}
    assert set(kl) == {"BTCUSDT", "ETHUSDT"}
    for sym, r in kl.items():
        assert r.added == r.rows == 576 and not r.resumed
        lc = load_candles(r.path)  # symbol and interval from the file name, format by content
        assert (lc.symbol, lc.interval, lc.fmt) == (sym, "5m", "binance-csv")
        want = market.candles(sym, "5m", T0 - 2 * DAY, T0)
        np.testing.assert_array_equal(lc.candles.open_time, want.open_time)
        tick = float(market.symbol_info(sym).filters.tick_size)  # the venue quotes prices on the tick
        for f in ("open", "high", "low", "close"):
            assert np.abs(getattr(lc.candles, f) - getattr(want, f)).max() <= tick / 2 + 1e-9
    # 576 candles in batches of 1000 -> one klines request per symbol; public only, never signed
    assert len(_requests(handle, "/fapi/v1/klines")) == 2
    assert not any(r["signed"] or r.get("api_key") for r in handle.requests())
    fund = {r.symbol: r for r in res if r.kind == "funding"}
    rates = load_funding(fund["BTCUSDT"].path)
    times = [f.funding_time for f in rates]
    assert times == [T0 - 2 * DAY + k * 8 * 3_600_000 for k in range(6)]  # the 8h grid inside the range
    assert rates[0].symbol == "BTCUSDT" and all(abs(f.funding_rate) < 0.01 for f in rates)
    assert fund["BTCUSDT"].path.name == funding_file_name("BTCUSDT")


def test_download_resumes_after_the_last_row_and_cuts_a_torn_line(server, tmp_path):
    url, handle, _ = server
    first = _run(url, ["BTCUSDT"], "5m", T0 - 2 * DAY, T0 - DAY, tmp_path, funding=False)[0]
    assert first.rows == 288
    path = first.path
    with path.open("a") as f:  # a crash while writing the next batch
        f.write("1703980800000,4123.1,41")
    handle.clear_requests()
    again = _run(url, ["BTCUSDT"], "5m", T0 - 2 * DAY, T0, tmp_path, funding=False)[0]
    assert again.resumed and again.added == 288 and again.rows == 576
    # the resumed request started right after the last saved candle
    reqs = _requests(handle, "/fapi/v1/klines")
    assert len(reqs) == 1 and reqs[0]["params"]["startTime"] == str(T0 - DAY)
    fresh = _run(url, ["BTCUSDT"], "5m", T0 - 2 * DAY, T0, tmp_path / "fresh", funding=False)[0]
    assert path.read_bytes() == fresh.path.read_bytes()
    # nothing new: no rows added, the file is unchanged
    before = path.read_bytes()
    assert _run(url, ["BTCUSDT"], "5m", T0 - 2 * DAY, T0, tmp_path, funding=False)[0].added == 0
    assert path.read_bytes() == before


def test_only_closed_candles_are_written(server, tmp_path):
    url, handle, _ = server
    now = handle.server_time()
    res = _run(url, ["SOLUSDT"], "5m", T0 - DAY, now + DAY, tmp_path, funding=False)[0]
    lc = load_candles(res.path)
    assert int(lc.candles.open_time[-1]) + STEP <= handle.server_time()
    assert int(lc.candles.open_time[-1]) == (now // STEP) * STEP - STEP


def test_rate_limited_answer_is_waited_out(server, tmp_path):
    url, handle, _ = server
    handle.fault("429", path="/fapi/v1/klines", count=1, retry_after=1)
    res = _run(url, ["BTCUSDT"], "5m", T0 - DAY, T0, tmp_path, funding=False)[0]
    assert res.rows == 288
    statuses = [r["status"] for r in _requests(handle, "/fapi/v1/klines")]
    assert statuses == [429, 200]


def test_resume_refuses_a_broken_file_with_one_line(server, tmp_path):
    url, _, _ = server
    path = tmp_path / "BTCUSDT-5m.csv"
    path.write_text("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                    "taker_buy_volume,taker_buy_quote_volume,ignore\n"
                    "1703980800000,1,2,0.5,1.5,10,1703981099999,15,0,0,0,0\n"
                    "1703980800000,1,2,0.5,1.5,10,1703981099999,15,0,0,0,0\n")
    with pytest.raises(DownloadError, match=r"BTCUSDT-5m.csv row 3: duplicate timestamp"):
        _run(url, ["BTCUSDT"], "5m", T0 - DAY, T0, tmp_path, funding=False)


def test_download_cli(server, tmp_path, capsys):
    url, _, _ = server
    out = tmp_path / "hist"
    rc = main(["download", "--symbols", "BTCUSDT,ETHUSDT", "--interval", "15m", "--from", "2023-12-31",
               "--to", "2024-01-01", "--out", str(out), "--base-url", url])
    assert rc == 0
    text = capsys.readouterr().out
    assert "BTCUSDT-15m.csv: klines +96 rows (96 total, new)" in text
    assert (out / "ETHUSDT-funding.csv").exists()
    rc = main(["download", "--symbols", "BTCUSDT", "--from", "yesterday", "--out", str(out), "--base-url", url])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--from: 'yesterday' is not a date" in err


def test_parse_time():
    assert parse_time("2024-01-01", "x") == T0
    assert parse_time("2024-01-01T00:05", "x") == T0 + STEP
    assert parse_time(str(T0), "x") == T0
    assert parse_time(None, "x") is None
