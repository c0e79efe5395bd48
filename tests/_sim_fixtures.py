"""Helpers for the simulation-core tests (data loaders, market feeds)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/data next to the repository (only in the development checkout and CI)
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with a clear reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts).resolve()
    if not p.exists():
        pytest.skip(f"shared data not available ({p}); it ships only with the development checkout")
    return p
