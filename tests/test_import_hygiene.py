"""The engine, the config code and the headless path never import textual (or rich widgets)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import mraster_tui.engine

REPO = Path(__file__).resolve().parents[1]


def _engine_modules() -> list[str]:
    mods = ["mraster_tui.engine", "mraster_tui.config", "mraster_tui.cli", "mraster_tui.fsutil"]
    for m in pkgutil.walk_packages(mraster_tui.engine.__path__, "mraster_tui.engine."):
        mods.append(m.name)
    for extra in ("mraster_tui.headless", "mraster_tui.backtest_cli"):
        if (REPO / (extra.replace(".", "/") + ".py")).exists():
            mods.append(extra)
    return mods


def test_engine_and_config_do_not_import_textual():
    mods = _engine_modules()
    assert "mraster_tui.engine.types" in mods  # the walk really found the engine modules
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k == 'textual' or k.startswith('textual.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"textual imported by the engine/config: {out.stdout}"


def test_cli_config_command_does_not_import_textual():
    code = (
        "import sys\n"
        "from mraster_tui.cli import main\n"
        "main(['config', 'show', '--json'])\n"
        "assert not any(k == 'textual' or k.startswith('textual.') for k in sys.modules), 'textual imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
