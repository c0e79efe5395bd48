"""Typed errors raised by venues (REST and simulated alike).

Messages never contain API keys, secrets, signatures or signed query strings.
"""

from __future__ import annotations


class VenueError(Exception):
    """Base class: anything that went wrong talking to a venue."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status

    def __str__(self) -> str:  # one line, always
        base = super().__str__().replace("\n", " ")
        if self.code is not None:
            return f"{base} (code {self.code})"
        return base


class VenueRejected(VenueError):
    """The venue answered with a ``{code, msg}`` error: the request was refused, nothing happened."""


class InvalidTimestamp(VenueRejected):
    """-1021: timestamp outside recvWindow."""


class AuthError(VenueRejected):
    """-1022 / -2014 / -2015: bad signature, bad key or missing permission."""


class PrecisionError(VenueRejected):
    """-1111 / -4014 / -4023: price or quantity precision."""


class MinNotionalError(VenueRejected):
    """-4164: order notional below the symbol's minimum."""


class InsufficientMargin(VenueRejected):
    """-2019."""


class WouldTrigger(VenueRejected):
    """-2021: a conditional order would trigger immediately."""


class DuplicateClientId(VenueRejected):
    """-4116: the client order id already exists (so the order exists)."""


class UnknownOrder(VenueRejected):
    """-2011 (cancel) / -2013 (query): the venue has no such open order."""


class ConditionalNotSupported(VenueRejected):
    """-4120: conditional orders must go through the algo endpoints (Binance since 2025-12)."""


class RateLimited(VenueError):
    """HTTP 429: slow down.  ``retry_after`` seconds when the venue said so."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class IpBanned(VenueError):
    """HTTP 418: the IP is banned until ``until_ms``; every request stops until then."""

    def __init__(self, message: str, *, until_ms: int, **kw) -> None:
        super().__init__(message, **kw)
        self.until_ms = until_ms


class VenueUnavailable(VenueError):
    """Transport failure, timeout, 5xx or garbage body on a read: retried, then raised."""


class UnknownOutcome(VenueError):
    """An order submit whose outcome could not be established (lost response and the follow-up
    query failed too).  The caller must not resend blindly; it must query again later."""


CODE_TO_ERROR: dict[int, type[VenueRejected]] = {
    -1021: InvalidTimestamp,
    -1022: AuthError,
    -2014: AuthError,
    -2015: AuthError,
    -1111: PrecisionError,
    -4014: PrecisionError,
    -4023: PrecisionError,
    -4164: MinNotionalError,
    -2019: InsufficientMargin,
    -2021: WouldTrigger,
    -4116: DuplicateClientId,
    -2011: UnknownOrder,
    -2013: UnknownOrder,
    -4120: ConditionalNotSupported,
}


def error_from_code(code: int, msg: str, http_status: int | None = None) -> VenueRejected:
    cls = CODE_TO_ERROR.get(code, VenueRejected)
    return cls(msg, code=code, http_status=http_status)
