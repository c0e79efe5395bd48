"""Shared fixtures.  Every test runs with isolated config/data/log dirs and no ASTER_* env."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _shared import SHARED, SHARED_DATA, shared_data  # noqa: E402,F401  (re-exported)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    base = tmp_path_factory.mktemp("mraster-home")
    for k in list(os.environ):
        if k.startswith(("ASTER_", "FAST_TP_", "FASTTP_", "MRASTER_")):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MRASTER_CONFIG", str(base / "config" / "config.toml"))
    monkeypatch.setenv("MRASTER_SECRETS", str(base / "config" / "secrets.toml"))
    monkeypatch.setenv("MRASTER_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("MRASTER_LOG_DIR", str(base / "logs"))
    yield base
