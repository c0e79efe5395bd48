"""Command line: ``mraster-tui`` (the TUI), ``--no-ui`` (headless engine) and subcommands.

Foreseeable mistakes print one line to stderr and exit 2; never a traceback.  This module
imports textual only when the TUI actually starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mraster_tui import __version__
from mraster_tui.config import (
    SETTINGS,
    ConfigError,
    Settings,
    format_value,
    load_settings,
    lookup,
    parse_value,
    save_config,
)
from mraster_tui.config import paths
from mraster_tui.config.loader import read_toml_file
from mraster_tui.config.schema import PRESET_LEVERAGE_MAX

EXIT_USAGE = 2


class CliError(Exception):
    """A one-line user-facing error (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints usage too)
        raise CliError(f"{self.prog}: {message}")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="config file (default: $MRASTER_CONFIG or the user config dir)")
    p.add_argument("--preset", choices=("low", "mid", "high"), help="apply a preset on top of the defaults")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper)
    p.add_argument("--log-format", choices=("text", "json"))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mraster-tui", description="Terminal trading bot for Binance-compatible perpetual futures.")
    p.add_argument("--version", action="version", version=f"mraster-tui {__version__}")
    p.add_argument("--no-ui", action="store_true", help="run the headless engine (no textual import)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--paper", action="store_true", help="paper trading on the simulated exchange")
    mode.add_argument("--live", action="store_true", help="live trading (needs API key and secret)")
    p.add_argument("--run-once", action="store_true", help="run one scan cycle and exit")
    p.add_argument("--demo", action="store_true", help="offline demo market (paper, synthetic data, no network)")
    _add_run_flags(p)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    c = sub.add_parser("config", help="show, check and edit the configuration")
    c.add_argument("--config", metavar="PATH", dest="sub_config")
    csub = c.add_subparsers(dest="config_cmd", parser_class=_Parser, required=True)
    csub.add_parser("path", help="print the config, secrets, data and log locations")
    show = csub.add_parser("show", help="every effective setting and where it came from")
    show.add_argument("--json", action="store_true", help="JSON keyed by env name, secrets masked")
    val = csub.add_parser("validate", help="check a config file")
    val.add_argument("file", nargs="?")
    init = csub.add_parser("init", help="create a config file with the Mid preset in paper mode")
    init.add_argument("--force", action="store_true", help="overwrite an existing file (kept as .bak)")
    st = csub.add_parser("set", help="set one value in the config file (validated, atomic)")
    st.add_argument("key", help="env name (ASTER_LEVERAGE), name (leverage) or section.key")
    st.add_argument("value")

    for mod in ("mraster_tui.engine.sim.server_cli", "mraster_tui.engine.venue.doctor",
                "mraster_tui.backtest_cli"):
        try:
            module = __import__(mod, fromlist=["add_parser"])
        except ImportError:
            continue
        module.add_parser(sub)
    return p


def _cli_overrides(args: argparse.Namespace) -> dict[str, object]:
    cli: dict[str, object] = {}
    if getattr(args, "preset", None):
        cli["preset"] = args.preset
    if getattr(args, "log_level", None):
        cli["loglevel"] = args.log_level
    if getattr(args, "log_format", None):
        cli["log_format"] = args.log_format
    if getattr(args, "paper", False) or getattr(args, "demo", False):
        cli["paper"] = True
    if getattr(args, "live", False):
        cli["paper"] = False
    if getattr(args, "run_once", False):
        cli["run_once"] = True
    return cli


def _load(args: argparse.Namespace, **kw) -> Settings:
    cfg = getattr(args, "sub_config", None) or getattr(args, "config", None)
    return load_settings(cfg, cli=_cli_overrides(args), **kw)


# -- config subcommands ------------------------------------------------------------------

def cmd_config(args: argparse.Namespace) -> int:
    cmd = args.config_cmd
    if cmd == "path":
        cfg = args.sub_config or args.config
        print(f"config:  {paths.config_file(cfg)}")
        print(f"secrets: {paths.secrets_file()}")
        print(f"data:    {paths.data_dir()}")
        print(f"logs:    {paths.log_dir()}")
        return 0
    if cmd == "show":
        s = _load(args)
        for w in s.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if args.json:
            print(json.dumps(s.as_env_json(), indent=2, sort_keys=False))
            return 0
        width = max(len(x.env) for x in SETTINGS)
        print(f"# config file: {s.config_path}")
        for x in SETTINGS:
            print(f"{x.env:<{width}}  {format_value(x, getattr(s, x.name)):<28} ({s.source(x.name)})")
        return 0
    if cmd == "validate":
        target = Path(args.file) if args.file else paths.config_file(args.sub_config or args.config)
        try:
            values = read_toml_file(target)
        except FileNotFoundError:
            raise CliError(f"{target}: file not found") from None
        # full load, so env and preset problems show too
        load_settings(target, cli=_cli_overrides(args))
        print(f"{target}: ok ({len(values)} setting{'s' if len(values) != 1 else ''})")
        return 0
    if cmd == "init":
        target = paths.config_file(args.sub_config or args.config)
        if target.exists() and not args.force:
            raise CliError(f"{target}: already exists (use --force to overwrite; the old file is kept as .bak)")
        save_config(target, {"paper": True}, preset="mid")
        print(f"wrote {target} (preset mid, paper mode)")
        return 0
    if cmd == "set":
        target = paths.config_file(args.sub_config or args.config)
        s = lookup(args.key)
        if s.secret:
            raise CliError(f"{s.env} is a secret and is not stored in the config file; "
                           f"set it in the environment or in {paths.secrets_file()} (mode 0600)")
        value = parse_value(s, args.value, s.env)
        if s.name == "leverage" and value > PRESET_LEVERAGE_MAX:
            print(f"warning: leverage {value}x is above the presets' {PRESET_LEVERAGE_MAX}x ceiling "
                  "(a Pro-mode setting); losses scale with it", file=sys.stderr)
        if s.name == "preset":
            save_config(target, {}, preset=value)
        else:
            save_config(target, {s.name: value})
        load_settings(target)  # prove the result loads
        print(f"{target}: [{s.section}] {s.key} = {format_value(s, value)}")
        return 0
    raise CliError(f"unknown config command {cmd!r}")  # pragma: no cover - argparse prevents it


# -- main --------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "config":
            return cmd_config(args)
        if args.command is not None:
            return int(args.run(args) or 0)
        return run_bot(args)
    except (ConfigError, CliError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `mraster-tui config show | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0


def run_bot(args: argparse.Namespace) -> int:
    settings = _load(args)
    for w in settings.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.live and not settings.has_credentials:
        raise CliError("--live needs ASTER_API_KEY and ASTER_API_SECRET (environment, .env or the secrets file)")
    if not args.demo and not settings.paper and not settings.has_credentials:
        print("notice: no API key and secret configured, so this runs in PAPER mode "
              "(simulated fills on the venue's live prices)", file=sys.stderr)
    if args.no_ui:
        from mraster_tui.headless import run_headless

        return run_headless(settings, demo=args.demo)
    from mraster_tui.app import run_app

    return run_app(settings, demo=args.demo)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
