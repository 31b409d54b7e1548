"""Reading the settings: `config.toml` (optional), then `IMGPROXY_<SECTION>_<KEY>` overrides.

`load_config` raises `ConfigError` naming the offending key; it never lets a bad value reach the
running server. The environment is passed in (not read globally) so tests can build many
configurations in one process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from imgproxy.config.checks import check_consistency, check_minimum, check_transform_section
from imgproxy.config.secrets import with_cdn_secrets
from imgproxy.config.sections import CONNECTION_STRING_ENV, Config, ConfigError, TransformConfig

# The one non-scalar kind of setting (`transform.presets`): a TOML table of strings, or in the
# environment a JSON object of strings. Annotations are strings (`from __future__ import annotations`).
_STRING_TABLE: Final = "Mapping[str, str]"
# And a list of integers (`transform.width_ladder`): a TOML array, or in the environment a JSON
# array or comma-separated integers.
_INTEGER_LIST: Final = "tuple[int, ...]"
# And a list of strings (`cdn.tag_headers`): a TOML array, or in the environment a JSON array or
# comma-separated names.
_STRING_LIST: Final = "tuple[str, ...]"


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Build a validated `Config` from a TOML file (optional) and an environment mapping."""
    env = os.environ if environ is None else environ
    raw = _read_file(path)
    sections: dict[str, Any] = {}
    for section in dataclasses.fields(Config):
        sections[section.name] = _load_section(section.name, raw.pop(section.name, {}), env)
    if raw:
        raise ConfigError(f"unknown section [{sorted(raw)[0]}]")

    config = Config(**sections)
    origin = config.origin
    if not origin.connection_string and not origin.account_url and env.get(CONNECTION_STRING_ENV):
        config = dataclasses.replace(
            config,
            origin=dataclasses.replace(config.origin, connection_string=env[CONNECTION_STRING_ENV]),
        )
    check_consistency(config)
    return with_cdn_secrets(config, env)


def load_transform_config(path: Path | None, environ: Mapping[str, str] | None = None) -> TransformConfig:
    """Only the validated `[transform]` section (for `python -m imgproxy sign`, which needs no origin)."""
    env = os.environ if environ is None else environ
    transform: TransformConfig = _load_section("transform", _read_file(path).get("transform", {}), env)
    check_transform_section(transform)
    return transform


def _read_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None


def _load_section(name: str, table: object, env: Mapping[str, str]) -> Any:
    section_cls = _section_type(name)
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(section_cls):
        key = f"{name}.{f.name}"
        env_name = f"IMGPROXY_{name.upper()}_{f.name.upper()}"
        if f.name in table:  # checked even when overridden: a broken file is an error either way
            values[f.name] = _check_type(key, table.pop(f.name), f.type)
        if env_name in env:
            values[f.name] = _coerce_env(key, env[env_name], f.type)
        if f.name in values:
            check_minimum(key, values[f.name])
    if table:
        raise ConfigError(f"unknown setting {name}.{sorted(table)[0]}")
    return section_cls(**values)


def _section_type(name: str) -> type[Any]:
    hints = typing.get_type_hints(Config)
    section_type: type[Any] = hints[name]
    return section_type


def _field_type(annotation: object) -> type[Any]:
    # With `from __future__ import annotations` dataclass field types are strings.
    mapping: dict[object, type[Any]] = {"int": int, "float": float, "str": str, "bool": bool}
    resolved = mapping.get(annotation, annotation)
    if isinstance(resolved, types.UnionType):  # pragma: no cover - no optional keys yet
        raise TypeError(resolved)
    assert isinstance(resolved, type)
    return resolved


def _check_type(key: str, value: object, annotation: object) -> object:
    if annotation == _STRING_TABLE:
        return _check_string_table(key, value)
    if annotation == _INTEGER_LIST:
        return _check_integer_list(key, value)
    if annotation == _STRING_LIST:
        return _check_string_list(key, value)
    expected = _field_type(annotation)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{key}: expected {expected.__name__}, got {value!r}")
    return value


def _coerce_env(key: str, text: str, annotation: object) -> object:
    if annotation == _STRING_TABLE:  # a table in one variable: a JSON object of strings
        try:
            decoded = json.loads(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a JSON object of strings, got {text!r}") from None
        return _check_string_table(key, decoded)
    if annotation == _INTEGER_LIST:
        stripped = text.strip()
        try:
            if stripped.startswith("["):
                items = json.loads(stripped)
            else:
                items = [int(item) for item in stripped.split(",")]
        except ValueError:
            raise ConfigError(f"{key}: expected integers (a JSON array or a, b, c), got {text!r}") from None
        return _check_integer_list(key, items)
    if annotation == _STRING_LIST:
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                return _check_string_list(key, json.loads(stripped))
            except ValueError:
                raise ConfigError(f"{key}: expected a JSON array of strings, got {text!r}") from None
        return tuple(item.strip() for item in stripped.split(",") if item.strip())
    expected = _field_type(annotation)
    try:
        if expected is int:
            return int(text.strip())
        if expected is float:
            return float(text.strip())
        if expected is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {expected.__name__}, got {text!r}") from None
    return text


def _check_string_table(key: str, value: object) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table of strings, got {value!r}")
    for name, item in value.items():
        if not isinstance(item, str):
            raise ConfigError(f"{key}.{name}: expected str, got {item!r}")
    return types.MappingProxyType(dict(value))


def _check_integer_list(key: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in value):
        raise ConfigError(f"{key}: expected an array of integers, got {value!r}")
    return tuple(value)


def _check_string_list(key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or any(not isinstance(i, str) for i in value):
        raise ConfigError(f"{key}: expected an array of strings, got {value!r}")
    return tuple(value)
