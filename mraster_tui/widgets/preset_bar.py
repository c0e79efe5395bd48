"""The Low / Mid / High selector with the active preset highlighted."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import HorizontalGroup
from textual.widgets import Static

PRESET_LABELS: tuple[tuple[str, str, str], ...] = (("low", "1", "Low"), ("mid", "2", "Mid"), ("high", "3", "High"))


class PresetBar(HorizontalGroup):
    """Three chips; a click runs the same action as the key (``app.preset``)."""

    DEFAULT_CSS = """
    PresetBar {
        width: auto;
        height: 1;
        & > Static { width: auto; padding: 0 1; margin-right: 1; color: $foreground-muted; }
        & > Static.-active { background: $primary; color: $text; text-style: bold; }
    }
    """

    def __init__(self, active: str = "none", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._active = active

    def compose(self) -> ComposeResult:
        for name, key, label in PRESET_LABELS:
            chip = Static(f"[@click=app.preset('{name}')][b]{key}[/b] {label}[/]", id=f"preset-{name}",
                          classes="-active" if name == self._active else "")
            chip.tooltip = f"Apply the {label} preset to the running engine and save it (key {key})"
            yield chip

    @property
    def active(self) -> str:
        return self._active

    def set_active(self, name: str) -> None:
        self._active = name
        for preset, _, _ in PRESET_LABELS:
            self.query_one(f"#preset-{preset}", Static).set_class(preset == name, "-active")
