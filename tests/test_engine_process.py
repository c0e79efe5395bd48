"""The engine as real processes: ``python -m mraster_tui --no-ui`` against the loopback exchange
started as a subprocess (kill -9 mid-trade, restart, adoption, SIGTERM), and the offline demo."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from _engine_fixtures import CALM, SYMBOL, crafted_series, t0_for_start, write_freqtrade_json
from mraster_tui.engine.sim.server import TEST_API_KEY, TEST_API_SECRET, LoopbackProcess
from mraster_tui.engine.venue.rest import RestExchange

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


class Proc:
    """A child process whose stdout lines are collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "mraster_tui", *args], cwd=REPO, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self._q.put(line)

    def wait_for(self, pred, timeout: float = 30.0) -> dict:
        """The first JSON event (from now on, or already seen) for which ``pred`` is true."""
        end = time.monotonic() + timeout
        for line in self.lines:
            ev = json.loads(line)
            if pred(ev):
                return ev
        while time.monotonic() < end:
            try:
                line = self._q.get(timeout=0.1)
            except queue.Empty:
                if self.p.poll() is not None and self._q.empty():
                    break
                continue
            self.lines.append(line)
            ev = json.loads(line)
            if pred(ev):
                return ev
        raise AssertionError(f"event not seen; rc={self.p.poll()} stderr={self.stderr()!r} "
                             f"last lines={self.lines[-5:]!r}")

    def stderr(self) -> str:
        if self.p.poll() is None:
            return ""
        return self.p.stderr.read()

    def drain(self) -> None:
        self._t.join(5)
        while not self._q.empty():
            self.lines.append(self._q.get())

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        for s in (self.p.stdout, self.p.stderr):
            s.close()


def _engine_env(base: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ASTER_EXCHANGE_BASE": base, "ASTER_VENUE": "binance", "ASTER_API_KEY": TEST_API_KEY,
        "ASTER_API_SECRET": TEST_API_SECRET, "ASTER_PAPER": "false", "ASTER_KLINES": "120",
        "ASTER_INCLUDE_SYMBOLS": "", "ASTER_GUARD_INTERVAL_SEC": "1", "ASTER_BANDIT_ENABLED": "false",
        "ASTER_LOG_FORMAT": "json", "ASTER_LOGLEVEL": "INFO", "ASTER_DECISION_LOG": "",
        "ASTER_HTTP_RETRIES": "1", "ASTER_HTTP_BACKOFF": "0.05", "MRASTER_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(REPO),
    })
    env.update(extra)
    return env


def _rest(base: str) -> RestExchange:
    return RestExchange(base, api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, venue="binance")


async def _venue_view(base: str) -> tuple[list, list]:
    rest = _rest(base)
    try:
        return await rest.positions(), await rest.open_orders(SYMBOL)
    finally:
        await rest.close()


async def _cancel_all(base: str) -> None:
    rest = _rest(base)
    try:
        await rest.cancel_all(SYMBOL)
    finally:
        await rest.close()


def _legs(orders) -> list[str]:
    return sorted(o.type.value for o in orders)


async def test_kill_9_mid_trade_then_restart_protects_and_adopts_and_sigterm_saves(tmp_path):
    start = int(time.time() * 1000)
    files = write_freqtrade_json(crafted_series("hold", t0_for_start(start)), tmp_path)
    data_dir = tmp_path / "data"
    state = data_dir / "aster_state.json"
    with LoopbackProcess(["--venue", "binance", "--data", *map(str, files), "--start-ms", str(start)],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}) as server:
        env = _engine_env(server.base_url, data_dir)
        # 1. the engine opens a long with its brackets
        a = Proc(["--no-ui", "--live"], env)
        try:
            opened = a.wait_for(lambda e: e["event"] == "position_opened")
            assert opened["symbol"] == SYMBOL
            a.wait_for(lambda e: e["event"] == "bracket_placed" and e.get("leg") == "take_profit")
            # a second engine on the same state file refuses to start, with one clear line
            b = subprocess.run([sys.executable, "-m", "mraster_tui", "--no-ui", "--live"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=60)
            assert b.returncode == 1 and "another mraster-tui engine" in b.stderr
            assert len(b.stderr.strip().splitlines()) == 1 and "Traceback" not in b.stderr
            # 2. kill -9; the brackets vanish while nobody watches
            a.p.send_signal(signal.SIGKILL)
            a.p.wait(10)
        finally:
            a.close()
        saved = json.loads(state.read_text())
        trade_no = saved["live"][SYMBOL]["trade_no"]
        await _cancel_all(server.base_url)
        positions, orders = await _venue_view(server.base_url)
        assert [p.symbol for p in positions] == [SYMBOL] and orders == []

        # 3. restart with the state intact: the known trade gets both legs back within one guard interval
        c = Proc(["--no-ui", "--live"], env)
        try:
            c.wait_for(lambda e: e["event"] == "engine")
            t_started = time.monotonic()
            c.wait_for(lambda e: e["event"] == "bracket_repaired" and "take-profit" in e["msg"], timeout=10)
            assert time.monotonic() - t_started < 3.0
            positions, orders = await _venue_view(server.base_url)
            assert _legs(orders) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"] and len(positions) == 1
            assert not any(json.loads(x)["event"] == "position_adopted" for x in c.lines)
            assert not any(json.loads(x)["event"] == "position_opened" for x in c.lines)  # no second entry
            c.p.send_signal(signal.SIGKILL)
            c.p.wait(10)
        finally:
            c.close()
        assert json.loads(state.read_text())["live"][SYMBOL]["trade_no"] == trade_no

        # 4. kill -9 again, and this time the state file is lost too: the position is adopted
        await _cancel_all(server.base_url)
        for p in data_dir.glob("aster_state.json*"):
            if not p.name.endswith(".lock"):
                p.unlink()
        d = Proc(["--no-ui", "--live"], env)
        try:
            adopted = d.wait_for(lambda e: e["event"] == "position_adopted")
            assert adopted["symbol"] == SYMBOL and adopted["level"] == "WARNING"
            d.wait_for(lambda e: e["event"] == "bracket_repaired" and "take-profit" in e["msg"], timeout=10)
            positions, orders = await _venue_view(server.base_url)
            assert _legs(orders) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
            stop = next(o for o in orders if o.type.value == "STOP_MARKET")
            assert stop.stop_price < positions[0].entry_price  # a long's stop, below the entry
            # 5. SIGTERM: finish the step, save, leave the brackets, exit 0 within a few seconds
            t0 = time.monotonic()
            d.p.send_signal(signal.SIGTERM)
            assert d.p.wait(15) == 0
            assert time.monotonic() - t0 < 5.0
            d.drain()
            assert json.loads(d.lines[-1])["event"] == "engine" and "stopped" in json.loads(d.lines[-1])["msg"]
        finally:
            d.close()
        saved = json.loads(state.read_text())
        assert saved["live"][SYMBOL]["adopted"] is True
        positions, orders = await _venue_view(server.base_url)
        assert len(positions) == 1 and _legs(orders) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]  # left on the venue
        assert CALM not in saved["live"]


def test_demo_run_once_completes_offline_and_prints_json_lines(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), MRASTER_DATA_DIR=str(tmp_path / "data"),
               ASTER_EXCHANGE_BASE="http://127.0.0.1:9")  # unreachable: the demo must not need it
    out = subprocess.run([sys.executable, "-m", "mraster_tui", "--no-ui", "--demo", "--run-once", "--log-format",
                          "json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert all({"ts", "level", "event", "msg"} <= set(e) for e in events)
    cycles = [e for e in events if e["event"] == "cycle"]
    assert len(cycles) == 1 and cycles[0]["scanned"] >= 1
    assert sum(cycles[0]["rejected"].values()) + cycles[0]["decisions"]["taken"] >= 1  # signals were computed
    assert "history" not in cycles[0]["rejected"]  # indicators are warm
    assert events[-1]["event"] == "engine" and "stopped" in events[-1]["msg"]
    assert "textual" not in out.stderr


def test_sigterm_exits_0_with_the_state_saved(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), MRASTER_DATA_DIR=str(tmp_path / "data"), ASTER_DEMO_SPEED="60")
    p = Proc(["--no-ui", "--demo", "--log-format", "json"], env)
    try:
        p.wait_for(lambda e: e["event"] == "cycle", timeout=60)
        p.p.send_signal(signal.SIGTERM)
        assert p.p.wait(15) == 0
        p.drain()
    finally:
        p.close()
    state = json.loads((tmp_path / "data" / "demo" / "aster_state.json").read_text())
    assert state["schema"] == "mraster.state" and state["decision_stats"]["rejected_total"] >= 1
    assert json.loads(p.lines[-1])["msg"].startswith("engine stopped")
    assert Decimal(str(state["equity_curve"][-1][1])) > 0
