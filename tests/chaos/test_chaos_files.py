"""Chaos 3: truncated or garbage state files and config files, fuzzed with hypothesis.

What must hold for every input:

* **config** (the real CLI, in-process through :func:`mraster_tui.cli.main`): exit 0 when the file
  is valid, else exit 2 with exactly one ``error: ...`` line on stderr, nothing on stdout and no
  traceback; the file itself is never touched by a read (``show``, ``validate``, ``--no-ui``), and
  a refused ``config set`` leaves it byte-identical with no backup written.  A successful
  ``config set`` keeps the original as ``.bak``.  A secret in the file never shows in any output.
* **state** (:meth:`StateStore.load`): a file it accepts is well typed (every field has the type
  the engine computes with) and survives a save/load round trip; a file it refuses is moved
  aside byte-identical (``<file>.corrupt-*``) with a one-line ERROR message naming where it went,
  and the last good copy (``.bak``) is used when there is one.  Nothing else ever escapes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mraster_tui.cli import main
from mraster_tui.config.loader import render_toml
from mraster_tui.config.schema import BOOL, FLOAT, INT, LIST, SETTINGS
from mraster_tui.engine.ledger import (
    ClosedTrade,
    LiveTrade,
    PendingEntry,
    State,
    StateError,
    StateStore,
)

pytestmark = pytest.mark.timeout(180)

T0 = 1_700_000_000_000
SECRET = "S3cr3tV4lu3ThatMustNeverBePrinted0123456789abcdef"
#: examples per fuzz test: CI size by default; ``CHAOS_FUZZ_EXAMPLES=5000`` for a deep local run
EXAMPLES = int(os.environ.get("CHAOS_FUZZ_EXAMPLES", "0")) or None


def _fuzz(ci_examples: int):
    return settings(max_examples=EXAMPLES or ci_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- config ----------------------------------------------------------------------------------

_PLAIN = [s for s in SETTINGS if not s.secret and s.name != "preset"]


@st.composite
def valid_config_values(draw) -> dict[str, Any]:
    """A valid {name: value} mapping of a few settings (edges of their ranges included)."""
    chosen = draw(st.lists(st.sampled_from(_PLAIN), min_size=1, max_size=8, unique_by=lambda s: s.name))
    out: dict[str, Any] = {}
    for s in chosen:
        if s.choices is not None:
            out[s.name] = draw(st.sampled_from(s.choices))
        elif s.type == BOOL:
            out[s.name] = draw(st.booleans())
        elif s.type == INT:
            lo = int(s.min) if s.min is not None else -1000
            hi = int(s.max) if s.max is not None else 10**6
            out[s.name] = draw(st.integers(lo, hi))
        elif s.type == FLOAT:
            lo = float(s.min) if s.min is not None else -1e6
            hi = float(s.max) if s.max is not None else 1e9
            out[s.name] = draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
        elif s.type == LIST:
            out[s.name] = tuple(draw(st.lists(st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]),
                                              unique=True, max_size=3)))
        else:
            out[s.name] = draw(st.sampled_from(["x", "aster_state.json", "https://fapi.binance.com"]))
    return out


def _config_text(values: dict[str, Any], with_secret: bool) -> bytes:
    text = render_toml(values)
    if with_secret:  # a user who put the secret into the config file (the loader warns)
        text = text.replace(b"[venue]\n", b"") + f'\n[venue]\napi_secret = "{SECRET}"\n'.encode()
    return text


@st.composite
def config_mutations(draw) -> bytes:
    base = _config_text(draw(valid_config_values()), draw(st.booleans()))
    how = draw(st.sampled_from(["truncate", "insert", "replace_line", "garbage", "value", "nested", "as_is"]))
    if how == "truncate":
        return base[: draw(st.integers(0, max(0, len(base) - 1)))]
    if how == "insert":
        pos = draw(st.integers(0, len(base)))
        return base[:pos] + draw(st.binary(min_size=1, max_size=12)) + base[pos:]
    if how == "replace_line":
        lines = base.split(b"\n")
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
        return b"\n".join(lines)
    if how == "garbage":
        return draw(st.binary(max_size=200))
    if how == "value":
        # a known key with a value of the wrong type, out of range, NaN, huge, negative ...
        s = draw(st.sampled_from(_PLAIN))
        raw = draw(st.sampled_from(["nan", "inf", "-inf", "1e400", "-1", "99999999999999999999999", '"abc"',
                                    "true", "[1, 2]", "{a = 1}", '""', "0.5", "1979-05-27", '"BTC USDT"']))
        return base + f"\n[{s.section}]\n{s.key} = {raw}\n".encode()
    if how == "nested":
        depth = draw(st.integers(1, 5000))
        return base + b"\n[risk]\nleverage = " + b"[" * depth + b"]" * depth + b"\n"
    return base


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse --help/--version only; never expected here
            rc = int(exc.code or 0)
    return rc, out.getvalue(), err.getvalue()


def _assert_clear_error(rc: int, out: str, err: str, what: str) -> None:
    assert rc == 2, f"{what}: exit {rc}, stderr {err!r}"
    assert out == "", f"{what}: printed {out!r} on a failed load"
    lines = err.splitlines()
    errors = [ln for ln in lines if not ln.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and len(errors[0]) > len("error: "), \
        f"{what}: not one clear line: {err!r}"
    assert "Traceback" not in err


def _assert_no_secret(*texts: str) -> None:
    for t in texts:
        assert SECRET not in t


@_fuzz(150)
@given(data=config_mutations())
@example(data=b"[risk]\nleverage = " + b"[" * 3000 + b"]" * 3000 + b"\n")
@example(data=b"\xff\xfe\x00garbage")
@example(data=b"")
def test_config_file_fuzz_through_the_real_cli(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.toml"
        cfg.write_bytes(data)
        bak = cfg.with_name("config.toml.bak")

        rc, out, err = _run_cli(["config", "validate", str(cfg)])
        _assert_no_secret(out, err)
        valid = rc == 0
        if not valid:
            _assert_clear_error(rc, out, err, "config validate")
            first_error = err.splitlines()[-1]
        assert cfg.read_bytes() == data

        rc, out, err = _run_cli(["--config", str(cfg), "config", "show"])
        _assert_no_secret(out, err)
        if valid:
            assert rc == 0 and "ASTER_LEVERAGE" in out
        else:
            _assert_clear_error(rc, out, err, "config show")
            assert err.splitlines()[-1] == first_error  # the same diagnosis whichever command
        assert cfg.read_bytes() == data

        if not valid:  # the bot itself refuses to start on it, before any engine or network
            rc, out, err = _run_cli(["--config", str(cfg), "--no-ui", "--run-once", "--paper"])
            _assert_clear_error(rc, out, err, "--no-ui")
            _assert_no_secret(out, err)
            assert cfg.read_bytes() == data

        rc, out, err = _run_cli(["config", "--config", str(cfg), "set", "leverage", "4"])
        _assert_no_secret(out, err)
        if valid:
            assert rc == 0, err
            assert bak.read_bytes() == data  # the original is kept
            assert b"leverage = 4" in cfg.read_bytes()
            assert SECRET.encode() not in cfg.read_bytes()  # a rewrite never carries the secret on
        else:
            _assert_clear_error(rc, out, err, "config set")
            assert cfg.read_bytes() == data and not bak.exists()


@settings(max_examples=40, deadline=None)
@given(values=valid_config_values())
def test_valid_config_files_load(values: dict[str, Any]) -> None:
    """The generator's valid files really are valid: the fuzz above is not vacuous."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.toml"
        cfg.write_bytes(_config_text(values, with_secret=False))
        rc, out, err = _run_cli(["config", "validate", str(cfg)])
        assert rc == 0, err
        assert out.strip().endswith(f"ok ({len(values)} setting{'s' if len(values) != 1 else ''})")


# -- state -----------------------------------------------------------------------------------

D = Decimal


def _rich_state() -> State:
    """A state with every part filled in, as the engine writes it."""
    s = State.fresh(T0)
    s.next_trade_no = 9
    s.live["BTCUSDT"] = LiveTrade("BTCUSDT", "LONG", D("0.010"), D("100.0"), D("99.0"), D("98.0"), D("104.0"), 1.5,
                                  T0, 7, "mrabcd-7e-BTCUSDT", 11, "d1", "M", "mrabcd-7s1-BTCUSDT",
                                  "mrabcd-7t1-BTCUSDT", 1, False, 1)
    s.pending["ETHUSDT"] = PendingEntry("ETHUSDT", "SHORT", "mrabcd-8e-ETHUSDT", 8, D("0.5"), 3.25, 1.3, 2.0, T0,
                                        "d2", "S")
    closed = ClosedTrade("SOLUSDT", "SHORT", D("2"), D("50"), D("49"), D("51"), T0, T0 + 1, D("2"), D("0.1"),
                         D("-0.01"), D("1.89"), 0.945, "take_profit", "fills", 3, "L", "d0", False)
    s.history.append(closed)
    s.totals.add(closed)
    s.fasttp_cooldown["BTCUSDT"] = T0 + 45_000
    s.fail_until["XRPUSDT"] = T0 + 60_000
    s.policy = {"schema": "mraster.policy", "x": [0.1, 0.2]}
    s.decision_stats.update(taken=3, skipped=4, rejected_total=5, taken_by_bucket={"M": 3}, rejected={"rsi": 5})
    s.equity_curve = [[float(T0), 10000.0], [float(T0 + 60_000), 10001.5]]
    return s


_GOOD = json.dumps(_rich_state().to_json(), separators=(",", ":")).encode()
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                       st.text(max_size=12), st.sampled_from(["NaN", "1e999", "-0", "abc", "", "1.5"]))
_JSON = st.recursive(_JSON_LEAF, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                          st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                     max_leaves=8)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def state_mutations(draw) -> bytes:
    how = draw(st.sampled_from(["truncate", "flip", "garbage", "replace", "delete", "raw_literal", "nested"]))
    if how == "truncate":
        return _GOOD[: draw(st.integers(0, len(_GOOD) - 1))]
    if how == "flip":
        pos = draw(st.integers(0, len(_GOOD) - 1))
        return _GOOD[:pos] + bytes([draw(st.integers(0, 255))]) + _GOOD[pos + 1:]
    if how == "garbage":
        return draw(st.binary(max_size=300))
    if how == "nested":
        depth = draw(st.integers(1, 100_000))
        return b"[" * depth + b"]" * depth
    doc = json.loads(_GOOD)
    paths = [p for p in _paths(doc) if p]
    path = draw(st.sampled_from(paths))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if how == "delete":
        del parent[path[-1]]
        return json.dumps(doc).encode()
    if how == "raw_literal":  # JSON extensions Python's parser accepts: NaN, Infinity, 1e999
        parent[path[-1]] = "@@"
        lit = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 400]))
        return json.dumps(doc).replace('"@@"', lit).encode()
    parent[path[-1]] = draw(_JSON)
    return json.dumps(doc).encode()


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "Decimal": Decimal}


def _assert_well_typed(state: State) -> None:
    """Every field has the type the engine computes with (the spec for an accepted file)."""
    for rec in [*state.live.values(), *state.pending.values(), *state.history]:
        for f in fields(rec):
            v = getattr(rec, f.name)
            ann = str(f.type).replace(" ", "")
            optional = ann.endswith("|None")
            if v is None:
                assert optional, f"{type(rec).__name__}.{f.name} is None"
                continue
            want = _TYPES[ann.removesuffix("|None")]
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            if want is float:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if want is Decimal:
                ok = isinstance(v, Decimal) and v.is_finite()
            assert ok, f"{type(rec).__name__}.{f.name} = {v!r} is not {want.__name__}"
    for sym, t in state.live.items():
        assert t.symbol == sym and t.side in ("LONG", "SHORT") and t.qty > 0
    for sym, p in state.pending.items():
        assert p.symbol == sym and p.side in ("LONG", "SHORT") and p.qty > 0
    tot = state.totals
    assert all(isinstance(x, int) and not isinstance(x, bool) for x in (tot.trades, tot.wins))
    assert all(isinstance(x, Decimal) and x.is_finite() for x in (tot.pnl, tot.fees, tot.funding))
    assert isinstance(tot.sum_r, float) and math.isfinite(tot.sum_r)
    for m in (state.fasttp_cooldown, state.fail_until):
        assert all(isinstance(k, str) and type(v) is int for k, v in m.items())
    assert all(len(p) == 2 and all(type(x) is float and math.isfinite(x) for x in p) for p in state.equity_curve)
    ds = state.decision_stats
    for k in ("taken", "skipped", "rejected_total"):
        assert type(ds.get(k, 0)) is int, f"decision_stats.{k} = {ds.get(k)!r}"
    for k in ("taken_by_bucket", "rejected"):
        m = ds.get(k, {})
        assert isinstance(m, dict) and all(isinstance(a, str) and type(b) is int for a, b in m.items()), \
            f"decision_stats.{k} = {m!r}"
    assert state.policy is None or isinstance(state.policy, dict)
    assert isinstance(state.extra, dict)


def _check_load(data: bytes, *, with_backup: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.json"
        if with_backup:
            path.with_name("state.json.bak").write_bytes(_GOOD)
        path.write_bytes(data)
        store = StateStore(path)
        try:
            rep = store.load(T0)
        except StateError as exc:  # only for a file from a newer schema: refused, left in place
            assert "\n" not in str(exc) and "newer" in str(exc)
            assert path.read_bytes() == data
            return
        corrupt = sorted(Path(tmp).glob("state.json.corrupt-*"))
        if rep.source == "file":
            assert path.read_bytes() == data and not corrupt and rep.messages == ()
            _assert_well_typed(rep.state)
            # what was accepted can be written back and reads back the same
            again = StateStore(Path(tmp) / "again.json")
            again.save(rep.state)
            assert again.load(T0).state.to_json() == rep.state.to_json()
            return
        # refused: moved aside byte-identical, one clear ERROR line that says where it went
        assert not path.exists()
        assert len(corrupt) == 1 and corrupt[0].read_bytes() == data
        errors = [m for lvl, m in rep.messages if lvl == "ERROR"]
        assert errors and str(corrupt[0]) in errors[0]
        assert all("\n" not in m and "Traceback" not in m for _, m in rep.messages)
        if with_backup:
            assert rep.source == "backup"
            assert rep.state.to_json() == State.from_json(json.loads(_GOOD)).to_json()
        else:
            assert rep.source == "new" and rep.state.live == {} and rep.state.history == []


@_fuzz(500)
@given(data=state_mutations(), with_backup=st.booleans())
@example(data=b"[" * 3000 + b"]" * 3000, with_backup=False)
@example(data=_GOOD.replace(b'"equity_curve":[[', b'"equity_curve":[[],['), with_backup=True)
@example(data=_GOOD.replace(b'"fasttp_cooldown":{"BTCUSDT":', b'"fasttp_cooldown":{"BTCUSDT":1e999,"X":'),
         with_backup=False)
@example(data=_GOOD.replace(b'"taken":3', b'"taken":"3"'), with_backup=False)
@example(data=_GOOD.replace(b'"atr":1.5', b'"atr":"1.5"'), with_backup=False)
@example(data=_GOOD.replace(b'"trade_no":7', b'"trade_no":"7"'), with_backup=True)
@example(data=_GOOD.replace(b'10001.5]', b'NaN]'), with_backup=False)
@example(data=_GOOD.replace(b'"live":{"BTCUSDT"', b'"live":{"ETHUSDT"'), with_backup=False)
@example(data=_GOOD.replace(b'"taken_by_bucket":{"M":3}', b'"taken_by_bucket":null'), with_backup=False)
@example(data=b"", with_backup=True)
def test_state_file_fuzz(data: bytes, with_backup: bool) -> None:
    _check_load(data, with_backup=with_backup)


def test_state_generator_is_not_vacuous() -> None:
    """The unmutated file loads as is; a truncated one is refused (so both branches run)."""
    _check_load(_GOOD, with_backup=False)
    _check_load(_GOOD[:-1], with_backup=True)
