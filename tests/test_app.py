"""The Textual app driven with Pilot: every binding, presets saved and applied, the config
editor, Pro mode, engine control, live confirmation, errors, and the TTY-loss path.

The engine is :class:`tests._tui_fakes.FakeController` (the real one runs in the demo test);
config files are real TOML files under tmp_path, read back with the real loader.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from textual.command import CommandPalette
from textual.content import Content
from textual.widgets import Input, Log, OptionList, Static

from mraster_tui.app import MrAsterApp, settings_with_preset, terminal_lost
from mraster_tui.config import SECTIONS, SETTINGS, load_settings, save_config
from mraster_tui.config.loader import read_toml_file
from mraster_tui.engine.events import Event, EventKind
from mraster_tui.messages import EventBuffer
from mraster_tui.screens.confirm import ConfirmScreen, TypedConfirmScreen
from mraster_tui.screens.editor import ConfigEditor
from mraster_tui.screens.help import HelpScreen
from mraster_tui.screens.preset import PresetScreen
from mraster_tui.screens.pro import ProScreen
from mraster_tui.widgets.activity import ActivityFeed
from mraster_tui.widgets.log_pane import LOG_MAX_LINES, LogPane
from mraster_tui.widgets.positions import PositionsTable
from mraster_tui.widgets.slider import StepSlider
from tests._tui_fakes import EVENTS, T0, FakeController, filled_buffer, snapshot

REPO = Path(__file__).resolve().parents[1]
SIZE = (100, 30)


@pytest.fixture
def cfg(tmp_path) -> Path:
    path = tmp_path / "config.toml"
    save_config(path, {"paper": True}, preset="mid")
    return path


def make_app(settings, *, snap=None, demo=True, **kw):
    made: list[FakeController] = []
    opts = {k: kw.pop(k) for k in ("fail", "state_error") if k in kw}

    def factory(s, sink):
        c = FakeController(s, sink, snap, **opts)
        made.append(c)
        return c

    app = MrAsterApp(settings, demo=demo, controller_factory=factory, events=kw.pop("events", filled_buffer()),
                     monotonic=lambda: 0.0, **kw)
    return app, made


async def until(pilot, cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)


def file_values(path: Path) -> dict:
    return read_toml_file(path)


# -- bindings -----------------------------------------------------------------------------

def _declared_bindings():
    from textual.binding import Binding

    classes = (MrAsterApp, PresetScreen, ProScreen, ConfigEditor, HelpScreen, ConfirmScreen, TypedConfirmScreen,
               LogPane, StepSlider)
    for cls in classes:
        for b in cls.BINDINGS:
            assert isinstance(b, Binding)
            yield cls.__name__, b


def test_bindings_have_ids_tooltips_and_no_ctrl_letters():
    seen = list(_declared_bindings())
    assert len(seen) >= 25
    for owner, b in seen:
        for key in b.key.split(","):
            assert not key.strip().startswith("ctrl+"), f"{owner}: {b.key} is a ctrl binding"
        assert b.id, f"{owner}: binding {b.key} has no id"
        assert b.tooltip, f"{owner}: binding {b.key} has no tooltip"


# -- presets, sliders, Pro ------------------------------------------------------------------

async def test_preset_keys_apply_to_running_engine_and_save_toml(cfg):
    app, made = make_app(load_settings(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running")
        ctl = made[0]
        # no ctrl+letter key of our own: quit and the palette are on q and ':'
        ctrl = {k: a.binding.action for k, a in app.active_bindings.items()
                if k.startswith("ctrl+") and len(k) == len("ctrl+x")}
        assert set(ctrl.values()) <= {"screen.copy_text"}, ctrl  # Textual's copy-selection key only
        assert app.active_bindings["colon"].binding.action == "command_palette"
        bar = app.screen.query_one("#presets")
        assert bar.query_one("#preset-mid").has_class("-active")

        await pilot.press("3")
        await pilot.pause()
        assert file_values(cfg)["preset"] == "high"
        assert "risk_per_trade" not in file_values(cfg) and file_values(cfg)["paper"] is True
        reloaded = load_settings(cfg)
        assert (reloaded.risk_per_trade, reloaded.leverage, reloaded.max_open_global) == (0.02, 4, 3)
        assert ctl.applied and ctl.applied[-1].preset == "high"
        assert (ctl.applied[-1].risk_per_trade, ctl.applied[-1].leverage) == (0.02, 4)
        assert bar.query_one("#preset-high").has_class("-active")
        assert not bar.query_one("#preset-mid").has_class("-active")
        assert app.screen.query_one("#risk", StepSlider).value == 0.02
        assert app.screen.query_one("#leverage", StepSlider).value == 4

        await pilot.press("1")
        await pilot.pause()
        assert file_values(cfg)["preset"] == "low"
        assert (ctl.applied[-1].risk_per_trade, ctl.applied[-1].leverage, ctl.applied[-1].max_open_global) == (
            0.005, 1, 1)
        await pilot.press("2")
        await pilot.pause()
        assert load_settings(cfg) == app.settings  # what runs is what a restart loads


async def test_risk_and_leverage_keys_and_slider(cfg):
    app, made = make_app(load_settings(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running")
        ctl = made[0]
        await pilot.press("plus")
        await pilot.pause()
        assert app.settings.risk_per_trade == 0.0125
        assert file_values(cfg)["risk_per_trade"] == 0.0125
        assert ctl.applied[-1].risk_per_trade == 0.0125
        await pilot.press("minus", "minus", "minus")
        await pilot.pause()
        assert file_values(cfg)["risk_per_trade"] == 0.005
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert file_values(cfg)["leverage"] == 3 and ctl.applied[-1].leverage == 3
        for _ in range(6):
            await pilot.press("left_square_bracket")
        await pilot.pause()
        assert app.settings.leverage == 1  # clamped at the slider's minimum
        # the slider itself: focus it, right arrow moves one step, end jumps to 5 %
        slider = app.screen.query_one("#risk", StepSlider)
        slider.focus()
        await pilot.press("right")
        await pilot.pause()
        assert app.settings.risk_per_trade == 0.0075
        await pilot.press("end")
        await pilot.pause()
        assert file_values(cfg)["risk_per_trade"] == 0.05
        assert "5.00 %" in str(slider.render())
        # picking the preset again drops the overrides from the file
        await pilot.press("2")
        await pilot.pause()
        assert "risk_per_trade" not in file_values(cfg) and "leverage" not in file_values(cfg)
        assert (app.settings.risk_per_trade, app.settings.leverage) == (0.01, 2)


async def test_pro_toggle_is_remembered(cfg):
    app, _ = make_app(load_settings(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.current_mode == "preset" and isinstance(app.screen, PresetScreen)
        # the other mode's screen was built at start, hidden: 'p' shows it without composing one
        prebuilt = app._screens["pro"]
        assert prebuilt.ready and not prebuilt.rendered
        await pilot.press("p")
        await pilot.pause()
        assert app.current_mode == "pro" and app.screen is prebuilt
        assert file_values(cfg)["ui_pro"] is True
        # the key line fits 80 columns and always shows how to quit
        from mraster_tui.widgets.keybar import keybar_content
        line = keybar_content(app.screen, 80)
        assert line.cell_length <= 80 and "q Quit" in line.plain and "e Editor" in line.plain
    app2, _ = make_app(load_settings(cfg))
    async with app2.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app2.screen, ProScreen)  # remembered across runs
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app2.screen, PresetScreen)
        assert "ui_pro" not in file_values(cfg)  # back to the default


async def test_env_value_wins_over_preset_and_is_kept(cfg, monkeypatch):
    monkeypatch.setenv("ASTER_LEVERAGE", "3")
    settings = load_settings(cfg)
    new, kept = settings_with_preset(settings, "high", f"file:{cfg}")
    assert kept == ("leverage",) and new.leverage == 3 and new.risk_per_trade == 0.02
    app, made = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running")
        await pilot.press("3")
        await pilot.pause()
        assert made[0].applied[-1].leverage == 3
        assert load_settings(cfg) == app.settings


# -- engine control -----------------------------------------------------------------------

async def test_engine_stop_start_restart_confirm_when_positions_open(cfg):
    app, made = make_app(load_settings(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running")
        assert made[0].started.is_set()
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "2 positions are open" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert app.phase == "running" and not made[0].stopped.is_set()

        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await until(pilot, lambda: app.phase == "stopped")
        assert made[0].stopped.is_set()
        assert app.screen.query_one("#engine").render().plain.startswith("● stopped")

        await pilot.press("s")
        await until(pilot, lambda: app.phase == "running")
        assert len(made) == 2 and made[1].started.is_set()

        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: len(made) == 3 and app.phase == "running")
        assert made[1].stopped.is_set() and made[2].started.is_set()


async def test_stop_without_positions_needs_no_confirmation_and_quit_is_graceful(cfg):
    app, made = make_app(load_settings(cfg), snap=snapshot(positions=()))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running")
        await pilot.press("x")
        await until(pilot, lambda: app.phase == "stopped")
        assert made[0].stopped.is_set()
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("s")
        await until(pilot, lambda: app.phase == "running")
        await pilot.press("q")
        await until(pilot, lambda: made[1].stopped.is_set())
    assert app.return_code == 0
    notices = [e.message for e in app.events.snapshot() if e.kind == EventKind.NOTICE]
    assert any("stay on the venue" in m for m in notices)


async def test_engine_failure_is_reported_and_trading_stays_off(cfg):
    app, made = make_app(load_settings(cfg), fail="venue unreachable")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "error")
        assert any("venue unreachable" in e.message for e in app.events.snapshot() if e.level == "ERROR")
        assert any("venue unreachable" in str(n.message) for n in app._notifications)
        await pilot.pause()
        assert "-bad" in app.screen.query_one("#engine").classes
    app2, _ = make_app(load_settings(cfg), state_error="engine could not be built: no data")
    async with app2.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app2.phase == "error")
        assert any("no data" in str(n.message) for n in app2._notifications)


async def test_live_mode_badge_and_typed_confirmation(cfg, monkeypatch):
    monkeypatch.setenv("ASTER_API_KEY", "test-key-abcdef")
    monkeypatch.setenv("ASTER_API_SECRET", "test-secret-123456")
    save_config(cfg, {"paper": False})
    settings = load_settings(cfg)
    assert settings.live_trading
    app, made = make_app(settings, demo=False, snap=snapshot(mode="LIVE"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.screen_stack[0].query_one("#mode-badge").has_class("-live")  # before the engine runs, too
        assert isinstance(app.screen, TypedConfirmScreen) and not made
        await pilot.press(*"live", "enter")
        await pilot.pause()
        assert isinstance(app.screen, TypedConfirmScreen) and not made  # wrong word: nothing started
        await pilot.press(*"LIVE", "enter")
        await until(pilot, lambda: app.phase == "running")
        badge = app.screen.query_one("#mode-badge")
        assert badge.has_class("-live") and "LIVE" in badge.render().plain
        shot = app.export_screenshot()
        assert "test-key-abcdef" not in shot and "test-secret-123456" not in shot


# -- help and palette ---------------------------------------------------------------------

async def test_help_and_command_palette(cfg):
    app, made = make_app(load_settings(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running")
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.query_one("#help-text", Static).render().plain
        for b in MrAsterApp.BINDINGS + PresetScreen.BINDINGS + ProScreen.BINDINGS:
            assert b.tooltip in text
        await pilot.press("1")  # main keys are off while a dialog is open
        await pilot.pause()
        assert app.settings.preset == "mid"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, PresetScreen)

        # the palette (':') runs any action
        await pilot.press("colon")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await _palette(pilot, app, "Preset: High")
        await until(pilot, lambda: app.settings.preset == "high")
        assert file_values(cfg)["preset"] == "high" and made[0].applied[-1].preset == "high"
        await pilot.press("colon")
        await pilot.pause()
        await _palette(pilot, app, "Toggle Pro mode")
        await until(pilot, lambda: app.current_mode == "pro")
        # an action that does not apply now says so instead of failing silently
        await pilot.press("colon")
        await pilot.pause()
        await _palette(pilot, app, "Engine: start")
        await until(pilot, lambda: any("not available" in str(n.message) for n in app._notifications))
        assert len(made) == 1


async def _palette(pilot, app, title: str) -> None:
    app.screen.query_one(Input).value = title
    await until(pilot, lambda: any(title in str(o.prompt) for o in app.screen.query_one(OptionList).options))
    await pilot.press("enter")
    await pilot.pause()


# -- config editor ------------------------------------------------------------------------

async def _find(pilot, app, name: str) -> None:
    await pilot.press("slash")
    box = app.screen.query_one("#editor-find", Input)
    box.value = name
    await pilot.pause()
    await pilot.press("enter")
    await pilot.pause()
    assert app.screen.current is not None and app.screen.current.name == name


async def _submit(pilot, app, raw: str) -> str:
    await pilot.press("enter")  # edit the highlighted setting
    await pilot.pause()
    box = app.screen.query_one("#editor-value", Input)
    assert box.has_focus
    box.value = raw
    await pilot.press("enter")
    await pilot.pause()
    return app.screen.query_one("#editor-message", Static).render().plain


async def test_editor_refuses_bad_value_and_saves_good_one(cfg):
    save_config(cfg, {"ui_pro": True})
    app, made = make_app(load_settings(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running")
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ConfigEditor)
        before = cfg.read_bytes()
        await _find(pilot, app, "leverage")
        msg = await _submit(pilot, app, "abc")
        assert "refused" in msg and "expected a whole number" in msg
        msg = await _submit(pilot, app, "200")
        assert "refused" in msg and "out of range" in msg and "1..125" in msg
        assert cfg.read_bytes() == before and not made[0].applied and app.settings.leverage == 2

        msg = await _submit(pilot, app, "7")
        assert msg.startswith("✔ saved leverage = 7; applied to the running engine")
        assert "ceiling" in msg
        assert file_values(cfg)["leverage"] == 7 and made[0].applied[-1].leverage == 7
        assert (cfg.parent / "config.toml.bak").read_bytes() == before  # the atomic save kept the old file
        assert oct(cfg.stat().st_mode & 0o777) == "0o600"

        # a setting that needs a restart: marked, then f5 restarts (confirmed: positions are open)
        await _find(pilot, app, "interval")
        msg = await _submit(pilot, app, "15m")
        assert "applies on restart" in msg and file_values(cfg)["interval"] == "15m"
        assert "interval" in app.pending_restart
        banner = app.screen.query_one("#editor-banner", Static).render().plain
        assert "waiting for a restart: interval" in banner
        assert "↻!" in str(app.screen.query_one("#editor-list", OptionList).get_option("interval").prompt)
        await pilot.press("f5")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: len(made) == 2 and app.phase == "running")
        assert made[1].settings.interval == "15m" and not app.pending_restart


async def test_editor_shows_sources_masks_secrets_and_never_saves_them(cfg, monkeypatch):
    monkeypatch.setenv("ASTER_API_KEY", "KEY-abcdef123456")
    monkeypatch.setenv("ASTER_API_SECRET", "SEC-9876543210")
    monkeypatch.setenv("ASTER_LOOP_SLEEP", "15")
    save_config(cfg, {"ui_pro": True})
    settings = load_settings(cfg)
    app, _ = make_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await pilot.pause()
        # every setting of the schema is listed, under its section header
        ids = [o.id for o in app.screen.query_one("#editor-list", OptionList).options]
        assert len(ids) == len(SETTINGS) + len(SECTIONS)
        await _find(pilot, app, "loop_sleep")
        meta = app.screen.query_one("#detail-meta", Static).render().plain
        assert "default 20.0" in meta and "source env" in meta and "applies at once" in meta
        assert "protective passes" in app.screen.query_one("#detail-help", Static).render().plain
        await _find(pilot, app, "risk_per_trade")
        assert "source preset:mid" in app.screen.query_one("#detail-meta", Static).render().plain

        await _find(pilot, app, "api_key")
        lst = app.screen.query_one("#editor-list", OptionList)
        assert "***" in str(lst.get_option("api_key").prompt)
        box = app.screen.query_one("#editor-value", Input)
        assert box.disabled and box.value == ""
        await pilot.press("enter")
        await pilot.pause()
        assert "is a secret" in app.screen.query_one("#editor-message", Static).render().plain
        shot = app.export_screenshot()
        assert "KEY-abcdef123456" not in shot and "SEC-9876543210" not in shot
        await _find(pilot, app, "loglevel")
        await _submit(pilot, app, "DEBUG")
        await pilot.press("escape")  # close the editor
        await pilot.pause()
        assert isinstance(app.screen, ProScreen)
    text = cfg.read_text()
    assert "loglevel" in text and "KEY-abcdef" not in text and "SEC-98765" not in text and "api_" not in text


# -- log, feed, positions -----------------------------------------------------------------

async def test_log_pane_filters_by_level_and_text(cfg):
    save_config(cfg, {"ui_pro": True})
    app, _ = make_app(load_settings(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        log = app.screen.query_one("#log", Log)
        info = [e for e in EVENTS if e.level != "DEBUG"]
        assert len(log.lines) == len(info)
        await pilot.press("l")
        await pilot.pause()
        assert len(log.lines) == 1 and "bookTicker slow" in log.lines[0]
        await pilot.press("l", "l")  # ERROR, then DEBUG
        await pilot.pause()
        assert len(log.lines) == len(EVENTS)
        await pilot.press("slash")
        await pilot.press(*"btc")
        await pilot.pause()
        assert len(log.lines) == 2 and all("BTCUSDT" in line for line in log.lines)
        await pilot.press("enter")  # back to the log, filter kept
        await pilot.pause()
        assert log.has_focus and len(log.lines) == 2
        await pilot.press("escape")  # clears the filter
        await pilot.pause()
        assert len(log.lines) == len(EVENTS)

        # a burst larger than the view is written in one batch and stays bounded
        for i in range(LOG_MAX_LINES + 500):
            app.events.emit(Event(T0 + i, EventKind.SIGNAL_REJECTED, "DEBUG", f"burst {i}", "XRPUSDT"))
        app.refresh_views()
        assert len(log.lines) == LOG_MAX_LINES
        assert log.lines[-1].endswith(f"burst {LOG_MAX_LINES + 499}")


async def test_feed_positions_and_status_follow_the_engine(cfg):
    app, made = make_app(load_settings(cfg))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running")
        feed = app.screen.query_one(ActivityFeed)
        texts = feed.texts
        assert len(texts) == 5  # position opened/closed, fill, FastTP, warning; not the rejection or cycle
        assert not any("no_cross" in t for t in texts)
        app.events.emit(Event(T0, EventKind.BREAKER, "WARNING", "circuit breaker ON (data_stale)"))
        app.events.emit(Event(T0, EventKind.SIGNAL_REJECTED, "DEBUG", "spread", "DOGEUSDT"))
        app.refresh_views()
        texts = feed.texts
        assert len(texts) == 6 and "circuit breaker ON" in texts[-1]
        assert "circuit breaker ON" in feed.render().plain  # newest line is on screen
        # a backlog (the feed was hidden, or a storm) is summarised instead of drawn line by line
        from mraster_tui.widgets.activity import FEED_CATCHUP
        for i in range(FEED_CATCHUP + 15):
            app.events.emit(Event(T0, EventKind.WARNING, "WARNING", f"slow book {i}", "XRPUSDT"))
        app.refresh_views()
        texts = feed.texts
        assert len(texts) == 6 + 1 + FEED_CATCHUP
        assert "15 earlier events" in texts[6] and texts[-1].endswith(f"slow book {FEED_CATCHUP + 14}")

        table = app.screen.query_one(PositionsTable)
        assert table.symbols == ["BTCUSDT", "ETHUSDT"]
        table.move_cursor(row=1)
        from dataclasses import replace
        from decimal import Decimal
        btc = snapshot().positions[0]
        moved = replace(btc, mark=Decimal("67400"), upnl=Decimal("4.65"), r=0.75)
        made[0].snap = snapshot(positions=(moved, snapshot().positions[1]), cycle=43)
        writes = table.update_positions(made[0].snap.positions, made[0].snap.now_ms)
        assert writes == 3  # mark, uPnL and R of one row; nothing else rewritten
        assert table.cursor_row == 1  # never cleared
        assert str(table.get_cell("BTCUSDT", "mark")).strip() == "67400"
        made[0].snap = snapshot(positions=(moved,), cycle=43)
        app.refresh_views()
        assert table.symbols == ["BTCUSDT"]
        assert app.screen.query_one("#engine").render().plain == "● running #43"
        assert app.screen.query_one("#next").render().plain == "next 0:42"
        assert app.screen.query_one("#positions-box").border_title == "Positions 1"


# -- the TTY-loss path --------------------------------------------------------------------

def test_terminal_lost_detects_closed_tty_and_orphaning():
    master, slave = os.openpty()
    try:
        assert not terminal_lost(os.getppid(), slave)
        assert terminal_lost(os.getppid() + 1_000_000, slave)  # re-parented: the shell is gone
    finally:
        os.close(master)
        os.close(slave)
    r, w = os.pipe()
    try:
        assert terminal_lost(os.getppid(), r)  # not a terminal at all
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")
def test_closing_the_terminal_stops_the_engine_gracefully(cfg, tmp_path):
    """``mraster-tui --demo`` (the real CLI, app and demo engine) in a pty; the pty is closed.

    The kernel sends SIGHUP; the app must stop the engine (state saved) and exit 0 on its own.
    Killed by the signal, or stuck writing to the dead terminal, would both fail."""
    import pty

    data = tmp_path / "data"
    state = data / "demo" / "aster_state.json"
    env = {**os.environ, "TERM": "xterm-256color", "MRASTER_CONFIG": str(cfg), "MRASTER_DATA_DIR": str(data),
           "PYTHONPATH": str(REPO)}
    pid, master = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal
        os.execve(sys.executable, [sys.executable, "-m", "mraster_tui", "--demo"], env)
    threading.Thread(target=_drain, args=(master,), daemon=True).start()
    deadline = time.monotonic() + 60
    while not state.exists():
        assert time.monotonic() < deadline, "the demo engine did not start"
        time.sleep(0.05)
    os.close(master)  # the terminal goes away
    status = _wait(pid, 60)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"exit status {status:#x}"
    assert json.loads(state.read_text())["schema"] == "mraster.state"  # a complete, readable state file


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the app did not exit after the terminal closed")


# -- pure helpers ------------------------------------------------------------------------

def test_number_duration_and_step_helpers():
    from mraster_tui.widgets.fmt import age, countdown, money, num
    from mraster_tui.widgets.slider import grid_step

    assert [num(67012.5), num(0.00001234), num(12_345_678), num(-1234.567), num(100.0), num(None)] == [
        "67012.5", "1.23e-5", "12.35M", "-1234.6", "100", "—"]
    assert money(1.9276, signed=True) == "+1.93" and money(-0.115304) == "-0.12"
    assert [age(45_000), age(12 * 60_000), age(3 * 3_600_000 + 5 * 60_000), age(30 * 3_600_000),
            age(80 * 3_600_000)] == ["45s", "12m", "3h05", "30h", "3d"]
    assert [countdown(42_000), countdown(1), countdown(0), countdown(None)] == ["0:42", "0:01", "now", "—"]
    risk = {"step": 0.0025, "minimum": 0.0025, "maximum": 0.05}
    assert grid_step(0.007, 1, **risk) == 0.0075 and grid_step(0.007, -1, **risk) == 0.005  # off-grid snaps
    assert grid_step(0.01, 1, **risk) == 0.0125 and grid_step(0.05, 1, **risk) == 0.05
    assert grid_step(0.0025, -3, **risk) == 0.0025
    assert grid_step(12, -1, step=1, minimum=1, maximum=5) == 5  # a Pro leverage comes back into range


def test_bandit_panels_render_the_policy_stats():
    from mraster_tui.widgets.bandit import policy_markup, recent_markup, why_not_markup
    from tests._tui_fakes import BANDIT

    text = Content.from_markup(policy_markup(BANDIT)).plain
    assert "gate:TAKE   14     9  +0.21  +0.64" in text  # pulls, learning updates, mean reward, UCB
    assert "buckets  S 6  M 5  L 3" in text and "warming up 9/40 trades" in text
    assert "conf 0.00 (needs 0.22)" in text and "57 decisions · 14 taken · 2 open" in text
    why = Content.from_markup(why_not_markup({"spread": 12, "no_cross": 311, "edge_r": 40})).plain
    assert why == "why not traded no_cross 311  edge_r 40  spread 12"
    recent = Content.from_markup(recent_markup(BANDIT)).plain.splitlines()
    assert recent[0].startswith("23:55 ETHUSDT   SKIP S") and "gate_skip" in recent[1]
    assert recent[4].startswith("23:45 SOLUSDT   TAKE S +1.21R")
    assert "no policy statistics" in policy_markup({})


# -- the event buffer -----------------------------------------------------------------------

def test_event_buffer_is_bounded_and_tells_readers_what_they_missed():
    buf = EventBuffer(maxlen=100)
    seq, events, missed = buf.since(0)
    assert (seq, events, missed) == (0, [], 0)
    for i in range(250):
        buf.emit(Event(i, EventKind.NOTICE, "INFO", str(i)))
    seq, events, missed = buf.since(0)
    assert seq == 250 and len(events) == 100 and missed == 150 and events[0].message == "150"
    seq2, events2, missed2 = buf.since(240)
    assert [e.message for e in events2] == [str(i) for i in range(240, 250)] and missed2 == 0
    _, limited, missed3 = buf.since(240, limit=3)
    assert [e.message for e in limited] == ["247", "248", "249"] and missed3 == 7

    threads = [threading.Thread(target=lambda: [buf.emit(Event(0, EventKind.NOTICE, "INFO", "x"))
                                                for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert buf.seq == 250 + 4000 and len(buf.snapshot()) == 100


# -- the real engine on the offline demo market -------------------------------------------

async def test_real_demo_run_shows_positions_and_bandit_stats_updating(cfg):
    """The real EngineController (demo market, offline, accelerated clock) under the App.

    Entry filters are opened wide so the synthetic market trades within a few candles."""
    settings = load_settings(cfg).replace(
        ui_pro=True, min_edge_r=-10.0, rsi_buy_min=0.0, rsi_sell_max=100.0, spread_bps_max=1.0, wickiness_max=1.0,
        funding_filter_enabled=False, demo_speed=1000.0)
    app = MrAsterApp(settings, demo=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.phase == "running" and app.last_snapshot.cycle >= 1, timeout=60)
        table = app.screen.query_one(PositionsTable)
        policy = app.screen.query_one("#policy", Static)
        await until(pilot, lambda: table.row_count > 0, timeout=60)
        snap = app.last_snapshot
        assert snap.mode == "DEMO" and snap.bandit["decisions"] >= 1
        assert set(table.symbols) == {p.symbol for p in snap.positions}
        first_text = policy.render().plain
        assert "gate:TAKE" in first_text and f"{snap.bandit['decisions']} decisions" in first_text
        cycle, decisions = snap.cycle, snap.bandit["decisions"]
        await until(pilot, lambda: app.last_snapshot.cycle >= cycle + 2
                    and app.last_snapshot.bandit["decisions"] > decisions, timeout=60)
        app.refresh_views()
        assert policy.render().plain != first_text
        status = app.screen.query_one("#engine").render().plain
        assert status.startswith("● running #") and int(status.split("#")[1]) >= cycle + 2
        assert app.screen.query_one("#log", Log).lines  # the engine's events reached the log
        await pilot.press("q")
        await until(pilot, lambda: not app.engine_active, timeout=30)
    stopped = [e.message for e in app.events.snapshot() if e.kind == EventKind.ENGINE]
    assert any("stopped" in m for m in stopped), stopped


def test_preset_screen_bandit_digest_markup():
    from textual.content import Content

    from mraster_tui.widgets.bandit import summary_markup

    stats = {"decisions": 12, "taken": 5, "bucket_usage": {"S": 3, "M": 1, "L": 1},
             "arms": [{"model": "gate", "arm": "TAKE", "ucb": 0.42}],
             "alpha": {"enabled": True, "ready": False, "trained": 5, "warmup": 40}}
    text = Content.from_markup(summary_markup(stats, {"edge_r": 9, "rsi": 4, "spread": 1, "htf_trend": 2})).plain
    first, second = text.splitlines()
    assert first == "12 decisions · 5 taken · buckets S 3  M 1  L 1 · TAKE ucb +0.42"
    assert second == "alpha warming up 5/40 · not traded: edge_r 9  rsi 4  htf_trend 2"
    assert Content.from_markup(summary_markup({}, {})).plain == "no policy statistics yet"
