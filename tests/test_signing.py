"""Signing against the contract's test vector, and redaction of secrets."""

from __future__ import annotations

import logging

from mraster_tui.engine.venue.signing import (
    RedactingFilter,
    Redactor,
    encode_params,
    hmac_sha256_hex,
    redact,
    signed_query,
    strip_signature,
)

# docs/exchange-api.md §3 (Binance and Aster docs, identical)
API_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
PAYLOAD = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
           "&recvWindow=5000&timestamp=1591702613943")
EXPECTED = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
# the mixed query+body case concatenates without '&' (the contract's corrected value)
MIXED_TOTAL = ("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
               "quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943")
MIXED_EXPECTED = "30baaf0fab549bbeda7f5ef201898b34122da25fd23c646cac2c529aebe670a4"


def test_contract_vector() -> None:
    assert hmac_sha256_hex(SECRET, PAYLOAD) == EXPECTED
    assert hmac_sha256_hex(SECRET, MIXED_TOTAL) == MIXED_EXPECTED


def test_signed_query_keeps_insertion_order_and_puts_signature_last() -> None:
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": 1, "price": 9000,
              "timeInForce": "GTC", "recvWindow": 5000, "timestamp": 1591702613943}
    q = signed_query(params, SECRET)
    assert q == f"{PAYLOAD}&signature={EXPECTED}"


def test_encode_params_booleans_none_and_escaping() -> None:
    assert encode_params({"reduceOnly": True, "closePosition": False, "price": None}) == \
        "reduceOnly=true&closePosition=false"
    # client ids may contain ':' and '/', which must be percent-encoded exactly as sent
    assert encode_params([("newClientOrderId", "a:b/c")]) == "newClientOrderId=a%3Ab%2Fc"
    assert signed_query({}, SECRET) == f"signature={hmac_sha256_hex(SECRET, '')}"


def test_redaction_removes_key_secret_and_signature() -> None:
    text = (f"GET /fapi/v2/balance?timestamp=1&signature={EXPECTED} headers={{'X-MBX-APIKEY': "
            f"'{API_KEY}'}} secret={SECRET}")
    clean = redact(text, API_KEY, SECRET)
    assert API_KEY not in clean and SECRET not in clean and EXPECTED not in clean
    assert "signature=***" in clean and "timestamp=1" in clean
    assert strip_signature("a=1&SIGNATURE=ABCdef01") == "a=1&SIGNATURE=***"
    # the header form is masked even when the key itself is unknown to the redactor
    assert "abcd1234" not in Redactor()("X-MBX-APIKEY: abcd1234")


def test_short_secrets_are_not_matched() -> None:
    assert Redactor("a")("a banana") == "a banana"


def test_redacting_filter_cleans_log_records(caplog) -> None:
    log = logging.getLogger("test.redact")
    filt = RedactingFilter(Redactor(API_KEY, SECRET))
    log.addFilter(filt)
    try:
        with caplog.at_level(logging.INFO, logger="test.redact"):
            log.info("sent %s with key %s", f"x=1&signature={EXPECTED}", API_KEY)
    finally:
        log.removeFilter(filt)
    text = caplog.text
    assert "x=1&signature=***" in text
    assert API_KEY not in text and EXPECTED not in text
