"""HMAC-SHA256 request signing (Binance USD-M and AsterDex V1) and secret redaction.

The venue recomputes the signature over the raw bytes it received, so we sign exactly the
string we send: parameters url-encoded in insertion order, all of them in the query string (the
contract recommends against mixing query and body), ``signature`` appended last.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode

_SIGNATURE_RE = re.compile(r"(signature=)[0-9a-fA-F]+", re.IGNORECASE)
_APIKEY_HEADER_RE = re.compile(r"(x-mbx-apikey['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+", re.IGNORECASE)
MASK = "***"


def hmac_sha256_hex(secret: str, payload: str) -> str:
    """``hex(HMAC_SHA256(secret, payload))`` (lower case)."""
    return hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()


def encode_params(params: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """Url-encode ``params`` in insertion order; ``None`` values are dropped, booleans become
    ``true``/``false`` (the wire format for boolean request parameters)."""
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((key, str(value)))
    return urlencode(pairs)


def signed_query(params: Mapping[str, object] | Iterable[tuple[str, object]], secret: str) -> str:
    """The full query string to send: encoded params then ``&signature=<hex>`` last."""
    payload = encode_params(params)
    sig = hmac_sha256_hex(secret, payload)
    return f"{payload}&signature={sig}" if payload else f"signature={sig}"


def strip_signature(query: str) -> str:
    """Drop the signature value from a query string (for logs): ``signature=***``."""
    return _SIGNATURE_RE.sub(lambda m: m.group(1) + MASK, query)


class Redactor:
    """Removes the API key, the secret and any ``signature=...`` from text.

    Callable: ``redactor(text) -> text``.  Secrets shorter than 4 characters are not matched (a
    one-letter "secret" would mangle every message and is no secret anyway).
    """

    def __init__(self, *secrets: str | None) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        text = strip_signature(text)
        text = _APIKEY_HEADER_RE.sub(lambda m: m.group(1) + MASK, text)
        for s in self._secrets:
            text = text.replace(s, MASK)
        return text


def redact(text: str, *secrets: str | None) -> str:
    """One-shot form of :class:`Redactor`."""
    return Redactor(*secrets)(text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's final message (attach it to a handler or a
    logger that may see request details)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = self._redactor(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
