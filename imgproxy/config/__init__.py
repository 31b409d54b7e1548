"""Configuration: read `config.toml`, apply `IMGPROXY_<SECTION>_<KEY>` overrides, validate.

Every setting lives in a frozen dataclass with its default. `load_config` raises `ConfigError`
naming the offending key; it never lets a bad value reach the running server. The environment is
passed in (not read globally) so tests can build many configurations in one process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from imgproxy.http.content_policy import ActiveContent

MIB: Final = 1024 * 1024
CONNECTION_STRING_ENV: Final = "AZURE_STORAGE_CONNECTION_STRING"


class ConfigError(Exception):
    """A setting is missing, unknown or invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    drain_s: float = 2.0
    shutdown_timeout_s: float = 30.0
    workers: int = 1
    access_log: bool = False
    ops_prefix: str = ""
    header_timeout_s: float = 15.0
    keepalive_timeout_s: float = 75.0
    max_connections_per_ip: int = 0  # 0: no cap
    metrics_token: str = field(default="", repr=False)  # a secret: kept out of reprs and logs


@dataclass(frozen=True, slots=True)
class OriginConfig:
    connection_string: str = ""
    account_url: str = ""
    container: str = "images"
    timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    retries: int = 2
    retry_backoff_s: float = 0.2
    download_chunk_bytes: int = 512 * 1024
    ready_check_interval_s: float = 5.0
    max_concurrency: int = 64
    max_queue: int = 1024
    breaker_failures: int = 5
    breaker_cooldown_s: float = 5.0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    max_items: int = 100
    max_bytes: int = 100 * MIB
    max_item_bytes: int = 5 * MIB
    ttl_s: float = 300.0
    stale_while_revalidate_s: float = 30.0
    stale_if_error_s: float = 3600.0
    negative_ttl_s: float = 5.0


@dataclass(frozen=True, slots=True)
class DiskConfig:
    enabled: bool = False
    path: str = ".cache/imgproxy"
    max_bytes: int = 10 * 1024 * MIB
    max_item_bytes: int = 1024 * MIB
    lock_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class HttpConfig:
    cache_control: str = "public, max-age=86400"
    stream_chunk_bytes: int = 64 * 1024
    send_timeout_s: float = 60.0
    # A blob that is not an inert raster image: "attachment", "sandbox" or "refuse" (content_policy).
    active_content: str = "attachment"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    token: str = ""


def _no_presets() -> Mapping[str, str]:
    return types.MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TransformConfig:
    """Image transforms (`?w=300&fm=webp`); see the README's "Image transforms" section."""

    enabled: bool = False
    signing_key: str = field(default="", repr=False)  # a secret: kept out of reprs and logs
    allow_unsigned: bool = False
    auto_format: bool = False
    auto_avif: bool = False
    max_width: int = 8192
    max_height: int = 8192
    max_src_pixels: int = 50_000_000
    max_src_bytes: int = 64 * MIB
    max_frames: int = 100
    max_concurrency: int = 0  # 0: the number of cores
    max_queue: int = 64
    timeout_s: float = 10.0
    # name -> query string, e.g. "thumb" -> "w=200&h=200&fit=cover"; read-only once loaded.
    presets: Mapping[str, str] = field(default_factory=_no_presets)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = ""
    connect_timeout_s: float = 3.0
    timeout_s: float = 60.0
    idle_timeout_s: float = 60.0
    max_body_bytes: int = 100 * MIB
    max_connections: int = 100
    max_websockets: int = 100
    preserve_host: bool = True
    trust_forwarded: bool = False
    request_buffering: bool = True
    request_buffer_bytes: int = 64 * 1024
    request_buffers_total_bytes: int = 16 * MIB
    spool_dir: str = ""
    spool_max_bytes: int = 1024 * MIB
    body_timeout_s: float = 60.0
    body_min_rate: int = 1024


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """The shared tier and purge log (`url` empty: off, and nothing changes)."""

    url: str = ""
    cluster: bool = False
    prefix: str = "imgproxy:"
    timeout_s: float = 0.1
    max_item_bytes: int = 1 * MIB
    ttl_s: float = 86400.0
    lock_wait_s: float = 5.0
    lock_ttl_s: float = 3.0
    max_connections: int = 64
    breaker_failures: int = 3
    breaker_cooldown_s: float = 0.5
    log_max_len: int = 10_000
    log_block_s: float = 1.0
    announce_ttl_s: float = 30.0
    catch_up_s: float = 2.0
    # HMAC-SHA256 key of shared entries and purge-log records; empty: Redis is trusted unsigned.
    signing_key: str = field(default="", repr=False)  # a secret: kept out of reprs and logs


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    disk: DiskConfig = field(default_factory=DiskConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)


# The one non-scalar kind of setting (`transform.presets`): a TOML table of strings, or in the
# environment a JSON object of strings. Annotations are strings (`from __future__ import annotations`).
_STRING_TABLE: Final = "Mapping[str, str]"

# Inclusive lower bound per key; keys absent here only need the right type.
_MINIMUM: Final[dict[str, float]] = {
    "server.port": 0,
    "server.drain_s": 0,
    "server.shutdown_timeout_s": 0,
    "server.workers": 1,
    "server.header_timeout_s": 0.01,
    "server.keepalive_timeout_s": 0.01,
    "server.max_connections_per_ip": 0,
    "origin.max_concurrency": 1,
    "origin.max_queue": 0,
    "origin.breaker_failures": 1,
    "origin.breaker_cooldown_s": 0,
    "origin.timeout_s": 0.01,
    "origin.connect_timeout_s": 0.01,
    "origin.retries": 0,
    "origin.retry_backoff_s": 0,
    "origin.download_chunk_bytes": 1024,
    "origin.ready_check_interval_s": 0,
    "cache.max_items": 1,
    "cache.max_bytes": 1,
    "cache.max_item_bytes": 0,
    "cache.ttl_s": 0,
    "cache.stale_while_revalidate_s": 0,
    "cache.stale_if_error_s": 0,
    "cache.negative_ttl_s": 0,
    "http.stream_chunk_bytes": 1024,
    "http.send_timeout_s": 0.01,
    "disk.max_bytes": 1,
    "disk.max_item_bytes": 0,
    "disk.lock_timeout_s": 0,
    "upstream.connect_timeout_s": 0.01,
    "upstream.timeout_s": 0.01,
    "upstream.idle_timeout_s": 0.01,
    "upstream.max_body_bytes": 0,
    "upstream.max_connections": 1,
    "upstream.max_websockets": 0,
    "upstream.request_buffer_bytes": 0,
    "upstream.request_buffers_total_bytes": 0,
    "upstream.spool_max_bytes": 0,
    "upstream.body_timeout_s": 0.01,
    "upstream.body_min_rate": 0,
    "transform.max_width": 1,
    "transform.max_height": 1,
    "transform.max_src_pixels": 1,
    "transform.max_src_bytes": 1,
    "transform.max_frames": 1,
    "transform.max_concurrency": 0,
    "transform.max_queue": 0,
    "transform.timeout_s": 0.01,
    "redis.timeout_s": 0.001,
    "redis.max_item_bytes": 0,
    "redis.ttl_s": 1,
    "redis.lock_wait_s": 0,
    "redis.lock_ttl_s": 0.01,
    "redis.max_connections": 2,
    "redis.breaker_failures": 1,
    "redis.breaker_cooldown_s": 0.01,
    "redis.log_max_len": 1,
    "redis.log_block_s": 0.01,
    "redis.announce_ttl_s": 1,
    "redis.catch_up_s": 0,
}
PRESET_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")
MIN_SIGNING_KEY_CHARS: Final = 16  # a short key is guessable offline from one signed value


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
    _check_consistency(config)
    return config


def load_transform_config(path: Path | None, environ: Mapping[str, str] | None = None) -> TransformConfig:
    """Only the validated `[transform]` section (for `python -m imgproxy sign`, which needs no origin)."""
    env = os.environ if environ is None else environ
    transform: TransformConfig = _load_section("transform", _read_file(path).get("transform", {}), env)
    _check_transform(transform)
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
            _check_minimum(key, values[f.name])
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


def _check_minimum(key: str, value: object) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    minimum = _MINIMUM.get(key)
    if minimum is not None and isinstance(value, int | float) and value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum:g}, got {value!r}")
    if key == "server.port" and isinstance(value, int) and value > 65535:
        raise ConfigError(f"{key}: must be at most 65535, got {value}")


def _check_consistency(config: Config) -> None:
    origin, cache = config.origin, config.cache
    if not origin.container:
        raise ConfigError("origin.container: must not be empty")
    if bool(origin.connection_string) == bool(origin.account_url):
        raise ConfigError(
            "origin.connection_string / origin.account_url: set exactly one "
            f"(or the {CONNECTION_STRING_ENV} environment variable)"
        )
    if cache.max_item_bytes > cache.max_bytes:
        raise ConfigError(
            f"cache.max_item_bytes: must not exceed cache.max_bytes ({cache.max_bytes}), "
            f"got {cache.max_item_bytes}"
        )
    _check_transform(config.transform)
    if config.disk.enabled and not config.disk.path:
        raise ConfigError("disk.path: must not be empty when disk.enabled is true")
    _check_redis(config.redis)
    if config.http.cache_control != config.http.cache_control.strip() or any(
        ord(ch) < 0x20 or ord(ch) == 0x7F for ch in config.http.cache_control
    ):
        raise ConfigError("http.cache_control: must be a single header value")
    choices = [mode.value for mode in ActiveContent]
    if config.http.active_content not in choices:
        raise ConfigError(
            f"http.active_content: must be one of {', '.join(choices)}, got {config.http.active_content!r}"
        )
    _check_ops_prefix(config.server.ops_prefix)
    if config.upstream.url:
        upstream_address(config.upstream.url)


def _check_ops_prefix(prefix: str) -> None:
    if prefix and (
        not prefix.startswith("/")
        or prefix.endswith("/")
        or "//" in prefix
        or any(ch in prefix for ch in "?#%\\")
        or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in prefix)
        or prefix == "/images"
        or prefix.startswith("/images/")
    ):
        raise ConfigError(
            "server.ops_prefix: empty, or a path such as /_imgproxy (a leading slash, no trailing "
            f"slash, no query, not under /images/), got {prefix!r}"
        )


def upstream_address(url: str) -> tuple[str, int]:
    """(host, port) of `upstream.url`, which must be `http://host[:port]` (no path, query or user)."""
    parsed = urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if (
        parsed.scheme != "http"
        or not parsed.hostname
        or parsed.path not in ("", "/")
        or parsed.query
        or parsed.fragment
        or parsed.username is not None
        or port == -1
    ):
        raise ConfigError(f"upstream.url: expected http://host[:port] (no path), got {url!r}")
    return parsed.hostname, port if port is not None else 80


def _check_transform(transform: TransformConfig) -> None:
    # Imported here: params needs this module's TransformConfig, and presets are checked by the
    # same parser that reads request queries, so a preset that loads is one the server can serve.
    from imgproxy.transform.params import check_preset

    for name, query in transform.presets.items():
        if not PRESET_NAME.fullmatch(name):
            raise ConfigError(f"transform.presets.{name}: a preset name is 1-64 of A-Z a-z 0-9 _ -")
        problem = check_preset(query, transform)
        if problem is not None:
            raise ConfigError(f"transform.presets.{name}: {problem}")


def _check_redis(redis: RedisConfig) -> None:
    if redis.url and not redis.url.startswith(REDIS_SCHEMES):
        # Not echoed: the URL may carry a password.
        raise ConfigError(f"redis.url: must start with one of {', '.join(REDIS_SCHEMES)}")
    if redis.cluster and redis.url.startswith("unix://"):
        raise ConfigError("redis.cluster: a cluster is reached over TCP, not a unix:// socket")
    if "{" in redis.prefix or "}" in redis.prefix:
        # Keys of one path share a cluster hash tag; a brace in the prefix would become the tag.
        raise ConfigError(f"redis.prefix: must not contain braces, got {redis.prefix!r}")
    if redis.signing_key and len(redis.signing_key) < MIN_SIGNING_KEY_CHARS:
        # Not echoed: it is a secret.
        raise ConfigError(
            f"redis.signing_key: empty (off) or at least {MIN_SIGNING_KEY_CHARS} characters, "
            f"got {len(redis.signing_key)}"
        )
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in redis.prefix):
        raise ConfigError(
            f"redis.prefix: must not contain spaces or control characters, got {redis.prefix!r}"
        )
