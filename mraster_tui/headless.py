"""``mraster-tui --no-ui``: the engine with a log sink and no textual import.

Events go to stdout as readable lines, or as JSON lines with ``--log-format json`` (one object
per event with ``ts``, ``level`` and ``event``), filtered by ``ASTER_LOGLEVEL``.  SIGINT and
SIGTERM ask the engine to finish its current step, save its state and exit 0 (a second signal
exits at once).  Foreseeable start-up problems (a locked or unreadable state file, an
unreachable venue with ``--run-once``) print one line to stderr and exit 1.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Any

from mraster_tui.engine.events import JsonSink, LevelFilterSink, TextSink

EXIT_FAILED = 1


def make_sink(settings: Any, stream: Any = None):
    inner = JsonSink(stream) if str(settings.log_format) == "json" else TextSink(stream)
    return LevelFilterSink(inner, str(settings.loglevel))


def run_headless(settings: Any, *, demo: bool = False) -> int:
    """Run the engine until SIGINT/SIGTERM (or one cycle with ``run_once``); the exit code."""
    from mraster_tui.engine.factory import FactoryError, build_engine
    from mraster_tui.engine.errors import VenueError
    from mraster_tui.engine.ledger import StateError

    sink = make_sink(settings)
    stop = threading.Event()
    try:
        engine = build_engine(settings, demo=demo, sink=sink)
    except FactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    previous = _install_signals(stop)
    try:
        asyncio.run(_run(engine, stop, bool(settings.run_once)))
    except (StateError, VenueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        _restore_signals(previous)
    snap = engine.snapshot()
    if bool(settings.run_once) and not snap.last_cycle:
        print(f"error: the scan cycle failed ({snap.error or 'no cycle ran'})", file=sys.stderr)
        return EXIT_FAILED
    return 0


async def _run(engine: Any, stop: threading.Event, run_once: bool) -> None:
    if run_once:
        # one attempt: a run-once that cannot reach the venue fails instead of retrying forever
        try:
            await engine.start()
        except BaseException:
            await engine.shutdown()
            raise
    await engine.run(stop, run_once=run_once)


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT/SIGTERM set ``stop``; a second one exits at once (130)."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise SystemExit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, h in previous.items():
        signal.signal(sig, h)
