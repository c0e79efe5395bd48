"""Chaos 7: the API key and secret appear nowhere, over whole runs that go wrong in every way.

Fresh random credentials (64 letters and digits, so any leak is unmistakable) are used for:

* a live trading run of the real bot (JSON logs at DEBUG) during which the venue drops order
  answers, answers 5xx and HTML, rate-limits and bans: its stdout and stderr, and every file it
  leaves (state, backup, decision log, lock) are scanned;
* runs that fail on the credentials themselves (a wrong secret: -1022; an unknown key: -2015)
  in text format, ``mraster-tui doctor`` and ``mraster-tui config show``: their output is
  scanned (this is where exception texts end up);
* the TUI, running the real engine live against the same exchange, driven with Pilot through
  every screen (preset, pro with the log, settings editor, help, command palette) while the
  venue fails: every ``export_screenshot()`` is scanned.

A leak is the full key or secret, or any 12 consecutive characters of either, or a request
signature (``signature=<hex>``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from chaos_harness import REPO, Bot, make_keys, trading_bot
from mraster_tui.engine.sim.server import LoopbackProcess

pytestmark = pytest.mark.timeout(120)

SIGNATURE = re.compile(r"signature=[0-9a-fA-F]{16,}")


def _needles(*secrets: str) -> list[str]:
    out = []
    for s in secrets:
        out += [s[i:i + 12] for i in range(0, len(s) - 11, 4)]
    return out


def leaks(text: str, *secrets: str) -> list[str]:
    found = [n for n in _needles(*secrets) if n in text]
    return found + SIGNATURE.findall(text)


def scan_tree(root: Path, *secrets: str) -> dict[str, list[str]]:
    """Every file under ``root`` -> what leaked in it (only files with a leak)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            hit = leaks(p.read_bytes().decode("latin-1"), *secrets)
            if hit:
                out[str(p.relative_to(root))] = hit
    return out


def test_the_scanner_finds_a_leak(tmp_path) -> None:
    """A scan that cannot find anything proves nothing: plant each kind of leak once."""
    key, secret = make_keys(70)
    (tmp_path / "a.log").write_text(f"x {secret[20:40]} y")
    (tmp_path / "b.json").write_text('{"q": "symbol=BTCUSDT&signature=' + "ab" * 32 + '"}')
    (tmp_path / "c.txt").write_text(key)
    assert set(scan_tree(tmp_path, key, secret)) == {"a.log", "b.json", "c.txt"}


def test_no_secret_in_logs_state_decision_log_or_errors(bots, tmp_path) -> None:
    key, secret = make_keys(7)
    # the exchange in its own process this time (``mraster-tui sim-exchange``): its output is scanned too
    ex = LoopbackProcess(["--symbols", "12", "--seed", "7", "--speed", "60", "--api-key", key, "--api-secret", secret],
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    drained: list[str] = []  # read as it comes: a full pipe would stall the exchange
    readers = [threading.Thread(target=lambda st=st: drained.append(st.read()), daemon=True)
               for st in (ex.proc.stdout, ex.proc.stderr)]
    for t in readers:
        t.start()
    with ex:
        home = tmp_path / "live"
        bot = trading_bot(ex, home, key, secret, bots, speed=60.0, settings={"ASTER_HTTP_TIMEOUT": "1"})
        ex.control(faults=[
            {"kind": "drop", "method": "POST", "path": ["/fapi/v1/order", "/fapi/v1/algoOrder"], "count": 2},
            {"kind": "unknown", "method": "POST", "path": "/fapi/v1/algoOrder", "count": 2},
            {"kind": "error", "status": 503, "path": "/fapi/v2/positionRisk", "count": 3},
            {"kind": "garbage", "body": "garbage", "path": "/fapi/v1/klines", "count": 5},
            {"kind": "garbage", "body": "html", "status": 502, "path": "/fapi/v1/openOrders", "count": 3},
            {"kind": "429", "count": 1, "retry_after": 1},
        ])
        time.sleep(2.5)
        ex.control(faults=[{"kind": "418", "count": 1, "retry_after": 1}])
        time.sleep(2.0)
        assert bot.terminate() == 0, bot.tail()
        outputs = {"live stdout": bot.stdout, "live stderr": bot.stderr}
        assert bot.events("position_opened") and bot.events("error"), "the run neither traded nor failed"
        _more_runs(ex, key, secret, bots, tmp_path, outputs)
        assert ex.terminate() == 0
        for t in readers:
            t.join(10)
        outputs["exchange output"] = "".join(drained)
    wrong_secret, unknown_key = make_keys(71)[1], make_keys(72)[0]
    found = {where: hit for where, text in outputs.items()
             if (hit := leaks(text, key, secret, wrong_secret, unknown_key))}
    assert not found, f"credentials leaked: {found}"
    files = [p.name for p in (home / "data").iterdir()]
    assert {"aster_state.json", "aster_state.json.bak", "decisions.jsonl"} <= set(files), files
    assert not scan_tree(tmp_path, key, secret, wrong_secret, unknown_key)


def _more_runs(ex, key: str, secret: str, bots: list, tmp_path: Path, outputs: dict[str, str]) -> None:
    """The same credentials failing, in text format (a wrong secret, an unknown key), then
    ``doctor`` and ``config show``: their output goes into ``outputs``."""
    wrong_secret, unknown_key = make_keys(71)[1], make_keys(72)[0]
    for name, k, s, code in (("wrong secret", key, wrong_secret, "-1022"), ("unknown key", unknown_key, secret, "-2015")):
        b = Bot(ex.base_url, tmp_path / name.replace(" ", "-"), k, s, args=("--no-ui", "--live", "--run-once"),
                settings={"ASTER_LOG_FORMAT": "text"}, log_level="DEBUG")
        bots.append(b)
        rc = b.wait(30)
        outputs[f"{name} stdout"], outputs[f"{name} stderr"] = b.stdout, b.stderr
        assert f"code {code}" in b.stdout + b.stderr, b.tail()  # the venue's error text was reported
        assert rc == 1, b.tail()  # a refused key is a failed run (a scheduler must see it)
        assert "Traceback" not in b.stderr
    for args in (("doctor",), ("config", "show")):
        b = Bot(ex.base_url, tmp_path / args[0], key, secret, args=args)
        bots.append(b)
        b.wait(30)
        outputs[" ".join(args)] = b.stdout + b.stderr
    assert "ok" in outputs["doctor"] and "ASTER_API_SECRET" in outputs["config show"]


async def test_no_secret_in_tui_snapshots(loopback, tmp_path, monkeypatch) -> None:
    from textual.widgets import Input

    from mraster_tui.app import MrAsterApp
    from mraster_tui.config import load_settings

    key, secret = make_keys(77)
    ex = loopback(synthetic=12, seed=8, api_key=key, api_secret=secret)
    env = {"ASTER_API_KEY": key, "ASTER_API_SECRET": secret, "ASTER_EXCHANGE_BASE": ex.base_url,
           "ASTER_PAPER": "false", "ASTER_LOGLEVEL": "DEBUG", "ASTER_GUARD_INTERVAL_SEC": "1",
           "ASTER_LOOP_SLEEP": "1", "ASTER_INCLUDE_SYMBOLS": "", "ASTER_RSI_BUY_MIN": "0",
           "ASTER_RSI_SELL_MAX": "100", "ASTER_MIN_EDGE_R": "-10", "ASTER_BANDIT_ENABLED": "false",
           "ASTER_INTERVAL": "1m", "ASTER_HTF_INTERVAL": "5m", "ASTER_KLINES": "150"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()  # $MRASTER_CONFIG: a fresh per-test location (tests/conftest.py)
    assert settings.live_trading
    app = MrAsterApp(settings)
    shots: dict[str, str] = {}

    async def until(pilot, cond, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < end, "the TUI did not get there in time"
            await pilot.pause(0.05)

    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press(*"LIVE", "enter")  # the typed confirmation of live trading
        await until(pilot, lambda: app.phase == "running" and app.last_snapshot.positions, 20)
        # failing until the screenshots are taken: errors in the log, the breaker in the status bar
        ex.control(faults=[{"kind": "418", "count": 1, "retry_after": 1},
                           {"kind": "error", "status": 503, "path": "/fapi/v2/positionRisk"},
                           {"kind": "garbage", "body": "html", "path": "/fapi/v1/ticker/bookTicker"}])
        await until(pilot, lambda: "guard_failures" in app.last_snapshot.breaker_reasons, 15)
        shots["preset"] = app.export_screenshot()
        await pilot.press("p")
        await pilot.pause(0.3)
        shots["pro"] = app.export_screenshot()
        await pilot.press("slash", *"could not", "enter")  # the log, filtered on the failures
        await pilot.pause(0.3)
        shots["pro log"] = app.export_screenshot()
        await pilot.press("escape")
        await pilot.press("e")
        await pilot.pause(0.3)
        for name in ("api_key", "api_secret", "exchange_base"):
            await pilot.press("slash")
            app.screen.query_one("#editor-find", Input).value = name
            await pilot.pause(0.1)
            await pilot.press("enter")
            await pilot.pause(0.1)
            await pilot.press("enter")  # try to edit it
            await pilot.pause(0.1)
            shots[f"editor {name}"] = app.export_screenshot()
        await pilot.press("escape", "escape")
        await pilot.pause(0.2)
        await pilot.press("question_mark")
        await pilot.pause(0.2)
        shots["help"] = app.export_screenshot()
        await pilot.press("escape", "colon")
        await pilot.pause(0.2)
        shots["palette"] = app.export_screenshot()
        ex.control(clear_faults=True)
        await pilot.press("escape", "q")
        await until(pilot, lambda: not app.engine_active, 15)
    # the SVG as is, and its text with the markup removed (a leak split over styled runs)
    plain = {name: re.sub(r"<[^>]+>", "", shot).replace("&#160;", " ") for name, shot in shots.items()}
    found = {name: hit for name, shot in [*shots.items(), *plain.items()] if (hit := leaks(shot, key, secret))}
    assert not found, f"credentials in TUI screenshots: {found}"
    assert "LIVE" in plain["preset"] and "api_secret" in plain["editor api_secret"]
    assert "could not be read" in plain["pro log"] and "guard_failures" in plain["preset"], \
        "the screens never showed the errors: the snapshots prove little"
    data = Path(os.environ["MRASTER_DATA_DIR"])
    assert not scan_tree(data, key, secret)
