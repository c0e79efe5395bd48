"""A third-party client works against the loopback exchange unchanged: ccxt's ``binanceusdm``
with its fapi URLs pointed at the server loads markets, fetches OHLCV, balance and positions,
and places, queries and cancels orders, including a stop (which ccxt sends to the algo
endpoints, like on the real venue since 2025-12).  No request may leave the loopback."""

from __future__ import annotations

import pytest

ccxt = pytest.importorskip("ccxt", reason="ccxt is a test dependency (pip install ccxt)")

from mraster_tui.engine.sim.server import TEST_API_KEY, TEST_API_SECRET, LoopbackExchange  # noqa: E402

SYMBOL = "BTC/USDT:USDT"
FAPI = {"fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
        "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3"}


class LoopbackOnly(ccxt.binanceusdm):
    """binanceusdm that refuses (and records) any URL outside the loopback server."""

    base_url = ""
    outside: list[str] = []

    def fetch(self, url, method="GET", headers=None, body=None):
        if not url.startswith(self.base_url + "/fapi/"):
            self.outside.append(url)
            raise AssertionError(f"ccxt tried to leave the loopback exchange: {method} {url}")
        return super().fetch(url, method, headers, body)


@pytest.fixture(scope="module")
def server():
    h = LoopbackExchange(venue="binance", synthetic=3, seed=21).start()
    yield h
    h.stop()


@pytest.fixture
def exchange(server):
    ex = LoopbackOnly({
        "apiKey": TEST_API_KEY,
        "secret": TEST_API_SECRET,
        "enableRateLimit": False,
        "timeout": 5000,
        "options": {
            "defaultType": "swap",
            "fetchMarkets": {"types": ["linear"]},  # fapi only: no spot, no dapi
            "fetchCurrencies": False,  # a sapi call
            "fetchMargins": False,  # sapi calls
            "adjustForTimeDifference": True,  # exercises /fapi/v1/time
        },
    })
    ex.base_url = server.base_url
    ex.outside = []
    # every URL ccxt knows points at a path the loopback does not serve, the fapi ones at it
    for name in list(ex.urls["api"]):
        ex.urls["api"][name] = server.base_url + FAPI.get(name, f"/not-fapi/{name}")
    yield ex
    assert ex.outside == []


def _paths(server, method=None):
    return [r["path"] for r in server.requests() if method is None or r["method"] == method]


def test_load_markets_ohlcv_balance_positions(server, exchange):
    server.clear_requests()
    markets = exchange.load_markets()
    assert {"BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"} <= set(markets)
    btc = markets[SYMBOL]
    assert btc["linear"] and btc["swap"] and btc["settle"] == "USDT"
    assert btc["precision"]["price"] == 0.1 and btc["limits"]["cost"]["min"] == 5.0
    assert _paths(server)[:2] == ["/fapi/v1/exchangeInfo", "/fapi/v1/time"]

    candles = exchange.fetch_ohlcv(SYMBOL, "5m", limit=5)
    assert len(candles) == 5
    assert all(c[1 + 2] <= min(c[1], c[4]) <= max(c[1], c[4]) <= c[2] for c in candles)
    assert [b[0] - a[0] for a, b in zip(candles, candles[1:])] == [300_000] * 4

    balance = exchange.fetch_balance()
    assert balance["USDT"]["total"] == pytest.approx(10_000, rel=1e-3)
    assert exchange.fetch_positions() == []
    signed = [r for r in server.requests() if r["signed"]]
    assert signed and all(r["status"] == 200 and r["api_key"] for r in signed)


def test_orders_including_a_stop(server, exchange):
    exchange.load_markets()
    price = exchange.fetch_ticker(SYMBOL)["last"]
    entry = exchange.create_order(SYMBOL, "market", "buy", 0.002)
    assert entry["status"] == "closed" and entry["filled"] == pytest.approx(0.002)
    fetched = exchange.fetch_order(entry["id"], SYMBOL)
    assert fetched["id"] == entry["id"] and fetched["average"] > 0 and fetched["status"] == "closed"
    positions = exchange.fetch_positions([SYMBOL])
    assert len(positions) == 1 and positions[0]["side"] == "long" and positions[0]["contracts"] == pytest.approx(0.002)

    limit_price = exchange.price_to_precision(SYMBOL, price * 0.97)
    limit = exchange.create_order(SYMBOL, "limit", "buy", 0.002, float(limit_price))
    assert limit["status"] == "open"
    assert [o["id"] for o in exchange.fetch_open_orders(SYMBOL)] == [limit["id"]]
    assert exchange.cancel_order(limit["id"], SYMBOL)["status"] == "canceled"

    stop_price = float(exchange.price_to_precision(SYMBOL, price * 0.9))
    server.clear_requests()
    stop = exchange.create_order(SYMBOL, "market", "sell", 0.002, None,
                                 {"stopLossPrice": stop_price, "reduceOnly": True})
    assert _paths(server, "POST") == ["/fapi/v1/algoOrder"]  # the algo service, not /fapi/v1/order
    assert stop["status"] == "open" and stop["triggerPrice"] == pytest.approx(stop_price)
    open_stops = exchange.fetch_open_orders(SYMBOL, params={"trigger": True})
    assert [o["id"] for o in open_stops] == [stop["id"]]
    assert exchange.fetch_order(stop["id"], SYMBOL, params={"trigger": True})["status"] == "open"
    exchange.cancel_order(stop["id"], SYMBOL, params={"trigger": True})
    assert exchange.fetch_open_orders(SYMBOL, params={"trigger": True}) == []
    with server.lock:
        states = {o.client_id: o.status.value for o in server.sim.all_orders("BTCUSDT") if o.is_algo}
    assert states == {stop["clientOrderId"]: "CANCELED"}

    exit_ = exchange.create_order(SYMBOL, "market", "sell", 0.002, None, {"reduceOnly": True})
    assert exit_["status"] == "closed"
    assert exchange.fetch_positions() == []
    trades = exchange.fetch_my_trades(SYMBOL)
    assert [t["side"] for t in trades][-2:] == ["buy", "sell"] and all(t["fee"]["cost"] > 0 for t in trades)


def test_venue_errors_map_to_ccxt_exceptions(exchange):
    exchange.load_markets()
    with pytest.raises(ccxt.OrderNotFound):
        exchange.fetch_order("123456", SYMBOL)
    with pytest.raises(ccxt.ExchangeError, match="-4164"):  # below the minimum notional
        exchange.create_order(SYMBOL, "market", "buy", 0.00001)
    bad = LoopbackOnly({"apiKey": TEST_API_KEY, "secret": "0" * 64, "enableRateLimit": False,
                        "options": exchange.options})
    bad.base_url, bad.outside, bad.urls = exchange.base_url, [], exchange.urls
    bad.markets, bad.markets_by_id, bad.symbols = exchange.markets, exchange.markets_by_id, exchange.symbols
    with pytest.raises(ccxt.AuthenticationError):  # -1022 signature
        bad.fetch_balance()


def test_the_loopback_guard_catches_any_other_url(exchange):
    with pytest.raises(AssertionError, match="leave the loopback"):
        exchange.sapiGetCapitalConfigGetall()  # what fetchCurrencies would call
    assert len(exchange.outside) == 1 and "/not-fapi/sapi" in exchange.outside[0]
    exchange.outside.clear()
