"""Configuration: the settings (`sections`), reading them (`loading`), checking them (`checks`).

`load_config(path, environ)` gives a validated, frozen `Config` or raises `ConfigError` naming the
key. This package imports nothing else of imgproxy: every other package may import it.
"""

from __future__ import annotations

from imgproxy.config.checks import upstream_address
from imgproxy.config.loading import load_config, load_transform_config
from imgproxy.config.sections import (
    CONNECTION_STRING_ENV,
    MIB,
    ActiveContent,
    AdminConfig,
    CacheConfig,
    CdnConfig,
    Config,
    ConfigError,
    DiskConfig,
    HttpConfig,
    OriginConfig,
    OtelConfig,
    RedisConfig,
    ServerConfig,
    TransformConfig,
    UpstreamConfig,
)

__all__ = [
    "CONNECTION_STRING_ENV",
    "MIB",
    "ActiveContent",
    "AdminConfig",
    "CacheConfig",
    "CdnConfig",
    "Config",
    "ConfigError",
    "DiskConfig",
    "HttpConfig",
    "OriginConfig",
    "OtelConfig",
    "RedisConfig",
    "ServerConfig",
    "TransformConfig",
    "UpstreamConfig",
    "load_config",
    "load_transform_config",
    "upstream_address",
]
