"""Loading, validating and saving settings.

Precedence (lowest first): schema defaults < preset (``low``/``mid``/``high``) < ``config.toml``
< secrets file < ``.env`` in the working directory < process environment < CLI flags.
Every effective value remembers where it came from (``Settings.sources``).

Every foreseeable mistake raises :class:`ConfigError` with one clear line; nothing is
overwritten by a failed load or a refused value.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from mraster_tui.config import paths
from mraster_tui.config.schema import (
    BOOL,
    BY_ENV,
    BY_NAME,
    FLOAT,
    INT,
    LIST,
    PRESETS,
    SETTINGS,
    Setting,
)
from mraster_tui.fsutil import atomic_write_bytes

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


# -- value parsing -------------------------------------------------------------------------

def parse_value(s: Setting, raw: Any, origin: str) -> Any:
    """Convert ``raw`` (a TOML value or an env/CLI string) to the setting's type and check it.

    ``origin`` names where it came from, for the error message (e.g. ``config.toml: [risk]
    leverage`` or ``env ASTER_LEVERAGE``).
    """
    shown = "***" if s.secret else repr(raw)
    try:
        value = _convert(s, raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: expected {_type_word(s)}, got {shown}") from None
    if s.type in (INT, FLOAT):
        if not math.isfinite(value):
            raise ConfigError(f"{origin}: {shown} is not a finite number")
        if (s.min is not None and value < s.min) or (s.max is not None and value > s.max):
            raise ConfigError(f"{origin}: {shown} is out of range (allowed {s.range_text})")
    if s.choices is not None:
        if s.env in ("ASTER_LOGLEVEL", "ASTER_WORKING_TYPE"):
            value = str(value).upper()
        elif s.env != "ASTER_INTERVAL" and s.env != "ASTER_HTF_INTERVAL":
            value = str(value).lower()
        if value not in s.choices:
            raise ConfigError(f"{origin}: {shown} is not allowed (choose {s.range_text})")
    return value


def _type_word(s: Setting) -> str:
    return {BOOL: "true or false", INT: "a whole number", FLOAT: "a number",
            LIST: "a comma-separated list of symbols"}.get(s.type, "text")


def _convert(s: Setting, raw: Any) -> Any:
    t = s.type
    if t == BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError
    if t == INT:
        if isinstance(raw, bool):
            raise TypeError
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            txt = raw.strip().replace("_", "")
            f = float(txt)
            if not f.is_integer():
                raise ValueError
            return int(f)
        raise TypeError
    if t == FLOAT:
        if isinstance(raw, bool):
            raise TypeError
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            return float(raw.strip())
        raise TypeError
    if t == LIST:
        if isinstance(raw, str):
            items = [x.strip() for x in raw.replace(";", ",").split(",")]
        elif isinstance(raw, (list, tuple)):
            if not all(isinstance(x, str) for x in raw):
                raise TypeError
            items = [x.strip() for x in raw]
        else:
            raise TypeError
        out = tuple(dict.fromkeys(x.upper() for x in items if x))
        for sym in out:
            if not sym.replace("_", "").isalnum():
                raise ValueError
        return out
    # STR
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise TypeError
    return str(raw).strip()


def format_value(s: Setting, value: Any, *, mask: bool = True) -> str:
    """Human text of a value (as accepted back by :func:`parse_value`)."""
    if s.secret and mask:
        return "***" if value else ""
    if s.type == BOOL:
        return "true" if value else "false"
    if s.type == LIST:
        return ",".join(value)
    return str(value)


# -- the Settings object -----------------------------------------------------------------

class Settings:
    """Effective settings: immutable, attribute access by setting name."""

    __slots__ = ("_values", "_sources", "config_path", "warnings")

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str] | None = None, *,
                 config_path: Path | None = None, warnings: Iterable[str] = ()) -> None:
        missing = set(BY_NAME) - set(values)
        if missing:
            raise ConfigError(f"missing settings: {', '.join(sorted(missing))}")
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_sources", dict(sources or {n: "default" for n in values}))
        object.__setattr__(self, "config_path", config_path)
        object.__setattr__(self, "warnings", tuple(warnings))

    @classmethod
    def defaults(cls) -> "Settings":
        return cls({s.name: s.default for s in SETTINGS})

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting named {name!r}") from None

    def __setattr__(self, name, value):  # noqa: D105
        raise AttributeError("Settings are immutable; use replace()")

    def __getitem__(self, env_or_name: str) -> Any:
        s = lookup(env_or_name)
        return self._values[s.name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self._values == other._values

    def __hash__(self) -> int:  # pragma: no cover - not used as a key
        return hash(tuple(sorted((k, str(v)) for k, v in self._values.items())))

    def __repr__(self) -> str:
        return f"Settings({len(self._values)} values, preset={self._values.get('preset')!r})"

    @property
    def values(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def sources(self) -> dict[str, str]:
        return dict(self._sources)

    def source(self, name: str) -> str:
        return self._sources.get(lookup(name).name, "default")

    def replace(self, *, _source: str = "runtime", **changes: Any) -> "Settings":
        """A copy with ``changes`` (validated like any other input)."""
        values = dict(self._values)
        sources = dict(self._sources)
        for name, raw in changes.items():
            s = lookup(name)
            values[s.name] = parse_value(s, raw, f"setting {s.env}")
            sources[s.name] = _source
        return Settings(values, sources, config_path=self.config_path, warnings=self.warnings)

    def masked(self) -> dict[str, str]:
        """Every value as text keyed by env name, secrets shown as ``***``."""
        return {s.env: format_value(s, self._values[s.name]) for s in SETTINGS}

    def as_env_json(self) -> dict[str, Any]:
        """Every effective value keyed by env name (secrets ``***``), JSON-ready."""
        out: dict[str, Any] = {}
        for s in SETTINGS:
            v = self._values[s.name]
            if s.secret:
                out[s.env] = "***" if v else ""
            elif s.type == LIST:
                out[s.env] = ",".join(v)
            else:
                out[s.env] = v
        return out

    @property
    def has_credentials(self) -> bool:
        return bool(self._values["api_key"]) and bool(self._values["api_secret"])

    @property
    def live_trading(self) -> bool:
        """True only when paper is off AND credentials are present."""
        return (not self._values["paper"]) and self.has_credentials

    def diff(self, other: "Settings") -> dict[str, tuple[Any, Any]]:
        return {k: (v, other._values[k]) for k, v in self._values.items() if other._values[k] != v}


def lookup(key: str) -> Setting:
    """Find a setting by env name (``ASTER_LEVERAGE``), name (``leverage``) or ``section.key``."""
    if key in BY_ENV:
        return BY_ENV[key]
    if key.upper() in BY_ENV:
        return BY_ENV[key.upper()]
    k = key.split(".", 1)[-1].lower()
    if k in BY_NAME:
        return BY_NAME[k]
    raise ConfigError(f"unknown setting {key!r}{_did_you_mean(key)}")


def _did_you_mean(key: str) -> str:
    pool = [s.env for s in SETTINGS] + [s.name for s in SETTINGS]
    cand = key.upper() if key.upper().startswith(("ASTER_", "FAST")) else key.lower().split(".")[-1]
    m = difflib.get_close_matches(cand, pool, n=1, cutoff=0.6)
    return f"; did you mean {m[0]!r}?" if m else ""


# -- sources ----------------------------------------------------------------------------

def read_toml_file(path: Path, *, label: str | None = None) -> dict[str, Any]:
    """Read and validate a config/preset TOML file -> ``{name: value}``."""
    label = label or str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not a UTF-8 text file") from None
    except OSError as e:
        raise ConfigError(f"{label}: cannot read ({e.strerror})") from None
    return parse_toml_text(text, label)


def parse_toml_text(text: str, label: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{label}: invalid TOML: {e}") from None
    except RecursionError:  # tomllib parses nested arrays/tables recursively
        raise ConfigError(f"{label}: invalid TOML: values nested too deeply") from None
    out: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            s = _find_setting(section)
            hint = f"; put it under [{s.section}]" if s else _did_you_mean(section)
            raise ConfigError(f"{label}: top-level key {section!r} is not a section{hint}")
        for key, raw in table.items():
            s = BY_NAME.get(key)
            if s is None or s.section != section:
                if s is not None:
                    raise ConfigError(f"{label}: [{section}] {key}: this setting belongs in [{s.section}]")
                if section not in {x.section for x in SETTINGS}:
                    m = difflib.get_close_matches(section, sorted({x.section for x in SETTINGS}), n=1)
                    hint = f"; did you mean {m[0]!r}?" if m else ""
                    raise ConfigError(f"{label}: unknown section [{section}]{hint}")
                raise ConfigError(f"{label}: unknown key [{section}] {key}{_did_you_mean(key)}")
            out[s.name] = parse_value(s, raw, f"{label}: [{section}] {key}")
    return out


def _find_setting(key: str) -> Setting | None:
    try:
        return lookup(key)
    except ConfigError:
        return None


def read_dotenv(path: Path) -> dict[str, str]:
    """Minimal ``.env`` reader: ``KEY=VALUE`` lines, optional ``export``, quotes, # comments."""
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read .env file ({e})") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        if "=" not in line:
            raise ConfigError(f"{path}:{n}: expected KEY=VALUE")
        k, v = line.split("=", 1)
        k, v = k.strip(), v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        elif " #" in v:
            v = v.split(" #", 1)[0].rstrip()
        out[k] = v
    return out


def _env_layer(env: Mapping[str, str], label: str, warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, raw in env.items():
        s = BY_ENV.get(k)
        if s is None:
            if k.startswith(("ASTER_", "FAST_TP_", "FASTTP_")):
                warnings.append(f"{label}: unknown variable {k} ignored{_did_you_mean(k)}")
            continue
        out[s.name] = parse_value(s, raw, f"{label} {k}")
    return out


def preset_values(name: str) -> dict[str, Any]:
    """The values a preset file sets (``config/<name>.toml``)."""
    if name == "none":
        return {}
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose {'|'.join(PRESETS)})")
    return parse_toml_text(_preset_text(name), f"preset {name}.toml")


def _preset_text(name: str) -> str:
    # A source checkout (also an editable install) reads the repo's config/ folder; a wheel
    # carries the same files as the package mraster_tui._presets.
    repo = Path(__file__).resolve().parents[2] / "config" / f"{name}.toml"
    if repo.is_file():
        return repo.read_text(encoding="utf-8")
    return resources.files("mraster_tui._presets").joinpath(f"{name}.toml").read_text(encoding="utf-8")


def load_settings(
    config_path: str | os.PathLike | None = None,
    *,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    use_dotenv: bool = True,
    missing_ok: bool | None = None,
) -> Settings:
    """Build the effective settings from every source (see module docstring)."""
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    explicit = config_path or environ.get("MRASTER_CONFIG") or None
    path = Path(explicit).expanduser() if explicit else paths.config_dir() / "config.toml"
    if missing_ok is None:
        # a mistyped --config must not silently mean "defaults"; $MRASTER_CONFIG names where the
        # file lives (and is created), so it may not exist yet
        missing_ok = not config_path
    layers: list[tuple[str, dict[str, Any]]] = []

    try:
        file_vals = read_toml_file(path)
    except FileNotFoundError:
        if not missing_ok:
            raise ConfigError(f"{path}: config file not found (create it with: mraster-tui config init)") from None
        file_vals = {}
    for s in SETTINGS:
        if s.secret and s.name in file_vals:
            warnings.append(f"{path}: {s.env} is stored in the config file; prefer the environment or the secrets file")
    layers.append((f"file:{path}", file_vals))

    sec_path = Path(environ["MRASTER_SECRETS"]).expanduser() if environ.get("MRASTER_SECRETS") else (
        paths.config_dir() / "secrets.toml")
    try:
        sec_vals = read_toml_file(sec_path, label=str(sec_path))
        if os.name == "posix" and sec_path.stat().st_mode & 0o077:
            warnings.append(f"{sec_path}: secrets file is readable by others; run chmod 600 on it")
    except FileNotFoundError:
        sec_vals = {}
    layers.append((f"secrets:{sec_path}", sec_vals))

    if use_dotenv:
        dot = Path(cwd or os.getcwd()) / ".env"
        layers.append((".env", _env_layer(read_dotenv(dot), f"{dot}:", warnings)))
    layers.append(("env", _env_layer(environ, "env", warnings)))

    cli_vals: dict[str, Any] = {}
    for k, raw in (cli or {}).items():
        if raw is None:
            continue
        s = lookup(k)
        cli_vals[s.name] = parse_value(s, raw, f"option for {s.env}")
    layers.append(("cli", cli_vals))

    # The preset itself follows the same precedence; its values sit just above the defaults.
    preset = "none"
    for _, vals in layers:
        preset = vals.get("preset", preset)
    values = {s.name: s.default for s in SETTINGS}
    sources = {s.name: "default" for s in SETTINGS}
    for k, v in preset_values(preset).items():
        values[k], sources[k] = v, f"preset:{preset}"
    for label, vals in layers:
        for k, v in vals.items():
            values[k], sources[k] = v, label
    return Settings(values, sources, config_path=path, warnings=warnings)


# -- saving -----------------------------------------------------------------------------

def render_toml(file_values: Mapping[str, Any]) -> bytes:
    """TOML text of ``{name: value}`` grouped by section, in schema order."""
    doc: dict[str, dict[str, Any]] = {}
    for s in SETTINGS:
        if s.name in file_values:
            v = file_values[s.name]
            doc.setdefault(s.section, {})[s.key] = list(v) if s.type == LIST else v
    return tomli_w.dumps(doc).encode("utf-8")


def save_config(path: str | os.PathLike, changes: Mapping[str, Any], *, preset: str | None = None,
                include_secrets: bool = False) -> dict[str, Any]:
    """Apply ``changes`` to the config file atomically and return what the file now holds.

    The file keeps only values that differ from the defaults with the active preset applied,
    plus the active preset itself.  Selecting a preset drops the file's own values for the keys
    that preset sets, so the preset takes effect.  API key and secret are never written unless
    ``include_secrets``.  The previous file is kept as ``.bak``; mode 0600.
    """
    path = Path(path)
    try:
        current = read_toml_file(path)
    except FileNotFoundError:
        current = {}
    validated = {}
    for k, raw in changes.items():
        s = lookup(k)
        validated[s.name] = parse_value(s, raw, f"setting {s.env}")
    if preset is not None:
        validated["preset"] = parse_value(BY_NAME["preset"], preset, "preset")
    active = validated.get("preset", current.get("preset", "none"))
    pvals = preset_values(active)
    if preset is not None:
        for k in pvals:
            if k not in validated:
                current.pop(k, None)
    merged = {**current, **validated}
    base = {s.name: s.default for s in SETTINGS}
    base.update(pvals)
    out: dict[str, Any] = {}
    for s in SETTINGS:
        if s.name not in merged:
            continue
        if s.secret and not include_secrets:
            continue
        if s.name == "preset":
            if merged[s.name] != "none":
                out[s.name] = merged[s.name]
            continue
        if merged[s.name] != base[s.name]:
            out[s.name] = merged[s.name]
    atomic_write_bytes(path, render_toml(out), mode=0o600)
    return out


def save_secrets(path: str | os.PathLike, api_key: str, api_secret: str) -> None:
    """Write the API credentials to a separate 0600 secrets file."""
    data = render_toml({"api_key": api_key, "api_secret": api_secret})
    atomic_write_bytes(path, data, mode=0o600, backup_suffix=None)
