"""Settings schema, precedence, presets, bad input and atomic saving."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from mraster_tui.cli import main
from mraster_tui.config import (
    BY_ENV,
    SETTINGS,
    ConfigError,
    Settings,
    load_settings,
    preset_values,
    save_config,
)
from mraster_tui.config.schema import PRESET_LEVERAGE_MAX

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "seed" / "MrAster-README.md"


def _seed_table() -> dict[str, str]:
    """env name -> default text, from both tables of the seed README."""
    if not SEED.exists():
        pytest.skip(f"seed README not available ({SEED})")
    rows: dict[str, str] = {}
    for line in SEED.read_text().splitlines():
        m = re.match(r"\|\s*`([A-Z_0-9]+)`(?:\s*/\s*`([A-Z_0-9]+)`)?\s*\|(.*)\|\s*$", line)
        if not m:
            continue
        cells = [c.strip() for c in m.group(3).split("|")]
        # table 1: | var | description | default | ; table 2: | var | default | purpose |
        default = cells[-1] if len(cells) == 2 and not cells[0].startswith("`") else cells[0]
        for name in filter(None, (m.group(1), m.group(2))):
            rows.setdefault(name, default.strip("`"))
    return rows


# -- schema ------------------------------------------------------------------------------

def test_every_seed_variable_is_in_the_schema_with_its_default(capsys):
    seed = _seed_table()
    assert len(seed) >= 50
    assert main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    for env, default in seed.items():
        assert env in BY_ENV, env
        assert env in shown, env
        s = BY_ENV[env]
        if s.secret:
            assert shown[env] == ""  # empty by default, masked when set
            continue
        if default in ("empty",):
            assert shown[env] in ("", None)
        elif env == "ASTER_INCLUDE_SYMBOLS":  # seed shows "BTCUSDT,…" (a truncated list)
            assert shown[env].startswith("BTCUSDT,")
        elif env == "ASTER_LOGLEVEL":  # the seed's two tables disagree (INFO / DEBUG)
            assert shown[env] in ("INFO", "DEBUG")
        elif s.type in ("float", "int"):
            assert float(shown[env]) == pytest.approx(float(default)), env
        elif s.type == "bool":
            assert shown[env] is (default == "true"), env
        else:
            assert str(shown[env]) == default, env


def test_schema_entries_are_complete():
    for s in SETTINGS:
        assert s.help and s.section and s.type
        assert s.env.startswith(("ASTER_", "FAST_TP_", "FASTTP_"))
        if s.choices:
            assert s.default in s.choices, s.env
        if s.min is not None:
            assert s.default >= s.min, s.env
        if s.max is not None:
            assert s.default <= s.max, s.env
    assert BY_ENV["ASTER_API_KEY"].secret and BY_ENV["ASTER_API_SECRET"].secret
    assert "FRACTION" in BY_ENV["ASTER_SPREAD_BPS_MAX"].help
    assert BY_ENV["ASTER_VENUE"].choices == ("auto", "binance", "aster")


# -- precedence ----------------------------------------------------------------------------

def test_precedence_defaults_preset_file_dotenv_env_cli(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[run]\npreset = "low"\n[risk]\nleverage = 2\nsl_atr_mult = 1.5\nmax_notional_usdt = 500\n'
                   '[strategy]\nrsi_buy_min = 60\n')
    (tmp_path / ".env").write_text("ASTER_RSI_BUY_MIN=61\nASTER_MIN_EDGE_R=0.2\nexport ASTER_KLINES='400'\n")
    env = {"ASTER_RSI_BUY_MIN": "62", "ASTER_MIN_EDGE_R": "0.3"}
    s = load_settings(cfg, environ=env, cwd=tmp_path, cli={"min_edge_r": "0.4"})
    assert s.risk_per_trade == 0.005 and s.source("risk_per_trade") == "preset:low"
    assert s.leverage == 2 and s.source("leverage") == f"file:{cfg}"  # file beats preset
    assert s.max_notional_usdt == 500
    assert s.klines == 400 and s.source("klines") == ".env"
    assert s.rsi_buy_min == 62 and s.source("rsi_buy_min") == "env"  # env beats .env beats file
    assert s.min_edge_r == 0.4 and s.source("min_edge_r") == "cli"
    assert s.wickiness_max == 0.985 and s.source("wickiness_max") == "default"


def test_config_show_reports_sources(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[risk]\nleverage = 2\n")
    monkeypatch.setenv("ASTER_KLINES", "500")
    assert main(["config", "--config", str(cfg), "show"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"ASTER_LEVERAGE\s+2\s+\(file:{re.escape(str(cfg))}\)", out)
    assert re.search(r"ASTER_KLINES\s+500\s+\(env\)", out)
    assert re.search(r"ASTER_RSI_BUY_MIN\s+51.0\s+\(default\)", out)


def test_presets_apply_the_table():
    table = {
        "low": (0.005, 1, 1.1, 1.8, 0.18, -0.0007, -0.0014, 0.20, 60, 0.9, 0.9, 1.15, 1.35, 0.22, 1),
        "mid": (0.01, 2, 1.3, 2.0, 0.25, -0.0010, -0.0020, 0.25, 45, 1.0, 1.0, 1.4, 1.9, 0.28, 2),
        "high": (0.02, 4, 1.7, 2.6, 0.32, -0.0013, -0.0026, 0.30, 30, 1.2, 1.2, 1.6, 2.2, 0.34, 3),
    }
    keys = ("risk_per_trade", "leverage", "sl_atr_mult", "tp_atr_mult", "fasttp_min_r", "fast_tp_ret1",
            "fast_tp_ret3", "fasttp_snap_atr", "fasttp_cooldown_s", "size_mult", "size_mult_s", "size_mult_m",
            "size_mult_l", "equity_fraction", "max_open_global")
    for name, want in table.items():
        s = load_settings(None, environ={}, cli={"preset": name}, use_dotenv=False)
        got = tuple(getattr(s, k) for k in keys)
        assert got == pytest.approx(want), name
        assert s.leverage <= PRESET_LEVERAGE_MAX
        assert set(preset_values(name)) >= set(keys)
    # without a preset the seed defaults stand
    s = load_settings(None, environ={}, use_dotenv=False)
    assert (s.risk_per_trade, s.leverage, s.preset) == (0.007, 3, "none")


# -- bad input: one line, exit 2, nothing overwritten -------------------------------------

def _run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def test_invalid_toml_names_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[risk]\nleverage = 3\nrisk_per_trade = = 0.1\n')
    before = cfg.read_bytes()
    code, err = _run_cli(["--config", str(cfg), "config", "show"], capsys)
    assert code == 2
    assert err.count("\n") == 0 and str(cfg) in err and "line 3" in err
    assert "Traceback" not in err
    assert cfg.read_bytes() == before


def test_unknown_key_suggests(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[risk]\nleverge = 3\n")
    code, err = _run_cli(["config", "validate", str(cfg)], capsys)
    assert code == 2 and "unknown key" in err and "did you mean 'leverage'" in err
    cfg.write_text("[risks]\nfoo = 3\n")
    code, err = _run_cli(["config", "validate", str(cfg)], capsys)
    assert code == 2 and "unknown section [risks]" in err and "did you mean 'risk'" in err
    cfg.write_text("[strategy]\nleverage = 3\n")
    code, err = _run_cli(["config", "validate", str(cfg)], capsys)
    assert code == 2 and "belongs in [risk]" in err


def test_wrong_type_and_out_of_range(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[risk]\nleverage = "lots"\n')
    code, err = _run_cli(["config", "validate", str(cfg)], capsys)
    assert code == 2 and "[risk] leverage" in err and "whole number" in err and "'lots'" in err
    cfg.write_text("[risk]\nleverage = 200\n")
    code, err = _run_cli(["config", "validate", str(cfg)], capsys)
    assert code == 2 and "200" in err and "1..125" in err
    cfg.write_text('[strategy]\ninterval = "7m"\n')
    code, err = _run_cli(["config", "validate", str(cfg)], capsys)
    assert code == 2 and "7m" in err and "5m" in err


def test_bad_env_value_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("ASTER_PAPER", "maybe")
    code, err = _run_cli(["config", "show"], capsys)
    assert code == 2 and "ASTER_PAPER" in err and "true or false" in err


def test_bad_cli_value_is_one_line(capsys):
    code, err = _run_cli(["--preset", "extreme"], capsys)
    assert code == 2 and "extreme" in err and "\n" not in err


def test_missing_explicit_config_is_an_error(tmp_path, capsys):
    code, err = _run_cli(["--config", str(tmp_path / "nope.toml"), "config", "show"], capsys)
    assert code == 2 and "not found" in err


def test_config_set_refuses_bad_value_and_keeps_file(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    assert main(["config", "--config", str(cfg), "set", "ASTER_LEVERAGE", "4"]) == 0
    before = cfg.read_bytes()
    code, err = _run_cli(["config", "--config", str(cfg), "set", "ASTER_LEVERAGE", "0"], capsys)
    assert code == 2 and "out of range" in err
    code, err = _run_cli(["config", "--config", str(cfg), "set", "ASTER_LEVRAGE", "3"], capsys)
    assert code == 2 and "did you mean 'ASTER_LEVERAGE'" in err
    assert cfg.read_bytes() == before
    code, err = _run_cli(["config", "--config", str(cfg), "set", "ASTER_API_SECRET", "abc"], capsys)
    assert code == 2 and "secret" in err and "abc" not in err


def test_secrets_masked_and_never_saved(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASTER_API_KEY", "KEY-1234567890")
    monkeypatch.setenv("ASTER_API_SECRET", "SECRET-abcdef")
    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert data["ASTER_API_KEY"] == "***" and data["ASTER_API_SECRET"] == "***"
    assert "KEY-1234567890" not in out and "SECRET-abcdef" not in out
    s = load_settings(None)
    cfg = tmp_path / "config.toml"
    save_config(cfg, {"api_key": s.api_key, "api_secret": s.api_secret, "leverage": 2})
    text = cfg.read_text()
    assert "KEY-1234567890" not in text and "SECRET" not in text and "leverage = 2" in text


def test_secrets_file_is_read(tmp_path, monkeypatch):
    sec = tmp_path / "secrets.toml"
    sec.write_text('[venue]\napi_key = "k1"\napi_secret = "s1"\n')
    os.chmod(sec, 0o600)
    monkeypatch.setenv("MRASTER_SECRETS", str(sec))
    s = load_settings(None)
    assert s.api_key == "k1" and s.has_credentials and s.source("api_key").startswith("secrets:")
    assert s.live_trading  # ASTER_PAPER defaults to false (seed), keys present -> live
    assert not s.replace(paper=True).live_trading
    assert not s.replace(api_secret="").live_trading  # no credentials -> paper


# -- saving --------------------------------------------------------------------------------

def test_save_keeps_only_differences_and_preset(tmp_path):
    cfg = tmp_path / "config.toml"
    out = save_config(cfg, {"leverage": 3, "rsi_buy_min": 55}, preset="mid")
    data = tomllib.loads(cfg.read_text())
    # leverage 3 differs from the mid preset's 2, so it is kept; rsi differs from default
    assert data == {"run": {"preset": "mid"}, "risk": {"leverage": 3}, "strategy": {"rsi_buy_min": 55.0}}
    assert out["leverage"] == 3
    assert (cfg.stat().st_mode & 0o777) == 0o600
    # switching preset drops the file's values for the keys the preset sets
    save_config(cfg, {}, preset="high")
    data = tomllib.loads(cfg.read_text())
    assert data == {"run": {"preset": "high"}, "strategy": {"rsi_buy_min": 55.0}}
    assert (tmp_path / "config.toml.bak").exists()
    assert "preset = \"mid\"" in (tmp_path / "config.toml.bak").read_text()
    s = load_settings(cfg)
    assert s.leverage == 4 and s.preset == "high"
    # a value equal to the default is not written
    save_config(cfg, {"rsi_buy_min": 51})
    assert "strategy" not in tomllib.loads(cfg.read_text())


def test_refused_value_saves_nothing(tmp_path):
    cfg = tmp_path / "config.toml"
    save_config(cfg, {"leverage": 2})
    before = cfg.read_bytes()
    with pytest.raises(ConfigError):
        save_config(cfg, {"leverage": 999})
    assert cfg.read_bytes() == before


_WRITER = r"""
import sys
from pathlib import Path
from mraster_tui.config import save_config
path = Path(sys.argv[1])
big = tuple(f"SYM{i:04d}USDT" for i in range(3000))
i = 0
print("ready", flush=True)
while True:
    save_config(path, {"include_symbols": big if i % 2 else big[:1500], "klines": 400 + (i % 2)})
    i += 1
"""


def test_atomic_save_survives_kill_9(tmp_path):
    cfg = tmp_path / "config.toml"
    save_config(cfg, {"klines": 400})
    valid_klines = {400, 401}
    for attempt in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(cfg)], stdout=subprocess.PIPE,
                                cwd=str(REPO))
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + 0.037 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        data = tomllib.loads(cfg.read_text())  # never partial: parses every time
        assert data["strategy"]["klines"] in valid_klines
        n = len(data["universe"]["include_symbols"])
        assert n == (3000 if data["strategy"]["klines"] == 401 else 1500)
        assert (cfg.stat().st_mode & 0o777) == 0o600
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        for p in leftovers:  # a temp file may remain after SIGKILL; it is never the config
            p.unlink()


def test_settings_replace_validates():
    s = Settings.defaults()
    assert s.replace(leverage=5).leverage == 5
    with pytest.raises(ConfigError):
        s.replace(leverage=0)
    with pytest.raises(ConfigError, match="did you mean"):
        s.replace(leverag=2)
    with pytest.raises(AttributeError):
        s.leverage = 3  # immutable


def test_readme_reference_matches_the_schema():
    from mraster_tui.config.docs import reference_markdown

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert reference_markdown() in readme, "README settings table is stale: run python -m mraster_tui.config.docs --write README.md"
    for s in SETTINGS:
        assert f"`{s.env}`" in readme


def test_without_credentials_the_bot_says_it_runs_paper(capsys, monkeypatch):
    import mraster_tui.headless as headless

    seen = {}
    monkeypatch.setattr(headless, "run_headless", lambda s, demo=False: seen.update(s=s) or 0)
    assert main(["--no-ui", "--run-once"]) == 0
    err = capsys.readouterr().err
    assert "PAPER mode" in err and not seen["s"].live_trading
    monkeypatch.setenv("ASTER_API_KEY", "k")
    monkeypatch.setenv("ASTER_API_SECRET", "s")
    assert main(["--no-ui", "--run-once"]) == 0
    assert "PAPER mode" not in capsys.readouterr().err and seen["s"].live_trading
    assert main(["--no-ui", "--paper"]) == 0 and not seen["s"].live_trading
