"""Chaos 2: ``kill -9`` at seeded random points of a live trading run, then restart (30 runs).

The real bot runs in LIVE mode against the loopback exchange over HTTP, both on a clock 60x
faster than the wall (one 1m candle a second), trading busily (every signal taken, FastTP on
any pull-back) with 30 ms of added latency on the order endpoints, which widens the windows
between "order sent" and "answer seen".  It is killed 30 times (two bots on two exchanges side
by side, 15 kills each); each kill is aimed at one point, seeded:

* ``entry``: while the entry MARKET order is on its way or just executed;
* ``brackets``: after the entry fill, while the stop and the take-profit are being placed;
* ``fasttp``: after FastTP placed a tighter stop, while the old one is being cancelled;
* ``state_write``: right when an opened / moved / closed position is being saved;
* ``anytime``: a random moment.

After every kill the bot is restarted on the same state file.  What must hold each time:

* the state file is never corrupt: it parses and loads as is, and nothing is moved aside;
* after one guard interval of the restarted bot, every position that was open when the bot
  died (and is still open) has a stop on the venue that closes all of it;
* no trade is lost from history: every trade whose position the venue has closed by the restart
  is in the state's history after that guard interval, and history never shrinks or repeats;
* at the end (SIGTERM, exit 0, then one reconcile-only start): state and venue agree exactly,
  nothing had to be adopted back, and no client id was ever used for two entries.

A restart is a warm standby process (imports done, waiting) told to start: the restart costs
the engine's start-up only, which keeps 30 runs inside the suite's time budget.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chaos_harness import BUSY_TRADER, Bot, closed_trade_nos, final_reconcile, make_keys, read_state, venue_state
from mraster_tui.engine.sim.server import LoopbackExchange

pytestmark = pytest.mark.timeout(240)

SPEED = 60.0
CHAINS = 2
KILLS_PER_CHAIN = 15
GUARD_SEC = 15.0  # ASTER_GUARD_INTERVAL_SEC of BUSY_TRADER (clock seconds)
LATENCY = {"/fapi/v1/order": 30.0, "/fapi/v1/algoOrder": 30.0}
TARGETS = ("entry", "brackets", "fasttp", "state_write", "anytime")


def _is(event: str, prefix: str = ""):
    return lambda ln: ln.event == event and ln.msg.startswith(prefix)


def _kill_plan(rng: random.Random, target: str) -> tuple[object, float]:
    """(line predicate, delay in wall seconds) for a kill aimed at ``target``."""
    if target == "entry":
        return _is("order_submitted", "entry "), rng.uniform(0.0, 0.05)
    if target == "brackets":
        return _is("order_filled", "entry filled"), rng.uniform(0.0, 0.1)
    if target == "fasttp":
        return _is("fasttp_moved"), rng.uniform(0.0, 0.05)
    if target == "state_write":
        return (lambda ln: ln.event in ("position_opened", "fasttp_moved", "position_closed")), 0.0
    return (lambda ln: False), 0.0  # "anytime": a timer does it


@dataclass
class ChainResult:
    hits: Counter = field(default_factory=Counter)
    repairs: Counter = field(default_factory=Counter)
    closed: int = 0
    carried: int = 0


def _chain(ex: LoopbackExchange, home: Path, key: str, secret: str, seed: int, first_target: int,
           bots: list[Bot]) -> ChainResult:
    """One bot on one loopback exchange, killed ``KILLS_PER_CHAIN`` times (see the module docstring)."""
    rng = random.Random(seed)
    state_path = home / "data" / "aster_state.json"
    res = ChainResult()

    def standby() -> Bot:
        bot = Bot(ex.base_url, home, key, secret, speed=SPEED, settings=BUSY_TRADER, hold=True)
        bots.append(bot)
        return bot

    spare = standby()

    def start() -> Bot:
        """The warm standby starts on the state file (and a new standby is made for next time)."""
        nonlocal spare
        bot = spare.go()
        bot.wait_for(_is("engine", "engine started"), 20, what="engine start")
        spare = standby()  # imports while this one trades
        return bot

    bot = start()
    history: set[int] = set()
    for run in range(KILLS_PER_CHAIN):
        target = TARGETS[(first_target + run) % len(TARGETS)]
        pred, delay = _kill_plan(rng, target)
        watch = bot.kill_on(pred, delay)
        budget = rng.uniform(0.2, 2.0) if target == "anytime" else 10.0
        if not watch.fired.wait(budget):
            bot.kill9()  # the aimed-at moment did not come in time: a random kill then
            target = "anytime" if target == "anytime" else f"{target}:timeout"
        res.hits[target] += 1
        where = f"seed {seed} run {run} ({target})"
        assert bot.proc.returncode == -9, f"{where}: the bot exited by itself ({bot.proc.returncode}):\n{bot.tail()}"

        # -- the dead bot left a readable state behind, nothing moved aside
        before = read_state(state_path)
        assert not list(state_path.parent.glob("*.corrupt-*")), f"{where}: a state file was moved aside as corrupt"
        at_kill = venue_state(ex)

        # -- restart on the same state
        bot = start()
        assert not any("unreadable" in ln.msg for ln in bot.events("error")), bot.tail()
        time.sleep(GUARD_SEC / SPEED + 0.1)  # one guard interval of the new bot
        now = venue_state(ex)
        after = read_state(state_path)
        assert after is not None
        if before is not None:
            assert before.id_salt == after.id_salt  # the same state carried on (client ids stay unique)

        # -- every position that survived the kill has its stop
        legacy = [s for s in at_kill.positions if s in now.positions and now.fills[s] == at_kill.fills[s]]
        naked = [s for s in legacy if not now.stops(s)]
        assert not naked, f"{where}: positions without a stop after one guard interval: {naked}\n{bot.tail(30)}"
        res.carried += len(legacy)

        # -- no trade lost from history (closed on the venue by the kill -> recorded by the
        #    restarted bot's start-up reconciliation), none recorded twice, history never shrinks
        recorded = [t.trade_no for t in after.history]
        assert len(recorded) == len(set(recorded)), f"{where}: a trade recorded twice: {recorded}"
        missing = closed_trade_nos(at_kill, after.id_salt) - set(recorded)
        assert not missing, f"{where}: trades closed on the venue but not in history: {missing}\n{bot.tail(30)}"
        assert history <= set(recorded), f"{where}: history lost {history - set(recorded)}"
        history = set(recorded)
        for ln in bot.events():
            if ln.event in ("bracket_repaired", "position_adopted") or (ln.event == "notice" and "unconfirmed" in ln.msg):
                res.repairs[ln.event] += 1

    # -- a clean stop at the end, then one reconcile-only start: state and venue agree
    spare.close()
    assert bot.terminate() == 0, bot.tail()
    state = final_reconcile(ex, home, key, secret, bots, speed=SPEED, settings=BUSY_TRADER)
    recorded = [t.trade_no for t in state.history]
    assert history <= set(recorded)
    res.closed = len(recorded)
    return res


def test_kill9_at_random_points_then_restart(loopback, bots, tmp_path) -> None:
    """``CHAINS`` bots on their own exchanges side by side (the runs are I/O-bound)."""
    key, secret = make_keys(2)
    jobs = []
    with ThreadPoolExecutor(CHAINS) as pool:
        for i in range(CHAINS):
            ex = loopback(synthetic=12, seed=5 + i, speed=SPEED, api_key=key, api_secret=secret)
            ex.control(latency_paths=LATENCY)
            jobs.append(pool.submit(_chain, ex, tmp_path / f"bot{i}", key, secret, 20261125 + i,
                                    i * KILLS_PER_CHAIN, bots))
        results = [j.result() for j in jobs]

    hits = sum((r.hits for r in results), Counter())
    repairs = sum((r.repairs for r in results), Counter())
    closed = sum(r.closed for r in results)
    carried = sum(r.carried for r in results)
    print(f"\nkill -9 chaos: {dict(hits)}; trades closed {closed}, positions carried over a kill {carried}, "
          f"repairs after restarts {dict(repairs)}")
    # the runs really exercised what they claim
    assert sum(hits.values()) == CHAINS * KILLS_PER_CHAIN == 30
    for t in ("entry", "brackets", "fasttp", "state_write"):
        assert hits[t] >= 3, f"too few kills landed on {t}: {dict(hits)}"
    assert closed >= 10 and carried >= 10
