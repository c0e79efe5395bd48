"""The Textual app: Preset and Pro modes over one long-lived engine worker.

Threading model (see ``../shared/docs/conventions.md``):

* the engine runs in ONE thread worker owned by the App (group ``engine``), on its own asyncio
  loop, via ``controller.run_blocking(stop_event)``; it is never started twice;
* the engine talks to the UI only through its event sink (:class:`~mraster_tui.messages.EventBuffer`,
  a bounded ring) and its thread-safe ``snapshot()``; the App renders both on a timer at
  :data:`UI_HZ` (at most 10 times a second), only for the visible screen;
* every worker's end is handled in :meth:`MrAsterApp.on_worker_state_changed`;
* screens do no I/O: settings are saved (atomically) and applied by the App.

Quitting sets the stop event and waits for the engine to finish its step and save its state; the
stop-loss and take-profit orders stay on the venue.  Losing the terminal (SIGHUP, an orphaned
process, a dead TTY) and SIGTERM/SIGINT take the same path, without any dialog.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.command import CommandPalette
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from mraster_tui.commands import MrAsterCommands
from mraster_tui.config import BY_NAME, ConfigError, Settings, parse_value, preset_values, save_config
from mraster_tui.config import paths
from mraster_tui.config.schema import (
    PRESET_LEVERAGE_MAX,
    PRESET_LEVERAGE_MIN,
    PRESET_RISK_MAX,
    PRESET_RISK_MIN,
    PRESET_RISK_STEP,
)
from mraster_tui.engine.events import EngineSnapshot, Event, EventKind, EventSink
from mraster_tui.messages import EventBuffer, RestartRequested, SettingSubmitted
from mraster_tui.screens.base import DashboardScreen
from mraster_tui.screens.confirm import ConfirmScreen, TypedConfirmScreen
from mraster_tui.screens.editor import ConfigEditor
from mraster_tui.screens.help import HelpScreen, key_rows
from mraster_tui.screens.preset import PresetScreen
from mraster_tui.screens.pro import ProScreen
from mraster_tui.widgets.fmt import percent
from mraster_tui.widgets.log_pane import LogPane
from mraster_tui.widgets.slider import StepSlider, grid_step
from mraster_tui.widgets.status_bar import EngineView

#: snapshot renders and log batches per second (the conventions cap it at 10)
UI_HZ = 5
UI_FRAME_HZ = 60  # one frame of a 60 Hz terminal: how long a mode switch holds updates
#: seconds between terminal checks of the TTY-loss watchdog
WATCHDOG_INTERVAL = 2.0
#: after this many seconds of waiting for the engine on quit, the UI exits and says it still waits
QUIT_TIMEOUT = 20.0
#: seconds the normal exit gets after the engine stopped, once the terminal is gone
TTY_LOSS_GRACE = 2.0

STYLES = Path(__file__).resolve().parent / "styles"
_PRESET = Binding.Group("Preset", compact=True)
#: actions that make no sense while a dialog is open (the dialog's own keys win)
_MAIN_ACTIONS = frozenset({
    "preset", "risk", "leverage", "toggle_pro", "edit_config", "start_engine", "stop_engine", "restart_engine",
    "help", "quit", "log_level", "log_search", "command_palette",
})


class Controller(Protocol):
    """What the App needs from :class:`mraster_tui.engine.controller.EngineController`."""

    def run_blocking(self, stop: threading.Event) -> None: ...

    def apply_settings(self, settings: Settings) -> tuple[tuple[str, ...], tuple[str, ...]]: ...

    def snapshot(self) -> EngineSnapshot: ...

    @property
    def has_open_positions(self) -> bool: ...


ControllerFactory = Callable[[Settings, EventSink], Controller]


def engine_controller_factory(*, demo: bool) -> ControllerFactory:
    """The real controller (imported lazily: the engine package is heavy)."""

    def make(settings: Settings, sink: EventSink) -> Controller:
        from mraster_tui.engine.controller import EngineController

        return EngineController(settings, demo=demo, sink=sink)

    return make


# -- settings helpers (pure) ---------------------------------------------------------------

def outranks_file(source: str) -> bool:
    """A value from the environment, .env, the secrets file or the command line beats the config file."""
    return source in (".env", "env", "cli") or source.startswith("secrets:")


def settings_with_preset(settings: Settings, name: str, file_label: str) -> tuple[Settings, tuple[str, ...]]:
    """The effective settings once preset ``name`` is selected and saved.

    Mirrors ``save_config(preset=...)`` and the load precedence: the preset's values replace the
    defaults, the previous preset's values and the file's own values for those keys; values from
    the environment or the command line still win and are returned as the second item.
    """
    values = preset_values(name)
    kept = tuple(n for n in values if outranks_file(settings.source(n)))
    changes = {n: v for n, v in values.items() if n not in kept}
    new = settings.replace(_source=f"preset:{name}", **changes) if changes else settings
    stale = [n for n, src in new.sources.items() if src.startswith("preset:") and src != f"preset:{name}"]
    if stale:  # keys only the previous preset set fall back to their defaults
        new = new.replace(_source="default", **{n: BY_NAME[n].default for n in stale})
    return new.replace(_source=file_label, preset=name), kept


def venue_label(settings: Settings, demo: bool) -> str:
    if demo:
        return "synthetic"
    host = urlparse(settings.exchange_base).hostname or settings.exchange_base
    return host.removeprefix("fapi.").removeprefix("api.")


def one_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the app ------------------------------------------------------------------------------------

class MrAsterApp(App[int], inherit_bindings=False):
    """| Key | Action |
    | :- | :- |
    | 1 / 2 / 3 | Low / Mid / High preset: applied to the running engine and saved. |
    | p | Toggle Pro mode (remembered). |
    | s / x / r | Start / stop / restart the engine. |
    | ? | Help. |
    | : | Command palette. |
    | q | Quit: stop gracefully, brackets stay on the venue. |
    """

    CSS_PATH = [STYLES / "global.tcss", STYLES / "app.tcss"]  # absolute: subclasses elsewhere find them too
    TITLE = "mraster-tui"
    COMMANDS = {MrAsterCommands}
    # screen classes for the stylesheet: 80x24 hides or shrinks panels, 100x30 and up shows all
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    # no ctrl+letter keys (tmux, shells and terminals take them): the App does not inherit
    # Textual's ctrl+q / ctrl+c, and the palette is on ':'
    BINDINGS = [
        Binding("1", "preset('low')", "Low", group=_PRESET, id="preset-low",
                tooltip="Low preset: applied to the running engine and saved"),
        Binding("2", "preset('mid')", "Mid", group=_PRESET, id="preset-mid",
                tooltip="Mid preset: applied to the running engine and saved"),
        Binding("3", "preset('high')", "High", group=_PRESET, id="preset-high",
                tooltip="High preset: applied to the running engine and saved"),
        Binding("p", "toggle_pro", "Pro", id="toggle-pro", tooltip="Toggle Pro mode (remembered)"),
        Binding("s", "start_engine", "Start", id="engine-start", tooltip="Start the engine"),
        Binding("x", "stop_engine", "Stop", id="engine-stop",
                tooltip="Stop the engine gracefully; stops and take-profits stay on the venue"),
        Binding("r", "restart_engine", "Restart", id="engine-restart",
                tooltip="Restart the engine with the current settings"),
        Binding("question_mark", "help", "Help", id="help", tooltip="Keys and modes"),
        Binding("colon", "command_palette", "Commands", id="command-palette",
                tooltip="Search every action"),
        Binding("q", "quit", "Quit", id="quit",
                tooltip="Stop the engine gracefully and quit; stops and take-profits stay on the venue"),
    ]

    phase: reactive[str] = reactive("stopped", bindings=True, init=False)

    def __init__(
        self,
        settings: Settings,
        *,
        demo: bool = False,
        controller_factory: ControllerFactory | None = None,
        autostart: bool = True,
        watchdog: bool = False,
        handle_signals: bool = False,
        events: EventBuffer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.demo = demo
        self.events = events if events is not None else EventBuffer()
        self._factory = controller_factory or engine_controller_factory(demo=demo)
        self._autostart = autostart
        self._watchdog = watchdog
        self._handle_signals = handle_signals
        self.controller: Controller | None = None
        self.pending_restart: set[str] = set()
        self._stop: threading.Event | None = None
        self._engine_worker: Worker[None] | None = None
        self._after_stop: str | None = None  # "restart" | "quit"
        self._screens: dict[str, DashboardScreen] = {}
        self._ppid = os.getppid()
        self._engine_idle = threading.Event()  # set while no engine thread runs (read by the TTY-loss exit)
        self._engine_idle.set()
        self._terminal_gone = False
        self._monotonic = monotonic  # tests freeze it: the countdown is then deterministic
        self.last_snapshot = self._idle_snapshot()
        self._snap_seen = (self.last_snapshot.now_ms, monotonic())
        self.add_mode("preset", lambda: self._mode_screen("preset"))
        self.add_mode("pro", lambda: self._mode_screen("pro"))

    # -- properties --------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.settings.config_path or paths.config_file()

    @property
    def file_label(self) -> str:
        return f"file:{self.config_path}"

    @property
    def trading_mode(self) -> str:
        """DEMO, LIVE or PAPER: what a start would run."""
        if self.demo:
            return "DEMO"
        return "LIVE" if self.settings.live_trading else "PAPER"

    @property
    def engine_active(self) -> bool:
        return self._engine_worker is not None and not self._engine_worker.is_finished

    @property
    def positions_open(self) -> int:
        return len(self.last_snapshot.positions)

    def _idle_snapshot(self) -> EngineSnapshot:
        return EngineSnapshot(mode=self.trading_mode, venue=venue_label(self.settings, self.demo), state="stopped")

    def _event_ms(self) -> int:
        """Timestamp of an event the App itself logs: the engine's clock when it has one."""
        return self.last_snapshot.now_ms or int(time.time() * 1000)

    def engine_view(self, snap: EngineSnapshot) -> EngineView:
        running = self.phase in ("starting", "running", "stopping")
        # the engine publishes snapshots between steps; its clock runs on in between (faster
        # in the demo), so the countdown extrapolates from when this snapshot was first seen
        _, seen_at = self._snap_seen
        speed = float(self.settings.demo_speed) if self.demo else 1.0
        now_ms = snap.now_ms + int((self._monotonic() - seen_at) * 1000 * speed) if snap.now_ms else 0
        return EngineView(
            now_ms=now_ms,
            mode=(snap.mode if running and snap.mode else self.trading_mode),
            venue=(snap.venue if running and snap.venue else venue_label(self.settings, self.demo)),
            phase=self.phase,
            max_data_age_s=float(self.settings.max_data_age_sec),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def _mode_screen(self, mode: str) -> Screen:
        screen = PresetScreen(self.settings) if mode == "preset" else ProScreen(self.settings, self.events)
        self._screens[mode] = screen
        return screen

    def delay_update(self, delay: float = 1 / UI_FRAME_HZ) -> None:
        """Textual holds updates for 50 ms on a mode switch to hide a screen still being laid
        out; both mode screens are built at start (``on_mount``), so one frame is enough and 'p'
        answers within the key latency goal."""
        super().delay_update(delay)

    def on_mount(self) -> None:
        # a new screen shows at once; its log catches up right after that frame
        self.screen_change_signal.subscribe(self, lambda _screen: self.refresh_views(pump=False))
        # both mode screens are built now, the other one first (hidden behind the wanted one): the
        # first 'p' is then a plain switch, not a compose of a whole screen while the user waits
        wanted = "pro" if self.settings.ui_pro else "preset"
        self.switch_mode("preset" if wanted == "pro" else "pro")
        self.switch_mode(wanted)
        self.set_interval(1 / UI_HZ, self.refresh_views, name="ui-tick")
        if self._watchdog:
            self.set_interval(WATCHDOG_INTERVAL, self._check_terminal, name="tty-watchdog")
        if self._handle_signals:
            self._install_signal_handlers()
        if self._autostart:
            self.action_start_engine()

    def on_unmount(self) -> None:
        # every way out (quit, a crash, a test's exit) must let the engine thread finish, or the
        # interpreter would wait for it forever
        if self._stop is not None:
            self._stop.set()

    def refresh_views(self, *, pump: bool = True) -> None:
        """Render the latest snapshot and the new log records on the visible screen (the UI tick);
        with ``pump=False`` the log records follow after the next frame."""
        if self.controller is not None:
            try:
                self.last_snapshot = self.controller.snapshot()
            except Exception as exc:  # a broken snapshot must not take the UI down
                self.log.error(f"snapshot failed: {one_line(exc)}")
        if self.last_snapshot.now_ms != self._snap_seen[0]:
            self._snap_seen = (self.last_snapshot.now_ms, self._monotonic())
        screen = self.screen_stack[0] if self.screen_stack else None  # the mode screen
        if screen is not self.screen and isinstance(screen, DashboardScreen) and screen.rendered:
            return  # a dialog is open: paused, and brought up to date when it closes (screen change)
        if isinstance(screen, DashboardScreen) and screen.ready:
            try:
                screen.show_snapshot(self.last_snapshot, self.engine_view(self.last_snapshot))
                if pump:
                    screen.pump(self.events)
                else:
                    self.call_after_refresh(self.refresh_views)
                screen.rendered = True
            except NoMatches:  # the app is closing and the widgets are already gone
                return

    def watch_phase(self) -> None:
        if self.is_mounted:
            self.refresh_views()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        screen = self.screen
        if action in _MAIN_ACTIONS and isinstance(screen, ModalScreen) and not isinstance(screen, CommandPalette):
            return False
        if action == "start_engine":
            return not self.engine_active
        if action in ("stop_engine", "restart_engine"):
            return self.engine_active and self._after_stop is None and self.phase != "stopping"
        return True

    # -- engine worker -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine", name="engine",
          description="trading engine (its own asyncio loop)")
    def _run_engine(self, controller: Controller, stop: threading.Event) -> None:
        try:
            controller.run_blocking(stop)
        finally:
            self._engine_idle.set()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker, state = event.worker, event.state
        if worker.group == "engine":
            if worker is not self._engine_worker:
                return
            if state == WorkerState.RUNNING:
                if self.phase == "starting":
                    self.phase = "running"
            elif state in (WorkerState.SUCCESS, WorkerState.CANCELLED):
                # the controller reports its own failures (an error event and state "error")
                # instead of raising; the App shows both kinds the same way
                failed = getattr(self.controller, "state", "stopped") == "error"
                if failed:
                    self._engine_failed(getattr(self.controller, "last_error", None) or "the engine failed")
                else:
                    self.phase = "stopped"
                self._engine_finished()
            elif state == WorkerState.ERROR:
                why = one_line(worker.error) if worker.error else "unknown error"
                self.events.emit(Event(self._event_ms(), EventKind.ERROR, "ERROR", f"engine stopped by an error: {why}"))
                self._engine_failed(why)
                self._engine_finished()
        elif state == WorkerState.ERROR:
            why = one_line(worker.error) if worker.error else "unknown error"
            self.log.error(f"worker {worker.name!r} failed: {why}")
            self.notify(f"{worker.name or 'a background task'} failed: {why}", severity="error")
        else:  # other workers' progress is of no interest
            return

    def _engine_failed(self, why: str) -> None:
        self.phase = "error"
        if self._after_stop != "quit":
            self.notify(f"The engine stopped: {why}.  Trading is off; stops and take-profits stay on the venue.  "
                        "Press s to start it again.", title="Engine error", severity="error", timeout=30)

    def _engine_finished(self) -> None:
        after, self._after_stop = self._after_stop, None
        self.refresh_bindings()
        if after == "quit":
            self.exit(return_code=1 if self.phase == "error" else 0)
        elif after == "restart":
            self.action_start_engine()

    def _start(self) -> None:
        if self.engine_active:  # never two engines on one account
            self.notify("The engine is still running.", severity="warning")
            return
        self.controller = self._factory(self.settings, self.events)
        self._stop = threading.Event()
        self._engine_idle.clear()
        self.pending_restart.clear()
        self.phase = "starting"
        self._engine_worker = self._run_engine(self.controller, self._stop)

    def _request_stop(self, after: str | None = None) -> None:
        self._after_stop = after
        if self._stop is not None:
            self._stop.set()
        if self.engine_active:
            self.phase = "stopping"
        self.refresh_bindings()

    def _confirm_with_positions(self, verb: str, then: Callable[[], None]) -> None:
        n = self.positions_open
        in_flight = self.controller is not None and self.engine_active and self.controller.has_open_positions
        if not n and not in_flight:
            then()
            return
        what = (f"{n} position{'s are' if n != 1 else ' is'} open" if n else "An entry is being placed")
        question = (f"{what}.  Stop-loss and take-profit orders stay on the venue, but while the engine is "
                    f"stopped nothing manages them (no FastTP, no guard repairs).\n\n{verb.capitalize()} the engine?")
        self.push_screen(ConfirmScreen(f"{verb.capitalize()} with open positions", question, yes=verb.capitalize(),
                                       danger=True), lambda ok: then() if ok else None)

    def action_start_engine(self) -> None:
        if self.engine_active:
            self.notify("The engine is already running.")
            return
        if self.trading_mode == "LIVE":
            s = self.settings
            text = (f"LIVE trading with REAL MONEY on {venue_label(s, self.demo)}.\n"
                    f"Risk per trade {percent(s.risk_per_trade)}, leverage {s.leverage}x, up to "
                    f"{s.max_open_global} position(s), preset {s.preset}.")
            self.push_screen(TypedConfirmScreen("Start live trading", text), lambda ok: self._start() if ok else None)
        else:
            self._start()

    def action_stop_engine(self) -> None:
        self._confirm_with_positions("stop", self._request_stop)

    def action_restart_engine(self) -> None:
        if not self.engine_active:
            self.action_start_engine()
            return
        self._confirm_with_positions("restart", lambda: self._request_stop("restart"))

    def on_restart_requested(self, message: RestartRequested) -> None:
        self.action_restart_engine()

    def action_quit(self) -> None:  # type: ignore[override]  # graceful, never immediate
        self.shutdown_gracefully("quit")

    def shutdown_gracefully(self, why: str = "quit") -> None:
        """Stop the engine (finish the step, save state, leave brackets) and exit; no dialogs."""
        if not self.engine_active:
            self.exit()
            return
        if self._after_stop == "quit":  # already on the way out
            return
        self._request_stop("quit")
        self.events.emit(Event(self._event_ms(), EventKind.NOTICE, "INFO",
                               f"stopping the engine ({why}); stops and take-profits stay on the venue"))
        self.set_timer(QUIT_TIMEOUT, self._quit_timeout, name="quit-timeout")

    def _quit_timeout(self) -> None:
        if self.engine_active:
            self.exit(message="mraster-tui: waiting for the engine to finish its step and save its state...")

    # -- signals and the terminal watchdog -----------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """SIGHUP: the terminal is gone.  SIGTERM / SIGINT: quit gracefully.

        Plain ``signal.signal`` handlers (not the event loop's): they run in the main thread even
        when the UI loop is stuck writing to a dead terminal, and they set the engine's stop event
        themselves before asking the UI loop to exit.
        """
        loop = asyncio.get_running_loop()

        def on_signal(signum: int, _frame: object) -> None:
            if self._stop is not None:
                self._stop.set()
            if signum == signal.SIGHUP:
                self._on_terminal_gone("the terminal hung up")
            loop.call_soon_threadsafe(self.shutdown_gracefully, signal.Signals(signum).name)

        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)

    def _check_terminal(self) -> None:
        if not self._terminal_gone and terminal_lost(self._ppid):
            self._on_terminal_gone("the terminal went away")
            self.shutdown_gracefully("the terminal went away")

    def _on_terminal_gone(self, why: str) -> None:
        """Output goes to /dev/null from now on, and a last-resort exit is armed.

        Textual's output thread dies on the first write to a hung-up terminal and the UI loop may
        then block on its queue for good; the engine thread is independent of it.  Once the engine
        has finished its step and saved its state nothing is left to protect, so if the normal
        exit has not happened by then, the process ends itself.
        """
        if self._terminal_gone:
            return
        self._terminal_gone = True
        silence_terminal()
        self.events.emit(Event(self._event_ms(), EventKind.NOTICE, "WARNING", f"{why}: stopping"))
        threading.Thread(target=self._exit_when_engine_idle, name="tty-loss-exit", daemon=True).start()

    def _exit_when_engine_idle(self) -> None:
        self._engine_idle.wait()
        time.sleep(TTY_LOSS_GRACE)  # the normal exit usually finishes in this time
        os._exit(0)

    # -- settings: presets, sliders, Pro, the editor ------------------------------------------

    def _commit(self, new: Settings, changes: dict[str, Any], *, preset: str | None = None) -> bool:
        """Save ``changes`` to the config file (atomically), then apply ``new`` to the running engine."""
        try:
            save_config(self.config_path, changes, preset=preset)
        except ConfigError as exc:
            self.notify(str(exc), title="Not saved", severity="error")
            return False
        except OSError as exc:
            self.notify(f"{self.config_path}: cannot save ({exc.strerror or exc})", title="Not saved",
                        severity="error")
            return False
        changed = set(self.settings.diff(new))
        self.settings = new
        engine_relevant = {n for n in changed if BY_NAME[n].section != "ui"}
        if engine_relevant and self.controller is not None and self.engine_active:
            try:
                _, restart = self.controller.apply_settings(new)
            except Exception as exc:
                self.notify(f"Saved, but the engine refused it: {one_line(exc)}", severity="error")
            else:
                self.pending_restart |= set(restart)
        for screen in self._screens.values():
            if screen.ready:
                screen.show_settings(new)
        if isinstance(self.screen, ConfigEditor):
            self.screen.update_state(new, self.pending_restart, self.engine_active)
        if not self.engine_active:  # the status bar shows what a start would run (PAPER / LIVE...)
            self.last_snapshot = self._idle_snapshot()
            self.refresh_views(pump=False)
        return True

    def _warn_outranked(self, names: Iterable[str]) -> None:
        env = [BY_NAME[n].env for n in names if outranks_file(self.settings.source(n))]
        if env:
            self.notify(f"{', '.join(env)} set outside the config file (env/.env/CLI) win again at the next start.",
                        severity="warning")

    def action_preset(self, name: str) -> None:
        new, kept = settings_with_preset(self.settings, name, self.file_label)
        if self._commit(new, {}, preset=name):
            note = f"; kept from the environment: {', '.join(BY_NAME[n].env for n in kept)}" if kept else ""
            self.notify(f"{name.capitalize()} preset: risk {percent(new.risk_per_trade)}, leverage {new.leverage}x"
                        f"{note}", title="Preset applied and saved")

    def _set_value(self, name: str, value: Any) -> bool:
        if getattr(self.settings, name) == value:
            return False
        self._warn_outranked([name])
        return self._commit(self.settings.replace(_source=self.file_label, **{name: value}), {name: value})

    def action_risk(self, steps: int) -> None:
        self._set_value("risk_per_trade", grid_step(self.settings.risk_per_trade, steps, step=PRESET_RISK_STEP,
                                                    minimum=PRESET_RISK_MIN, maximum=PRESET_RISK_MAX))

    def action_leverage(self, steps: int) -> None:
        self._set_value("leverage", int(grid_step(self.settings.leverage, steps, step=1,
                                                  minimum=PRESET_LEVERAGE_MIN, maximum=PRESET_LEVERAGE_MAX)))

    def on_step_slider_changed(self, event: StepSlider.Changed) -> None:
        if event.slider.id == "risk":
            self._set_value("risk_per_trade", round(event.value, 6))
        elif event.slider.id == "leverage":
            self._set_value("leverage", int(event.value))

    def action_toggle_pro(self) -> None:
        pro = self.current_mode != "pro"
        self.switch_mode("pro" if pro else "preset")
        self._set_value("ui_pro", pro)

    def action_edit_config(self) -> None:
        if self.current_mode != "pro":
            self.action_toggle_pro()
        self.push_screen(ConfigEditor(self.settings, pending_restart=self.pending_restart,
                                      engine_running=self.engine_active))

    def on_setting_submitted(self, message: SettingSubmitted) -> None:
        editor = self.screen if isinstance(self.screen, ConfigEditor) else None
        s = BY_NAME[message.name]
        try:
            value = parse_value(s, message.raw, s.env)
        except ConfigError as exc:
            if editor is not None:
                editor.report(False, f"refused, nothing saved: {exc}")
            return
        if s.secret:  # the editor never submits one; refuse anyway: secrets never go to the file
            if editor is not None:
                editor.report(False, f"{s.env} is a secret; set it in the environment or the secrets file")
            return
        if s.name == "preset":
            new, _ = settings_with_preset(self.settings, value, self.file_label)
            ok = self._commit(new, {}, preset=value)
        else:
            self._warn_outranked([s.name])
            ok = self._commit(self.settings.replace(_source=self.file_label, **{s.name: value}), {s.name: value})
        if editor is None:
            return
        if not ok:
            editor.report(False, "not saved (see the notification)")
            return
        shown = self.settings.masked()[s.env]
        if not self.engine_active:
            where = "used when the engine starts"
        elif s.name in self.pending_restart:
            where = "applies on restart (f5 restarts the engine now)"
        else:
            where = "applied to the running engine"
        extra = ""
        if s.name == "leverage" and value > PRESET_LEVERAGE_MAX:
            extra = f"; above the presets' {PRESET_LEVERAGE_MAX}x ceiling, losses scale with it"
        if s.name == "paper" and not value and self.settings.has_credentials and not self.demo:
            extra = "; the next start is LIVE trading"
        editor.report(True, f"saved {s.key} = {shown}; {where}{extra}")

    # -- help and logs -----------------------------------------------------------------------

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        display = self.get_key_display
        return [
            ("Everywhere", key_rows(self.BINDINGS, display)),
            ("Preset mode", key_rows(PresetScreen.BINDINGS, display)
             + [("tab", "Move the focus; a focused slider moves with left / right, home / end")]),
            ("Pro mode", key_rows(ProScreen.BINDINGS + LogPane.BINDINGS, display)),
            ("Config editor", key_rows(ConfigEditor.BINDINGS, display)
             + [("enter", "Edit the highlighted setting; enter again saves it")]),
            ("Dialogs", key_rows(ConfirmScreen.BINDINGS, display)),
        ]

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_sections()))

    def _in_pro(self, then: Callable[[ProScreen], None]) -> None:
        """Switch to Pro mode if needed, and call ``then`` once its screen is composed."""
        if self.current_mode != "pro":
            self.action_toggle_pro()
        screen = self._screens.get("pro")
        if isinstance(screen, ProScreen) and screen.ready:
            then(screen)
        else:
            self.call_after_refresh(self._in_pro, then)

    def action_log_level(self) -> None:
        self._in_pro(lambda screen: screen.action_log_level())

    def action_log_search(self) -> None:
        self._in_pro(lambda screen: screen.action_log_search())


def terminal_lost(ppid: int, fd: int | None = None) -> bool:
    """True when the controlling terminal is gone: the fd is no TTY any more, or the process was
    orphaned (its parent, the shell or sshd, died and it was re-parented)."""
    if fd is None:
        stream = sys.__stdout__
        if stream is None:
            return True
        try:
            fd = stream.fileno()
        except (OSError, ValueError):
            return True
    try:
        if not os.isatty(fd):
            return True
    except OSError:
        return True
    return os.getppid() != ppid


def silence_terminal() -> None:
    """Point stdin at a pipe that never yields and stdout/stderr at /dev/null (the TTY is gone)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    quiet_r, _quiet_w = os.pipe()  # the write end stays open (leaked on purpose): reads block, no EOF spin
    for fd, target in ((0, quiet_r), (1, devnull), (2, devnull)):
        try:
            os.dup2(target, fd)
        except OSError:
            pass


def run_app(settings: Settings, *, demo: bool = False) -> int:
    """Run the TUI until the user quits; returns the exit code (the CLI has printed the settings'
    warnings already)."""
    app = MrAsterApp(settings, demo=demo, watchdog=sys.__stdin__ is not None and sys.__stdin__.isatty(),
                     handle_signals=True)
    app.run()
    return app.return_code or 0
