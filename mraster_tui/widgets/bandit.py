"""Bandit statistics: arms (pulls, mean reward, UCB), bucket usage, alpha readiness, recent
decisions with their reasons, and why signals were not traded.

The input is ``EngineSnapshot.bandit``: ``BanditPolicy.stats()`` as a dict (``PolicyStats.as_dict()``)
or the ``PolicyStats`` object itself.  Rendering is pure (``*_markup``) so it is tested without a
terminal; the widgets only swap their text when it changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from mraster_tui.widgets.fmt import clock

#: the "why not traded" list shows this many reasons
TOP_REASONS = 6


def as_stats_dict(stats: Any) -> dict[str, Any]:
    if not stats:
        return {}
    if isinstance(stats, Mapping):
        return dict(stats)
    if is_dataclass(stats) and not isinstance(stats, type):
        return asdict(stats)
    return {}


def _f(x: Any, signed: bool = True) -> str:
    if x is None:
        return "—"
    return f"{float(x):+.2f}" if signed else f"{float(x):.2f}"


def _esc(text: str) -> str:
    return Content(text).markup


def policy_markup(stats: Any) -> str:
    """Arms, bucket usage and alpha readiness as Content markup."""
    s = as_stats_dict(stats)
    if not s:
        return "[$foreground-muted]no policy statistics yet[/]"
    lines: list[str] = []
    if not s.get("bandit_enabled", True):
        lines.append("[$text-warning]bandit off: every passing signal taken, bucket M[/]")
    lines.append(f"[b]{'arm':<9}{'pulls':>5}{'learn':>6}{'mean':>7}{'ucb':>7}[/b]")
    arms = s.get("arms") or ()
    best: dict[str, float] = {}
    for a in arms:
        if a.get("ucb") is not None:
            best[a.get("model", "")] = max(best.get(a.get("model", ""), float("-inf")), float(a["ucb"]))
    for a in arms:
        model, arm = a.get("model", ""), str(a.get("arm", "?"))
        ucb = a.get("ucb")
        lead = ucb is not None and float(ucb) == best.get(model)
        name = f"{model}:{arm}" if model else arm
        text = (f"{name:<9.9}{int(a.get('pulls') or 0):>5}{int(a.get('updates') or 0):>6}"
                f"{_f(a.get('mean_reward')):>7}{_f(ucb):>7}")
        lines.append(f"[$text-accent]{_esc(text)}[/]" if lead else _esc(text))
    usage = s.get("bucket_usage") or {}
    if usage:
        lines.append("buckets  " + _esc("  ".join(f"{b} {int(n)}" for b, n in usage.items())))
    alpha = s.get("alpha") or {}
    if alpha:
        trained, warmup = int(alpha.get("trained") or 0), int(alpha.get("warmup") or 0)
        conf, min_conf = float(alpha.get("confidence") or 0.0), float(alpha.get("min_conf") or 0.0)
        if not alpha.get("enabled", True):
            state = "[$foreground-muted]off[/]"
        elif alpha.get("ready"):
            state = "[$text-success]ready[/]"
        else:
            state = "[$text-warning]warming up[/]"
        lines.append(f"alpha    {state} {trained}/{warmup} trades")
        lines.append(f"         conf {conf:.2f} (needs {min_conf:.2f})")
    decisions, taken = int(s.get("decisions") or 0), int(s.get("taken") or 0)
    lines.append(f"[$foreground-muted]{decisions} decisions · {taken} taken · {int(s.get('pending') or 0)} open[/]")
    return "\n".join(lines)


def why_not_markup(rejections: Mapping[str, int]) -> str:
    """The most frequent reasons signals were not traded."""
    top = sorted(rejections.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
    if not top:
        return "[b]why not traded[/b] [$foreground-muted]nothing rejected yet[/]"
    return "[b]why not traded[/b] " + "  ".join(f"{_esc(k)} [$text-warning]{v}[/]" for k, v in top)


def recent_markup(stats: Any, *, limit: int = 8) -> str:
    """The most recent decisions, newest first: a summary line and its reason."""
    recent = list(as_stats_dict(stats).get("recent") or ())[-limit:]
    if not recent:
        return "[$foreground-muted]no decisions yet[/]"
    lines: list[str] = []
    for d in reversed(recent):
        action = "[$text-success]TAKE[/]" if d.get("take") else "[$text-warning]SKIP[/]"
        r = d.get("r")
        outcome = "" if r is None else (f" [$text-success]{r:+.2f}R[/]" if r > 0 else f" [$text-error]{r:+.2f}R[/]")
        symbol = _esc(f"{d.get('symbol') or '':<9}")
        lines.append(f"{clock(int(d.get('time_ms') or 0))[:5]} {symbol} {action} {_esc(d.get('bucket') or '-')}{outcome}")
        lines.append(f"  [$foreground-muted]{_esc(str(d.get('reason') or ''))}[/]")
    return "\n".join(lines)


def summary_markup(stats: Any, rejections: Mapping[str, int]) -> str:
    """Two lines for the preset screen: decisions and buckets, alpha readiness and the top
    reasons signals were not traded."""
    s = as_stats_dict(stats)
    decisions, taken = int(s.get("decisions") or 0), int(s.get("taken") or 0)
    usage = s.get("bucket_usage") or {}
    buckets = "  ".join(f"{b} {int(n)}" for b, n in usage.items()) or "S 0  M 0  L 0"
    gate = ""
    for a in s.get("arms") or ():
        if a.get("model") == "gate" and a.get("arm") == "TAKE" and a.get("ucb") is not None:
            gate = f" · TAKE ucb {float(a['ucb']):+.2f}"
    first = (f"{decisions} decisions · [$text-success]{taken} taken[/] · buckets {_esc(buckets)}{_esc(gate)}"
             if s else "[$foreground-muted]no policy statistics yet[/]")
    if s and not s.get("bandit_enabled", True):
        first += " · [$text-warning]bandit off[/]"
    alpha = s.get("alpha") or {}
    if not alpha:
        a_txt = ""
    elif not alpha.get("enabled", True):
        a_txt = "alpha [$foreground-muted]off[/]"
    elif alpha.get("ready"):
        a_txt = "alpha [$text-success]ready[/]"
    else:
        a_txt = f"alpha [$text-warning]warming up[/] {int(alpha.get('trained') or 0)}/{int(alpha.get('warmup') or 0)}"
    top = sorted(rejections.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    why = ("not traded: " + "  ".join(f"{_esc(k)} [$text-warning]{v}[/]" for k, v in top)) if top else ""
    second = " · ".join(x for x in (a_txt, why) if x)
    return first + ("\n" + second if second else "")


class _MarkupPanel(Static):
    """A Static that re-parses its markup only when it changed."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self._markup = ""

    def set_markup(self, markup: str) -> None:
        if markup != self._markup:
            self._markup = markup
            self.update(Content.from_markup(markup))


class PolicyPanel(_MarkupPanel):
    DEFAULT_CSS = "PolicyPanel { height: auto; }"

    def show(self, stats: Any) -> None:
        self.set_markup(policy_markup(stats))


class BanditSummary(_MarkupPanel):
    """The preset screen's two-line bandit digest (the Pro screen has the full panels)."""

    DEFAULT_CSS = "BanditSummary { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }"

    def show(self, stats: Any, rejections: Mapping[str, int]) -> None:
        self.set_markup(summary_markup(stats, rejections))


class DecisionsPanel(Vertical):
    """Why signals were not traded (wrapped), then recent decisions (one line each, cut to fit)."""

    DEFAULT_CSS = """
    DecisionsPanel {
        height: auto;
        & > #why { height: auto; margin-bottom: 1; }
        & > #recent { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    }
    """

    def compose(self) -> ComposeResult:
        yield _MarkupPanel(id="why")
        yield _MarkupPanel(id="recent")

    def show(self, stats: Any, rejections: Mapping[str, int]) -> None:
        self.query_one("#why", _MarkupPanel).set_markup(why_not_markup(rejections))
        self.query_one("#recent", _MarkupPanel).set_markup(recent_markup(stats))
