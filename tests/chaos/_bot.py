"""Launcher for chaos runs: the real ``mraster-tui`` command line in a child process.

With ``CHAOS_SPEED`` set (> 1) the engine's clock is a :class:`ScaledClock` running that many
times faster, started at the loopback exchange's server time (read from its never-faulted
``/_control`` endpoint), so that a whole trading day of a loopback exchange started with the same
``--speed`` fits into seconds: candles close, stops trigger and FastTP fires quickly while every
byte still goes over real HTTP, is signed with the keys and lands in a real state file.  Nothing
else differs from ``python -m mraster_tui``.  ``CHAOS_HOLD=1`` makes a warm standby (see ``_hold``).
"""

from __future__ import annotations

import json
import os
import sys


def _accelerate(speed: float) -> None:
    from urllib.request import urlopen

    from mraster_tui.engine import factory
    from mraster_tui.engine.clock import ScaledClock

    base = os.environ["ASTER_EXCHANGE_BASE"]
    with urlopen(base + "/_control", timeout=10) as r:  # stdlib: no TLS context to build for http
        server_ms = int(json.loads(r.read())["server_time"])
    clock = ScaledClock(server_ms, speed)
    build = factory.build_engine

    def build_engine(settings, **kw):  # type: ignore[no-untyped-def]
        kw["clock"] = clock
        return build(settings, **kw)

    factory.build_engine = build_engine


def _hold() -> None:
    """Warm standby (``CHAOS_HOLD=1``): import everything now, start when told (a line on stdin),
    so that a restart after ``kill -9`` costs the engine's start-up, not Python's imports."""
    import mraster_tui.cli
    import mraster_tui.engine.factory  # noqa: F401
    import mraster_tui.engine.policy  # noqa: F401
    import mraster_tui.engine.signals  # noqa: F401
    import mraster_tui.engine.venue.rest  # noqa: F401
    import mraster_tui.headless  # noqa: F401

    mraster_tui.cli.build_parser()  # imports the subcommands' modules

    if not sys.stdin.readline():
        raise SystemExit(0)  # the test ended before this standby was needed


if __name__ == "__main__":
    if os.environ.get("CHAOS_HOLD") == "1":
        _hold()
    speed = float(os.environ.get("CHAOS_SPEED", "1") or 1)
    if speed != 1.0:
        _accelerate(speed)
    from mraster_tui.cli import main

    raise SystemExit(main(sys.argv[1:]))
