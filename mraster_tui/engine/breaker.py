"""The circuit breaker: switches the engine to reduce-only (no new entries; protection, guard,
FastTP and close-outs continue) while any cause is present, and clears itself when every cause
is gone.

Causes (stable codes, shown in the snapshot's ``breaker_reasons``):

* ``stale_data``: the market data of the last scan is older than ``max_data_age_sec``;
* ``clock_skew``: |venue time - local time| exceeds half of ``recv_window``;
* ``guard_failures``: ``guard_fail_limit`` guard passes failed in a row;
* ``ip_ban``: the venue banned the IP (HTTP 418) until a known time.

Every switch (on, off, a cause added or removed) is reported through ``emit``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

STALE_DATA = "stale_data"
CLOCK_SKEW = "clock_skew"
GUARD_FAILURES = "guard_failures"
IP_BAN = "ip_ban"


@dataclass(frozen=True, slots=True)
class BreakerChange:
    active: bool
    cause: str
    tripped: bool  # True: the cause appeared; False: it cleared
    detail: str
    reasons: tuple[str, ...]


class CircuitBreaker:
    """Holds the active causes.  ``emit(change)`` is called on every change."""

    def __init__(self, *, guard_fail_limit: int = 3, emit: Callable[[BreakerChange], None] | None = None) -> None:
        self.guard_fail_limit = max(1, int(guard_fail_limit))
        self._emit = emit
        self._causes: dict[str, str] = {}  # cause -> detail
        self._ban_until: int | None = None
        self.guard_failures = 0

    @property
    def active(self) -> bool:
        return bool(self._causes)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(sorted(self._causes))

    def details(self) -> dict[str, str]:
        return dict(self._causes)

    def set(self, cause: str, on: bool, detail: str = "") -> None:
        """Raise (``on``) or clear a cause; a change is emitted once, not on every call."""
        if on and cause not in self._causes:
            self._causes[cause] = detail
            self._changed(cause, True, detail)
        elif on:
            self._causes[cause] = detail  # keep the latest detail, no new event
        elif cause in self._causes:
            del self._causes[cause]
            self._changed(cause, False, detail)

    def _changed(self, cause: str, tripped: bool, detail: str) -> None:
        if self._emit is not None:
            self._emit(BreakerChange(self.active, cause, tripped, detail, self.reasons))

    # -- the individual checks ----------------------------------------------------------
    def check_data_age(self, age_s: float | None, max_age_s: float) -> None:
        """``age_s`` None means no data was needed/fetched: the cause keeps its state."""
        if age_s is None:
            return
        self.set(STALE_DATA, age_s > max_age_s,
                 f"market data is {age_s:.0f} s old (limit {max_age_s:.0f} s)" if age_s > max_age_s
                 else f"market data fresh again ({age_s:.0f} s)")

    def check_skew(self, skew_ms: int, recv_window_ms: int) -> None:
        limit = recv_window_ms / 2
        bad = abs(skew_ms) > limit
        self.set(CLOCK_SKEW, bad, f"clock differs from the venue by {skew_ms} ms (limit {limit:.0f} ms)" if bad
                 else f"clock within {abs(skew_ms)} ms of the venue")

    def guard_failed(self, why: str) -> None:
        self.guard_failures += 1
        if self.guard_failures >= self.guard_fail_limit:
            self.set(GUARD_FAILURES, True, f"{self.guard_failures} guard passes failed in a row (last: {why})")

    def guard_ok(self) -> None:
        self.guard_failures = 0
        self.set(GUARD_FAILURES, False, "guard pass succeeded")

    def banned(self, until_ms: int, now_ms: int) -> None:
        self._ban_until = max(int(until_ms), self._ban_until or 0)
        self.set(IP_BAN, True, f"IP banned by the venue for {max(0, self._ban_until - now_ms) / 1000:.0f} s more")

    def check_ban(self, now_ms: int) -> None:
        if self._ban_until is not None and now_ms >= self._ban_until:
            self._ban_until = None
            self.set(IP_BAN, False, "the venue's IP ban is over")

    @property
    def ban_until(self) -> int | None:
        return self._ban_until
