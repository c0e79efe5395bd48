"""The decision log: an append-only JSON-lines file of every policy decision and its outcome.

The I/O side of the policy (``policy.py`` itself stays pure).  One object per line:

* ``{"v": 1, "type": "decision", "time": ms, "decision_id", "symbol", "features": [...],
  "action": "TAKE" | "SKIP" | "REJECT", "bucket", "scores": {...}, "reason"}``.  ``REJECT`` is a
  signal refused by a filter before the policy saw it (no decision id): logging those too lets a
  new policy be scored offline on everything the old one was offered.
* ``{"v": 1, "type": "outcome", "time": ms, "decision_id", "r": R, ...extra}`` once the trade
  closed, keyed by the decision id.

Every line is flushed as it is written.  A crash can leave a truncated last line: the writer starts
a fresh line before appending, and the reader skips (and counts) lines that do not parse.
Non-finite floats are written as ``null`` and Decimals as strings, so every line is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Mapping

import numpy as np

from mraster_tui.engine.policy import Decision

LOG_VERSION = 1
_RESERVED = frozenset({"v", "type", "time", "decision_id", "r"})


class DecisionLogError(OSError):
    """The decision log cannot be opened or written (one-line message with the path)."""


def _error(verb: str, path: Any, exc: OSError) -> DecisionLogError:
    return DecisionLogError(f"cannot {verb} decision log {path}: {exc.strerror or exc}")


def _plain(value: Any) -> Any:
    """A JSON-safe copy: non-finite floats -> None, Decimal -> str, numpy -> Python."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


class DecisionLog:
    """Append-only writer.  Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._fh: BinaryIO | None = None

    def _file(self) -> BinaryIO:
        if self._fh is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fh = open(self.path, "ab")
            except OSError as exc:
                raise _error("open", self.path, exc) from None
            try:
                if fh.tell() > 0:
                    with open(self.path, "rb") as tail:
                        tail.seek(-1, os.SEEK_END)
                        if tail.read(1) != b"\n":  # a crash cut the last line: start a new one
                            fh.write(b"\n")
            except OSError as exc:
                fh.close()
                raise _error("open", self.path, exc) from None
            self._fh = fh
        return self._fh

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_plain(record), separators=(",", ":"), allow_nan=False).encode() + b"\n"
        fh = self._file()
        try:
            fh.write(line)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _error("write", self.path, exc) from None

    def record_decision(self, decision: Decision, *, time_ms: int, symbol: str, features: Iterable[float]) -> None:
        """Log a policy decision (taken or skipped, failures included)."""
        self._write({
            "v": LOG_VERSION, "type": "decision", "time": int(time_ms), "decision_id": decision.decision_id,
            "symbol": symbol, "features": list(features), "action": "TAKE" if decision.take else "SKIP",
            "bucket": decision.bucket, "scores": decision.scores, "reason": decision.reason,
        })

    def record_rejection(self, *, time_ms: int, symbol: str, features: Iterable[float] | None, reason: str) -> None:
        """Log a signal a filter refused before the policy saw it."""
        self._write({
            "v": LOG_VERSION, "type": "decision", "time": int(time_ms), "decision_id": None,
            "symbol": symbol, "features": None if features is None else list(features), "action": "REJECT",
            "bucket": None, "scores": {}, "reason": reason,
        })

    def record_outcome(self, decision_id: str, *, time_ms: int, r: float, **extra: Any) -> None:
        """Log the realised R of a closed trade (``extra``: pnl, fees, exit reason...)."""
        clash = _RESERVED.intersection(extra)
        if clash:
            raise ValueError(f"outcome fields {sorted(clash)} are reserved")
        self._write({"v": LOG_VERSION, "type": "outcome", "time": int(time_ms), "decision_id": decision_id,
                     "r": r, **extra})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "DecisionLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class ScoredDecision:
    decision: dict[str, Any]
    outcome: dict[str, Any] | None  # None while the trade is open, or for skips and rejections


@dataclass(frozen=True, slots=True)
class DecisionLogContents:
    decisions: list[dict[str, Any]]
    outcomes: dict[str, dict[str, Any]]  # by decision id (the last one wins)
    bad_lines: int  # truncated or corrupt lines that were skipped

    def joined(self) -> list[ScoredDecision]:
        """Every decision with its outcome, in log order: the input of offline policy scoring."""
        return [ScoredDecision(d, self.outcomes.get(d["decision_id"]) if d.get("decision_id") else None)
                for d in self.decisions]


def read_decision_log(path: str | os.PathLike[str]) -> DecisionLogContents:
    """Read a decision log; unparsable lines (a crash's truncated line) are skipped and counted.

    A missing file reads as empty."""
    decisions: list[dict[str, Any]] = []
    outcomes: dict[str, dict[str, Any]] = {}
    bad = 0
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return DecisionLogContents([], {}, 0)
    except OSError as exc:
        raise _error("read", path, exc) from None
    with fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:  # truncated or corrupt line (JSONDecodeError, UnicodeDecodeError)
                bad += 1
                continue
            kind = rec.get("type") if isinstance(rec, dict) else None
            if kind == "decision":
                decisions.append(rec)
            elif kind == "outcome" and isinstance(rec.get("decision_id"), str):
                outcomes[rec["decision_id"]] = rec
            else:
                bad += 1
    return DecisionLogContents(decisions, outcomes, bad)
