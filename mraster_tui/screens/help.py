"""The help screen (``?``): what the modes are, and every key, generated from the bindings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from mraster_tui.widgets.keybar import KeyBar

INTRO = (
    "[b]mraster-tui[/b] trades perpetual futures.  [b]Preset mode[/b] is the default: choose Low, Mid "
    "or High, fine-tune risk and leverage, and watch positions and fills.  [b]Pro mode[/b] ([b]p[/b]) adds "
    "the bandit statistics, the verbose log and the config editor.  Changes apply to the running engine "
    "at once and are saved to your config file.\n"
    "Stopping or quitting leaves every stop-loss and take-profit order on the venue; nothing manages "
    "the positions (FastTP, the guard) until the engine runs again.  [$text-error]LIVE[/] in the status "
    "bar means real money."
)

KeyRows = Sequence[tuple[str, str]]


def key_rows(bindings: Iterable[Binding], display) -> list[tuple[str, str]]:
    """``(keys, what it does)`` for each binding, keys shown the way the footer shows them."""
    rows: list[tuple[str, str]] = []
    for b in bindings:
        if b.system:
            continue
        keys = " ".join(display(Binding(k.strip(), b.action)) for k in b.key.split(","))
        rows.append((keys, b.tooltip or b.description))
    return rows


def help_content(sections: Sequence[tuple[str, KeyRows]]) -> Content:
    lines: list[Content] = [Content.from_markup(INTRO), Content("")]
    for title, rows in sections:
        lines.append(Content.styled(title, "bold $text-accent"))
        lines.extend(Content.assemble("  ", (f"{keys:<9}", "bold"), " ", what) for keys, what in rows)
        lines.append(Content(""))
    return Content("\n").join(lines[:-1])


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help-close", tooltip="Close the help")]

    def __init__(self, sections: Sequence[tuple[str, KeyRows]]) -> None:
        super().__init__(id="help")
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog") as box:
            box.border_title = "Help"
            with VerticalScroll():
                yield Static(help_content(self.sections), id="help-text")
        yield KeyBar()

    def action_close(self) -> None:
        self.dismiss(None)
