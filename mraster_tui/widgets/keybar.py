"""The footer: the active keys of the screen on one line.

Textual's ``Footer`` recomposes one widget per key whenever the bindings change (every focus
change, mode switch or engine state change), and restyling those widgets made a mode switch cost
hundreds of milliseconds on a small machine.  This bar is one widget whose text is rebuilt from
``screen.active_bindings``; grouped bindings share one label (``1/2/3 Preset``) and bindings that
are currently disabled are shown dimmed.
"""

from __future__ import annotations

from itertools import groupby

from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static


#: actions left out first when the line does not fit (they are listed in the help)
OPTIONAL_ACTIONS = frozenset({"command_palette"})


def keybar_content(screen: Screen, width: int = 1000) -> Content:
    """The key line of ``screen``'s active bindings (those with ``show=True``), fitted to ``width``:
    the optional keys go first, then the spacing tightens."""
    app = screen.app
    seen: dict[str, tuple] = {}
    for _, binding, enabled, _tooltip in screen.active_bindings.values():
        if binding.show and binding.action not in seen:
            seen[binding.action] = (binding, enabled)
    entries: list[tuple[str, str, bool, bool]] = []  # keys, description, enabled, optional
    for group, items in groupby(seen.values(), lambda item: item[0].group):
        items = list(items)
        if group is not None and len(items) > 1:
            keys = "/".join(app.get_key_display(b) for b, _ in items)
            entries.append((keys, group.description, any(e for _, e in items), False))
        else:
            entries.extend((app.get_key_display(b), b.description, e, b.action in OPTIONAL_ACTIONS) for b, e in items)

    def line(keep_optional: bool, gap: str) -> Content:
        parts = []
        for keys, description, enabled, optional in entries:
            if optional and not keep_optional:
                continue
            key_style = "bold $footer-key-foreground" if enabled else "$foreground-disabled"
            text_style = "$footer-description-foreground" if enabled else "$foreground-disabled"
            parts.append(Content.assemble((f" {keys}", key_style), (f" {description}{gap}", text_style)))
        return Content("").join(parts)

    for keep_optional, gap in ((True, " "), (False, " "), (False, "")):
        content = line(keep_optional, gap)
        if content.cell_length <= width:
            return content
    return content


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        width: 1fr;
        background: $footer-background;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._plain = None

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_resize(self) -> None:
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen) -> None:
        if screen is not self.screen:
            return
        content = keybar_content(screen, self.size.width or 1000)
        if content.markup != self._plain:
            self._plain = content.markup
            self.update(content)
