"""The loopback exchange over real HTTP (httpx against the server in a thread): the wire
contract of docs/exchange-api.md, signing, weights, 429/418, every injected fault, the venue
modes and the request log."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import httpx
import numpy as np
import pytest

from mraster_tui.engine.sim.server import (
    TEST_API_KEY,
    TEST_API_SECRET,
    LoopbackExchange,
    LoopbackProcess,
    ServerClock,
    build_sim,
    fmt_dec,
)
from mraster_tui.engine.sim.server_cli import main as cli_main
from mraster_tui.engine.venue.signing import hmac_sha256_hex, signed_query

from _shared import shared_data

# The contract's test vector (docs/exchange-api.md §3).
VECTOR_TS = 1591702613943
VECTOR_PAYLOAD = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000"
                  f"&timestamp={VECTOR_TS}")
VECTOR_SIG = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
VECTOR_MIXED_QUERY = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
VECTOR_MIXED_BODY = f"quantity=1&price=9000&recvWindow=5000&timestamp={VECTOR_TS}"
VECTOR_MIXED_SIG = "30baaf0fab549bbeda7f5ef201898b34122da25fd23c646cac2c529aebe670a4"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
AUTH_CODES = {-1021, -1022, -2014, -2015, -1102}


class Client:
    """A minimal venue client, everything in the query string.  Its clock is the server's clock
    without the injected skew: a client synced before the skew (or after a clock jump)."""

    def __init__(self, handle: LoopbackExchange, *, key: str = TEST_API_KEY, secret: str = TEST_API_SECRET,
                 timeout: float = 5.0) -> None:
        self.handle = handle
        self.key, self.secret = key, secret
        self.http = httpx.Client(base_url=handle.base_url, timeout=timeout)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def now(self) -> int:
        return self.handle.clock.now_ms()

    def signed(self, method: str, path: str, *, ts: int | None = None, **params: Any) -> httpx.Response:
        params["timestamp"] = ts if ts is not None else self.now()
        query = signed_query(params, self.secret)
        return self.http.request(method, f"{path}?{query}", headers={"X-MBX-APIKEY": self.key})

    def close(self) -> None:
        self.http.close()


def _start(**kw: Any) -> LoopbackExchange:
    kw.setdefault("synthetic", 3)
    kw.setdefault("seed", 11)
    return LoopbackExchange(**kw).start()


@contextlib.contextmanager
def _serving(**kw: Any) -> Iterator[tuple[LoopbackExchange, Client]]:
    """A private server (for tests that change its clock or limits) and a client of it."""
    h = _start(**kw)
    c = Client(h)
    try:
        yield h, c
    finally:
        c.close()
        h.stop()


@pytest.fixture(scope="module")
def binance_server():
    h = _start(venue="binance")
    yield h
    h.stop()


@pytest.fixture(scope="module")
def aster_server():
    h = _start(venue="aster")
    yield h
    h.stop()


def _fresh(handle: LoopbackExchange) -> LoopbackExchange:
    handle.control(reset=True, clear_faults=True, reset_weights=True)
    handle.clear_requests()
    return handle


@pytest.fixture
def bn(binance_server):
    c = Client(_fresh(binance_server))
    yield c
    c.close()
    _fresh(binance_server)


@pytest.fixture
def aster(aster_server):
    c = Client(_fresh(aster_server))
    yield c
    c.close()
    _fresh(aster_server)


def _symbol(c: Client) -> dict[str, Any]:
    return c.get("/fapi/v1/exchangeInfo").json()["symbols"][0]


def _filters(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filterType"]: f for f in info["filters"]}


def _qty(c: Client, info: dict[str, Any], usdt: str = "60") -> str:
    step = Decimal(_filters(info)["LOT_SIZE"]["stepSize"])
    mark = Decimal(c.get("/fapi/v1/premiumIndex", symbol=info["symbol"]).json()["markPrice"])
    return str((Decimal(usdt) / mark / step).to_integral_value(ROUND_CEILING) * step)


def _price(c: Client, info: dict[str, Any], factor: str) -> str:
    """The mark price times ``factor``, on the tick grid."""
    tick = Decimal(_filters(info)["PRICE_FILTER"]["tickSize"])
    mark = Decimal(c.get("/fapi/v1/premiumIndex", symbol=info["symbol"]).json()["markPrice"])
    return str((mark * Decimal(factor) / tick).to_integral_value(ROUND_FLOOR) * tick)


def _weight(r: httpx.Response) -> int:
    return int(r.headers["x-mbx-used-weight-1m"])


# ------------------------------------------------------------------------------ public data


def test_time_and_exchange_info_follow_the_contract(bn):
    before = int(time.time() * 1000)
    t = bn.get("/fapi/v1/time").json()["serverTime"]
    assert abs(t - before) < 2000  # the default clock is the wall clock
    info = bn.get("/fapi/v1/exchangeInfo").json()
    assert info["futuresType"] == "U_MARGINED"
    assert [(r["rateLimitType"], r["interval"], r["intervalNum"], r["limit"]) for r in info["rateLimits"]] == [
        ("REQUEST_WEIGHT", "MINUTE", 1, 2400), ("ORDERS", "MINUTE", 1, 1200), ("ORDERS", "SECOND", 10, 300)]
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    btc = info["symbols"][0]
    assert btc["contractType"] == "PERPETUAL" and btc["status"] == "TRADING" and btc["quoteAsset"] == "USDT"
    f = _filters(btc)
    assert set(f) >= {"PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL", "PERCENT_PRICE"}
    for flt in btc["filters"]:  # filter values are strings, except `limit`
        for k, v in flt.items():
            assert isinstance(v, int) if k == "limit" else isinstance(v, str), (k, v)
    assert f["MIN_NOTIONAL"]["notional"] == "5"
    # the precisions are the decimals of the tick and the step (BTC ~ 75 000: 0.1 and 0.00001)
    assert (f["PRICE_FILTER"]["tickSize"], btc["pricePrecision"]) == ("0.1", 1)
    assert (f["LOT_SIZE"]["stepSize"], btc["quantityPrecision"]) == ("0.00001", 5)


def test_klines_are_12_column_rows_ending_with_the_forming_candle(bn):
    info = _symbol(bn)
    r = bn.get("/fapi/v1/klines", symbol=info["symbol"], interval="5m", limit=3)
    rows = r.json()
    assert r.status_code == 200 and len(rows) == 3
    now = bn.get("/fapi/v1/time").json()["serverTime"]
    for i, row in enumerate(rows):
        assert len(row) == 12
        assert isinstance(row[0], int) and isinstance(row[6], int) and isinstance(row[8], int)
        assert all(isinstance(row[k], str) for k in (1, 2, 3, 4, 5, 7, 9, 10, 11))
        assert row[6] == row[0] + 300_000 - 1
        assert Decimal(row[3]) <= min(Decimal(row[1]), Decimal(row[4])) <= max(Decimal(row[1]), Decimal(row[4])) <= Decimal(row[2])
        if i:
            assert row[0] == rows[i - 1][0] + 300_000
    assert rows[-1][0] <= now < rows[-1][6] + 1  # the last row is still forming
    assert rows[0][6] < now
    # string numbers formatted to the symbol precision (BTC: 1 price decimal, 5 quantity decimals)
    assert all(len(row[k].split(".")[1]) == 1 for row in rows for k in (1, 2, 3, 4))
    assert all(len(row[5].split(".")[1]) == 5 for row in rows)


def test_kline_parameters_are_validated(bn):
    sym = _symbol(bn)["symbol"]
    cases = [({"symbol": "NOPEUSDT", "interval": "5m"}, -1121), ({"symbol": sym, "interval": "1s"}, -1120),
             ({"symbol": sym, "interval": "5m", "limit": 2000}, -1130), ({"interval": "5m"}, -1102)]
    for params, code in cases:
        r = bn.get("/fapi/v1/klines", **params)
        assert (r.status_code, r.json()["code"]) == (400, code), params
    # a time window gives exactly those candles
    start = bn.get("/fapi/v1/klines", symbol=sym, interval="1m", limit=10).json()[0][0]
    rows = bn.get("/fapi/v1/klines", symbol=sym, interval="1m", startTime=start, endTime=start + 4 * 60_000).json()
    assert [r[0] for r in rows] == [start + i * 60_000 for i in range(5)]


@pytest.mark.parametrize("path,keys", [
    ("/fapi/v1/ticker/24hr", {"lastPrice", "quoteVolume", "priceChangePercent", "highPrice", "lowPrice", "count"}),
    ("/fapi/v1/ticker/bookTicker", {"bidPrice", "askPrice", "bidQty", "askQty", "time", "lastUpdateId"}),
    ("/fapi/v1/premiumIndex", {"markPrice", "indexPrice", "lastFundingRate", "nextFundingTime", "time"}),
])
def test_all_symbol_endpoints_give_arrays_and_one_symbol_an_object(bn, path, keys):
    many = bn.get(path).json()
    one = bn.get(path, symbol="ETHUSDT").json()
    assert isinstance(many, list) and [x["symbol"] for x in many] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert isinstance(one, dict) and one["symbol"] == "ETHUSDT" and keys <= set(one)
    for k in keys - {"time", "nextFundingTime", "lastUpdateId", "count"}:
        assert isinstance(one[k], str), k  # numbers are JSON strings


def test_book_and_24h_ticker_are_consistent(bn):
    book = bn.get("/fapi/v1/ticker/bookTicker", symbol="BTCUSDT").json()
    t24 = bn.get("/fapi/v1/ticker/24hr", symbol="BTCUSDT").json()
    assert Decimal(book["bidPrice"]) < Decimal(book["askPrice"])
    assert Decimal(t24["lowPrice"]) <= Decimal(t24["lastPrice"]) <= Decimal(t24["highPrice"])
    assert Decimal(t24["lowPrice"]) <= Decimal(t24["openPrice"]) <= Decimal(t24["highPrice"])
    assert Decimal(t24["quoteVolume"]) > 10**8  # BTC trades billions a day on the synthetic market too


def test_funding_history(bn):
    rows = bn.get("/fapi/v1/fundingRate", symbol="BTCUSDT", limit=3).json()
    assert len(rows) == 3
    times = [r["fundingTime"] for r in rows]
    assert times == sorted(times) and all(t % (8 * 3_600_000) == 0 for t in times)
    assert all(abs(Decimal(r["fundingRate"])) < Decimal("0.01") for r in rows)


@pytest.mark.parametrize("path,params,binance_w,aster_w", [
    ("/fapi/v1/time", {}, 1, 1),
    ("/fapi/v1/exchangeInfo", {}, 1, 1),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "5m", "limit": 99}, 1, 1),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "5m", "limit": 100}, 2, 2),
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "5m"}, 5, 5),  # default limit 500
    ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1001}, 10, 10),
    ("/fapi/v1/ticker/24hr", {"symbol": "BTCUSDT"}, 1, 1),
    ("/fapi/v1/ticker/24hr", {}, 40, 40),
    ("/fapi/v1/ticker/bookTicker", {"symbol": "BTCUSDT"}, 2, 1),
    ("/fapi/v1/ticker/bookTicker", {}, 5, 2),
    ("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"}, 1, 1),
    ("/fapi/v1/premiumIndex", {}, 10, 1),
    ("/fapi/v1/fundingRate", {"symbol": "BTCUSDT"}, 0, 1),
])
def test_weights_are_the_venue_weights_and_cumulative(bn, aster, path, params, binance_w, aster_w):
    for c, w in ((bn, binance_w), (aster, aster_w)):
        first = _weight(c.get("/fapi/v1/ping"))
        r = c.get(path, **params)
        assert r.status_code == 200, r.text
        assert _weight(r) == first + w, (c.handle.venue.settings.venue, path)
        assert c.handle.requests()[-1]["weight"] == w


def test_weight_window_resets_at_the_minute_of_the_server_clock():
    with _serving() as (h, c):
        used = _weight(c.get("/fapi/v1/exchangeInfo"))
        assert _weight(c.get("/fapi/v1/ticker/24hr")) == used + 40
        now = h.server_time()
        h.advance(60_000 - now % 60_000 + 1)  # into the next minute
        assert _weight(c.get("/fapi/v1/time")) == 1


def test_unknown_path_and_method_answer_404(bn, aster):
    r = bn.get("/fapi/v1/nothing")
    assert (r.status_code, r.json()) == (404, {"code": -5000, "msg": "Path /fapi/v1/nothing, Method GET is invalid"})
    assert "x-mbx-used-weight-1m" in r.headers
    r = bn.http.put("/fapi/v1/time")
    assert r.status_code == 404 and r.json()["code"] == -5000
    # AsterDex has no algo service and no v2/v3 account
    for method, path in (("POST", "/fapi/v1/algoOrder"), ("GET", "/fapi/v1/openAlgoOrders"),
                         ("GET", "/fapi/v2/account"), ("GET", "/fapi/v3/account")):
        r = aster.signed(method, path, symbol="BTCUSDT")
        assert r.status_code == 404 and r.json()["code"] == -5000, path
    assert aster.signed("GET", "/fapi/v4/account").status_code == 200
    assert bn.signed("GET", "/fapi/v4/account").status_code == 404


# ------------------------------------------------------------------------------ signing


@pytest.fixture(scope="module")
def vector_server():
    """A server whose clock stands at the contract's test-vector timestamp, so the published
    signatures verify as they are."""
    sim = build_sim(synthetic=2, seed=3, start_ms=VECTOR_TS - 200)
    h = LoopbackExchange(sim, venue="aster", clock=ServerClock(VECTOR_TS - 200, speed=0.001)).start()
    yield h
    h.stop()


def _business_answer(r: httpx.Response) -> bool:
    """The request passed authentication (it reached the matching engine)."""
    return r.status_code == 200 or (r.status_code == 400 and r.json()["code"] not in AUTH_CODES)


def test_contract_test_vector_signatures_are_accepted(vector_server):
    assert hmac_sha256_hex(TEST_API_SECRET, VECTOR_PAYLOAD) == VECTOR_SIG
    url, key = vector_server.base_url + "/fapi/v1/order", {"X-MBX-APIKEY": TEST_API_KEY}
    with httpx.Client() as http:
        as_query = http.post(f"{url}?{VECTOR_PAYLOAD}&signature={VECTOR_SIG}", headers=key)
        as_body = http.post(url, content=f"{VECTOR_PAYLOAD}&signature={VECTOR_SIG}", headers={**key, **FORM})
        mixed = http.post(f"{url}?{VECTOR_MIXED_QUERY}", content=f"{VECTOR_MIXED_BODY}&signature={VECTOR_MIXED_SIG}",
                          headers={**key, **FORM})
        upper = http.post(f"{url}?{VECTOR_PAYLOAD}&signature={VECTOR_SIG.upper()}", headers=key)
        tampered = http.post(f"{url}?{VECTOR_PAYLOAD.replace('9000', '9001')}&signature={VECTOR_SIG}", headers=key)
        # the Binance docs print f9d0... for the mixed case: a doc typo that must NOT verify
        doc_typo = http.post(f"{url}?{VECTOR_MIXED_QUERY}",
                             content=f"{VECTOR_MIXED_BODY}&signature=f9d0ae5e813ef6ccf15c2b5a434047a0181cb5a342b903b367ca6d27a66e36f2",
                             headers={**key, **FORM})
    for r in (as_query, as_body, mixed, upper):
        assert _business_answer(r), r.text
    for r in (tampered, doc_typo):
        assert (r.status_code, r.json()) == (400, {"code": -1022, "msg": "Signature for this request is not valid."})


def test_signature_is_checked_over_the_raw_bytes_not_re_encoded(bn):
    # `%3A` and `:` decode to the same value but are different bytes: sign one, send the other
    ts = bn.now()
    signed_raw = f"symbol=BTCUSDT&origClientOrderId=a%3Ab&timestamp={ts}"
    sig = hmac_sha256_hex(TEST_API_SECRET, signed_raw)
    sent = signed_raw.replace("%3A", ":")
    r = bn.http.get(f"/fapi/v1/order?{sent}&signature={sig}", headers={"X-MBX-APIKEY": TEST_API_KEY})
    assert r.json()["code"] == -1022
    r = bn.http.get(f"/fapi/v1/order?{signed_raw}&signature={sig}", headers={"X-MBX-APIKEY": TEST_API_KEY})
    assert r.json()["code"] == -2013  # authenticated; the order just does not exist


def test_key_problems_answer_401(bn):
    cases = [({}, -2014), ({"X-MBX-APIKEY": "short-key"}, -2014), ({"X-MBX-APIKEY": "a" * 64}, -2015)]
    q = signed_query({"timestamp": bn.now()}, TEST_API_SECRET)
    for headers, code in cases:
        r = bn.http.get(f"/fapi/v2/balance?{q}", headers=headers)
        assert (r.status_code, r.json()["code"]) == (401, code), headers
    assert bn.http.get(f"/fapi/v2/balance?{q}", headers={"X-MBX-APIKEY": TEST_API_KEY}).status_code == 200
    with contextlib.closing(Client(bn.handle, secret="0" * 64)) as wrong_secret:
        assert wrong_secret.signed("GET", "/fapi/v2/balance").json()["code"] == -1022


def test_timestamp_and_recv_window_rules(bn):
    now = bn.now()
    r = bn.signed("GET", "/fapi/v2/balance", ts=now - 6000)
    assert r.json() == {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
    assert bn.signed("GET", "/fapi/v2/balance", ts=now - 6000, recvWindow=10000).status_code == 200
    r = bn.signed("GET", "/fapi/v2/balance", ts=now + 3000)
    assert r.json() == {"code": -1021, "msg": "Timestamp for this request was 1000ms ahead of the server's time."}
    r = bn.signed("GET", "/fapi/v2/balance", recvWindow=60001)
    assert (r.status_code, r.json()) == (400, {"code": -1131, "msg": "recvWindow must be less than 60000"})
    r = bn.http.get("/fapi/v2/balance?" + signed_query({"recvWindow": 5000}, TEST_API_SECRET),
                    headers={"X-MBX-APIKEY": TEST_API_KEY})
    assert r.json()["code"] == -1102 and "timestamp" in r.json()["msg"]
    r = bn.http.get(f"/fapi/v2/balance?timestamp={now}", headers={"X-MBX-APIKEY": TEST_API_KEY})
    assert r.json()["code"] == -1102 and "signature" in r.json()["msg"]


def test_clock_skew_fault_shifts_server_time_and_the_timestamp_rule(bn):
    assert bn.signed("GET", "/fapi/v2/balance").status_code == 200
    bn.handle.control(skew_ms=30_000)  # the server's clock runs 30 s ahead
    t = bn.get("/fapi/v1/time").json()["serverTime"]
    assert 25_000 < t - bn.now() <= 30_000
    assert bn.signed("GET", "/fapi/v2/balance").json()["msg"].endswith("outside of the recvWindow.")
    assert bn.signed("GET", "/fapi/v2/balance", ts=t).status_code == 200  # a resynced client is fine
    bn.handle.control(skew_ms=-30_000)
    assert bn.signed("GET", "/fapi/v2/balance").json()["msg"].endswith("ahead of the server's time.")


def test_params_in_query_or_body_and_the_query_wins(bn):
    ts = bn.now()
    query = "symbol=SOLUSDT&leverage=7"
    body = f"leverage=5&timestamp={ts}"
    sig = hmac_sha256_hex(TEST_API_SECRET, query + body)
    r = bn.http.post(f"/fapi/v1/leverage?{query}", content=f"{body}&signature={sig}",
                     headers={"X-MBX-APIKEY": TEST_API_KEY, **FORM})
    assert r.status_code == 200 and r.json()["leverage"] == 7 and r.json()["symbol"] == "SOLUSDT"
    body_only = signed_query({"symbol": "SOLUSDT", "leverage": 4, "timestamp": ts}, TEST_API_SECRET)
    r = bn.http.post("/fapi/v1/leverage", content=body_only, headers={"X-MBX-APIKEY": TEST_API_KEY, **FORM})
    # 4x is allowed up to the last (unbounded) tier of the bracket table
    assert r.json() == {"leverage": 4, "maxNotionalValue": "500000000", "symbol": "SOLUSDT"}
    assert bn.signed("POST", "/fapi/v1/leverage", symbol="SOLUSDT", leverage=200).json()["code"] == -4028


# ------------------------------------------------------------------------------ rate limits


def test_429_when_the_weight_limit_is_exceeded_then_418_ban():
    with _serving(weight_limit=12, ban_after=2, ban_seconds=120) as (h, c):
        assert _weight(c.get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m")) == 5
        assert _weight(c.get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m")) == 10
        r = c.get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m")  # 15 > 12
        assert r.status_code == 429 and r.json()["code"] == -1003
        assert "current limit is 12 requests per minute" in r.json()["msg"]
        assert 1 <= int(r.headers["retry-after"]) <= 60 and _weight(r) == 10
        assert c.get("/fapi/v1/time").status_code == 200  # weight 1 still fits (11)
        # ignoring the 429s: two more limited requests are tolerated, the third gets banned
        assert [c.get("/fapi/v1/ticker/24hr").status_code for _ in range(2)] == [429, 429]
        r = c.get("/fapi/v1/ticker/24hr")
        assert r.status_code == 418 and r.json()["code"] == -1003
        until = int(r.json()["msg"].split("banned until ")[1].split(".")[0])
        assert 110_000 <= until - h.server_time() <= 120_000
        assert int(r.headers["retry-after"]) in (119, 120)
        # during the ban everything is refused, even weight-0 and signed requests
        assert c.get("/fapi/v1/time").status_code == 418
        assert c.signed("POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                        quantity="0.001").status_code == 418
        h.advance(121_000)
        assert c.get("/fapi/v1/time").status_code == 200


def test_order_count_headers_and_zero_ip_weight_on_binance_orders(bn, aster):
    for c, ip_weight in ((bn, 0), (aster, 1)):
        info = _symbol(c)
        qty = _qty(c, info)
        for _ in range(3):  # the weight counter restarts each minute: retry if one rolled over mid-way
            used = _weight(c.get("/fapi/v1/ping"))
            r1 = c.signed("POST", "/fapi/v1/order", symbol=info["symbol"], side="BUY", type="MARKET", quantity=qty)
            r2 = c.signed("POST", "/fapi/v1/order", symbol=info["symbol"], side="SELL", type="MARKET", quantity=qty,
                          reduceOnly="true")
            if _weight(r2) >= used:
                break
        assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
        assert _weight(r2) == used + 2 * ip_weight
        assert int(r2.headers["x-mbx-order-count-1m"]) == int(r1.headers["x-mbx-order-count-1m"]) + 1
        if c is bn:
            assert int(r2.headers["x-mbx-order-count-10s"]) == int(r1.headers["x-mbx-order-count-10s"]) + 1
        else:  # AsterDex has no 10 s order bucket
            assert "x-mbx-order-count-10s" not in r2.headers
        assert "x-mbx-order-count-1m" not in c.get("/fapi/v1/time").headers


# ------------------------------------------------------------------------------ orders


def test_order_lifecycle_ack_result_query_cancel(bn):
    info = _symbol(bn)
    sym, qty = info["symbol"], _qty(bn, info)
    r = bn.signed("POST", "/fapi/v1/order", symbol=sym, side="BUY", type="MARKET", quantity=qty,
                  newClientOrderId="mkt-1")
    ack = r.json()
    # the default ACK answer: accepted, the fill is reported later (query or WS)
    assert (ack["status"], ack["executedQty"], ack["clientOrderId"]) == ("NEW", fmt_dec(0, info["quantityPrecision"]), "mkt-1")
    q = bn.signed("GET", "/fapi/v1/order", symbol=sym, origClientOrderId="mkt-1").json()
    assert q["status"] == "FILLED" and q["executedQty"] == qty and Decimal(q["avgPrice"]) > 0 and "time" in q
    assert Decimal(q["cumQuote"]) == Decimal(q["executedQty"]) * Decimal(q["avgPrice"])
    low = _price(bn, info, "0.97")
    r = bn.signed("POST", "/fapi/v1/order", symbol=sym, side="BUY", type="LIMIT", timeInForce="GTC",
                  quantity=qty, price=low, newClientOrderId="lim-1", newOrderRespType="RESULT").json()
    assert r["status"] == "NEW" and r["price"] == low and r["timeInForce"] == "GTC" and r["type"] == "LIMIT"
    opened = bn.signed("GET", "/fapi/v1/openOrders", symbol=sym).json()
    assert [o["clientOrderId"] for o in opened] == ["lim-1"]
    dup = bn.signed("POST", "/fapi/v1/order", symbol=sym, side="BUY", type="LIMIT", timeInForce="GTC",
                    quantity=qty, price=low, newClientOrderId="lim-1")
    assert (dup.status_code, dup.json()["code"]) == (400, -4116)
    c = bn.signed("DELETE", "/fapi/v1/order", symbol=sym, orderId=r["orderId"]).json()
    assert c["status"] == "CANCELED" and c["orderId"] == r["orderId"]
    again = bn.signed("DELETE", "/fapi/v1/order", symbol=sym, orderId=r["orderId"])
    assert again.json() == {"code": -2011, "msg": "Unknown order sent."}
    assert bn.signed("GET", "/fapi/v1/order", symbol=sym, origClientOrderId="never").json() == {
        "code": -2013, "msg": "Order does not exist."}
    trades = bn.signed("GET", "/fapi/v1/userTrades", symbol=sym).json()
    assert trades[-1]["orderId"] == q["orderId"] and trades[-1]["qty"] == qty and trades[-1]["buyer"] is True
    assert Decimal(trades[-1]["commission"]) > 0
    history = bn.signed("GET", "/fapi/v1/allOrders", symbol=sym).json()
    assert [o["clientOrderId"] for o in history][-2:] == ["mkt-1", "lim-1"]
    bn.signed("POST", "/fapi/v1/order", symbol=sym, side="SELL", type="MARKET", quantity=qty, reduceOnly="true")


@pytest.mark.parametrize("params,code", [
    ({"side": "HOLD"}, -1117),
    ({"type": "ICEBERG"}, -1116),
    ({"positionSide": "LONG"}, -4061),
    ({"timeInForce": "NEVER", "type": "LIMIT", "price": "1"}, -1115),
    ({"quantity": "abc"}, -1102),
    ({"quantity": "0.0000000001"}, -1111),
    ({"reduceOnly": "maybe"}, -1130),
    ({"newOrderRespType": "FULL"}, -1130),
    ({"newClientOrderId": "x" * 37}, -4015),
])
def test_order_parameter_errors(bn, params, code):
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}
    r = bn.signed("POST", "/fapi/v1/order", **{**base, **params})
    assert (r.status_code, r.json()["code"]) == (400, code), r.text


def test_binance_mode_conditional_orders_go_through_the_algo_service(bn):
    info = _symbol(bn)
    sym, qty = info["symbol"], _qty(bn, info)
    below = _price(bn, info, "0.9")
    r = bn.signed("POST", "/fapi/v1/order", symbol=sym, side="SELL", type="STOP_MARKET", stopPrice=below,
                  closePosition="true")
    assert (r.status_code, r.json()["code"]) == (400, -4120)
    assert "Algo Order API" in r.json()["msg"]
    assert bn.signed("POST", "/fapi/v1/order", symbol=sym, side="BUY", type="MARKET", quantity=qty).status_code == 200
    r = bn.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=sym, side="SELL", type="STOP_MARKET",
                  triggerPrice=below, closePosition="true", workingType="MARK_PRICE", clientAlgoId="sl-1")
    algo = r.json()
    assert r.status_code == 200 and algo["algoStatus"] == "NEW" and algo["clientAlgoId"] == "sl-1"
    assert (algo["orderType"], algo["triggerPrice"], algo["workingType"], algo["closePosition"]) == (
        "STOP_MARKET", below, "MARK_PRICE", True)
    assert "x-mbx-order-count-1m" in r.headers
    # a second closePosition stop in the same direction is refused like on the venue
    assert bn.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=sym, side="SELL",
                     type="STOP_MARKET", triggerPrice=below, closePosition="true").json()["code"] == -4130
    # would trigger at once: a sell stop above the market
    above = _price(bn, info, "1.1")
    assert bn.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=sym, side="SELL",
                     type="STOP_MARKET", triggerPrice=above, quantity=qty, reduceOnly="true").json()["code"] == -2021
    assert bn.signed("POST", "/fapi/v1/algoOrder", symbol=sym, side="SELL", type="STOP_MARKET",
                     triggerPrice=below, closePosition="true").json()["code"] == -1102  # algoType missing
    assert bn.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=sym, side="SELL",
                     type="MARKET", quantity=qty).json()["code"] == -1116
    tp = bn.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=sym, side="SELL",
                   type="TAKE_PROFIT_MARKET", triggerPrice=above, closePosition="true", clientAlgoId="tp-1").json()
    # plain endpoints do not see algo orders; the algo endpoints do
    assert bn.signed("GET", "/fapi/v1/openOrders", symbol=sym).json() == []
    open_algo = bn.signed("GET", "/fapi/v1/openAlgoOrders", symbol=sym).json()
    assert [o["clientAlgoId"] for o in open_algo] == ["sl-1", "tp-1"]
    got = bn.signed("GET", "/fapi/v1/algoOrder", clientAlgoId="sl-1").json()  # no symbol needed
    assert got["algoId"] == algo["algoId"] and got["algoStatus"] == "NEW"
    assert bn.signed("GET", "/fapi/v1/algoOrder", algoId=999).json()["code"] == -2013
    gone = bn.signed("DELETE", "/fapi/v1/algoOrder", algoId=tp["algoId"]).json()
    assert gone == {"algoId": tp["algoId"], "clientAlgoId": "tp-1", "code": "200", "msg": "success"}
    assert bn.signed("DELETE", "/fapi/v1/algoOrder", algoId=tp["algoId"]).json()["code"] == -2011
    # allOpenOrders leaves the algo stop alone; algoOpenOrders removes it
    assert bn.signed("DELETE", "/fapi/v1/allOpenOrders", symbol=sym).json()["code"] == 200
    assert len(bn.signed("GET", "/fapi/v1/openAlgoOrders", symbol=sym).json()) == 1
    assert bn.signed("DELETE", "/fapi/v1/algoOpenOrders", symbol=sym).json()["code"] == 200
    assert bn.signed("GET", "/fapi/v1/openAlgoOrders").json() == []
    history = bn.signed("GET", "/fapi/v1/allAlgoOrders", symbol=sym).json()
    assert [(o["clientAlgoId"], o["algoStatus"]) for o in history][-2:] == [("sl-1", "CANCELED"), ("tp-1", "CANCELED")]
    bn.signed("POST", "/fapi/v1/order", symbol=sym, side="SELL", type="MARKET", quantity=qty, reduceOnly="true")


def test_aster_mode_takes_stops_on_the_order_endpoint(aster):
    info = _symbol(aster)
    sym, qty = info["symbol"], _qty(aster, info)
    assert aster.signed("POST", "/fapi/v1/order", symbol=sym, side="BUY", type="MARKET", quantity=qty).status_code == 200
    below = _price(aster, info, "0.9")
    r = aster.signed("POST", "/fapi/v1/order", symbol=sym, side="SELL", type="STOP_MARKET", stopPrice=below,
                     closePosition="true", newClientOrderId="sl-a", newOrderRespType="RESULT")
    assert r.status_code == 200, r.text
    o = r.json()
    assert (o["type"], o["stopPrice"], o["closePosition"], o["status"]) == ("STOP_MARKET", below, True, "NEW")
    assert o["workingType"] == "CONTRACT_PRICE"  # the venue's default
    assert "priceMatch" not in o  # AsterDex payloads are slimmer
    assert [x["clientOrderId"] for x in aster.signed("GET", "/fapi/v1/openOrders", symbol=sym).json()] == ["sl-a"]
    assert aster.signed("GET", "/fapi/v1/order", symbol=sym, origClientOrderId="sl-a").json()["status"] == "NEW"
    assert aster.signed("DELETE", "/fapi/v1/allOpenOrders", symbol=sym).json()["code"] == 200
    assert aster.signed("GET", "/fapi/v1/order", symbol=sym, origClientOrderId="sl-a").json()["status"] == "CANCELED"
    rows = aster.signed("GET", "/fapi/v2/positionRisk", symbol=sym).json()
    assert len(rows) == 1 and Decimal(rows[0]["positionAmt"]) == Decimal(qty)
    assert "breakEvenPrice" not in rows[0] and rows[0]["marginType"] == "cross"
    acct = aster.signed("GET", "/fapi/v4/account").json()
    assert [p["positionAmt"] for p in acct["positions"] if p["symbol"] == sym] == [rows[0]["positionAmt"]]
    aster.signed("POST", "/fapi/v1/order", symbol=sym, side="SELL", type="MARKET", quantity=qty, reduceOnly="true")


def test_a_resting_stop_fires_on_the_background_ticker():
    with _serving() as (h, c):
        info = _symbol(c)
        sym, qty = info["symbol"], _qty(c, info)
        assert c.signed("POST", "/fapi/v1/order", symbol=sym, side="BUY", type="MARKET", quantity=qty).status_code == 200
        tick = Decimal(_filters(info)["PRICE_FILTER"]["tickSize"])
        mark = Decimal(c.get("/fapi/v1/premiumIndex", symbol=sym).json()["markPrice"])
        # a stop and a take-profit a few ticks away: within a simulated day one of them fires
        sl = c.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=sym, side="SELL",
                      type="STOP_MARKET", triggerPrice=str((mark / tick - 5).to_integral_value() * tick),
                      closePosition="true", workingType="MARK_PRICE").json()
        tp = c.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=sym, side="SELL",
                      type="TAKE_PROFIT_MARKET", triggerPrice=str((mark / tick + 5).to_integral_value() * tick),
                      closePosition="true", workingType="MARK_PRICE").json()
        with h.lock:
            h.clock.jump(86_400_000)  # no request: only the ticker thread moves the simulation
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e.kind == "fill" and e.order.client_id.startswith("algo-")
                                                        for e in h.events()):
            time.sleep(0.05)
        ts = c.now()  # the clock jumped a day: sign with the server's time
        states = {o["algoId"]: o["algoStatus"] for o in
                  c.signed("GET", "/fapi/v1/allAlgoOrders", symbol=sym, ts=ts).json()}
        assert sorted(states.values()) in (["EXPIRED", "FINISHED"], ["FINISHED", "NEW"]), states
        fired = sl if states[sl["algoId"]] == "FINISHED" else tp
        got = c.signed("GET", "/fapi/v1/algoOrder", algoId=fired["algoId"], ts=ts).json()
        assert got["actualOrderId"] and Decimal(got["actualPrice"]) > 0
        fills = c.signed("GET", "/fapi/v1/userTrades", symbol=sym, ts=ts, orderId=int(got["actualOrderId"])).json()
        assert [f["side"] for f in fills] == ["SELL"] and fills[0]["qty"] == qty
        rows = c.signed("GET", "/fapi/v3/positionRisk", ts=ts).json()
        assert all(Decimal(r["positionAmt"]) == 0 for r in rows)  # flat (a leftover leg may still rest)


def test_account_endpoints_agree(bn):
    info = _symbol(bn)
    sym, qty = info["symbol"], _qty(bn, info)
    bn.signed("POST", "/fapi/v1/order", symbol=sym, side="BUY", type="MARKET", quantity=qty)
    bal = bn.signed("GET", "/fapi/v2/balance").json()[0]
    v2 = bn.signed("GET", "/fapi/v2/account").json()
    v3 = bn.signed("GET", "/fapi/v3/account").json()
    risk2 = bn.signed("GET", "/fapi/v2/positionRisk").json()
    risk3 = bn.signed("GET", "/fapi/v3/positionRisk").json()
    assert bal["asset"] == "USDT" and Decimal(bal["balance"]) < 10_000  # the fee was paid
    assert v2["totalWalletBalance"] == v3["totalWalletBalance"] == bal["balance"]
    assert len(risk2) == 3 and [r["symbol"] for r in risk3] == [sym]  # v2: every symbol; v3: positions only
    assert [p["symbol"] for p in v3["positions"]] == [sym] and len(v2["positions"]) == 3
    mine = next(r for r in risk2 if r["symbol"] == sym)
    assert mine["positionAmt"] == qty and mine["leverage"] == "20" and mine["isAutoAddMargin"] == "false"
    assert Decimal(risk3[0]["initialMargin"]) > 0 and Decimal(risk3[0]["maintMargin"]) > 0
    assert Decimal(v2["totalMarginBalance"]) == Decimal(v2["totalWalletBalance"]) + Decimal(v2["totalUnrealizedProfit"])
    income = bn.signed("GET", "/fapi/v1/income", incomeType="COMMISSION").json()
    assert income and income[-1]["incomeType"] == "COMMISSION" and Decimal(income[-1]["income"]) < 0
    assert bn.signed("POST", "/fapi/v1/marginType", symbol=sym, marginType="CROSSED").json() == {
        "code": -4046, "msg": "No need to change margin type."}
    assert bn.signed("POST", "/fapi/v1/marginType", symbol=sym, marginType="ISOLATED").json()["code"] == -4048
    assert bn.signed("GET", "/fapi/v1/leverageBracket", symbol=sym).json()["brackets"][0]["initialLeverage"] == 125
    bn.signed("POST", "/fapi/v1/order", symbol=sym, side="SELL", type="MARKET", quantity=qty, reduceOnly="true")


# ------------------------------------------------------------------------------ faults


def test_added_latency_global_and_per_path(bn):
    def elapsed(path: str, **params: Any) -> float:
        t0 = time.perf_counter()
        assert bn.get(path, **params).status_code == 200
        return time.perf_counter() - t0

    elapsed("/fapi/v1/time")  # connect first
    bn.handle.control(latency_ms=150)
    assert elapsed("/fapi/v1/time") >= 0.15
    bn.handle.control(latency_ms=0, latency_paths={"/fapi/v1/klines": 300})
    undelayed = min(elapsed("/fapi/v1/time") for _ in range(3))
    delayed = elapsed("/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=5)
    assert delayed >= 0.3 and delayed - undelayed >= 0.2  # only the klines path is slowed down


def test_latency_does_not_serialize_concurrent_requests(bn):
    n = 10
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    with httpx.Client(base_url=bn.handle.base_url, limits=limits) as http, \
            concurrent.futures.ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: http.get("/fapi/v1/ping"), range(n)))  # open the connections first
        bn.handle.control(latency_ms=200)
        t0 = time.perf_counter()
        codes = list(pool.map(lambda _: http.get("/fapi/v1/time").status_code, range(n)))
        elapsed = time.perf_counter() - t0
    assert codes == [200] * n
    assert elapsed < n * 0.2 / 2  # one connection per request thread: serialized they would take 2 s


def test_random_5xx_rate_is_seeded_and_nothing_is_processed():
    def run() -> list[int]:
        with _serving(faults={"error_rate": 0.4, "seed": 5}) as (h, c):
            codes = [c.get("/fapi/v1/time").status_code for _ in range(20)]
            r = next(r for r in (c.get("/fapi/v1/time") for _ in range(50)) if r.status_code == 503)
            assert r.json() == {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
            assert [x["fault"] for x in h.requests()].count("error_rate") == codes.count(503) + 1
            return codes

    first = run()
    assert set(first) == {200, 503} and 3 <= first.count(503) <= 14
    assert run() == first  # same seed, same failures


def test_error_rule_fails_before_processing(bn):
    info = _symbol(bn)
    qty = _qty(bn, info)
    bn.handle.fault("error", path="/fapi/v1/order", method="POST", count=1, status=503, msg="Service Unavailable.")
    r = bn.signed("POST", "/fapi/v1/order", symbol=info["symbol"], side="BUY", type="MARKET", quantity=qty,
                  newClientOrderId="e-1")
    assert (r.status_code, r.json()) == (503, {"code": -1001, "msg": "Service Unavailable."})
    assert bn.signed("GET", "/fapi/v1/order", symbol=info["symbol"], origClientOrderId="e-1").json()["code"] == -2013
    assert bn.get("/fapi/v1/time").status_code == 200  # other paths untouched, and count=1 is spent
    bn.handle.fault("error", status=502, count=1)
    r = bn.get("/fapi/v1/time")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html") and "Bad Gateway" in r.text
    bn.handle.fault("error", status=500, count=1)
    r = bn.get("/fapi/v1/time")
    assert (r.status_code, r.json()["code"]) == (500, -1000)


def test_delay_before_processing_times_the_client_out(bn):
    bn.handle.fault("delay", path="/fapi/v1/exchangeInfo", ms=600, count=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(bn.handle.base_url + "/fapi/v1/exchangeInfo", timeout=0.2)
    assert bn.get("/fapi/v1/exchangeInfo").status_code == 200  # the next one is on time


@pytest.mark.parametrize("kind,options", [("drop", {}), ("unknown", {}), ("unknown", {"code": -1007}),
                                          ("delay", {"ms": 1200, "when": "after"})])
def test_order_accepted_then_the_answer_is_lost(bn, kind, options):
    info = _symbol(bn)
    sym, qty = info["symbol"], _qty(bn, info)
    cid = f"lost-{kind}-{options.get('code', options.get('ms', 0))}".replace("-", "")[:30]
    bn.handle.fault(kind, path="/fapi/v1/order", method="POST", count=1, **options)
    short = Client(bn.handle, timeout=0.4 if kind == "delay" else 5.0)
    try:
        params = {"symbol": sym, "side": "BUY", "type": "MARKET", "quantity": qty, "newClientOrderId": cid}
        if kind == "drop":
            with pytest.raises(httpx.RemoteProtocolError):
                short.signed("POST", "/fapi/v1/order", **params)
        elif kind == "delay":
            with pytest.raises(httpx.ReadTimeout):
                short.signed("POST", "/fapi/v1/order", **params)
        else:
            r = short.signed("POST", "/fapi/v1/order", **params)
            expected = (-1007, "Timeout waiting for response from backend server. Send status unknown; execution "
                               "status unknown.") if options else (-1000, "Unknown error, please check your request "
                                                                          "or try again later.")
            assert (r.status_code, r.json()["code"], r.json()["msg"]) == (503, *expected)
    finally:
        short.close()
    # the venue did execute it: a query by client id finds it, a resend is a duplicate
    q = bn.signed("GET", "/fapi/v1/order", symbol=sym, origClientOrderId=cid).json()
    assert q["status"] == "FILLED" and q["executedQty"] == qty
    assert bn.signed("POST", "/fapi/v1/order", **params).json()["code"] == -4116
    fault_rows = [r for r in bn.handle.requests() if r["fault"] == kind]
    assert len(fault_rows) == 1 and fault_rows[0]["status"] == (0 if kind == "drop" else 503 if kind == "unknown" else 200)
    with bn.handle.lock:
        assert [o.client_id for o in bn.handle.sim.all_orders(sym)].count(cid) == 1
    bn.signed("POST", "/fapi/v1/order", symbol=sym, side="SELL", type="MARKET", quantity=qty, reduceOnly="true")


def test_drop_only_applies_to_accepted_orders(bn):
    bn.handle.fault("drop", path="/fapi/v1/order", method="POST", count=1)
    r = bn.signed("POST", "/fapi/v1/order", symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.00001")
    assert r.json()["code"] == -4164  # rejected orders answer normally; the rule is still armed
    assert len(bn.handle.control()["faults"]) == 1


def test_forced_429_and_418(bn):
    bn.handle.fault("429", count=2, retry_after=7)
    for _ in range(2):
        r = bn.get("/fapi/v1/time")
        assert (r.status_code, r.json()["code"], r.headers["retry-after"]) == (429, -1003, "7")
    assert bn.get("/fapi/v1/time").status_code == 200
    bn.handle.fault("418", path="/fapi/v1/klines", count=1, retry_after=3)
    assert bn.get("/fapi/v1/time").status_code == 200  # another path
    r = bn.get("/fapi/v1/klines", symbol="BTCUSDT", interval="1m")
    assert r.status_code == 418 and r.headers["retry-after"] == "3"
    until = int(r.json()["msg"].split("banned until ")[1].split(".")[0])
    assert 0 < until - bn.handle.server_time() <= 3_000
    bn.handle.fault("418", seconds=30)
    r = bn.get("/fapi/v1/time")
    assert r.status_code == 418 and 20 <= int(r.headers["retry-after"]) <= 30
    assert bn.get("/fapi/v1/exchangeInfo").status_code == 418
    bn.handle.advance(31_000)
    assert bn.get("/fapi/v1/time").status_code == 200


def test_garbage_bodies(bn):
    bn.handle.fault("garbage", count=1)
    r = bn.get("/fapi/v1/time")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and r.text.startswith("<html>")
    bn.handle.fault("garbage", body="garbage", status=502, count=1)
    r = bn.get("/fapi/v1/time")
    assert r.status_code == 502
    with pytest.raises(ValueError):
        json.loads(r.content)
    assert bn.get("/fapi/v1/time").json()["serverTime"] > 0


def test_faults_expire_after_their_seconds(bn):
    bn.handle.fault("error", seconds=5)
    assert bn.get("/fapi/v1/time").status_code == 503
    bn.handle.advance(6_000)
    assert bn.get("/fapi/v1/time").status_code == 200


def test_control_endpoint_over_http_and_its_validation(bn):
    base = bn.handle.base_url
    r = httpx.post(base + "/_control", json={"latency_ms": 1, "faults": [{"kind": "429", "count": 1}]})
    assert r.status_code == 200 and r.json()["latency_ms"] == 1 and r.json()["faults"][0]["kind"] == "429"
    assert bn.get("/fapi/v1/time").status_code == 429
    for bad, word in (({"nope": 1}, "nope"), ({"faults": [{"kind": "boom"}]}, "boom"),
                      ({"error_rate": 2}, "error_rate"), ({"faults": [{"kind": "delay"}]}, "ms"),
                      ({"faults": [{"kind": "error", "status": 404}]}, "status")):
        r = httpx.post(base + "/_control", json=bad)
        assert r.status_code == 400 and word in r.json()["error"], bad
    assert httpx.post(base + "/_control", content=b"{oops").status_code == 400
    r = httpx.post(base + "/_control", json={"faults": [{"kind": "error", "path": ["/fapi/v1/ping", "/x"], "count": 1}]})
    assert r.json()["faults"][-1]["path"] == ["/fapi/v1/ping", "/x"]
    assert bn.get("/fapi/v1/ping").status_code == 503
    state = httpx.get(base + "/_control").json()
    assert state["venue"] == "binance" and state["weight_limit"] == 2400
    # control requests are not weighed, not logged and not faulted
    bn.handle.fault("error")
    assert httpx.get(base + "/_control").status_code == 200
    assert all(not r["path"].startswith("/_control") for r in bn.handle.requests())


# ------------------------------------------------------------------------------ request log


def test_request_log_records_signed_and_key_and_never_the_signature(bn):
    bn.get("/fapi/v1/time")
    bn.signed("GET", "/fapi/v2/balance")
    bn.http.get("/fapi/v1/exchangeInfo", headers={"X-MBX-APIKEY": TEST_API_KEY})
    log = httpx.get(bn.handle.base_url + "/_control/requests").json()
    assert [(r["method"], r["path"], r["signed"], r["api_key"], r["status"]) for r in log] == [
        ("GET", "/fapi/v1/time", False, False, 200),
        ("GET", "/fapi/v2/balance", True, True, 200),
        ("GET", "/fapi/v1/exchangeInfo", False, True, 200),
    ]
    assert log == bn.handle.requests()
    text = json.dumps(log)
    assert "signature" not in text and TEST_API_KEY not in text and TEST_API_SECRET not in text
    assert log[1]["params"].keys() == {"timestamp"} and log[1]["weight"] == 5
    assert httpx.delete(bn.handle.base_url + "/_control/requests").status_code == 200
    assert bn.handle.requests() == []


def test_keep_alive_serves_several_requests_on_one_connection(bn):
    host, port = bn.handle.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(3):
            s.sendall(f"GET /fapi/v1/time HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status = f.readline()
            headers = {}
            while (line := f.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = f.read(int(headers["content-length"]))
            assert status.startswith(b"HTTP/1.1 200") and b"serverTime" in body


# ------------------------------------------------------------------------------ clock, data, process


def test_speed_accelerates_the_server_clock_and_stretches_the_time_window():
    with _serving(speed=60.0) as (h, c):
        t1 = c.get("/fapi/v1/time").json()["serverTime"]
        time.sleep(0.2)
        t2 = c.get("/fapi/v1/time").json()["serverTime"]
        assert 0.2 * 60_000 * 0.9 <= t2 - t1 <= 2 * 60_000
        # a client synced 0.2 s ago is 12 s behind in server time: still inside 5 s of wall time
        assert c.signed("GET", "/fapi/v2/balance", ts=t1).status_code == 200


def test_replay_data_serves_the_files_candles():
    path = shared_data("futures", "XRP_USDT_USDT-5m-futures.json")
    rows = json.loads(path.read_text())
    with _serving(data=[path], synthetic=None) as (h, c):
        assert [s["symbol"] for s in c.get("/fapi/v1/exchangeInfo").json()["symbols"]] == ["XRPUSDT"]
        now = c.get("/fapi/v1/time").json()["serverTime"]
        assert rows[0][0] < now < rows[-1][0]
        klines = c.get("/fapi/v1/klines", symbol="XRPUSDT", interval="5m", limit=4).json()
        source = {r[0]: r for r in rows}
        assert len(klines) == 4 and klines[-1][0] <= now
        for k in klines[:-1]:  # closed candles are the file's, verbatim
            assert [float(x) for x in k[1:6]] == pytest.approx(source[k[0]][1:6], rel=1e-9)


def test_cli_rejects_bad_flags_with_one_line(capsys):
    assert cli_main(["--balance", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--balance" in err
    assert cli_main(["--latency-path", "klines"]) == 2
    assert "PATH=MS" in capsys.readouterr().err
    assert cli_main(["--data", "/nonexistent/file.csv"]) == 2
    assert "file.csv" in capsys.readouterr().err
    assert cli_main(["--symbols", "1", "--fault", '{"kind": "nope"}']) == 2
    assert "unknown fault kind 'nope'" in capsys.readouterr().err


def test_subprocess_prints_its_address_first_and_stops_cleanly_on_sigterm():
    flags = ["--venue", "aster", "--symbols", "2", "--force-429", "1", "--latency-ms", "1", "--drop-orders", "1"]
    with LoopbackProcess(flags) as p:
        assert p.base_url.startswith("http://127.0.0.1:")
        assert httpx.get(p.base_url + "/fapi/v1/time").status_code == 429  # the flags' faults
        assert httpx.get(p.base_url + "/fapi/v1/time").status_code == 200
        order = signed_query({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
                              "newClientOrderId": "sub-1", "timestamp": int(time.time() * 1000)}, TEST_API_SECRET)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(f"{p.base_url}/fapi/v1/order?{order}", headers={"X-MBX-APIKEY": TEST_API_KEY})
        assert [(r["status"], r["fault"]) for r in p.requests()] == [(429, "429"), (200, None), (0, "drop")]
        assert p.control(skew_ms=5000)["skew_ms"] == 5000 and p.control()["faults"] == []
        assert p.terminate() == 0
    with LoopbackProcess(["--symbols", "1"]) as p:  # Ctrl-C
        p.proc.send_signal(signal.SIGINT)
        assert p.proc.wait(10) == 0
    with LoopbackProcess(["--symbols", "1"]) as p:  # kill -9
        p.kill()
        assert p.proc.returncode == -signal.SIGKILL
        with pytest.raises(httpx.ConnectError):
            httpx.get(p.base_url + "/fapi/v1/time", timeout=1)


def test_threads_are_cleaned_up_on_stop():
    before = threading.active_count()
    h = _start()
    c = Client(h)
    c.get("/fapi/v1/time")
    h.stop()
    c.close()
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    with pytest.raises(httpx.ConnectError):
        httpx.get(h.base_url + "/fapi/v1/time", timeout=1)


# -- performance without changing an answer ------------------------------------------------

def _candles(rows: list[tuple[int, float, float, float, float, float]], last_closed: bool):
    from mraster_tui.engine.types import Candles
    cols = list(zip(*rows))
    return Candles(np.array(cols[0], dtype=np.int64), *(np.array(c, dtype=np.float64) for c in cols[1:]),
                   "5m", last_closed)


def test_kline_rows_are_encoded_by_hand_rules_and_the_cache_never_changes_an_answer():
    from mraster_tui.engine.sim.server import KlineRowCache, _Precision
    step, pr = 300_000, _Precision(price=2, qty=3)
    base = [(i * step, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, 10.0) for i in range(5)]
    cache = KlineRowCache()
    first = json.loads(cache.encode(("X", "5m"), _candles(base, last_closed=False), step, pr))
    # quote = 10 * (2 + 0.5 + 1.5) / 3 = 13.333; taker share = 0.5 + 0.25 * 0.5 / 1.5 = 0.58333
    assert first[0] == [0, "1.00", "2.00", "0.50", "1.50", "10.000", 299_999, "13.33", 1, "5.833", "7.78", "0"]
    assert len(first) == 5 and cache.hits == 0

    def fresh(rows, last_closed):
        return KlineRowCache().encode(("X", "5m"), _candles(rows, last_closed), step, pr)

    # a candle later: the formerly forming candle closed at another price, a new one forms;
    # the four closed rows come from the cache, the rest is encoded, the bytes are the same
    later = base[1:4] + [(4 * step, 5.0, 6.5, 4.0, 6.25, 12.5), (5 * step, 6.25, 6.3, 6.2, 6.3, 1.0)]
    assert cache.encode(("X", "5m"), _candles(later, False), step, pr) == fresh(later, False)
    assert cache.hits == 3
    # a cached row whose values differ from the candle answered is not used (same open time)
    changed = list(later)
    changed[1] = (2 * step, 3.0, 9.0, 0.1, 3.3, 99.0)
    body = cache.encode(("X", "5m"), _candles(changed, False), step, pr)
    assert body == fresh(changed, False) and json.loads(body)[1][2] == "9.00"
    assert cache.hits == 4  # only the row before the changed one
    # the run is capped: only the newest max_rows closed rows are kept
    small = KlineRowCache(max_rows=2)
    small.encode(("X", "5m"), _candles(base, True), step, pr)
    small.encode(("X", "5m"), _candles(base, True), step, pr)
    assert small.hits == 0  # the answer starts before the two kept rows: encoded afresh
    small.encode(("X", "5m"), _candles(base[3:], True), step, pr)
    assert small.hits == 2


def test_synthetic_market_keeps_a_40_symbol_scan_history_in_memory():
    """The second read of every symbol's 5m and 30m history generates nothing again (a venue
    has its candles ready; regenerating them cost 3 ms per answer)."""
    sim = build_sim(synthetic=40, seed=1)
    feed = sim.feed
    generated = []
    real = feed._generate
    feed._generate = lambda *a: generated.append(a[:2]) or real(*a)
    for _ in range(2):
        generated.clear()
        for s in feed.symbols():
            for iv in ("5m", "30m"):
                sim.klines(s, iv, limit=360)
    assert generated == []


def test_the_latency_wait_does_not_queue_behind_a_request_being_processed():
    handle = LoopbackExchange(venue="binance", synthetic=2, seed=1)
    venue = handle.venue
    venue.control({"latency_ms": 50})
    held, release = threading.Event(), threading.Event()

    def busy() -> None:  # another request inside dispatch, holding the venue lock
        with venue.lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=busy)
    t.start()
    held.wait(5)
    try:
        got: list[float] = []
        probe = threading.Thread(target=lambda: got.append(venue.latency_for("/fapi/v1/klines")
                                                           + venue.take_delay_before("GET", "/fapi/v1/klines")))
        probe.start()
        probe.join(2)
        assert got == [0.05]
    finally:
        release.set()
        t.join(5)
    venue.control({"faults": [{"kind": "delay", "ms": 20, "count": 1}]})
    assert venue.take_delay_before("GET", "/fapi/v1/klines") == 0.02  # rules still apply (under the lock)
