"""``mraster-tui doctor`` against the loopback exchange."""

from __future__ import annotations

import argparse
import socket

import pytest
from _venue_fixtures import HEX64, TEST_API_KEY, TEST_API_SECRET, closing, fast_settings, reset_server, start_server

from mraster_tui.engine.venue import doctor

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def srv_module():
    yield from closing(start_server("binance", symbols=4))


@pytest.fixture
def srv(srv_module):
    reset_server(srv_module)
    return srv_module


def settings_for(url: str, key: str = TEST_API_KEY, secret: str = TEST_API_SECRET, **kw):
    return fast_settings(exchange_base=url, api_key=key, api_secret=secret, klines=120, **kw)


async def run(settings, **kw) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await doctor.run_doctor(settings, out=lines.append, **kw)
    return code, lines


def check_lines(lines: list[str]) -> dict[str, str]:
    """{check name: status} from the doctor's output."""
    out = {}
    for line in lines[:-1]:
        status, _, rest = line.partition("  ")
        out[rest.split(":", 1)[0].strip()] = status.strip()
    return out


def assert_no_secret(lines: list[str], *secrets: str) -> None:
    text = "\n".join(lines)
    for s in secrets:
        assert s not in text
    assert not HEX64.search(text)


async def test_all_checks_pass(srv) -> None:
    code, lines = await run(settings_for(srv.base_url))
    assert code == 0, lines
    assert check_lines(lines) == {"reachability": "ok", "venue": "ok", "exchange info": "ok", "API key": "ok",
                                  "permissions": "ok", "rate limit": "ok", "klines": "ok"}
    text = "\n".join(lines)
    assert "binance" in text and "algo-order endpoints" in text
    assert "USDT wallet 10000" in text and "trading allowed" in text
    assert "BTCUSDT 5m x120" in text
    assert lines[-1] == "doctor: all checks passed"
    assert_no_secret(lines, TEST_API_KEY, TEST_API_SECRET)
    # it really signed a request
    assert any(r["signed"] and r["path"] == "/fapi/v2/balance" and r["status"] == 200 for r in srv.requests())


async def test_wrong_secret_fails_with_a_plain_line(srv) -> None:
    wrong = "9" * 64
    code, lines = await run(settings_for(srv.base_url, secret=wrong))
    assert code == 1
    assert check_lines(lines)["API key"] == "FAIL"
    assert any("the API secret does not match the key" in ln for ln in lines)
    assert lines[-1] == "doctor: 1 check(s) failed"
    assert_no_secret(lines, TEST_API_KEY, wrong)


async def test_unknown_key(srv) -> None:
    code, lines = await run(settings_for(srv.base_url, key="B" * 64))
    assert code == 1
    assert any("rejected the API key" in ln for ln in lines)


async def test_missing_key_fails_unless_public(srv) -> None:
    code, lines = await run(settings_for(srv.base_url, key="", secret=""))
    assert code == 1 and check_lines(lines)["API key"] == "FAIL"
    code, lines = await run(settings_for(srv.base_url, key="", secret=""), require_key=False)
    assert code == 0 and "skipped" in "\n".join(lines)
    assert not any(r["signed"] for r in srv.requests())


async def test_clock_far_off_fails(srv) -> None:
    srv.control(skew_ms=4000)  # more than half of the 5000 ms recvWindow
    code, lines = await run(settings_for(srv.base_url))
    assert code == 1 and check_lines(lines)["reachability"] == "FAIL"
    assert any("synchronise this machine's clock" in ln for ln in lines)


async def test_unreachable_venue() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, lines = await run(settings_for(f"http://127.0.0.1:{port}", http_retries=0))
    assert code == 1
    assert lines[0].startswith("FAIL  reachability: cannot reach http://127.0.0.1:")
    assert lines[-1] == "doctor: 1 check(s) failed"


def test_cli_parser_and_run(srv, monkeypatch) -> None:
    monkeypatch.setenv("ASTER_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("ASTER_API_SECRET", TEST_API_SECRET)
    monkeypatch.setenv("ASTER_KLINES", "120")
    parser = argparse.ArgumentParser(prog="mraster-tui")
    sub = parser.add_subparsers()
    doctor.add_parser(sub)
    args = parser.parse_args(["doctor", "--base-url", srv.base_url, "--venue", "binance"])
    assert args.run is doctor.run
    assert doctor.run(args) == 0
    bad = parser.parse_args(["doctor", "--config", "/nonexistent/config.toml"])
    assert doctor.run(bad) == 2
