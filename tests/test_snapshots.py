"""Screenshots of the app compared with the reviewed SVGs in tests/__snapshots__/.

Deterministic by construction: a fixed engine snapshot and event list (tests._tui_fakes), a
made-up fixed config path, a frozen monotonic clock (the scan countdown), no cursor blink.
Regenerate after a reviewed UI change with ``pytest tests/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from mraster_tui.app import MrAsterApp
from tests._tui_fakes import FakeController, filled_buffer, mid_settings

CONFIG = Path("/home/trader/.config/mraster-tui/config.toml")


@pytest.fixture(autouse=True)
def _no_cursor_blink(monkeypatch):
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)


def _app(**changes) -> MrAsterApp:
    return MrAsterApp(mid_settings(CONFIG, paper=True, **changes), demo=True,
                      controller_factory=lambda s, sink: FakeController(s, sink), events=filled_buffer(),
                      monotonic=lambda: 0.0)


async def _running(pilot) -> None:
    """Wait until the engine worker runs, and render once more."""
    app = pilot.app
    for _ in range(250):
        if app.phase == "running":
            break
        await pilot.pause(0.02)
    assert app.phase == "running"
    app.refresh_views()
    await pilot.pause()


def test_preset_screen(snap_compare):
    assert snap_compare(_app(), terminal_size=(100, 30), run_before=_running)


def test_preset_screen_80x24(snap_compare):
    assert snap_compare(_app(), terminal_size=(80, 24), run_before=_running)


def test_pro_screen(snap_compare):
    assert snap_compare(_app(ui_pro=True), terminal_size=(100, 30), run_before=_running)


def test_config_editor(snap_compare):
    assert snap_compare(_app(ui_pro=True), press=["e", "down", "down", "down", "down", "down"],
                        terminal_size=(100, 30), run_before=_running)


def test_help_screen(snap_compare):
    assert snap_compare(_app(), press=["question_mark"], terminal_size=(100, 30), run_before=_running)
