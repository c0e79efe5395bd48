"""The exchange port: what the engine needs from a venue.

Implemented by :class:`mraster_tui.engine.venue.rest.RestExchange` (real HTTP to Binance /
AsterDex or the loopback exchange) and by :class:`mraster_tui.engine.sim.paper.PaperExchange`
(an in-process :class:`SimExchange`; paper, demo and backtests).  The engine only ever talks to
this interface, so live, paper and backtest share their logic.

Rules every implementation keeps:

* ``place_order`` is idempotent per ``client_id``: an unknown outcome (lost response, timeout,
  5xx, -1007) is resolved by querying the client id before anything is resent; a duplicate
  client id (-4116) returns the existing order.  It never places two orders for one client id.
* Conditional orders (STOP_MARKET / TAKE_PROFIT_MARKET) go wherever the venue wants them
  (Binance: algo endpoints; AsterDex: ``/fapi/v1/order``), but come back as plain
  :class:`Order` objects from ``open_orders`` either way.
* Failed reads raise :class:`~mraster_tui.engine.errors.VenueError`; they never return an
  empty list that could be mistaken for "no positions".
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from decimal import Decimal

from mraster_tui.engine.types import (
    Balance,
    BookTicker,
    Candles,
    ExchangeInfo,
    Fill,
    FundingRate,
    Order,
    OrderRequest,
    Position,
    PremiumIndex,
    Ticker24h,
)


@dataclass(frozen=True, slots=True)
class VenueCapabilities:
    """Declared differences between venues (instead of ``if venue == ...`` in the code)."""

    name: str  # "binance" | "aster" | "paper"
    conditional_via_algo: bool  # Binance since 2025-12: STOP/TP orders go to /fapi/v1/algoOrder
    account_path: str  # "/fapi/v2/account" (Binance) | "/fapi/v4/account" (Aster)
    weight_limit_1m: int = 2400
    order_limit_1m: int = 1200
    order_limit_10s: int | None = 300
    book_ticker_all_weight: int = 5
    premium_index_all_weight: int = 10


BINANCE = VenueCapabilities("binance", True, "/fapi/v2/account", 2400, 1200, 300, 5, 10)
ASTER = VenueCapabilities("aster", False, "/fapi/v4/account", 2400, 1200, None, 2, 1)


class Exchange(abc.ABC):
    """Async venue interface.  All times are epoch ms; all prices/quantities Decimal."""

    capabilities: VenueCapabilities
    #: True when orders are simulated in-process (paper / demo / backtest)
    simulated: bool = False

    # -- public market data ------------------------------------------------------------
    @abc.abstractmethod
    async def server_time(self) -> int: ...

    @abc.abstractmethod
    async def exchange_info(self) -> ExchangeInfo: ...

    @abc.abstractmethod
    async def klines(self, symbol: str, interval: str, limit: int, *,
                     start_ms: int | None = None, end_ms: int | None = None) -> Candles:
        """Most recent candles, oldest first; the last row may be the forming candle
        (``Candles.last_closed`` tells)."""

    @abc.abstractmethod
    async def tickers_24h(self) -> dict[str, Ticker24h]: ...

    @abc.abstractmethod
    async def book_tickers(self) -> dict[str, BookTicker]: ...

    @abc.abstractmethod
    async def premium_index(self) -> dict[str, PremiumIndex]: ...

    @abc.abstractmethod
    async def funding_history(self, symbol: str, *, start_ms: int | None = None,
                              end_ms: int | None = None, limit: int = 1000) -> list[FundingRate]: ...

    # -- account ----------------------------------------------------------------------
    @abc.abstractmethod
    async def balance(self, asset: str = "USDT") -> Balance: ...

    @abc.abstractmethod
    async def positions(self) -> list[Position]:
        """Non-zero positions only.  Raises on failure; never returns [] for an error."""

    @abc.abstractmethod
    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open plain *and* conditional orders."""

    @abc.abstractmethod
    async def user_trades(self, symbol: str, *, start_ms: int | None = None,
                          order_id: int | None = None, limit: int = 500) -> list[Fill]: ...

    @abc.abstractmethod
    async def set_leverage(self, symbol: str, leverage: int) -> int: ...

    async def funding_income(self, symbol: str, *, start_ms: int, end_ms: int | None = None) -> Decimal | None:
        """Funding received (+) or paid (-) on ``symbol`` in ``[start_ms, end_ms]``, in the quote
        asset; None when this venue adapter cannot tell (the ledger then records 0)."""
        return None

    # -- orders -----------------------------------------------------------------------
    @abc.abstractmethod
    async def place_order(self, req: OrderRequest) -> Order:
        """Place exactly one order for ``req.client_id`` (see module docstring)."""

    @abc.abstractmethod
    async def get_order(self, symbol: str, client_id: str, *, conditional: bool = False) -> Order | None:
        """The order with this client id, or None if the venue does not know it."""

    @abc.abstractmethod
    async def cancel_order(self, symbol: str, client_id: str, *, conditional: bool = False) -> Order | None:
        """Cancel; returns the cancelled order, or None if it was unknown / already closed."""

    async def cancel_all(self, symbol: str) -> None:
        for o in await self.open_orders(symbol):
            await self.cancel_order(symbol, o.client_id, conditional=o.type.conditional)

    # -- lifecycle --------------------------------------------------------------------
    async def close(self) -> None:  # pragma: no cover - default no-op
        return None


def d(x) -> Decimal:
    """Decimal from a wire value (string or number) without float noise."""
    if isinstance(x, Decimal):
        return x
    return Decimal(str(x))
