"""Venue-neutral data types shared by the engine, the venues and the simulation core.

Prices and quantities that go to or come from a venue are ``Decimal`` (exact, as on the wire);
candle series used by the pure core are numpy float64 arrays.  Times are integer epoch
milliseconds everywhere.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

import numpy as np

INTERVAL_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}


def interval_ms(interval: str) -> int:
    try:
        return INTERVAL_MS[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r}; use one of {', '.join(INTERVAL_MS)}") from None


class Side(str, Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> "Side":
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(str, Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"

    @property
    def conditional(self) -> bool:
        return self in (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET)


class OrderStatus(str, Enum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class Candles:
    """A candle series as float64 arrays of equal length, oldest first.

    ``open_time`` is the candle open time in epoch ms (int64).  ``closed`` tells whether the
    last row is a closed candle; venues return the still-forming candle last, and the pure
    core must only ever look at closed rows (see :meth:`closed_only`).
    """

    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    interval: str = "5m"
    last_closed: bool = True

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def closed_only(self) -> "Candles":
        if self.last_closed or len(self) == 0:
            return self
        return self.slice(0, len(self) - 1, last_closed=True)

    def slice(self, start: int, stop: int, *, last_closed: bool | None = None) -> "Candles":
        return Candles(
            self.open_time[start:stop],
            self.open[start:stop],
            self.high[start:stop],
            self.low[start:stop],
            self.close[start:stop],
            self.volume[start:stop],
            self.interval,
            self.last_closed if last_closed is None else last_closed,
        )

    @staticmethod
    def empty(interval: str = "5m") -> "Candles":
        z = np.zeros(0, dtype=np.float64)
        return Candles(np.zeros(0, dtype=np.int64), z, z, z, z, z, interval, True)

    @staticmethod
    def from_rows(rows, interval: str, *, now_ms: int | None = None) -> "Candles":
        """Build from rows ``[open_time, o, h, l, c, v, ...]`` (numbers or numeric strings).

        With ``now_ms`` the last row counts as closed only if its close time has passed.
        """
        if len(rows) == 0:
            return Candles.empty(interval)
        n = len(rows)
        # one C-level pass over the price columns (a nested list comprehension costs twice as much)
        arr = np.fromiter(map(float, itertools.chain.from_iterable(r[1:6] for r in rows)), dtype=np.float64,
                          count=5 * n).reshape(n, 5)
        ot = np.fromiter((int(float(r[0])) for r in rows), dtype=np.int64, count=n)
        last_closed = True
        if now_ms is not None:
            last_closed = int(ot[-1]) + interval_ms(interval) <= now_ms
        return Candles(ot, arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy(),
                       arr[:, 4].copy(), interval, last_closed)


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    multiplier_up: Decimal = Decimal("1.05")
    multiplier_down: Decimal = Decimal("0.95")


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    symbol: str
    base_asset: str
    quote_asset: str
    status: str
    contract_type: str
    filters: SymbolFilters
    maint_margin_percent: Decimal = Decimal("2.5")
    price_precision: int = 8
    quantity_precision: int = 8


@dataclass(frozen=True, slots=True)
class RateLimit:
    kind: str  # REQUEST_WEIGHT | ORDERS
    interval_ms: int
    limit: int


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    server_time: int
    symbols: dict[str, SymbolInfo]
    rate_limits: tuple[RateLimit, ...] = ()


@dataclass(frozen=True, slots=True)
class Ticker24h:
    symbol: str
    last_price: Decimal
    quote_volume: Decimal
    volume: Decimal
    price_change_percent: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class BookTicker:
    symbol: str
    bid: Decimal
    ask: Decimal
    bid_qty: Decimal = Decimal(0)
    ask_qty: Decimal = Decimal(0)
    time: int = 0

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True, slots=True)
class PremiumIndex:
    symbol: str
    mark_price: Decimal
    index_price: Decimal
    last_funding_rate: Decimal
    next_funding_time: int
    time: int = 0


@dataclass(frozen=True, slots=True)
class FundingRate:
    symbol: str
    funding_time: int
    funding_rate: Decimal


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    wallet_balance: Decimal  # balance incl. realised PnL
    unrealized_pnl: Decimal
    available: Decimal

    @property
    def equity(self) -> Decimal:
        return self.wallet_balance + self.unrealized_pnl


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    amount: Decimal  # signed; > 0 long, < 0 short (one-way mode)
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    leverage: int
    liquidation_price: Decimal = Decimal(0)
    update_time: int = 0

    @property
    def side(self) -> Side | None:
        if self.amount > 0:
            return Side.BUY
        if self.amount < 0:
            return Side.SELL
        return None


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What the engine asks a venue to do.  ``client_id`` is mandatory: every order carries a
    deterministic client id (``newClientOrderId`` / ``clientAlgoId`` on the wire)."""

    symbol: str
    side: Side
    type: OrderType
    client_id: str
    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None  # GTC | IOC for LIMIT
    reduce_only: bool = False
    close_position: bool = False
    working_type: str = "MARK_PRICE"  # MARK_PRICE | CONTRACT_PRICE


@dataclass(frozen=True, slots=True)
class Order:
    """A venue order, normalised (plain and algo/conditional orders alike)."""

    symbol: str
    order_id: int
    client_id: str
    side: Side
    type: OrderType
    status: OrderStatus
    quantity: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    price: Decimal = Decimal(0)
    stop_price: Decimal = Decimal(0)
    reduce_only: bool = False
    close_position: bool = False
    working_type: str = "CONTRACT_PRICE"
    time: int = 0
    update_time: int = 0
    is_algo: bool = False  # placed through Binance's algo-order service
    time_in_force: str = "GTC"  # GTC | IOC | FOK | GTX for LIMIT; conditional orders report GTC


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade execution (``userTrades`` row)."""

    symbol: str
    trade_id: int
    order_id: int
    side: Side
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    time: int
    maker: bool = False


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    balance: Balance
    positions: tuple[Position, ...] = field(default_factory=tuple)
