"""Reading an operator's settings file (PRICES_FILE, BUDGETS_FILE): YAML or TOML, and numbers
checked with one line naming the file, the entry and the field when they are wrong."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import yaml


class SettingsFileError(ValueError):
    """The file cannot be used; the message is one line naming the file, entry and field."""


def read_settings_file(setting: str, path: Path) -> dict[str, Any]:
    """The file's top-level mapping (YAML, or TOML when it ends in .toml)."""
    where = f"{setting} {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsFileError(f"{where} cannot be read: {exc}") from None
    toml = path.suffix.lower() == ".toml"
    try:
        data = tomllib.loads(text) if toml else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        first_line = " ".join(str(exc).split())
        raise SettingsFileError(
            f"{where} is not valid {'TOML' if toml else 'YAML'}: {first_line}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsFileError(f"{where} must hold a mapping at its top, not a list or a value.")
    return data


def entry(where: str, raw: Any, name: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SettingsFileError(f"{where}: {name} must be a mapping of fields.")
    return raw


def unknown_fields(where: str, raw: dict[str, Any], name: str, known: tuple[str, ...]) -> None:
    """`name` "" is the file's top level."""
    for field in raw:
        if field not in known:
            at = f"{name}.{field}" if name else str(field)
            raise SettingsFileError(f"{where}: {at} is not known here; use {', '.join(known)}.")


def amount(where: str, raw: dict[str, Any], name: str, field: str) -> float | None:
    """A number of 0 or more (None when the field is absent)."""
    if field not in raw:
        return None
    value = raw[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingsFileError(f"{where}: {name}.{field} must be a number; got {value!r}.")
    if value < 0:
        raise SettingsFileError(f"{where}: {name}.{field} must be 0 or more; got {value!r}.")
    return float(value)
