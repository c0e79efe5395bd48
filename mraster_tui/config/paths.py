"""Where files live (platformdirs), with overrides for tests, systemd and power users.

* config file: ``--config PATH`` > ``$MRASTER_CONFIG`` > ``<user config dir>/config.toml``
* secrets file: ``$MRASTER_SECRETS`` > ``<user config dir>/secrets.toml`` (mode 0600)
* data dir (state, decision log, downloads): ``$MRASTER_DATA_DIR`` > user data dir
* log dir: ``$MRASTER_LOG_DIR`` > user log dir
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "mraster-tui"


def config_dir() -> Path:
    return platformdirs.user_config_path(APP, appauthor=False)


def config_file(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("MRASTER_CONFIG")
    if env:
        return Path(env).expanduser()
    return config_dir() / "config.toml"


def secrets_file() -> Path:
    env = os.environ.get("MRASTER_SECRETS")
    if env:
        return Path(env).expanduser()
    return config_dir() / "secrets.toml"


def data_dir() -> Path:
    env = os.environ.get("MRASTER_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return platformdirs.user_data_path(APP, appauthor=False)


def log_dir() -> Path:
    env = os.environ.get("MRASTER_LOG_DIR")
    if env:
        return Path(env).expanduser()
    return platformdirs.user_log_path(APP, appauthor=False)


def resolve_data_path(p: str) -> Path:
    """A relative path (e.g. ``ASTER_STATE_FILE``) resolves under the data dir."""
    path = Path(p).expanduser()
    return path if path.is_absolute() else data_dir() / path
