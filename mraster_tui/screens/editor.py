"""The config editor (Pro): every setting of the schema, grouped by section.

For the highlighted setting it shows the help, type and range, the default and where the current
value comes from.  ``enter`` on a setting edits it; ``enter`` in the value box asks the App to
validate, save (atomically) and apply it (:class:`~mraster_tui.messages.SettingSubmitted`).  The
App answers with :meth:`ConfigEditor.report`: a refused value shows its reason and nothing is
saved.  Secrets are masked and read-only here: they never go to the config file.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from mraster_tui.config import SECTIONS, SETTINGS, Setting, Settings, format_value
from mraster_tui.config import paths
from mraster_tui.messages import RestartRequested, SettingSubmitted
from mraster_tui.widgets.keybar import KeyBar

_HEADER = "§"  # id prefix of section header rows


def short_source(src: str) -> str:
    """``file:/home/x/config.toml`` -> ``file``; ``preset:mid`` stays as it is."""
    kind = src.split(":", 1)[0]
    return src if kind == "preset" else kind


def matches(s: Setting, needle: str) -> bool:
    n = needle.lower()
    return not n or n in s.env.lower() or n in s.name or n in s.section or n in s.help.lower()


def option_prompt(s: Setting, settings: Settings, pending: Iterable[str]) -> Content:
    value = format_value(s, getattr(settings, s.name))
    flag = "↻!" if s.name in set(pending) else ("" if s.live else "↻")
    if len(value) > 14:
        value = value[:13] + "…"
    text = f"{s.key:<22.22} {value:<14} {short_source(settings.source(s.name)):<9.9} {flag}"
    return Content.from_markup("[$text-warning]$t[/]", t=text) if flag == "↻!" else Content(text)


class ConfigEditor(ModalScreen[None]):
    """| Key | Action |
    | :- | :- |
    | enter | Edit the highlighted setting / save the typed value. |
    | escape | Back to the list; from the list, close. |
    | / | Find a setting. |
    | f5 | Restart the engine (when changes wait for a restart). |
    """

    BINDINGS = [
        Binding("escape", "back", "Close", id="editor-close", tooltip="Back to the list; from the list, close the editor"),
        Binding("slash", "find", "Find", id="editor-find", tooltip="Filter settings by name, section or help"),
        Binding("f5", "restart", "Restart engine", id="editor-restart",
                tooltip="Restart the engine so the settings marked ↻! take effect"),
    ]

    def __init__(self, settings: Settings, *, pending_restart: Iterable[str] = (), engine_running: bool = False) -> None:
        super().__init__(id="editor")
        self.settings = settings
        self.pending = set(pending_restart)
        self.engine_running = engine_running
        self.needle = ""
        self._can_restart = False

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="editor-dialog") as dialog:
            dialog.border_title = "Settings"
            dialog.border_subtitle = str(self.settings.config_path or paths.config_file())
            yield Input(placeholder="/ find a setting (name, section or help)", id="editor-find", compact=True)
            with Horizontal(id="editor-body"):
                yield OptionList(*self._options(), id="editor-list")
                with Vertical(id="editor-detail"):
                    yield Static("", id="detail-head")
                    yield Static("", id="detail-help")
                    yield Static("", id="detail-meta")
                    yield Input(id="editor-value")
                    yield Static("", id="editor-message")
            yield Static("", id="editor-banner")
        yield KeyBar()

    def _options(self) -> list[Option]:
        out: list[Option] = []
        for section in SECTIONS:
            rows = [s for s in SETTINGS if s.section == section and matches(s, self.needle)]
            if not rows:
                continue
            out.append(Option(Content.from_markup("[b $text-accent]\\[$section][/]", section=section),
                              id=_HEADER + section, disabled=True))
            out.extend(Option(option_prompt(s, self.settings, self.pending), id=s.name) for s in rows)
        return out

    def on_mount(self) -> None:
        lst = self.query_one("#editor-list", OptionList)
        lst.focus()
        self._highlight_first()
        self._show_banner()

    def _highlight_first(self) -> None:
        lst = self.query_one("#editor-list", OptionList)
        for i, opt in enumerate(lst.options):
            if not opt.disabled:
                lst.highlighted = i
                return
        self._show_detail(None)

    @property
    def current(self) -> Setting | None:
        opt = self.query_one("#editor-list", OptionList).highlighted_option
        if opt is None or opt.id is None or opt.id.startswith(_HEADER):
            return None
        return next(s for s in SETTINGS if s.name == opt.id)

    # -- detail ---------------------------------------------------------------------------

    def _show_detail(self, s: Setting | None) -> None:
        box = self.query_one("#editor-value", Input)
        if s is None:
            for wid in ("#detail-head", "#detail-help", "#detail-meta"):
                self.query_one(wid, Static).update("")
            box.value, box.disabled = "", True
            return
        self.query_one("#detail-head", Static).update(
            Content.from_markup("[b]$env[/b]  [$foreground-muted]\\[$section] $key[/]", env=s.env, section=s.section,
                                key=s.key))
        help_text = s.help
        if s.secret:
            help_text += (f"\nSecret: read-only here and never written to the config file. Set it in the "
                          f"environment or in {paths.secrets_file()} (mode 0600).")
        self.query_one("#detail-help", Static).update(Content(help_text))
        rng = f" · range {s.range_text}" if s.range_text else ""
        live = "applies at once" if s.live else "applies on restart"
        default = format_value(s, s.default) or '""'
        meta = (f"type {s.type}{rng}\ndefault {default}\n"
                f"source {self.settings.source(s.name)}\n{live}")
        if s.name in self.pending:
            meta += " · [waiting for a restart]"
        self.query_one("#detail-meta", Static).update(Content(meta))
        box.password = s.secret
        box.disabled = s.secret
        box.value = "" if s.secret else format_value(s, getattr(self.settings, s.name))
        box.placeholder = "***  (set outside the app)" if (s.secret and getattr(self.settings, s.name)) else (
            "(not set; set outside the app)" if s.secret else s.range_text or s.type)

    def _show_banner(self) -> None:
        can_restart = bool(self.pending) and self.engine_running
        if can_restart != self._can_restart:  # the footer shows f5 only when it does something
            self._can_restart = can_restart
            self.refresh_bindings()
        banner = self.query_one("#editor-banner", Static)
        if self.pending and self.engine_running:
            names = ", ".join(sorted(self.pending))
            banner.update(Content.from_markup(
                "[$text-warning]↻! waiting for a restart: $names — press [b]f5[/b] to restart the engine now[/]",
                names=names))
        else:
            banner.update(Content.from_markup(
                "[$foreground-muted]enter: edit · enter again: save · ↻ applies on restart · escape: back[/]"))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "restart":
            return self._can_restart
        return True

    # -- events ---------------------------------------------------------------------------

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show_detail(self.current)
        self.query_one("#editor-message", Static).update("")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        s = self.current
        if s is None:
            return
        if s.secret:
            self._message(False, f"{s.env} is a secret: set it in the environment or the secrets file")
            return
        box = self.query_one("#editor-value", Input)
        box.focus()
        box.select_all()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "editor-find":
            event.stop()
            self.needle = event.value.strip()
            lst = self.query_one("#editor-list", OptionList)
            lst.set_options(self._options())
            self._highlight_first()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "editor-find":
            self.query_one("#editor-list", OptionList).focus()
            return
        s = self.current
        if s is not None and not s.secret:
            self.post_message(SettingSubmitted(s.name, event.value))

    def _message(self, ok: bool, text: str) -> None:
        style = "$text-success" if ok else "$text-error"
        mark = "✔" if ok else "✖"
        self.query_one("#editor-message", Static).update(
            Content.from_markup(f"[{style}]$mark $text[/]", mark=mark, text=text))

    # -- called by the App ----------------------------------------------------------------

    def report(self, ok: bool, text: str) -> None:
        """The outcome of the last submitted value."""
        self._message(ok, text)
        if ok:
            self.query_one("#editor-list", OptionList).focus()

    def update_state(self, settings: Settings, pending_restart: Iterable[str], engine_running: bool) -> None:
        self.settings = settings
        self.pending = set(pending_restart)
        self.engine_running = engine_running
        lst = self.query_one("#editor-list", OptionList)
        for s in SETTINGS:
            if not matches(s, self.needle):
                continue
            prompt = option_prompt(s, settings, self.pending)
            if prompt.markup != lst.get_option(s.name).prompt.markup:  # type: ignore[union-attr]
                lst.replace_option_prompt(s.name, prompt)
        self._show_detail(self.current)
        self._show_banner()

    # -- actions --------------------------------------------------------------------------

    def action_back(self) -> None:
        if self.query_one("#editor-list", OptionList).has_focus:
            self.dismiss(None)
        else:
            self.query_one("#editor-list", OptionList).focus()

    def action_find(self) -> None:
        self.query_one("#editor-find", Input).focus()

    def action_restart(self) -> None:
        self.post_message(RestartRequested("settings that apply on restart were changed"))
