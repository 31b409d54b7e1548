"""What a setting must be beyond its type: lower bounds, and the checks across keys.

Each check raises `ConfigError` naming the key. A preset's query is checked by the transform
package (`transform.params.check_presets`), which reads queries: configuration knows no
transform parameter.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
from typing import Final
from urllib.parse import urlsplit

from imgproxy.config.cdn_checks import check_cdn
from imgproxy.config.sections import (
    CONNECTION_STRING_ENV,
    ActiveContent,
    Config,
    ConfigError,
    RedisConfig,
    TransformConfig,
)

# Inclusive lower bound per key; keys absent here only need the right type.
MINIMUM: Final[dict[str, float]] = {
    "server.port": 0,
    "server.drain_s": 0,
    "server.shutdown_timeout_s": 0,
    "server.workers": 1,
    "server.header_timeout_s": 0.01,
    "server.keepalive_timeout_s": 0.01,
    "server.max_connections_per_ip": 0,
    "server.malloc_arena_max": 0,
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
    "cdn.purge_timeout_s": 0.01,
    "cdn.purge_attempts": 1,
    "cdn.purge_backoff_s": 0,
    "cdn.purge_max_backoff_s": 0,
    "cdn.purge_delay_s": 0,
    "cdn.purge_queue": 1,
    "cdn.purge_drain_s": 0,
}
LOG_FORMATS: Final = ("text", "json")
PRESET_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")
MIN_SIGNING_KEY_CHARS: Final = 16  # a short key is guessable offline from one signed value


def check_minimum(key: str, value: object) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    minimum = MINIMUM.get(key)
    if minimum is not None and isinstance(value, int | float) and value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum:g}, got {value!r}")
    if key == "server.port" and isinstance(value, int) and value > 65535:
        raise ConfigError(f"{key}: must be at most 65535, got {value}")


def check_consistency(config: Config) -> None:
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
    check_transform_section(config.transform)
    if config.disk.enabled and not config.disk.path:
        raise ConfigError("disk.path: must not be empty when disk.enabled is true")
    _check_redis(config.redis)
    check_cdn(config.cdn)
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
    if config.server.log_format not in LOG_FORMATS:
        raise ConfigError(
            f"server.log_format: must be one of {', '.join(LOG_FORMATS)}, got {config.server.log_format!r}"
        )
    if config.upstream.url:
        upstream_address(config.upstream.url)
    _check_otel(config)


def _check_otel(config: Config) -> None:
    if not config.otel.enabled:
        return  # looking for the SDK imports the `opentelemetry` namespace package: only when on
    try:
        found = importlib.util.find_spec("opentelemetry.sdk") is not None
    except ModuleNotFoundError:  # not even the API
        found = False
    if not found:
        raise ConfigError("otel.enabled: needs the otel extra (pip install 'imgproxy[otel]')")


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


def check_transform_section(transform: TransformConfig) -> None:
    """The `[transform]` checks that need no other section (for `imgproxy sign` too)."""
    for name in transform.presets:
        if not PRESET_NAME.fullmatch(name):
            raise ConfigError(f"transform.presets.{name}: a preset name is 1-64 of A-Z a-z 0-9 _ -")
    _check_width_ladder(transform.width_ladder, transform.max_width if transform.client_hints else None)


def _check_width_ladder(ladder: tuple[int, ...], max_width: int | None) -> None:
    # The rungs bound the variants a hint can make: each must be a width the server may make. The
    # maximum is checked only with hints on: a lowered max_width must not need a ladder unused.
    if not ladder:
        raise ConfigError("transform.width_ladder: must not be empty")
    if ladder[0] < 1 or any(low >= high for low, high in itertools.pairwise(ladder)):
        raise ConfigError(f"transform.width_ladder: must be ascending positive integers, got {list(ladder)}")
    if max_width is not None and ladder[-1] > max_width:
        raise ConfigError(
            f"transform.width_ladder: rungs must be at most transform.max_width ({max_width}), "
            f"got {ladder[-1]}"
        )


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
