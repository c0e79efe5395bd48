"""Backtests: the engine over real candles on the simulated exchange.

* the precomputed provider equals the live ``evaluate_signal`` bar by bar on real data (and the
  vector pre-screen never drops a bar the live evaluation would take, and names the same first
  reason for the bars it rules out);
* report invariants on the real XRP file with its funding file: wallet change == sum of the trades'
  net PnL == gross - fees + funding, exactly (Decimal); no trade enters on a forming candle;
* determinism (byte-identical trade lists) and the quiet-candle skipping proven equal to running a
  cycle on every candle;
* bad data -> one line naming file and row, exit 2; the CLI end to end with ``--json``;
* the report's figures on hand-checked numbers.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from _shared import shared_data
from mraster_tui.cli import main
from mraster_tui.config import Settings
from mraster_tui.engine import signals as sig
from mraster_tui.engine.backtest import (
    _PRE_REASONS,
    BacktestError,
    Dataset,
    EquityCurve,
    SymbolData,
    TradeRecord,
    daily_returns,
    equity_curve,
    exposure,
    load_dataset,
    max_drawdown,
    prescreen,
    render_curve,
    run_backtest,
    sharpe_sortino,
    trades_json_bytes,
)
from mraster_tui.engine.data import resample, write_klines_csv
from mraster_tui.engine.sim.market import SyntheticMarket
from mraster_tui.engine.types import BookTicker, FundingRate

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
STEP = 300_000
DAY = 86_400_000


def xrp_files() -> list[Path]:
    return [shared_data("futures", "XRP_USDT_USDT-5m-futures.json"),
            shared_data("futures", "XRP_USDT_USDT-8h-funding_rate.json")]


#: settings that trade more often on the XRP week than the defaults (more trades to check)
ACTIVE = dict(min_edge_r=0.02, max_open_global=3)


@pytest.fixture(scope="module")
def xrp_report():
    ds = load_dataset(xrp_files())
    s = Settings.defaults().replace(**ACTIVE)
    return ds, s, run_backtest(ds, s, seed=3)


# -- the precomputed provider == the live evaluation, bar by bar -----------------------------------

@pytest.mark.parametrize(("changes", "every"), [
    ({}, 1),  # every bar of the file
    ({"allow_trend_align": False, "min_edge_r": 0.0, "wickiness_max": 0.6}, 2),
])
def test_precomputed_signals_equal_live_evaluation_bar_by_bar(changes, every):
    ds = load_dataset(xrp_files())
    s = Settings.defaults().replace(**changes)
    ltf = ds.symbols["XRPUSDT"].ltf
    htf = resample(ltf, "30m").closed_only()
    window = int(s.klines) - 1  # the live path fetches `klines` candles, the last one forming
    series = sig.precompute(ltf, htf, s, ltf_window=window, htf_window=window)
    candidate, first = prescreen(series, s)
    htf_close = htf.open_time + 1_800_000
    counts: dict[str, int] = {}
    sides = 0
    for i in range(0, len(ltf), every):
        now = int(ltf.open_time[i]) + STEP + 1000
        px = Decimal(repr(float(ltf.close[i])))
        book = BookTicker("XRPUSDT", px - Decimal("0.0001"), px + Decimal("0.0001"), time=now)
        rate = 0.0001 if i % 7 else 0.0015  # now and then a funding rate the filter refuses
        h = int(np.searchsorted(htf_close, int(ltf.open_time[i]) + STEP, side="right"))
        live = sig.evaluate_signal(ltf.slice(max(0, i + 1 - window), i + 1), htf.slice(max(0, h - window), h),
                                   book, rate, s, qv_score=1.25, now_ms=now)
        pre = sig.evaluate_at(series, i, book, rate, s, qv_score=1.25, now_ms=now)
        assert (pre.side, pre.reason_codes, pre.direction, pre.candle_time) == \
            (live.side, live.reason_codes, live.direction, live.candle_time), i
        np.testing.assert_allclose(pre.features, live.features, rtol=1e-9, atol=1e-12, err_msg=str(i))
        if live.stop is not None:
            assert abs(float(pre.stop - live.stop)) <= 1e-9 and abs(float(pre.take_profit - live.take_profit)) <= 1e-9
        # the pre-screen keeps every bar that can signal, with the right direction ...
        if live.side is not None:
            sides += 1
            assert candidate[i] == (1 if live.side == "long" else -1), i
        # ... and names the live first reason for every bar it rules out
        if candidate[i] == 0:
            assert _PRE_REASONS[first[i]] == live.reason_codes[0], (i, live.reason_codes)
            counts[live.reason_codes[0]] = counts.get(live.reason_codes[0], 0) + 1
        else:
            assert live.side is not None or live.reason_codes[0] == sig.FUNDING, (i, live.reason_codes)
    assert sides >= 3  # the comparison covered real signals, not only rejections
    assert len(counts) >= 3, counts  # and several rejection reasons


# -- invariants of a real backtest -------------------------------------------------------------------

def test_xrp_backtest_report_invariants(xrp_report):
    ds, s, r = xrp_report
    assert len(r.trades) >= 5
    # money: exact Decimal arithmetic, from the simulated venue's wallet
    assert r.end_balance - r.start_balance == sum((t.pnl for t in r.trades), Decimal(0))
    assert r.end_balance - r.start_balance == (sum((t.gross_pnl for t in r.trades), Decimal(0))
                                               - r.totals.fees + r.totals.funding)
    for t in r.trades:
        assert t.pnl == t.gross_pnl - t.fees + t.funding
        assert t.fees > 0
        # never on a forming candle: the entry fills after the signal candle closed, at the next scan
        assert t.signal_close_ms >= 0 and t.entry_ms > t.signal_close_ms
        assert t.entry_ms - t.signal_close_ms == 1 + int(float(s.scan_delay_sec) * 1000)
        assert r.start_ms <= t.entry_ms < t.exit_ms <= r.end_ms + 1000
    assert r.totals.funding != 0  # the funding file was applied (some trade held over a funding time)
    assert r.totals.trades == len(r.trades) and r.per_symbol["XRPUSDT"].trades == len(r.trades)
    assert sum(r.buckets.values()) == len(r.trades)
    assert r.rejections and all(n > 0 for n in r.rejections.values())
    # the equity curve ends at the final wallet and starts at the first
    assert r.curve.equity[0] == pytest.approx(float(r.start_balance))
    assert r.curve.equity[-1] == pytest.approx(float(r.end_balance))
    assert 0 < r.exposure < 1 and r.max_drawdown >= 0


def test_backtest_is_deterministic(xrp_report):
    ds, s, first = xrp_report
    again = run_backtest(ds, s, seed=3)
    assert trades_json_bytes(again.trades) == trades_json_bytes(first.trades)
    assert again.rejections == first.rejections and again.decisions == first.decisions


def test_skipping_quiet_candles_changes_nothing(xrp_report):
    """The driver wakes the engine only when something can happen; running a full cycle (plus
    guard and FastTP passes) on every candle gives the same trades and the same counts."""
    ds, s, fast = xrp_report
    every = run_backtest(ds, s, seed=3, every_candle=True)
    assert trades_json_bytes(every.trades) == trades_json_bytes(fast.trades)
    assert every.rejections == fast.rejections
    assert every.cycles > fast.cycles


def test_skipping_equals_every_candle_on_many_symbols():
    """Several symbols: full capacity (counted without a cycle), FastTP gating, several positions."""
    market = SyntheticMarket(5, seed=21, start_ms=T0, base_interval="5m", history_days=2)
    data = {}
    for name in market.symbols():
        c = market.candles(name, "5m", market.start_ms, T0 + 3 * DAY)
        rates = tuple(FundingRate(name, t, r) for t, r in market.funding_events(name, market.start_ms, T0 + 3 * DAY))
        data[name] = SymbolData(name, c, funding=rates)
    ds = Dataset(data, "5m")
    s = Settings.defaults().replace(max_open_global=1)
    fast = run_backtest(ds, s, seed=5)
    every = run_backtest(ds, s, seed=5, every_candle=True)
    assert len(fast.trades) >= 5
    # the skipped paths were exercised: capacity full (counted without a cycle) and FastTP moves
    assert fast.rejections.get("max_open_global", 0) > 0
    assert any(t.exit_reason == "fasttp_stop" for t in fast.trades)
    assert every.cycles > 2 * fast.cycles
    assert trades_json_bytes(every.trades) == trades_json_bytes(fast.trades)
    assert every.rejections == fast.rejections
    assert fast.end_balance - fast.start_balance == fast.totals.pnl


def test_supplied_htf_file_equals_aggregated(tmp_path):
    ds = load_dataset(xrp_files()[:1])
    ltf = ds.symbols["XRPUSDT"].ltf
    write_klines_csv(tmp_path / "XRPUSDT-5m.csv", ltf)
    write_klines_csv(tmp_path / "XRPUSDT-30m.csv", resample(ltf, "30m").closed_only())
    with_htf = load_dataset([tmp_path])
    assert with_htf.symbols["XRPUSDT"].htf is not None
    s = Settings.defaults().replace(**ACTIVE)
    a = run_backtest(ds, s, seed=1)
    b = run_backtest(with_htf, s, seed=1)
    assert len(a.trades) > 0
    assert trades_json_bytes(a.trades) == trades_json_bytes(b.trades)


def test_window_and_folder_loading():
    ds = load_dataset([shared_data("futures")])
    assert set(ds.symbols) == {"XRPUSDT"} and len(ds.symbols["XRPUSDT"].funding) == 91
    assert any("mark-price" in n for n in ds.skipped) and any("1h candles not used" in n for n in ds.skipped)
    s = Settings.defaults()
    r = run_backtest(ds, s, from_ms=1_637_193_600_000, to_ms=1_637_280_000_000)  # 2021-11-18 .. 19
    assert (r.start_ms, r.end_ms) == (1_637_193_600_000, 1_637_280_000_000)
    assert r.candle_steps == 288
    with pytest.raises(BacktestError, match="nothing to trade"):
        run_backtest(ds, s, from_ms=1_700_000_000_000)


# -- the command line --------------------------------------------------------------------------------

def test_backtest_cli_with_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    files = [str(p) for p in xrp_files()]
    rc = main(["backtest", "--data", *files, "--json", str(out), "--seed", "3", "--to", "2021-11-19"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err == ""  # no progress bar when not on a terminal
    assert "win rate" in captured.out and "equity (marked to candle closes)" in captured.out
    data = json.loads(out.read_text())
    assert data["symbols"] == ["XRPUSDT"] and data["to"] == "2021-11-19T00:00:00Z"
    assert len(data["trades"]) == data["summary"]["trades"]
    assert set(data["summary"]) >= {"win_rate", "total_r", "mean_r", "pnl", "fees", "funding", "max_drawdown",
                                    "sharpe_daily", "sortino_daily", "exposure"}
    assert data["rejections"] and "equity_curve" in data and data["settings"]["ASTER_INTERVAL"] == "5m"
    rc = main(["backtest", "--data", *files, "--no-plot", "--to", "2021-11-19"])
    assert rc == 0 and "equity (marked" not in capsys.readouterr().out


HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
          "taker_buy_quote_volume,ignore")


def _row(t: int, px: float = 1.0) -> str:
    return f"{t},{px},{px * 1.01},{px * 0.99},{px},10,{t + STEP - 1},{px * 10},5,4,4,0"


@pytest.mark.parametrize(("rows", "header", "expect"), [
    ([_row(T0 + i * STEP) for i in (0, 1, 3, 2)], True, r"XRPUSDT-5m\.csv row 5: timestamps not sorted"),
    ([_row(T0 + i * STEP) for i in (0, 1, 1, 2)], True, r"XRPUSDT-5m\.csv row 4: duplicate timestamp"),
    ([_row(T0 + i * STEP) for i in (0, 1, 2, 5)], False, r"XRPUSDT-5m\.csv row 3: gap of 2 5m candle"),
    ([_row(T0), _row(T0 + STEP) + ",7", _row(T0 + 2 * STEP)], True,
     r"XRPUSDT-5m\.csv row 3: expected 12 columns, found 13"),
    ([_row(T0), _row(T0 + STEP).replace(",1.0,", ",abc,", 1), _row(T0 + 2 * STEP)], True,
     r"XRPUSDT-5m\.csv row 3: non-numeric open 'abc'"),
])
def test_bad_data_names_file_and_row(tmp_path, capsys, rows, header, expect):
    path = tmp_path / "XRPUSDT-5m.csv"
    path.write_text(((HEADER + "\n") if header else "") + "\n".join(rows) + "\n")
    rc = main(["backtest", "--data", str(path), "--no-plot"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(expect, err), err


def test_bad_json_row_and_bad_arguments(tmp_path, capsys):
    path = tmp_path / "XRP_USDT_USDT-5m-futures.json"
    path.write_text(json.dumps([[T0, 1, 1.1, 0.9, 1, 5], [T0 + STEP, 1, 1.1, 0.9, "x", 5]]))
    assert main(["backtest", "--data", str(path)]) == 2
    assert "XRP_USDT_USDT-5m-futures.json row 2: non-numeric close 'x'" in capsys.readouterr().err
    assert main(["backtest", "--data", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such file or folder" in capsys.readouterr().err
    assert main(["backtest", "--data", str(path), "--from", "2024-02-01", "--to", "2024-01-01"]) == 2
    assert "--to must be after --from" in capsys.readouterr().err
    assert main(["backtest", "--data", str(path), "--balance", "-5"]) == 2
    assert "--balance must be a positive amount" in capsys.readouterr().err


# -- report figures, hand-checked -----------------------------------------------------------------------

def _trade(entry_ms, exit_ms, pnl, side="LONG", entry="100", qty="1", r=1.0, sym="AUSDT"):
    d = Decimal
    return TradeRecord(1, sym, side, d(qty), entry_ms - 1001, entry_ms, d(entry), exit_ms, d(entry), d(entry) - 1,
                       d(pnl), d(0), d(0), d(pnl), r, "stop", "M")


def test_max_drawdown_and_exposure():
    eq = np.array([100.0, 110.0, 99.0, 120.0, 90.0, 95.0])
    dd, pct = max_drawdown(eq)
    assert dd == 30.0 and pct == pytest.approx(30.0 / 120.0)
    trades = [_trade(0, 100, "1"), _trade(50, 150, "1"), _trade(300, 400, "1")]
    assert exposure(trades, 0, 1000) == pytest.approx(0.25)  # [0,150) + [300,400)


def test_equity_curve_marks_open_trades_and_books_pnl_at_exit():
    grid = np.array([0, 10, 20, 30], dtype=np.int64)
    closes = {"AUSDT": np.array([100.0, 103.0, 99.0, 101.0])}
    t = _trade(5, 25, "-1.5", qty="2")  # open at grid 10 and 20, closed before 30
    c = equity_curve([t], grid, closes, 1000.0)
    assert c.equity.tolist() == [1000.0, 1006.0, 998.0, 998.5]
    short = _trade(5, 25, "0", side="SHORT", qty="2")
    assert equity_curve([short], grid, closes, 1000.0).equity.tolist() == [1000.0, 994.0, 1002.0, 1000.0]


def test_daily_sharpe_and_sortino():
    day_ends = np.array([1, 2, 3], dtype=np.int64) * DAY
    curve = EquityCurve(day_ends, np.array([101.0, 99.99, 102.9897]))
    r = daily_returns(curve, 100.0)
    np.testing.assert_allclose(r, [0.01, -0.01, 0.03])
    sharpe, sortino = sharpe_sortino(r)
    mean, sd = 0.01, math.sqrt(((0.0) ** 2 + 0.02 ** 2 + 0.02 ** 2) / 2)
    assert sharpe == pytest.approx(mean / sd * math.sqrt(365))
    assert sortino == pytest.approx(mean / math.sqrt(0.01 ** 2 / 3) * math.sqrt(365))
    assert sharpe_sortino(np.array([0.01])) == (None, None)


def test_render_curve_is_plain_text():
    t = np.arange(200, dtype=np.int64) * STEP + T0
    v = 1000 + np.sin(np.arange(200) / 20) * 50
    lines = render_curve(t, v, width=60, height=8)
    assert len(lines) == 8 + 2 and all(len(x) <= 60 for x in lines)
    assert "1,050.00" in lines[0] and "950" in lines[7] and "2024-01-01 00:00" in lines[-1]
    assert sum(x.count("•") for x in lines) == 60 - 13  # one point per column


def test_progress_bar_only_on_a_terminal():
    import io

    from mraster_tui.backtest_cli import ProgressBar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar("backtest", stream, min_interval=0.0)
        bar.update(50, 200)
        bar.update(200, 200)
        bar.close()
    assert pipe.getvalue() == ""
    out = tty.getvalue()
    assert "\rbacktest " in out and " 25.0% 50/200" in out and "100.0% 200/200" in out
    assert out.endswith("\r\x1b[K")  # the line is cleared before the report is printed
