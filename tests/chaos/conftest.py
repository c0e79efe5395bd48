"""Fixtures of the chaos suite; the harness itself is :mod:`chaos_harness`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chaos_harness import Bot
from mraster_tui.engine.sim.server import LoopbackExchange


@pytest.fixture
def loopback() -> Iterator[Callable[..., LoopbackExchange]]:
    """``loopback(**kw)`` starts an in-process loopback exchange (stopped after the test)."""
    started: list[LoopbackExchange] = []

    def start(**kw: Any) -> LoopbackExchange:
        kw.setdefault("synthetic", 12)
        h = LoopbackExchange(**kw).start()
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


@pytest.fixture
def bots() -> Iterator[list[Bot]]:
    """Every Bot appended here is killed after the test, whatever happened."""
    out: list[Bot] = []
    yield out
    for b in out:
        b.close()
