"""Configuration: the settings schema, loading with precedence, validation and atomic saving.

Never imports textual (a test enforces it)."""

from mraster_tui.config.loader import (
    ConfigError,
    Settings,
    format_value,
    load_settings,
    lookup,
    parse_value,
    preset_values,
    save_config,
    save_secrets,
)
from mraster_tui.config.schema import BY_ENV, BY_NAME, PRESETS, SECTIONS, SETTINGS, Setting

__all__ = [
    "BY_ENV", "BY_NAME", "PRESETS", "SECTIONS", "SETTINGS", "ConfigError", "Setting", "Settings",
    "format_value", "load_settings", "lookup", "parse_value", "preset_values", "save_config", "save_secrets",
]
