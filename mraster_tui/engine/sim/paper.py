"""PaperExchange: the paper venue -- a :class:`SimExchange` behind the async ``Exchange`` port.

Two modes:

* **Feed-driven** (demo, backtest, replay): ``PaperExchange(sim, clock=clock)``.  The sim's own
  feed provides every price; before each call the sim is advanced to ``clock.now_ms()`` (never
  backwards), so triggers, fills and funding between two calls happen at their own times.
* **Live-price paper**: ``await PaperExchange.live(public, clock=WallClock(), ...)``.  Public
  market data (klines, tickers, exchange info, funding history, server time) is forwarded to the
  real venue; its book tickers and mark prices are fed into the sim (a :class:`LiveFeed`)
  whenever they are fetched and at least every ``refresh_s`` seconds before an account or
  order call.  Orders are simulated.

**No signed request ever leaves the process in paper mode, even with keys configured**: the
live mode only accepts a *public market-data* object (``RestExchange.public_only()``), and
refuses anything that has signed methods (an ``Exchange``, or any object with ``place_order``,
``balance``, ``positions``...) with ``TypeError``.  The paper venue holds no reference to a
signing client, so it cannot call one by mistake.

``place_order`` is idempotent per client id: a duplicate (-4116) returns the existing order.
Events (fills, triggers, cancels, expiries, funding, liquidations) go to ``on_event`` and are
kept for :meth:`PaperExchange.drain_events`.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

from mraster_tui.engine.clock import Clock, ScaledClock
from mraster_tui.engine.errors import DuplicateClientId, UnknownOrder
from mraster_tui.engine.sim.exchange import SimEvent, SimExchange, SlippageModel
from mraster_tui.engine.sim.market import LiveFeed, SyntheticMarket
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
from mraster_tui.engine.venue.base import Exchange, VenueCapabilities

PAPER = VenueCapabilities("paper", conditional_via_algo=False, account_path="/fapi/v2/account")

#: Methods that would need a signature on a real venue; a public-data object has none of them.
SIGNED_METHODS = ("place_order", "cancel_order", "cancel_all", "get_order", "balance", "positions",
                  "open_orders", "user_trades", "set_leverage", "funding_income", "account", "permissions",
                  "listen_key", "new_listen_key")


class PublicMarketData(Protocol):
    """The public endpoints the live paper mode reads (RestExchange.public_only() has them)."""

    async def server_time(self) -> int: ...

    async def exchange_info(self) -> ExchangeInfo: ...

    async def klines(self, symbol: str, interval: str, limit: int, *, start_ms: int | None = None,
                     end_ms: int | None = None) -> Candles: ...

    async def tickers_24h(self) -> dict[str, Ticker24h]: ...

    async def book_tickers(self) -> dict[str, BookTicker]: ...

    async def premium_index(self) -> dict[str, PremiumIndex]: ...

    async def funding_history(self, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None,
                              limit: int = 1000) -> list[FundingRate]: ...


def ensure_public_only(obj: object) -> None:
    """Refuse anything that could send a signed request (structural check, not a promise)."""
    if isinstance(obj, Exchange):
        raise TypeError("paper mode takes the public-only market-data view (RestExchange.public_only()), "
                        f"not a full {type(obj).__name__}")
    signed = [m for m in SIGNED_METHODS if hasattr(obj, m)]
    if signed:
        raise TypeError(f"paper mode refuses a market-data object with signed methods ({', '.join(signed)}); "
                        "use RestExchange.public_only()")


def sim_options(settings: object) -> dict:
    """SimExchange keyword arguments from the settings (paper balance, fees, slippage)."""
    def dec(name: str, default: float) -> Decimal:
        return Decimal(repr(float(getattr(settings, name, default))))

    return {"balance": dec("paper_balance", 10000.0), "taker_fee": dec("taker_fee", 0.0005),
            "maker_fee": dec("maker_fee", 0.0002), "slippage": SlippageModel(dec("slippage_bps", 1.0))}


class PaperExchange(Exchange):
    capabilities = PAPER
    simulated = True

    def __init__(self, sim: SimExchange, *, clock: Clock, on_event: Callable[[SimEvent], None] | None = None,
                 public: PublicMarketData | None = None, refresh_s: float = 2.0) -> None:
        if public is not None:
            ensure_public_only(public)
            if not isinstance(sim.feed, LiveFeed):
                raise TypeError("live-price paper needs a SimExchange on a LiveFeed (use PaperExchange.live)")
        self._sim = sim
        self._clock = clock
        self._on_event = on_event
        self._public = public
        self._refresh_ms = int(refresh_s * 1000)
        self._last_refresh: int | None = None
        self._books: dict[str, BookTicker] | None = None
        self._premiums: dict[str, PremiumIndex] | None = None
        self._tradable = frozenset(sim.feed.symbols())
        self._events: deque[SimEvent] = deque(maxlen=10_000)

    # -- construction -----------------------------------------------------------------
    @classmethod
    async def live(cls, public: PublicMarketData, *, clock: Clock, on_event: Callable[[SimEvent], None] | None = None,
                   refresh_s: float = 2.0, restore: dict | None = None, **sim_kw) -> "PaperExchange":
        """Paper trading on live public prices (``sim_kw`` go to :class:`SimExchange`).

        ``restore`` is a saved account (:meth:`account_state`): the paper wallet, positions, open
        orders and fills carry on across restarts, like a real account does."""
        ensure_public_only(public)
        info = await public.exchange_info()
        feed = LiveFeed(info.symbols, clock.now_ms())
        ex = cls(SimExchange(feed, **sim_kw), clock=clock, on_event=on_event, public=public, refresh_s=refresh_s)
        await ex._refresh(force=True)  # the feed has prices from here on
        if restore is not None:
            # the saved account resumes at the first live price: nothing is replayed in between
            restore = {**restore, "now": max(int(restore.get("now", 0)), ex._sim.now_ms)}
            ex._sim = SimExchange.from_dict(feed, restore)
        return ex

    @classmethod
    def demo(cls, settings: object, *, clock: Clock | None = None,
             on_event: Callable[[SimEvent], None] | None = None) -> "PaperExchange":
        """The offline demo: a seeded synthetic market (demo_symbols, demo_seed) with an
        accelerated clock (demo_speed) unless ``clock`` is given.  ``.clock`` returns it."""
        market = SyntheticMarket(int(getattr(settings, "demo_symbols", 8)), seed=int(getattr(settings, "demo_seed", 7)))
        if clock is None:
            clock = ScaledClock(market.default_start_ms, float(getattr(settings, "demo_speed", 300.0)))
        sim = SimExchange(market, start_ms=max(market.default_start_ms, clock.now_ms()), **sim_options(settings))
        return cls(sim, clock=clock, on_event=on_event)

    @property
    def sim(self) -> SimExchange:
        return self._sim

    def account_state(self) -> dict:
        """The simulated account as JSON-able data (for :meth:`live`'s ``restore``)."""
        return self._sim.to_dict()

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def live_prices(self) -> bool:
        return self._public is not None

    # -- time and events --------------------------------------------------------------
    def drain_events(self) -> list[SimEvent]:
        out = list(self._events)
        self._events.clear()
        return out

    def _dispatch(self) -> None:
        for ev in self._sim.drain_events():
            self._events.append(ev)
            if self._on_event is not None:
                self._on_event(ev)

    def sync(self) -> list[SimEvent]:
        """Advance the sim to the clock (feed-driven mode); returns the events of the step."""
        t = self._clock.now_ms()
        events = self._sim.advance_to(t) if t > self._sim.now_ms else []
        self._dispatch()
        return events

    async def _refresh(self, *, force: bool = False, books: dict[str, BookTicker] | None = None,
                       premiums: dict[str, PremiumIndex] | None = None) -> None:
        """Live mode: feed public prices into the sim and advance it.  Given ``books`` or
        ``premiums`` (just fetched by the caller) are used as they are, the other half comes
        from the last fetch; otherwise both are fetched when the last refresh is older than
        ``refresh_s``."""
        public = self._public
        assert public is not None
        now = self._clock.now_ms()
        stale = force or self._last_refresh is None or now - self._last_refresh >= self._refresh_ms
        if books is None and premiums is None and not stale:
            self._dispatch()
            return
        if books is None and (stale or self._books is None):
            books = await public.book_tickers()
        if premiums is None and (stale or self._premiums is None):
            premiums = await public.premium_index()
        self._books = books = books if books is not None else self._books
        self._premiums = premiums = premiums if premiums is not None else self._premiums
        now = self._clock.now_ms()
        if self._last_refresh is not None and now <= self._sim.now_ms:
            self._dispatch()  # same instant as the last walk: nothing new to walk through
            return
        feed: LiveFeed = self._sim.feed  # type: ignore[assignment]
        for sym, b in (books or {}).items():
            if sym not in self._tradable or b.bid <= 0 or b.ask <= 0:
                continue
            mid = float(b.bid + b.ask) / 2.0
            p = (premiums or {}).get(sym)
            prem = float(p.mark_price) / mid - 1.0 if p is not None and p.mark_price > 0 else 0.0
            feed.push(now, sym, mid, float(b.ask - b.bid) / mid, prem)
            if p is not None and p.next_funding_time:
                feed.set_funding(sym, p.next_funding_time, p.last_funding_rate)
        self._last_refresh = now
        if now > self._sim.now_ms:
            self._sim.advance_to(now)
        else:  # observations replaced at the sim's instant: its cached quotes are outdated
            self._sim.forget_prices()
        self._dispatch()

    async def _before(self) -> None:
        if self._public is None:
            self.sync()
        else:
            await self._refresh()

    # -- public market data -----------------------------------------------------------
    async def server_time(self) -> int:
        if self._public is not None:
            return await self._public.server_time()
        self.sync()
        return self._sim.now_ms

    async def exchange_info(self) -> ExchangeInfo:
        if self._public is not None:
            return await self._public.exchange_info()
        self.sync()
        return self._sim.exchange_info()

    async def klines(self, symbol: str, interval: str, limit: int, *, start_ms: int | None = None,
                     end_ms: int | None = None) -> Candles:
        if self._public is not None:
            return await self._public.klines(symbol, interval, limit, start_ms=start_ms, end_ms=end_ms)
        self.sync()
        return self._sim.klines(symbol, interval, limit, start_ms, end_ms)

    async def tickers_24h(self) -> dict[str, Ticker24h]:
        if self._public is not None:
            return await self._public.tickers_24h()
        self.sync()
        return self._sim.tickers_24h()

    async def book_tickers(self) -> dict[str, BookTicker]:
        if self._public is not None:
            books = await self._public.book_tickers()
            await self._refresh(books=books)
            return books
        self.sync()
        return self._sim.book_tickers()

    async def premium_index(self) -> dict[str, PremiumIndex]:
        if self._public is not None:
            premiums = await self._public.premium_index()
            await self._refresh(premiums=premiums)
            return premiums
        self.sync()
        return self._sim.premium_index()

    async def funding_history(self, symbol: str, *, start_ms: int | None = None, end_ms: int | None = None,
                              limit: int = 1000) -> list[FundingRate]:
        if self._public is not None:
            return await self._public.funding_history(symbol, start_ms=start_ms, end_ms=end_ms, limit=limit)
        self.sync()
        return self._sim.funding_history(symbol, start_ms, end_ms, limit)

    # -- account (simulated) ----------------------------------------------------------
    async def balance(self, asset: str = "USDT") -> Balance:
        await self._before()
        if asset != self._sim.asset:
            return Balance(asset, Decimal(0), Decimal(0), Decimal(0))
        return self._sim.balance()

    async def positions(self) -> list[Position]:
        await self._before()
        return self._sim.positions()

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        await self._before()
        return self._sim.open_orders(symbol)

    async def user_trades(self, symbol: str, *, start_ms: int | None = None, order_id: int | None = None,
                          limit: int = 500) -> list[Fill]:
        await self._before()
        return self._sim.user_trades(symbol, start_ms=start_ms, order_id=order_id, limit=limit)

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        await self._before()
        return self._sim.set_leverage(symbol, leverage)

    async def funding_income(self, symbol: str, *, start_ms: int, end_ms: int | None = None) -> Decimal:
        await self._before()
        return self._sim.funding_income(symbol, start_ms, end_ms)

    # -- orders (simulated) -----------------------------------------------------------
    async def place_order(self, req: OrderRequest) -> Order:
        await self._before()
        try:
            order = self._sim.place_order(req)
        except DuplicateClientId:
            order = self._sim.get_order(req.symbol, client_id=req.client_id)
        self._dispatch()
        return order

    async def get_order(self, symbol: str, client_id: str, *, conditional: bool = False) -> Order | None:
        await self._before()
        try:
            return self._sim.get_order(symbol, client_id=client_id)
        except UnknownOrder:
            return None

    async def cancel_order(self, symbol: str, client_id: str, *, conditional: bool = False) -> Order | None:
        await self._before()
        try:
            order = self._sim.cancel_order(symbol, client_id=client_id)
        except UnknownOrder:
            return None
        self._dispatch()
        return order

    async def cancel_all(self, symbol: str) -> None:
        await self._before()
        self._sim.cancel_all(symbol)
        self._dispatch()

    async def close(self) -> None:
        closer = getattr(self._public, "close", None) if self._public is not None else None
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result
