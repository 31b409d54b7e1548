"""The settings: one frozen dataclass per `config.toml` section, each field with its default.

Reading and checking them is `config.loading`'s and `config.checks`' job; nothing here does I/O.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final


class ConfigError(Exception):
    """A setting is missing, unknown or invalid; the message names the key."""


class ActiveContent(enum.StrEnum):
    """`http.active_content`: how `/images/` presents a blob that is not an inert raster image."""

    ATTACHMENT = "attachment"  # application/octet-stream, Content-Disposition: attachment
    SANDBOX = "sandbox"  # its declared type, under the CSP every answer carries
    REFUSE = "refuse"  # 403


MIB: Final = 1024 * 1024
# The widths a Client Hint may choose (`transform.width_ladder`): a bounded set of variants.
DEFAULT_WIDTH_LADDER: Final = (160, 320, 480, 640, 800, 1080, 1280, 1600, 1920, 2560)
CONNECTION_STRING_ENV: Final = "AZURE_STORAGE_CONNECTION_STRING"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    drain_s: float = 2.0
    shutdown_timeout_s: float = 30.0
    workers: int = 1
    access_log: bool = False
    log_format: str = "text"  # "text" (one line of words) or "json" (one object a line)
    ops_prefix: str = ""
    header_timeout_s: float = 15.0
    keepalive_timeout_s: float = 75.0
    max_connections_per_ip: int = 0  # 0: no cap
    metrics_token: str = field(default="", repr=False)  # a secret: kept out of reprs and logs
    malloc_arena_max: int = 2  # glibc arenas per process (core.allocator); 0: leave the allocator alone


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
    """Image transforms (`?w=300&fm=webp`); see docs/transforms.md."""

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
    max_concurrency: int = 0  # 0: two per core of the machine (per worker)
    max_queue: int = 64
    timeout_s: float = 10.0
    # Sec-CH-Width / Width choose the width of a sizeless transform, rounded up to a rung.
    client_hints: bool = False
    width_ladder: tuple[int, ...] = DEFAULT_WIDTH_LADDER
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
class CdnConfig:
    """A CDN in front: tags on answers, and purges forwarded to it (`cdn.tags`, `cdn.purger`)."""

    # Response headers carrying the blob's tags, e.g. ("Surrogate-Key", "Cache-Tag"); empty: none.
    tag_headers: tuple[str, ...] = ()
    tag_prefix: str = "imgproxy-"
    purge_url: str = ""  # empty: purges stay ours; `$tag`, `$path`, `$container` expanded
    purge_method: str = "POST"
    # name -> value; `${VAR}` is the environment variable VAR, read once at start (a secret: kept
    # out of reprs and logs).
    purge_headers: Mapping[str, str] = field(default_factory=_no_presets, repr=False)
    purge_body: str = '{"tags": ["$tag"]}'
    purge_timeout_s: float = 10.0
    purge_attempts: int = 8
    purge_backoff_s: float = 0.5
    purge_max_backoff_s: float = 30.0
    purge_delay_s: float = 1.0  # after the purge is accepted: the other replicas apply it first
    purge_queue: int = 1000
    purge_drain_s: float = 5.0


@dataclass(frozen=True, slots=True)
class OtelConfig:
    """OpenTelemetry traces (the `otel` extra); the exporter is set by the standard `OTEL_*` variables."""

    enabled: bool = False


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
    cdn: CdnConfig = field(default_factory=CdnConfig)
    otel: OtelConfig = field(default_factory=OtelConfig)
