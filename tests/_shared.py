"""Locating ../shared (the development checkout's reference data); tests skip cleanly without it.

Import it as ``from _shared import shared_data`` (not from ``conftest``: tests/chaos has its own
conftest.py and the two would shadow each other as a plain ``conftest`` module)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with a clear reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available ({p}); it ships only with the development checkout")
    return p
