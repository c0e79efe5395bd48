"""Confirmation dialogs: yes/no, and a typed confirmation for live trading."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import HorizontalGroup, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from mraster_tui.widgets.keybar import KeyBar


class ConfirmScreen(ModalScreen[bool]):
    """A question answered with ``y`` / ``n`` (or the buttons); escape means no."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes", tooltip="Confirm"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no", tooltip="Cancel"),
    ]

    def __init__(self, title: str, question: str, *, yes: str = "Yes", no: str = "No", danger: bool = False) -> None:
        super().__init__(classes="-danger" if danger else "")
        self.title_text, self.question = title, question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as box:
            box.border_title = self.title_text
            yield Static(self.question, classes="dialog-text", markup=False)
            with HorizontalGroup(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error" if self.has_class("-danger") else "primary")
                yield Button(f"{self.no} (n)", id="no")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TypedConfirmScreen(ModalScreen[bool]):
    """Proceeds only when the user types ``word`` exactly (starting live trading)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="typed-cancel", tooltip="Do not start")]

    def __init__(self, title: str, text: str, word: str = "LIVE") -> None:
        super().__init__(classes="-danger")
        self.title_text, self.text, self.word = title, text, word

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog") as box:
            box.border_title = self.title_text
            yield Static(self.text, classes="dialog-text", markup=False)
            yield Label(f"Type {self.word} and press enter to continue, escape to cancel:")
            yield Input(placeholder=self.word, id="typed-word")
            yield Label("", id="typed-error", classes="dialog-error")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#typed-word", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip() == self.word:
            self.dismiss(True)
        else:
            self.query_one("#typed-error", Label).update(f"That is not {self.word}; nothing was started.")
            event.input.value = ""

    def action_cancel(self) -> None:
        self.dismiss(False)
