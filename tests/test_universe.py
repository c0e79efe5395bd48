"""Universe selection: eligibility with a reason per excluded symbol, ranking, top-N, rotation."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from mraster_tui.config import Settings
from mraster_tui.engine.types import ExchangeInfo, SymbolFilters, SymbolInfo, Ticker24h
from mraster_tui.engine.universe import qv_score, select_universe

D = Decimal
FILTERS = SymbolFilters(D("0.01"), D("0.01"), D("1e6"), D("0.001"), D("0.001"), D("1e6"), D("0.001"),
                        D("0.001"), D("1e6"), D("5"))


def info(*symbols: SymbolInfo) -> ExchangeInfo:
    return ExchangeInfo(0, {s.symbol: s for s in symbols})


def sym(name: str, *, status="TRADING", contract="PERPETUAL", quote="USDT") -> SymbolInfo:
    return SymbolInfo(name, name.removesuffix(quote), quote, status, contract, FILTERS)


def tick(name: str, quote_volume: float) -> Ticker24h:
    return Ticker24h(name, D("1"), D(repr(quote_volume)), D("1"))


def settings(**kw) -> Settings:
    return Settings.defaults().replace(**{"include_symbols": (), "exclude_symbols": (), **kw})


def test_each_excluded_symbol_gets_its_reason():
    ex = info(sym("AAAUSDT"), sym("BRKUSDT", status="BREAK"), sym("QTRUSDT", contract="CURRENT_QUARTER"),
              sym("ETHBUSD", quote="BUSD"), sym("EXCUSDT"), sym("NOTKUSDT"), sym("LOWUSDT"))
    tickers = {t.symbol: t for t in (tick("AAAUSDT", 1e6), tick("BRKUSDT", 1e9), tick("QTRUSDT", 1e9),
                                     tick("ETHBUSD", 1e9), tick("EXCUSDT", 1e9), tick("LOWUSDT", 74_999))}
    r = select_universe(ex, tickers, settings(exclude_symbols=("EXCUSDT",)))
    assert r.symbols == r.ranked == ("AAAUSDT",)
    assert r.excluded == {
        "BRKUSDT": "status BREAK",
        "QTRUSDT": "contract type CURRENT_QUARTER",
        "ETHBUSD": "quote asset BUSD, not USDT",
        "EXCUSDT": "in ASTER_EXCLUDE_SYMBOLS",
        "NOTKUSDT": "no 24h ticker",
        "LOWUSDT": "24h quote volume 74,999 < 75,000",
    }


def test_include_list_then_exclude_list():
    ex = info(*(sym(n) for n in ("AUSDT", "BUSDT", "CUSDT")))
    tickers = {n: tick(n, 1e6) for n in ex.symbols}
    r = select_universe(ex, tickers, settings(include_symbols=("AUSDT", "BUSDT", "ZZZUSDT"),
                                                exclude_symbols=("BUSDT",)))
    assert r.symbols == ("AUSDT",)
    assert r.excluded["CUSDT"] == "not in ASTER_INCLUDE_SYMBOLS"
    assert r.excluded["BUSDT"] == "in ASTER_EXCLUDE_SYMBOLS"
    assert r.excluded["ZZZUSDT"] == "in ASTER_INCLUDE_SYMBOLS but not listed on the venue"


def test_ranked_by_quote_volume_with_ties_by_name_and_top_n():
    volumes = {"AUSDT": 2e6, "BUSDT": 9e6, "CUSDT": 5e6, "DUSDT": 5e6, "EUSDT": 1e5}
    ex = info(*(sym(n) for n in volumes))
    r = select_universe(ex, {n: tick(n, v) for n, v in volumes.items()}, settings(universe_max=3))
    assert r.ranked == ("BUSDT", "CUSDT", "DUSDT", "AUSDT", "EUSDT")
    assert r.symbols == ("BUSDT", "CUSDT", "DUSDT")
    assert r.excluded["AUSDT"] == "rank 4 by quote volume, beyond ASTER_UNIVERSE_MAX 3"
    assert r.qv_scores["BUSDT"] == 2.5 and r.qv_scores["EUSDT"] == pytest.approx(1e5 / 75_000)


def test_rotation_is_deterministic_and_covers_every_eligible_symbol():
    names = [f"S{i:02d}USDT" for i in range(10)]
    ex = info(*(sym(n) for n in names))
    tickers = {n: tick(n, 1e6 + 1000 * i) for i, n in enumerate(names)}
    s = settings(universe_max=4, universe_rotate=True)
    windows = [select_universe(ex, tickers, s, cycle=c).symbols for c in range(6)]
    ranked = select_universe(ex, tickers, s).ranked
    assert windows[0] == ranked[0:4] and windows[1] == ranked[4:8]
    assert windows[2] == ranked[8:10] + ranked[0:2]  # wraps around
    assert windows[5] == windows[0]  # the window moves 4 places per cycle: back to the start at 20 = 0 mod 10
    covered = set().union(*windows[:math.ceil(len(names) / 4)])
    assert covered == set(names)
    assert windows == [select_universe(ex, tickers, s, cycle=c).symbols for c in range(6)]
    r = select_universe(ex, tickers, s, cycle=1)
    assert "rotation window" in r.excluded[ranked[0]]


def test_no_rotation_without_the_setting_and_small_universes_are_whole():
    names = [f"S{i}USDT" for i in range(5)]
    ex = info(*(sym(n) for n in names))
    tickers = {n: tick(n, 1e6 + i) for i, n in enumerate(names)}
    fixed = {select_universe(ex, tickers, settings(universe_max=2), cycle=c).symbols for c in range(4)}
    assert len(fixed) == 1
    rot = settings(universe_max=10, universe_rotate=True)
    assert len(select_universe(ex, tickers, rot, cycle=3).symbols) == 5


def test_qv_score():
    assert qv_score(D("150000"), 75_000) == 2.0
    assert qv_score(D("1e9"), 75_000) == 2.5
    assert qv_score(D("10"), 0) == 2.5  # no minimum configured: capped, no division by zero
