"""The command palette (``:``): every action of the app, searchable by name."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from textual.app import App
from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True, slots=True)
class Command:
    title: str
    action: str  # an action of the App
    help: str


COMMANDS: tuple[Command, ...] = (
    Command("Preset: Low", "preset('low')", "Small risk, 1x, one position; applied now and saved"),
    Command("Preset: Mid", "preset('mid')", "The balanced preset; applied now and saved"),
    Command("Preset: High", "preset('high')", "More risk and leverage (max 5x); applied now and saved"),
    Command("Risk per trade: lower", "risk(-1)", "0.25 % less risk per trade"),
    Command("Risk per trade: higher", "risk(1)", "0.25 % more risk per trade"),
    Command("Leverage: lower", "leverage(-1)", "1x less leverage"),
    Command("Leverage: higher", "leverage(1)", "1x more leverage (the slider stops at 5x)"),
    Command("Toggle Pro mode", "toggle_pro", "Switch between Preset and Pro mode (remembered)"),
    Command("Open the config editor", "edit_config", "Every setting with help, default and source (Pro)"),
    Command("Log: next level", "log_level", "Cycle the minimum level of the Pro log"),
    Command("Log: search", "log_search", "Filter the Pro log by text"),
    Command("Engine: start", "start_engine", "Start trading (a typed confirmation in live mode)"),
    Command("Engine: stop", "stop_engine", "Stop gracefully; stops and take-profits stay on the venue"),
    Command("Engine: restart", "restart_engine", "Stop, then start with the current settings"),
    Command("Help", "help", "Keys and modes"),
    Command("Quit", "quit", "Stop the engine gracefully and leave; brackets stay on the venue"),
)


async def _run(app: App, command: Command) -> None:
    """Run the command's action; say so when it does not apply right now (e.g. starting a
    running engine) instead of doing nothing."""
    if not await app.run_action(command.action):
        app.notify(f"{command.title}: not available right now.", severity="warning")


class MrAsterCommands(Provider):
    """Yields every :data:`COMMANDS` entry; a query fuzzy-matches titles."""

    def _run(self, command: Command):
        return partial(_run, self.app, command)

    async def discover(self) -> Hits:
        for c in COMMANDS:
            yield DiscoveryHit(c.title, self._run(c), help=c.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for c in COMMANDS:
            score = matcher.match(c.title)
            if score > 0:
                yield Hit(score, matcher.highlight(c.title), self._run(c), text=c.title, help=c.help)
