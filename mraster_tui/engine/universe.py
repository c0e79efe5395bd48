"""Which symbols to scan: exchangeInfo + 24h tickers + settings -> a ranked, filtered universe.

A symbol is eligible when, checked in this order (the first failure is its reason):
status ``TRADING``; contract type ``PERPETUAL``; quote asset ``quote``; in ``include_symbols``
(empty means all); not in ``exclude_symbols``; a 24h ticker exists; 24h quote volume at least
``min_quote_vol_usdt``.  Eligible symbols are ranked by 24h quote volume (descending, ties by
name) and the top ``universe_max`` are scanned.  With ``universe_rotate``, a window of
``universe_max`` symbols moves through the ranked list by that many places per cycle (wrapping
around), so every eligible symbol is scanned within ``ceil(eligible / universe_max)`` cycles;
the window only depends on the ranking and the cycle index.  Eligible symbols left out of this
cycle are listed in ``excluded`` too, with a reason saying so.  Include-list symbols the venue
does not list are reported as excluded (a typo in the config shows up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mraster_tui.engine.types import ExchangeInfo, Ticker24h

__all__ = ["QV_SCORE_CAP", "UniverseResult", "qv_score", "select_universe"]

QV_SCORE_CAP = 2.5


@dataclass(frozen=True, slots=True)
class UniverseResult:
    symbols: tuple[str, ...]  # to scan this cycle, in rank order of the window
    excluded: dict[str, str]  # symbol -> reason (ineligible, or eligible but not scanned now)
    ranked: tuple[str, ...]  # every eligible symbol, by 24h quote volume descending
    qv_scores: dict[str, float] = field(default_factory=dict)  # eligible symbol -> qv_score feature


def qv_score(quote_volume: Decimal | float, min_quote_volume: float) -> float:
    """The policy's quote-volume feature: ``min(2.5, quoteVolume / min_quote_vol_usdt)``."""
    return min(QV_SCORE_CAP, float(quote_volume) / max(float(min_quote_volume), 1.0))


def _symbols(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(s.strip().upper() for s in value or () if s and s.strip())


def select_universe(info: ExchangeInfo, tickers: dict[str, Ticker24h], settings: Any, *,
                    cycle: int = 0) -> UniverseResult:
    quote = str(getattr(settings, "quote", "USDT")).upper()
    include = _symbols(getattr(settings, "include_symbols", ()))
    exclude = _symbols(getattr(settings, "exclude_symbols", ()))
    min_volume = float(getattr(settings, "min_quote_vol_usdt", 75000.0))
    limit = int(getattr(settings, "universe_max", 40))
    if limit < 1:
        raise ValueError(f"universe_max must be at least 1, got {limit}")

    excluded: dict[str, str] = {}
    eligible: list[tuple[Decimal, str]] = []
    for symbol, s in info.symbols.items():
        ticker = tickers.get(symbol)
        if s.status != "TRADING":
            excluded[symbol] = f"status {s.status}"
        elif s.contract_type != "PERPETUAL":
            excluded[symbol] = f"contract type {s.contract_type}"
        elif s.quote_asset.upper() != quote:
            excluded[symbol] = f"quote asset {s.quote_asset}, not {quote}"
        elif include and symbol not in include:
            excluded[symbol] = "not in ASTER_INCLUDE_SYMBOLS"
        elif symbol in exclude:
            excluded[symbol] = "in ASTER_EXCLUDE_SYMBOLS"
        elif ticker is None:
            excluded[symbol] = "no 24h ticker"
        elif float(ticker.quote_volume) < min_volume:
            excluded[symbol] = f"24h quote volume {float(ticker.quote_volume):,.0f} < {min_volume:,.0f}"
        else:
            eligible.append((ticker.quote_volume, symbol))
    for symbol in sorted(include - info.symbols.keys()):
        excluded[symbol] = "in ASTER_INCLUDE_SYMBOLS but not listed on the venue"

    eligible.sort(key=lambda vs: (-vs[0], vs[1]))
    ranked = tuple(symbol for _, symbol in eligible)
    if len(ranked) <= limit:
        chosen = ranked
    elif getattr(settings, "universe_rotate", False):
        start = (cycle * limit) % len(ranked)
        chosen = (ranked + ranked)[start:start + limit]
    else:
        chosen = ranked[:limit]
    scanned = set(chosen)
    for rank, symbol in enumerate(ranked, 1):
        if symbol not in scanned:
            excluded[symbol] = (f"eligible (rank {rank}), outside this cycle's rotation window"
                                if getattr(settings, "universe_rotate", False)
                                else f"rank {rank} by quote volume, beyond ASTER_UNIVERSE_MAX {limit}")
    scores = {symbol: qv_score(volume, min_volume) for volume, symbol in eligible}
    return UniverseResult(symbols=chosen, excluded=excluded, ranked=ranked, qv_scores=scores)
