"""Kline / funding loaders: every format on real files from ../shared/data (skipped when absent)
plus temp files for the download format and for every class of bad data."""

from __future__ import annotations

import json
import zipfile
from decimal import Decimal

import numpy as np
import pytest

from mraster_tui.engine.data import (
    DataError,
    download_file_name,
    load_candles,
    load_files,
    load_funding,
    parse_file_name,
    resample,
    sniff,
    write_klines_csv,
)
from mraster_tui.engine.types import Candles
from _sim_fixtures import shared_data

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, a Monday
M = 60_000


def candles(n, interval="1m", t0=T0, step=M):
    ot = t0 + np.arange(n, dtype=np.int64) * step
    o = 100.0 + np.arange(n)
    return Candles(ot, o, o + 2, o - 1, o + 1, np.full(n, 10.0), interval, True)


# -- real files -------------------------------------------------------------------------------

def test_freqtrade_futures_json():
    lc = load_candles(shared_data("futures", "XRP_USDT_USDT-5m-futures.json"))
    assert (lc.symbol, lc.interval, lc.fmt, len(lc.candles)) == ("XRPUSDT", "5m", "freqtrade-json", 1999)
    c = lc.candles
    assert c.open_time[0] == 1636934400000 and (c.open[0], c.high[0], c.low[0], c.close[0]) == (1.1893, 1.1954, 1.1891, 1.1941)
    assert c.volume[0] == 9289043.5 and lc.gaps == () and c.last_closed


def test_freqtrade_spot_json_with_and_without_gaps():
    path = shared_data("UNITTEST_BTC-1m.json")
    with pytest.raises(DataError) as e:
        load_candles(path)
    msg = str(e.value)
    assert "UNITTEST_BTC-1m.json row 6:" in msg and "538 gap(s), 717 candles missing" in msg and "allow_gaps" in msg
    lc = load_candles(path, allow_gaps=True)
    assert len(lc.candles) == 13681 and len(lc.gaps) == 538 and sum(g.missing for g in lc.gaps) == 717
    assert lc.gaps[0].row == 6 and lc.gaps[0].missing == 6
    assert load_candles(shared_data("XRP_ETH-5m.json")).symbol == "XRPETH"


def test_mark_and_funding_files():
    mark = shared_data("futures", "XRP_USDT_USDT-1h-mark.json")
    assert sniff(mark) == "mark"
    lc = load_candles(mark)  # null volumes read as 0
    assert len(lc.candles) == 100 and (lc.candles.volume == 0).all()
    fund = shared_data("futures", "XRP_USDT_USDT-8h-funding_rate.json")
    assert sniff(fund) == "funding"
    rates = load_funding(fund)
    assert len(rates) == 91 and rates[0].symbol == "XRPUSDT"
    assert (rates[0].funding_time, rates[0].funding_rate) == (1637193600017, Decimal("0.0001"))
    assert rates[6].funding_rate == Decimal("0.00013046")
    with pytest.raises(DataError, match="funding-rate file"):
        load_candles(fund)


def test_simple_csv_with_naive_utc_datetimes():
    lc = load_candles(shared_data("other", "skyyona_yona_vanguard_futures", "INUSDT_5m.csv"))
    assert (lc.symbol, lc.interval, lc.fmt, len(lc.candles)) == ("INUSDT", "5m", "simple-csv", 8298)
    assert lc.candles.open_time[0] == 1761955200000  # 2025-11-01 00:00:00 UTC
    assert lc.candles.close[0] == 0.11609


# -- the download format (Binance archive CSV) -------------------------------------------------

def test_download_format_round_trip(tmp_path):
    c = candles(50, "5m", step=5 * M)
    p = tmp_path / download_file_name("xrpusdt", "5m")
    assert p.name == "XRPUSDT-5m.csv"
    write_klines_csv(p, c)
    first = p.read_text().splitlines()[:2]
    assert first[0] == ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                        "taker_buy_quote_volume,ignore")
    assert first[1] == f"{T0},100.0,102.0,99.0,101.0,10.0,{T0 + 5 * M - 1},1010.0,0,0,0,0"
    lc = load_candles(p)
    assert (lc.symbol, lc.interval, lc.fmt) == ("XRPUSDT", "5m", "binance-csv")
    for f in ("open_time", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(lc.candles, f), getattr(c, f))
    assert np.array_equal(lc.quote_volume, c.volume * c.close)


def test_load_files_sorts_each_file_by_kind_and_funding_by_time(tmp_path):
    kl = tmp_path / download_file_name("XRPUSDT", "5m")
    write_klines_csv(kl, candles(20, "5m", step=5 * M))
    mark = tmp_path / "XRP_USDT_USDT-1h-mark.csv"
    write_klines_csv(mark, candles(5, "1h", step=60 * M))
    late, early = tmp_path / "XRPUSDT-funding.csv", tmp_path / "XRPUSDT-funding-2023.csv"
    late.write_text("funding_time,funding_rate\n1704096000000,0.0002\n")
    early.write_text("funding_time,funding_rate\n1704067200000,0.0001\n")
    files = load_files([late, kl, mark, early])
    assert [(p, lc.symbol, lc.interval) for p, lc in files.candles] == [(kl, "XRPUSDT", "5m")]
    assert files.marks == (mark,)
    assert [(r.funding_time, r.funding_rate) for r in files.funding["XRPUSDT"]] == [
        (1704067200000, Decimal("0.0001")), (1704096000000, Decimal("0.0002"))]


def test_binance_archive_without_header_in_a_zip_with_microseconds(tmp_path):
    row = "1704067200000,42314.00,42603.20,42289.60,42503.50,8459.477,1704070799999,359196345.08716,88278,4687.976,199033806.82405,0"
    us = row.replace("1704067200000", "1704067200000000", 1)
    nxt = "1704070800000000,42503.50,42600.00,42400.00,42550.00,100.0,1704074399999999,4255000,10,50,2127500,0"
    z = tmp_path / "BTCUSDT-1h-2024-01.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("BTCUSDT-1h-2024-01.csv", us + "\n" + nxt + "\n")
    lc = load_candles(z)
    assert (lc.symbol, lc.interval, lc.fmt, len(lc.candles)) == ("BTCUSDT", "1h", "binance-csv", 2)
    assert lc.candles.open_time[0] == 1704067200000 and lc.candles.close[0] == 42503.5
    assert lc.quote_volume[0] == 359196345.08716


def test_funding_csv_formats(tmp_path):
    p = tmp_path / "XRPUSDT-funding.csv"
    p.write_text("funding_time,funding_rate\n1704067200000,0.00010000\n1704096000003,-0.00002500\n")
    rates = load_funding(p)
    assert [(r.symbol, r.funding_time, r.funding_rate) for r in rates] == [
        ("XRPUSDT", 1704067200000, Decimal("0.00010000")), ("XRPUSDT", 1704096000003, Decimal("-0.00002500"))]
    assert sniff(p) == "funding"
    arch = tmp_path / "BTCUSDT-fundingRate-2024-01.csv"
    arch.write_text("calc_time,funding_interval_hours,last_funding_rate\n1704067200000,8,0.00037409\n")
    assert load_funding(arch)[0].funding_rate == Decimal("0.00037409")
    bare = tmp_path / "ETHUSDT-funding.csv"
    bare.write_text("1704067200000,0.0001\n")
    assert load_funding(bare)[0].symbol == "ETHUSDT"


@pytest.mark.parametrize("name, expect", [
    ("XRP_USDT_USDT-5m-futures.json", ("XRPUSDT", "5m", "candles")),
    ("XRP_USDT_USDT-8h-funding_rate.json", ("XRPUSDT", "8h", "funding")),
    ("UNITTEST_USDT_USDT-1h-mark.json", ("UNITTESTUSDT", "1h", "mark")),
    ("INUSDT_5m.csv", ("INUSDT", "5m", "candles")),
    ("BTCUSDT-5m-2024-01.csv", ("BTCUSDT", "5m", "candles")),
    ("XRPUSDT-funding.csv", ("XRPUSDT", None, "funding")),
    ("prices.csv", (None, None, "candles")),
])
def test_file_names(name, expect):
    f = parse_file_name(name)
    assert (f.symbol, f.interval, f.kind) == expect


def test_symbol_and_interval_overrides(tmp_path):
    p = tmp_path / "prices.json"
    p.write_text(json.dumps([[T0, 1, 2, 0.5, 1.5, 3], [T0 + 3 * M, 1.5, 2, 1, 1.2, 3]]))
    with pytest.raises(DataError, match="cannot tell the symbol"):
        load_candles(p)
    lc = load_candles(p, symbol="abcusdt")
    assert (lc.symbol, lc.interval) == ("ABCUSDT", "3m")  # read from the timestamps
    with pytest.raises(DataError, match="gap of 2 1m"):
        load_candles(p, symbol="ABCUSDT", interval="1m")


# -- bad data ---------------------------------------------------------------------------------

GOOD = [T0, 1.0, 2.0, 0.5, 1.5, 3.0]


def _json(tmp_path, rows, name="BADUSDT-1m.json"):
    p = tmp_path / name
    p.write_text(json.dumps(rows))
    return p


@pytest.mark.parametrize("rows, row, words", [
    ([GOOD, [T0 - M, 1, 2, 0.5, 1.5, 3]], 2, "not sorted"),
    ([GOOD, GOOD], 2, "duplicate timestamp"),
    ([GOOD, [T0 + 30_000, 1, 2, 0.5, 1.5, 3]], 2, "off the 1m grid"),
    ([GOOD, [T0 + 3 * M, 1, 2, 0.5, 1.5, 3]], 1, "gap of 2 1m candle(s) after 2024-01-01 00:00 UTC"),
    ([GOOD, [T0 + M, 1, 2, 0.5, 1.5]], 2, "expected 6 columns, found 5"),
    ([GOOD, [T0 + M, "x", 2, 0.5, 1.5, 3]], 2, "non-numeric open 'x'"),
    ([GOOD, [T0 + M, 1, None, 0.5, 1.5, 3]], 2, "missing high"),
    ([GOOD, [T0 + M, 1, 2, 0.5, "NaN", 3]], 2, "NaN/inf"),
    ([GOOD, [T0 + M, 1, 2, 0.5, 1.5, -3]], 2, "negative volume"),
    ([GOOD, [T0 + M, 1, 2, 0, 1.5, 3]], 2, "non-positive price"),
    ([GOOD, [T0 + M, 1, 1.2, 0.5, 1.5, 3]], 2, "high/low do not contain open/close"),
    ([GOOD, 7], 2, "expected a row array"),
])
def test_bad_json_rows_name_file_and_row(tmp_path, rows, row, words):
    p = _json(tmp_path, rows)
    with pytest.raises(DataError) as e:
        load_candles(p)
    assert e.value.row == row and e.value.path == str(p)
    assert str(e.value).startswith(f"{p} row {row}: ") and words in str(e.value)


@pytest.mark.parametrize("text, row, words", [
    ("open_time,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,1.5,3\n2024-01-01 00:01:00,1,2,0.5\n", 3,
     "expected 6 columns, found 4"),
    ("open_time,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,1.5,3\nyesterday,1,2,0.5,1.5,3\n", 3,
     "bad timestamp 'yesterday'"),
    ("open_time,open,high,low,close,volume\n2024-01-01 00:00:00,1,2,0.5,1.5,3\n2024-01-01 00:01:00,1,2,0.5,nan,3\n",
     3, "NaN/inf"),
    ("open_time,open,high,low,close\n2024-01-01 00:00:00,1,2,0.5,1.5\n", 1, "header lacks volume"),
    ("1704067200000,1,2,0.5,1.5\n", 1, "expected 6 or 12 columns, found 5"),
])
def test_bad_csv_rows(tmp_path, text, row, words):
    p = tmp_path / "BADUSDT_1m.csv"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        load_candles(p)
    assert e.value.row == row and words in str(e.value)


@pytest.mark.parametrize("content, words", [
    ("", "empty file"),
    ("[1, 2", "invalid JSON"),
    ('{"a": 1}', "expected a JSON array"),
    ("[]", "no candles"),
])
def test_bad_whole_files(tmp_path, content, words):
    p = tmp_path / "BADUSDT-1m.json"
    p.write_text(content)
    with pytest.raises(DataError, match=words):
        load_candles(p)
    with pytest.raises(DataError, match="file not found"):
        load_candles(tmp_path / "missing.json")


def test_bad_funding_files(tmp_path):
    p = tmp_path / "XRPUSDT-funding.csv"
    p.write_text("funding_time,funding_rate\n1704096000000,0.0001\n1704067200000,0.0001\n")
    with pytest.raises(DataError, match="row 3: timestamps not sorted"):
        load_funding(p)
    p.write_text("funding_time,funding_rate\n1704067200000,abc\n")
    with pytest.raises(DataError, match="row 2: non-numeric funding rate"):
        load_funding(p)
    p.write_text("funding_time,funding_rate\n1704067200000,5\n")
    with pytest.raises(DataError, match="not a fraction"):
        load_funding(p)
    j = tmp_path / "XRPUSDT-funding.json"
    j.write_text(json.dumps([GOOD]))
    with pytest.raises(DataError, match="looks like a candle file"):
        load_funding(j)


# -- resampling ---------------------------------------------------------------------------------

def test_resample_aggregates_and_marks_the_incomplete_tail_as_forming():
    c = candles(12)  # 12 one-minute candles: two full 5m buckets + 2 minutes of a third
    r = resample(c, "5m")
    assert list(r.open_time) == [T0, T0 + 5 * M, T0 + 10 * M] and not r.last_closed
    # bucket 0: open 100, high max(o+2) = 106, low min(o-1) = 99, close 105 (o+1 of minute 4), volume 50
    assert (r.open[0], r.high[0], r.low[0], r.close[0], r.volume[0]) == (100, 106, 99, 105, 50)
    assert (r.open[2], r.close[2], r.volume[2]) == (110, 112, 20)
    assert len(r.closed_only()) == 2
    assert resample(candles(10), "5m").last_closed  # exactly two complete buckets


def test_resample_drops_a_leading_partial_bucket_and_aligns_weeks_on_monday():
    r = resample(candles(8, t0=T0 + 3 * M), "5m")  # minutes 3..10: [0,5) partial, [5,10), [10,15) forming
    assert list(r.open_time) == [T0 + 5 * M, T0 + 10 * M] and not r.last_closed
    assert r.open[0] == 102  # the open of minute 5 (open = 100 + index, index 2)
    days = candles(14, "1d", step=86_400_000)
    w = resample(days, "1w")
    assert list(w.open_time) == [T0, T0 + 7 * 86_400_000] and w.last_closed  # 2024-01-01 is a Monday
    with pytest.raises(ValueError):
        resample(candles(10, "5m", step=5 * M), "1m")
    with pytest.raises(ValueError):
        resample(candles(10, "5m", step=5 * M), "3m")


def test_resample_real_data_matches_a_manual_aggregate():
    c = load_candles(shared_data("futures", "XRP_USDT_USDT-5m-futures.json")).candles
    h = resample(c, "1h").closed_only()
    assert len(h) == 1999 // 12
    for i in (0, 7, len(h) - 1):
        s = slice(12 * i, 12 * i + 12)
        assert h.open_time[i] == c.open_time[s][0]
        assert (h.open[i], h.high[i], h.low[i], h.close[i]) == (c.open[s][0], c.high[s].max(), c.low[s].min(), c.close[s][-1])
        assert h.volume[i] == pytest.approx(c.volume[s].sum(), rel=1e-12)
