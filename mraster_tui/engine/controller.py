"""``EngineController``: runs an :class:`~mraster_tui.engine.runner.Engine` on its own asyncio loop
in a thread, for front ends (the TUI calls :meth:`run_blocking` from a worker thread; other
callers may use :meth:`start` / :meth:`stop`).  UI-agnostic: never imports textual.

The controller outlives engines: :meth:`restart` stops the running engine (state saved,
brackets left on the venue) and starts a new one with new settings.  :meth:`snapshot` always
answers at once, with the running engine's latest snapshot or a placeholder one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from mraster_tui.engine.events import Event, EventKind, EventSink, EngineSnapshot


def _default_factory(*args: Any, **kwargs: Any):
    from mraster_tui.engine.factory import build_engine

    return build_engine(*args, **kwargs)


class EngineController:
    def __init__(self, settings: Any, *, demo: bool = False, sink: EventSink,
                 factory: Callable[..., Any] = _default_factory) -> None:
        self.settings = settings
        self.demo = demo
        self.sink = sink
        self.factory = factory
        self._engine: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = "stopped"
        self._last_error: str | None = None
        self._last_snapshot = EngineSnapshot(mode="DEMO" if demo else "PAPER", state="stopped")

    # -- running ----------------------------------------------------------------------
    def run_blocking(self, stop: threading.Event) -> None:
        """Build an engine and run it on a fresh asyncio loop in the calling thread until
        ``stop`` is set.  A failure to build or start is reported as an error event (the
        controller's ``state`` becomes ``error``), never raised."""
        with self._lock:
            self._state = "starting"
        try:
            engine = self.factory(self.settings, demo=self.demo, sink=self.sink)
        except Exception as exc:  # noqa: BLE001 - reported, never a traceback in the UI
            self._fail(f"engine could not be built: {exc}")
            return
        with self._lock:
            self._engine = engine
        try:
            asyncio.run(engine.run(stop, run_once=bool(getattr(self.settings, "run_once", False))))
        except Exception as exc:  # noqa: BLE001
            self._fail(f"engine stopped with an error: {exc}")
            return
        finally:
            with self._lock:
                self._last_snapshot = engine.snapshot()
                self._engine = None
        with self._lock:
            if self._state != "error":
                self._state = "stopped"

    def _fail(self, message: str) -> None:
        with self._lock:
            self._state = "error"
            self._last_error = message
            self._last_snapshot = EngineSnapshot(mode=self._last_snapshot.mode, state="error", error=message)
        try:
            self.sink.emit(Event(int(time.time() * 1000), EventKind.ERROR, "ERROR", message))
        except Exception:  # noqa: BLE001
            pass

    def start(self) -> None:
        """Run the engine in a thread of its own (no-op if one is running)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self.run_blocking, args=(self._stop,), name="mraster-engine",
                                            daemon=True)
            self._state = "starting"
            self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 15.0) -> bool:
        """Ask the engine to stop and wait; True if it stopped within ``timeout``."""
        self._stop.set()
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        if t.is_alive():
            return False
        self._thread = None
        return True

    def restart(self, settings: Any | None = None) -> None:
        if settings is not None:
            self.settings = settings
        self.stop()
        self.start()

    # -- settings / state -------------------------------------------------------------
    def apply_settings(self, settings: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Live settings go to the running engine at once; the rest wait for a restart.
        Returns (applied live, needing a restart)."""
        from mraster_tui.config.schema import BY_NAME

        with self._lock:
            engine = self._engine
        if engine is not None:
            result = engine.apply_settings(settings)
        else:
            diff = self.settings.diff(settings)
            result = (tuple(sorted(n for n in diff if BY_NAME[n].live)),
                      tuple(sorted(n for n in diff if not BY_NAME[n].live)))
        self.settings = settings
        return result

    def snapshot(self) -> EngineSnapshot:
        with self._lock:
            engine = self._engine
            if engine is None:
                return self._last_snapshot
        return engine.snapshot()

    @property
    def state(self) -> str:
        with self._lock:
            if self._engine is not None:
                return self._engine.snapshot().state
            return self._state

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def has_open_positions(self) -> bool:
        return bool(self.snapshot().positions)
