"""The trading policy: a LinUCB bandit for admission (TAKE/SKIP) and size (S/M/L), plus an
online alpha model that may veto or promote a trade.  Pure and deterministic given a seed:
numpy and the standard library only, no I/O, no clock (times are passed in), no globals.

What the engine calls
---------------------
``decide(features)`` for every signal that passed the filters, ``note_entry`` once the entry
filled, ``note_exit(decision_id, r)`` when the trade is closed out from the venue's fills, and
``note_cancel`` when a TAKE never became a position (caps, sizing, a refused order).

Context
-------
The raw feature vector is standardised online (Welford running mean and variance, persisted),
clipped to +-``Z_CLIP`` standard deviations and prefixed with a bias term 1.0.  The standardised
context of a decision is stored with it, so learning at the exit uses exactly what the decision saw.

Rewards (documented contract)
-----------------------------
* ``R`` is the realised result of a trade in units of its initial risk, fees included
  (the engine computes it from the venue's fills).  The policy clips it to
  ``[R_MIN, R_MAX] = [-2, +3]``: a stop fills near -1 R (worse with slippage and fees; -2 leaves
  room for a gap) and the take-profit sits near TP_ATR_MULT / SL_ATR_MULT ~ 1.5 R, while a single
  freak fill must not dominate a least-squares fit.
* Gate: two arms.  ``TAKE`` learns from the clipped R of every closed trade.  ``SKIP`` earns 0 by
  definition; that reward is known whatever we do, so the SKIP arm is updated with 0 at every
  decision (its mean stays 0 and its confidence width shrinks).  TAKE wins when its upper
  confidence bound is at least SKIP's (ties go to TAKE: optimism while data is scarce).
* Buckets: three arms S/M/L with risk multipliers ``m`` (ASTER_SIZE_MULT_S/M/L).  A bucket's reward
  is the mean-variance utility of the trade had it been sized with that bucket::

      u(m, R) = m * R - (gamma / 2) * (m * R) ** 2        gamma = ASTER_BANDIT_RISK_AVERSION

  Its expectation ``m*mu - gamma/2 * m^2 * E[R^2]`` is maximised by the bucket nearest
  ``mu / (gamma * E[R^2])``: small edges pick S, medium edges M, large edges L, so every bucket
  can win when it deserves to (the original's ``UCB(m*x) = m*UCB(x)`` could only pick S or L).
  R per unit risk does not depend on the size, so each closed trade updates all three arms with
  their own utility (full-information feedback): the size choice needs no exploration of its own.
  Sizing is cautious where admission is optimistic: bucket i (S=0, M=1, L=2) scores
  ``mean_i - ASTER_BANDIT_SIZE_CAUTION * i * width``, so each step up must beat the smaller bucket
  by the model's confidence width ``sqrt(z^T A^-1 z)``.  A few lucky trades do not size up; the
  width shrinks as trades accumulate, and then the best bucket wins.
* Alpha model: online logistic regression of ``P(R > ASTER_ALPHA_MARGIN)`` on the context, one SGD
  step per closed trade (lr ASTER_ALPHA_LR, L2 ASTER_ALPHA_L2, bias not penalised).

Alpha model gating
------------------
Its *confidence* is the Gini coefficient (2*AUC - 1, floored at 0) of its own out-of-sample
predictions over the last ``ALPHA_WINDOW`` closed trades: each trade is scored by the model *before*
the model learns from it.  A model that predicts nothing (a constant, or an untrained 0.5) has
confidence 0.  The model acts only when it is *ready*: at least ASTER_ALPHA_WARMUP trades learned
and confidence >= ASTER_ALPHA_MIN_CONF.  Once ready, ``p < ASTER_ALPHA_THRESHOLD`` vetoes a TAKE and
``p >= threshold + ASTER_ALPHA_PROMOTE`` promotes its bucket one step (S->M->L).  Before warm-up it
never vetoes.  It keeps learning while disabled, so enabling it later starts warm.

No deadlock, ever
-----------------
Two exploration floors take a signal in the smallest bucket (S) whatever the models say, overriding
both the gate and the alpha veto: after ASTER_BANDIT_MAX_SKIPS skips in a row, and with probability
ASTER_BANDIT_EXPLORE on any skip (seeded, persisted RNG).  So at least one signal in every
``max_skips + 1`` is taken, from any model state, and the trades it takes feed the models back.

ASTER_BANDIT_ENABLED = false takes every signal in bucket M (reason ``bandit_disabled``); the
models keep learning from the outcomes.

Decision ids and persistence
----------------------------
``d<seq>-<now_ms>-<symbol>``: a persisted counter makes them unique and deterministic, the time
keeps them unique even if the state is ever lost.  TAKEs awaiting their exit (``pending``) are part
of the state, so an exit after a restart still teaches the models.  ``to_dict`` / ``from_dict``
round-trip exactly through JSON (schema ``mraster.policy``, version ``SCHEMA_VERSION``); settings are
not part of the state, they are applied on load and by ``update_settings``.

Failing closed
--------------
Any exception inside ``decide`` yields ``Decision(take=False, reason="policy_error: ...")`` with
the error in ``Decision.error`` and an error logged; it never trades by accident.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

_log = logging.getLogger(__name__)

SCHEMA = "mraster.policy"
SCHEMA_VERSION = 1

R_MIN, R_MAX = -2.0, 3.0
Z_CLIP = 4.0
BUCKETS: tuple[str, str, str] = ("S", "M", "L")
_BUCKET_STEPS = np.arange(len(BUCKETS), dtype=np.float64)  # steps up from S
GATE_ARMS: tuple[str, str] = ("TAKE", "SKIP")  # order matters: ties go to TAKE
ALPHA_WINDOW = 200  # out-of-sample predictions kept to measure the alpha model's confidence
RECENT_MAX = 100  # decisions kept for the TUI
MAX_PENDING = 500  # decisions awaiting an exit; beyond this the oldest never-entered ones go first
REFRESH_EVERY = 256  # LinUCB updates per arm between exact re-inversions (bounds rounding drift)
_STATE_RTOL = 1e-4  # consistency a restored LinUCB state must show between A, A^-1, b and theta

# Settings this module needs that the schema may not have yet: (attribute, default).
NEW_SETTING_DEFAULTS: dict[str, Any] = {
    "bandit_ucb_alpha": 1.0,
    "bandit_explore": 0.05,
    "bandit_max_skips": 20,
    "bandit_risk_aversion": 0.15,
    "bandit_size_caution": 1.0,
}


class PolicyError(ValueError):
    """Bad input to the policy (features, R, settings)."""


class PolicyStateError(PolicyError):
    """A persisted policy state that cannot be restored (wrong schema, shape or corrupt values)."""


def clip_r(r: float) -> float:
    """Realised R clipped to the documented range ``[R_MIN, R_MAX]``."""
    return min(R_MAX, max(R_MIN, float(r)))


def bucket_reward(r: float, multiplier: float, risk_aversion: float) -> float:
    """Mean-variance utility of a trade of clipped R sized with ``multiplier``."""
    x = multiplier * clip_r(r)
    return x - 0.5 * risk_aversion * x * x


# --------------------------------------------------------------------------------------------
# small helpers for exact, validated persistence
# --------------------------------------------------------------------------------------------

def _array(data: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        arr = np.array(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise PolicyStateError(f"{what}: expected a numeric array of shape {shape}") from None
    if arr.shape != shape:
        raise PolicyStateError(f"{what}: shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all():
        raise PolicyStateError(f"{what}: non-finite values")
    return arr


def _field(data: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return data[key]
    except (KeyError, TypeError):
        raise PolicyStateError(f"{what}: missing {key!r}") from None


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PolicyStateError(f"{what}: expected an integer >= {minimum}, got {value!r}")
    return value


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyStateError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# LinUCB
# --------------------------------------------------------------------------------------------

class LinUCB:
    """Disjoint LinUCB (Li et al. 2010): one ridge regression per arm.

    Each arm keeps ``A = ridge*I + sum x x^T`` and ``b = sum r x``; ``A^-1`` is kept up to date
    with the Sherman-Morrison formula, so ``choose`` and ``update`` cost O(d^2) per arm.  Every
    ``REFRESH_EVERY`` updates of an arm its inverse is recomputed exactly from ``A`` so rounding
    cannot drift over a long run.  ``UCB = theta.x + alpha * sqrt(x^T A^-1 x)``; ties go to the
    arm listed first.
    """

    def __init__(self, arms: Sequence[str], dim: int, alpha: float, ridge: float = 1.0) -> None:
        arms = tuple(arms)
        if not arms or len(set(arms)) != len(arms) or not all(isinstance(a, str) and a for a in arms):
            raise ValueError(f"LinUCB needs distinct non-empty arm names, got {arms!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"LinUCB dim must be a positive integer, got {dim!r}")
        if not math.isfinite(ridge) or ridge <= 0:
            raise ValueError(f"LinUCB ridge must be > 0, got {ridge!r}")
        self.arms = arms
        self.dim = dim
        self.alpha = self._check_alpha(alpha)
        self.ridge = float(ridge)
        self._index = {a: i for i, a in enumerate(arms)}
        k = len(arms)
        eye = np.eye(dim)
        self._A = np.repeat((self.ridge * eye)[None], k, axis=0)
        self._A_inv = np.repeat((eye / self.ridge)[None], k, axis=0)
        self._b = np.zeros((k, dim))
        self._theta = np.zeros((k, dim))
        self._n = np.zeros(k, dtype=np.int64)
        self._reward_sum = np.zeros(k)
        self._since_refresh = np.zeros(k, dtype=np.int64)

    @staticmethod
    def _check_alpha(alpha: float) -> float:
        alpha = float(alpha)
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"LinUCB alpha must be >= 0, got {alpha!r}")
        return alpha

    def set_alpha(self, alpha: float) -> None:
        self.alpha = self._check_alpha(alpha)

    def _context(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"context has shape {x.shape}, expected ({self.dim},)")
        if not np.isfinite(x).all():
            raise ValueError("context has non-finite values")
        return x

    def _arm(self, arm: str) -> int:
        try:
            return self._index[arm]
        except KeyError:
            raise ValueError(f"unknown arm {arm!r}; arms are {', '.join(self.arms)}") from None

    def _estimate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ax = self._A_inv @ x  # (k, d)
        var = ax @ x
        np.maximum(var, 0.0, out=var)  # rounding can make a tiny variance negative
        return self._theta @ x, np.sqrt(var)

    def _ucb(self, x: np.ndarray) -> np.ndarray:
        mean, width = self._estimate(x)
        return mean + self.alpha * width

    def estimate(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per arm (in arm order): predicted reward ``theta.x`` and width ``sqrt(x^T A^-1 x)``."""
        return self._estimate(self._context(x))

    def scores(self, x: Any) -> dict[str, float]:
        """Upper confidence bound of every arm for context ``x``."""
        return dict(zip(self.arms, self._ucb(self._context(x)).tolist()))

    def choose(self, x: Any) -> str:
        """The arm with the highest UCB (the first listed on a tie)."""
        return self.arms[int(np.argmax(self._ucb(self._context(x))))]

    def update(self, arm: str, x: Any, reward: float) -> None:
        i = self._arm(arm)
        x = self._context(x)
        r = float(reward)
        if not math.isfinite(r):
            raise ValueError(f"reward must be finite, got {reward!r}")
        self._update(i, x, r)

    def _update(self, i: int, x: np.ndarray, r: float) -> None:
        """:meth:`update` of arm index ``i`` with a checked context and a finite reward."""
        a_inv = self._A_inv[i]
        ax = a_inv @ x
        k = ax / math.sqrt(1.0 + float(x @ ax))
        # Sherman-Morrison; k k^T (np.outer's own product) keeps A^-1 exactly symmetric
        a_inv -= k[:, None] * k[None, :]
        self._A[i] += x[:, None] * x[None, :]
        b = self._b[i]
        b += r * x
        self._n[i] += 1
        self._reward_sum[i] += r
        self._since_refresh[i] += 1
        if self._since_refresh[i] >= REFRESH_EVERY:
            inv = np.linalg.inv(self._A[i])
            self._A_inv[i] = a_inv = 0.5 * (inv + inv.T)
            self._since_refresh[i] = 0
        self._theta[i] = a_inv @ b

    def theta(self, arm: str) -> np.ndarray:
        return self._theta[self._arm(arm)].copy()

    def pulls(self, arm: str) -> int:
        """Number of updates the arm has received."""
        return int(self._n[self._arm(arm)])

    def mean_reward(self, arm: str) -> float | None:
        i = self._arm(arm)
        return float(self._reward_sum[i] / self._n[i]) if self._n[i] else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "arms": list(self.arms),
            "dim": self.dim,
            "alpha": self.alpha,
            "ridge": self.ridge,
            "A": self._A.tolist(),
            "A_inv": self._A_inv.tolist(),
            "b": self._b.tolist(),
            "theta": self._theta.tolist(),
            "n": self._n.tolist(),
            "reward_sum": self._reward_sum.tolist(),
            "since_refresh": self._since_refresh.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str = "linucb") -> "LinUCB":
        """Restore exactly what ``to_dict`` produced; refuses inconsistent or non-finite state."""
        arms = _field(data, "arms", what)
        dim = _int(_field(data, "dim", what), f"{what}.dim", 1)
        try:
            model = cls(arms, dim, _float(_field(data, "alpha", what), f"{what}.alpha"),
                        _float(_field(data, "ridge", what), f"{what}.ridge"))
        except ValueError as exc:
            raise PolicyStateError(f"{what}: {exc}") from None
        k = len(model.arms)
        model._A = _array(_field(data, "A", what), (k, dim, dim), f"{what}.A")
        model._A_inv = _array(_field(data, "A_inv", what), (k, dim, dim), f"{what}.A_inv")
        model._b = _array(_field(data, "b", what), (k, dim), f"{what}.b")
        model._theta = _array(_field(data, "theta", what), (k, dim), f"{what}.theta")
        model._reward_sum = _array(_field(data, "reward_sum", what), (k,), f"{what}.reward_sum")
        for name in ("n", "since_refresh"):
            values = _field(data, name, what)
            if not isinstance(values, list) or len(values) != k:
                raise PolicyStateError(f"{what}.{name}: expected {k} integers")
            setattr(model, f"_{name}", np.array([_int(v, f"{what}.{name}") for v in values], dtype=np.int64))
        for i, arm in enumerate(model.arms):
            try:
                exact = np.linalg.inv(model._A[i])
            except np.linalg.LinAlgError:
                raise PolicyStateError(f"{what} arm {arm}: A is singular") from None
            # Sherman-Morrison drift stays far below 1e-4 between refreshes (~1e-9 measured on
            # 200,000 collinear updates); a larger gap means the arrays do not belong together
            if np.max(np.abs(model._A_inv[i] - exact)) > _STATE_RTOL * max(np.max(np.abs(exact)), 1e-300):
                raise PolicyStateError(f"{what} arm {arm}: stored inverse does not match A (corrupt state)")
            if np.max(np.abs(model._theta[i] - model._A_inv[i] @ model._b[i])) > _STATE_RTOL * (
                    1.0 + np.max(np.abs(model._theta[i]))):
                raise PolicyStateError(f"{what} arm {arm}: theta does not match A_inv b (corrupt state)")
        return model


# --------------------------------------------------------------------------------------------
# feature scaling and the alpha model
# --------------------------------------------------------------------------------------------

class OnlineStandardizer:
    """Running mean and variance (Welford) per feature; ``transform`` gives clipped z-scores.

    A feature with no spread yet (fewer than two samples, or a constant) maps to 0.
    """

    def __init__(self, dim: int, clip: float = Z_CLIP) -> None:
        self.dim = dim
        self.clip = float(clip)
        self.n = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def update(self, x: np.ndarray) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def var(self) -> np.ndarray:
        """Sample variance (ddof=1); zeros before two samples."""
        return self.m2 / (self.n - 1) if self.n >= 2 else np.zeros(self.dim)

    def transform(self, x: np.ndarray) -> np.ndarray:
        std = np.sqrt(self.var)
        # a spread below float noise relative to the mean is a constant feature
        usable = std > 1e-12 * (1.0 + np.abs(self.mean))
        z = np.divide(x - self.mean, std, out=np.zeros(self.dim), where=usable)
        np.maximum(z, -self.clip, out=z)  # np.clip's result, without its Python-level overhead
        return np.minimum(z, self.clip, out=z)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "clip": self.clip, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], dim: int) -> "OnlineStandardizer":
        clip = _float(_field(data, "clip", "scaler"), "scaler.clip")
        if clip <= 0:
            raise PolicyStateError("scaler.clip must be > 0")
        s = cls(dim, clip)
        s.n = _int(_field(data, "n", "scaler"), "scaler.n")
        s.mean = _array(_field(data, "mean", "scaler"), (dim,), "scaler.mean")
        s.m2 = _array(_field(data, "m2", "scaler"), (dim,), "scaler.m2")
        if (s.m2 < 0).any():
            raise PolicyStateError("scaler.m2: negative sum of squares")
        return s


def gini(p: np.ndarray, y: np.ndarray) -> float:
    """2*AUC - 1 of scores ``p`` for binary labels ``y`` (ties count half); 0 with one class."""
    pos = int(y.sum())
    neg = y.size - pos
    if pos == 0 or neg == 0:
        return 0.0
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # average rank of each tie group
    auc = (ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg)
    return float(2.0 * auc - 1.0)


class AlphaModel:
    """Online logistic regression of ``P(R > margin)`` on the standardised context (bias at 0)."""

    def __init__(self, dim: int, *, lr: float, l2: float, margin: float) -> None:
        self.dim = dim
        self.lr = lr
        self.l2 = l2
        self.margin = margin
        self.w = np.zeros(dim)
        self.trained = 0
        self._hist_p: deque[float] = deque(maxlen=ALPHA_WINDOW)
        self._hist_y: deque[int] = deque(maxlen=ALPHA_WINDOW)
        self._confidence = 0.0  # cached: it only changes when the model learns
        self._l2_mask = np.ones(dim)
        self._l2_mask[0] = 0.0  # the bias is not penalised

    def predict(self, z: np.ndarray) -> float:
        logit = min(35.0, max(-35.0, float(self.w @ z)))
        return 1.0 / (1.0 + math.exp(-logit))

    def learn(self, z: np.ndarray, r: float) -> None:
        """One SGD step; the prediction made before it is kept to measure confidence."""
        p = self.predict(z)
        y = 1 if r > self.margin else 0
        self._hist_p.append(p)
        self._hist_y.append(y)
        self.w -= self.lr * ((p - y) * z + self.l2 * self._l2_mask * self.w)
        self.trained += 1
        self._update_confidence()

    def _update_confidence(self) -> None:
        self._confidence = max(0.0, gini(np.array(self._hist_p), np.array(self._hist_y))) if self._hist_p else 0.0

    @property
    def confidence(self) -> float:
        """Gini of the out-of-sample predictions in the window, floored at 0."""
        return self._confidence

    def ready(self, warmup: int, min_conf: float) -> bool:
        return self.trained >= warmup and self.confidence >= min_conf

    def to_dict(self) -> dict[str, Any]:
        return {"w": self.w.tolist(), "trained": self.trained,
                "hist_p": list(self._hist_p), "hist_y": list(self._hist_y)}

    def load(self, data: Mapping[str, Any]) -> None:
        """Restore learned state (hyper-parameters come from the settings)."""
        self.w = _array(_field(data, "w", "alpha"), (self.dim,), "alpha.w")
        self.trained = _int(_field(data, "trained", "alpha"), "alpha.trained")
        hist_p = _field(data, "hist_p", "alpha")
        hist_y = _field(data, "hist_y", "alpha")
        if not isinstance(hist_p, list) or not isinstance(hist_y, list) or len(hist_p) != len(hist_y) \
                or len(hist_p) > ALPHA_WINDOW:
            raise PolicyStateError("alpha: prediction history is malformed")
        p = _array(hist_p, (len(hist_p),), "alpha.hist_p")
        if ((p < 0) | (p > 1)).any() or any(v not in (0, 1) or isinstance(v, bool) for v in hist_y):
            raise PolicyStateError("alpha: prediction history out of range")
        self._hist_p = deque((float(v) for v in hist_p), maxlen=ALPHA_WINDOW)
        self._hist_y = deque(hist_y, maxlen=ALPHA_WINDOW)
        self._update_confidence()


# --------------------------------------------------------------------------------------------
# the policy the engine calls
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PolicyParams:
    """The settings the policy reads, validated.  New settings fall back to their defaults."""

    bandit_enabled: bool
    ucb_alpha: float
    explore: float
    max_skips: int
    risk_aversion: float
    size_caution: float
    multipliers: tuple[float, float, float]
    alpha_enabled: bool
    alpha_threshold: float
    alpha_warmup: int
    alpha_lr: float
    alpha_l2: float
    alpha_min_conf: float
    alpha_promote: float
    alpha_margin: float

    @classmethod
    def from_settings(cls, s: Any) -> "PolicyParams":
        def get(name: str, default: Any = None) -> Any:
            value = getattr(s, name, NEW_SETTING_DEFAULTS.get(name, default))
            if value is None:
                raise PolicyError(f"setting {name} is missing")
            return value

        def num(name: str, lo: float, hi: float) -> float:
            value = get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or not lo <= value <= hi:
                raise PolicyError(f"setting {name}={value!r}: expected a number in {lo:g}..{hi:g}")
            return float(value)

        def flag(name: str) -> bool:
            value = get(name, True)
            if not isinstance(value, bool):
                raise PolicyError(f"setting {name}={value!r}: expected true or false")
            return value

        return cls(
            bandit_enabled=flag("bandit_enabled"),
            ucb_alpha=num("bandit_ucb_alpha", 0.0, 10.0),
            explore=num("bandit_explore", 0.0, 0.5),
            max_skips=int(num("bandit_max_skips", 1, 1000)),
            risk_aversion=num("bandit_risk_aversion", 0.0, 5.0),
            size_caution=num("bandit_size_caution", 0.0, 10.0),
            multipliers=(num("size_mult_s", 0.0, 100.0), num("size_mult_m", 0.0, 100.0),
                         num("size_mult_l", 0.0, 100.0)),
            alpha_enabled=flag("alpha_enabled"),
            alpha_threshold=num("alpha_threshold", 0.0, 1.0),
            alpha_warmup=int(num("alpha_warmup", 0, 10_000_000)),
            alpha_lr=num("alpha_lr", 0.0, 10.0),
            alpha_l2=num("alpha_l2", 0.0, 10.0),
            alpha_min_conf=num("alpha_min_conf", 0.0, 1.0),
            alpha_promote=num("alpha_promote", 0.0, 1.0),
            alpha_margin=num("alpha_margin", -100.0, 100.0),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy says about one signal.  ``bucket`` is the size the bandit would use even
    when ``take`` is False (useful in the decision log); ``error`` is set when it failed closed.

    ``scores``: ``gate_take`` / ``gate_skip`` (the gate's UCBs), ``size_S/M/L`` (the cautious
    bucket scores the size was chosen by), ``alpha_p`` and ``alpha_conf`` (the alpha model's
    probability and confidence).  Empty when the policy failed."""

    take: bool
    bucket: str
    scores: dict[str, float]
    reason: str
    decision_id: str
    error: str | None = None

    @property
    def code(self) -> str:
        """The reason's stable code (``gate_skip``, ``alpha_veto``, ``explore_stall``...)."""
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A past decision as the TUI shows it; ``r`` is filled in when the trade closed."""

    decision_id: str
    symbol: str
    time_ms: int
    take: bool
    bucket: str
    reason: str
    r: float | None = None


@dataclass(slots=True)
class _Pending:
    """A TAKE awaiting its exit (persisted: positions outlive processes)."""

    decision_id: str
    symbol: str
    time_ms: int
    z: list[float]
    bucket: str
    entered: bool = False
    side: str = ""
    qty: str = ""
    entry: str = ""
    stop: str = ""
    entry_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class ArmStats:
    model: str  # "gate" or "size"
    arm: str
    pulls: int  # times this arm was chosen
    updates: int  # learning updates received
    mean_reward: float | None
    ucb: float | None  # for the latest context seen


@dataclass(frozen=True, slots=True)
class AlphaStats:
    enabled: bool
    ready: bool
    trained: int
    warmup: int
    confidence: float
    min_conf: float


@dataclass(frozen=True, slots=True)
class PolicyStats:
    """A plain snapshot for the TUI (``as_dict`` for a JSON-ready dict)."""

    bandit_enabled: bool
    decisions: int
    taken: int
    errors: int
    exits: int
    pending: int
    skips_in_row: int
    arms: tuple[ArmStats, ...]
    bucket_usage: dict[str, int]
    reason_counts: dict[str, int]
    alpha: AlphaStats
    recent: tuple[DecisionRecord, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BanditPolicy:
    """Admission and sizing for the engine; see the module docstring for the contract."""

    def __init__(self, settings: Any, *, dim: int, seed: int = 0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise PolicyError(f"the policy needs a positive feature count, got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PolicyError(f"the policy seed must be a non-negative integer, got {seed!r}")
        self.params = PolicyParams.from_settings(settings)
        self.dim = dim
        self.seed = seed
        d = dim + 1  # bias term
        self._scaler = OnlineStandardizer(dim)
        self._gate = LinUCB(GATE_ARMS, d, self.params.ucb_alpha)
        self._size = LinUCB(BUCKETS, d, self.params.ucb_alpha)
        self._alpha = AlphaModel(d, lr=self.params.alpha_lr, l2=self.params.alpha_l2,
                                 margin=self.params.alpha_margin)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._seq = 0
        self._taken = 0
        self._errors = 0
        self._exits = 0
        self._skips_in_row = 0
        self._bucket_usage = {b: 0 for b in BUCKETS}
        self._reason_counts: dict[str, int] = {}
        self._pending: dict[str, _Pending] = {}
        self._recent: deque[DecisionRecord] = deque(maxlen=RECENT_MAX)
        self._last_z: np.ndarray | None = None

    # ---- settings ------------------------------------------------------------------------

    def update_settings(self, settings: Any) -> None:
        """Apply changed settings to the running policy (all or nothing)."""
        params = PolicyParams.from_settings(settings)
        self.params = params
        self._gate.set_alpha(params.ucb_alpha)
        self._size.set_alpha(params.ucb_alpha)
        self._alpha.lr, self._alpha.l2, self._alpha.margin = params.alpha_lr, params.alpha_l2, params.alpha_margin

    # ---- decisions -----------------------------------------------------------------------

    def decide(self, features: Any, *, symbol: str = "", now_ms: int = 0) -> Decision:
        """TAKE or SKIP a signal that passed the filters, and its size bucket.  Never raises."""
        self._seq += 1
        try:
            t = int(now_ms)
        except (TypeError, ValueError):
            t = 0
        decision_id = f"d{self._seq}-{t}-{symbol}" if symbol else f"d{self._seq}-{t}"
        try:
            decision = self._decide(decision_id, features, symbol, t)
        except Exception as exc:  # fail closed: never trade on a broken policy
            msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            _log.error("policy failed closed for %s (%s): %s", symbol or "?", decision_id, msg)
            self._errors += 1
            decision = Decision(False, "S", {}, f"policy_error: {msg}", decision_id, error=msg)
        self._reason_counts[decision.code] = self._reason_counts.get(decision.code, 0) + 1
        self._recent.append(DecisionRecord(decision_id, symbol, t, decision.take,
                                           decision.bucket, decision.reason))
        return decision

    def _features(self, features: Any) -> np.ndarray:
        x = np.array(features, dtype=np.float64)
        if x.shape != (self.dim,):
            raise PolicyError(f"expected {self.dim} features, got shape {x.shape}")
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            raise PolicyError(f"non-finite features at index {bad.tolist()}")
        return x

    def _decide(self, decision_id: str, features: Any, symbol: str, now_ms: int) -> Decision:
        p = self.params
        x = self._features(features)
        u = float(self._rng.random())  # drawn for every valid decision: a stable random stream
        self._scaler.update(x)
        z = np.empty(self.dim + 1)
        z[0] = 1.0
        z[1:] = self._scaler.transform(x)
        self._last_z = z

        gate = self._gate.scores(z)  # checks z; the calls below take it as it is
        mean, width = self._size._estimate(z)
        cautious = mean - p.size_caution * width * _BUCKET_STEPS  # each step up must beat the width
        bucket = BUCKETS[int(np.argmax(cautious))]
        prob = self._alpha.predict(z)
        conf = self._alpha.confidence
        scores = {"gate_take": gate["TAKE"], "gate_skip": gate["SKIP"],
                  **{f"size_{b}": v for b, v in zip(BUCKETS, cautious.tolist())}, "alpha_p": prob,
                  "alpha_conf": conf}

        if not p.bandit_enabled:
            take, bucket, reason = True, "M", "bandit_disabled"
        else:
            take = gate["TAKE"] >= gate["SKIP"]
            if take:
                reason = f"gate_take: ucb {gate['TAKE']:+.3f} >= skip {gate['SKIP']:.3f}, bucket {bucket}"
                if p.alpha_enabled and self._alpha.ready(p.alpha_warmup, p.alpha_min_conf):
                    if prob < p.alpha_threshold:
                        take = False
                        reason = f"alpha_veto: p {prob:.3f} < {p.alpha_threshold:.3f} (conf {conf:.2f})"
                    elif prob >= p.alpha_threshold + p.alpha_promote and bucket != "L":
                        bucket = BUCKETS[BUCKETS.index(bucket) + 1]
                        reason += f"; alpha promotes to {bucket} (p {prob:.3f})"
            else:
                reason = f"gate_skip: ucb {gate['TAKE']:+.3f} < skip {gate['SKIP']:.3f}"
            if not take:
                if self._skips_in_row >= p.max_skips:
                    take, bucket = True, "S"
                    reason = f"explore_stall: {self._skips_in_row} skips in a row ({reason})"
                elif u < p.explore:
                    take, bucket = True, "S"
                    reason = f"explore: random floor {p.explore:.3f} ({reason})"

        self._gate._update(self._gate._arm("SKIP"), z, 0.0)  # SKIP's reward, 0, is known whatever we do
        if take:
            self._skips_in_row = 0
            self._taken += 1
            self._bucket_usage[bucket] += 1
            self._add_pending(_Pending(decision_id, symbol, now_ms, z.tolist(), bucket))
        else:
            self._skips_in_row += 1
        return Decision(take, bucket, scores, reason, decision_id)

    def _add_pending(self, item: _Pending) -> None:
        self._pending[item.decision_id] = item
        if len(self._pending) > MAX_PENDING:
            victim = next((k for k, v in self._pending.items() if not v.entered), next(iter(self._pending)))
            _log.warning("policy: dropping pending decision %s (more than %d awaiting exit)", victim, MAX_PENDING)
            del self._pending[victim]

    # ---- outcomes ------------------------------------------------------------------------

    def note_entry(self, decision_id: str, *, symbol: str, qty: Any, entry: Any, side: str = "",
                   stop: Any = None, time_ms: int = 0) -> bool:
        """Record that a TAKE became a position.  False (and a warning) for an unknown id."""
        item = self._pending.get(decision_id)
        if item is None or item.symbol != symbol:
            _log.warning("policy: entry for unknown decision %s (%s)", decision_id, symbol)
            return False
        item.entered = True
        item.side, item.qty, item.entry = str(side), str(qty), str(entry)
        item.stop = "" if stop is None else str(stop)
        item.entry_time_ms = int(time_ms)
        return True

    def note_cancel(self, decision_id: str) -> bool:
        """Forget a TAKE that never became a position (nothing is learned)."""
        return self._pending.pop(decision_id, None) is not None

    def note_exit(self, decision_id: str, r: float) -> bool:
        """Learn from a closed trade's realised R (fees included).  False for an unknown id.

        Raises :class:`PolicyError` for a non-finite R (the decision stays pending)."""
        try:
            value = float(r)
        except (TypeError, ValueError):
            raise PolicyError(f"R for {decision_id} is not a number: {r!r}") from None
        if not math.isfinite(value):
            raise PolicyError(f"R for {decision_id} is not finite: {r!r}")
        item = self._pending.pop(decision_id, None)
        if item is None:
            _log.warning("policy: exit for unknown decision %s ignored", decision_id)
            return False
        rc = clip_r(value)
        z = np.array(item.z, dtype=np.float64)
        self._gate.update("TAKE", z, rc)
        for b, m in zip(BUCKETS, self.params.multipliers):
            self._size.update(b, z, bucket_reward(rc, m, self.params.risk_aversion))
        self._alpha.learn(z, rc)
        self._exits += 1
        for i, rec in enumerate(self._recent):
            if rec.decision_id == decision_id:
                self._recent[i] = replace(rec, r=value)
                break
        return True

    def pending_ids(self) -> list[str]:
        return list(self._pending)

    # ---- stats ---------------------------------------------------------------------------

    def stats(self, n_recent: int = 20) -> PolicyStats:
        p = self.params
        gate_ucb = self._gate.scores(self._last_z) if self._last_z is not None else {}
        size_ucb = self._size.scores(self._last_z) if self._last_z is not None else {}
        chosen = {"TAKE": self._taken, "SKIP": self._seq - self._errors - self._taken}
        arms = tuple(
            ArmStats("gate", a, chosen[a], self._gate.pulls(a), self._gate.mean_reward(a), gate_ucb.get(a))
            for a in GATE_ARMS
        ) + tuple(
            ArmStats("size", b, self._bucket_usage[b], self._size.pulls(b), self._size.mean_reward(b),
                     size_ucb.get(b))
            for b in BUCKETS
        )
        alpha = AlphaStats(p.alpha_enabled, self._alpha.ready(p.alpha_warmup, p.alpha_min_conf),
                           self._alpha.trained, p.alpha_warmup, self._alpha.confidence, p.alpha_min_conf)
        recent = tuple(self._recent)[-n_recent:] if n_recent > 0 else ()
        return PolicyStats(p.bandit_enabled, self._seq, self._taken, self._errors, self._exits,
                           len(self._pending), self._skips_in_row, arms, dict(self._bucket_usage),
                           dict(self._reason_counts), alpha, recent)

    # ---- persistence ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state; ``from_dict(to_dict())`` restores it exactly (settings excluded)."""
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "dim": self.dim,
            "seed": self.seed,
            "seq": self._seq,
            "taken": self._taken,
            "errors": self._errors,
            "exits": self._exits,
            "skips_in_row": self._skips_in_row,
            "bucket_usage": dict(self._bucket_usage),
            "reason_counts": dict(self._reason_counts),
            "rng": self._rng.bit_generator.state,
            "scaler": self._scaler.to_dict(),
            "gate": self._gate.to_dict(),
            "size": self._size.to_dict(),
            "alpha": self._alpha.to_dict(),
            "pending": [asdict(v) for v in self._pending.values()],
            "recent": [asdict(v) for v in self._recent],
            "last_z": None if self._last_z is None else self._last_z.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], settings: Any, *, dim: int | None = None) -> "BanditPolicy":
        """Restore a policy; raises :class:`PolicyStateError` with a one-line reason.

        ``dim`` (the engine's feature count) is checked against the stored one when given."""
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise PolicyStateError("not a policy state (schema marker missing)")
        version = data.get("version")
        if version != SCHEMA_VERSION:
            raise PolicyStateError(f"policy state version {version!r} is not supported (expected {SCHEMA_VERSION})")
        stored_dim = _int(_field(data, "dim", "policy"), "policy.dim", 1)
        if dim is not None and dim != stored_dim:
            raise PolicyStateError(f"policy state has {stored_dim} features but the engine gives {dim}")
        policy = cls(settings, dim=stored_dim, seed=_int(_field(data, "seed", "policy"), "policy.seed"))
        d = stored_dim + 1
        for name in ("seq", "taken", "errors", "exits", "skips_in_row"):
            setattr(policy, f"_{name}", _int(_field(data, name, "policy"), f"policy.{name}"))
        usage = _field(data, "bucket_usage", "policy")
        if not isinstance(usage, Mapping) or set(usage) != set(BUCKETS):
            raise PolicyStateError("policy.bucket_usage: expected counts for S, M and L")
        policy._bucket_usage = {b: _int(usage[b], f"policy.bucket_usage.{b}") for b in BUCKETS}
        counts = _field(data, "reason_counts", "policy")
        if not isinstance(counts, Mapping):
            raise PolicyStateError("policy.reason_counts: expected a mapping")
        policy._reason_counts = {str(k): _int(v, f"policy.reason_counts.{k}") for k, v in counts.items()}
        try:
            policy._rng.bit_generator.state = _field(data, "rng", "policy")
        except (TypeError, ValueError, KeyError) as exc:
            raise PolicyStateError(f"policy.rng: {exc}") from None
        policy._scaler = OnlineStandardizer.from_dict(_field(data, "scaler", "policy"), stored_dim)
        policy._gate = cls._model(data, "gate", GATE_ARMS, d)
        policy._size = cls._model(data, "size", BUCKETS, d)
        policy._gate.set_alpha(policy.params.ucb_alpha)
        policy._size.set_alpha(policy.params.ucb_alpha)
        policy._alpha.load(_field(data, "alpha", "policy"))
        policy._pending = {}
        for raw in _iter_list(_field(data, "pending", "policy"), "policy.pending"):
            item = cls._pending_from(raw, d)
            policy._pending[item.decision_id] = item
        recent = deque(maxlen=RECENT_MAX)
        for raw in _iter_list(_field(data, "recent", "policy"), "policy.recent"):
            try:
                recent.append(DecisionRecord(**raw))
            except TypeError as exc:
                raise PolicyStateError(f"policy.recent: {exc}") from None
        policy._recent = recent
        last_z = _field(data, "last_z", "policy")
        policy._last_z = None if last_z is None else _array(last_z, (d,), "policy.last_z")
        return policy

    @staticmethod
    def _model(data: Mapping[str, Any], name: str, arms: tuple[str, ...], d: int) -> LinUCB:
        model = LinUCB.from_dict(_field(data, name, "policy"), f"policy.{name}")
        if model.arms != arms or model.dim != d:
            raise PolicyStateError(f"policy.{name}: arms {model.arms} / dim {model.dim}, expected {arms} / {d}")
        return model

    @staticmethod
    def _pending_from(raw: Any, d: int) -> _Pending:
        try:
            item = _Pending(**raw)
        except TypeError as exc:
            raise PolicyStateError(f"policy.pending: {exc}") from None
        item.z = _array(item.z, (d,), f"policy.pending[{item.decision_id}].z").tolist()
        if item.bucket not in BUCKETS:
            raise PolicyStateError(f"policy.pending[{item.decision_id}]: bad bucket {item.bucket!r}")
        return item


def _iter_list(value: Any, what: str) -> Iterable[Any]:
    if not isinstance(value, list):
        raise PolicyStateError(f"{what}: expected a list")
    return value
