"""A keyboard slider over a fixed grid of values (risk per trade, leverage)."""

from __future__ import annotations

import math
from collections.abc import Callable

from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

_EPS = 1e-9


def grid_step(value: float, steps: int, *, step: float, minimum: float, maximum: float) -> float:
    """``value`` moved ``steps`` grid points (an off-grid value first snaps in the direction of
    travel), clamped to ``[minimum, maximum]``."""
    k = value / step
    if abs(k - round(k)) < _EPS:
        k = round(k) + steps
    elif steps > 0:
        k = math.ceil(k) + steps - 1
    elif steps < 0:
        k = math.floor(k) + steps + 1
    out = min(max(k * step, minimum), maximum)
    return round(out, 10)


class StepSlider(Widget, can_focus=True):
    """``label ◀━━━━●─────▶ value``; left/right move one step, home/end jump to the ends.

    | Key | Action |
    | :- | :- |
    | left | One step down. |
    | right | One step up. |
    | home | The minimum. |
    | end | The maximum. |
    """

    BINDINGS = [
        Binding("left", "nudge(-1)", "Less", show=False, id="slider-less", tooltip="One step down"),
        Binding("right", "nudge(1)", "More", show=False, id="slider-more", tooltip="One step up"),
        Binding("home", "jump(-1)", "Min", show=False, id="slider-min", tooltip="The minimum"),
        Binding("end", "jump(1)", "Max", show=False, id="slider-max", tooltip="The maximum"),
    ]

    DEFAULT_CSS = """
    StepSlider {
        height: 1;
        width: 1fr;
        min-width: 24;
        padding: 0 1;
        &:focus { background: $boost; text-style: bold; }
        &.-out-of-range { color: $text-warning; }
    }
    """

    value: reactive[float] = reactive(0.0)

    class Changed(Message):
        """The user moved the slider (programmatic updates do not post this)."""

        def __init__(self, slider: "StepSlider", value: float) -> None:
            super().__init__()
            self.slider = slider
            self.value = value

        @property
        def control(self) -> "StepSlider":
            return self.slider

    def __init__(self, label: str, *, minimum: float, maximum: float, step: float, value: float,
                 fmt: Callable[[float], str], id: str | None = None, classes: str | None = None,
                 tooltip: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label
        self.minimum, self.maximum, self.step = minimum, maximum, step
        self.fmt = fmt
        self.set_reactive(StepSlider.value, value)
        self.set_class(not (minimum - _EPS <= value <= maximum + _EPS), "-out-of-range")
        if tooltip:
            self.tooltip = tooltip

    def set_value(self, value: float) -> None:
        """Show ``value`` (may lie outside the slider's range, e.g. a Pro-mode leverage); no message."""
        self.set_class(not (self.minimum - _EPS <= value <= self.maximum + _EPS), "-out-of-range")
        self.value = value

    def _move_to(self, new: float) -> None:
        if abs(new - self.value) < _EPS:
            return
        self.set_value(new)
        self.post_message(self.Changed(self, new))

    def action_nudge(self, steps: int) -> None:
        self._move_to(grid_step(self.value, steps, step=self.step, minimum=self.minimum, maximum=self.maximum))

    def action_jump(self, direction: int) -> None:
        self._move_to(self.maximum if direction > 0 else self.minimum)

    def render(self) -> Content:
        value_text = self.fmt(self.value)
        track = max(4, self.content_size.width - len(self.label) - len(value_text) - 5)
        span = self.maximum - self.minimum
        share = 0.0 if span <= 0 else min(max((self.value - self.minimum) / span, 0.0), 1.0)
        pos = round(share * (track - 1))
        return Content.assemble(
            (self.label, "bold"), " ◀",
            ("━" * pos, "$accent"), ("●", "$text-accent"), ("─" * (track - 1 - pos), "$foreground-muted"),
            "▶ ", value_text,
        )
