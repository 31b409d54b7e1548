"""Settings that name environment variables: `cdn.purge_headers` values such as
`"Bearer ${CDN_TOKEN}"` take the variable's value once, at load time, so the secret need not sit in
`config.toml`. The syntax is `string.Template`'s: `${NAME}` or `$NAME`, and `$$` for a dollar sign.
A variable that is not set stops start-up with a message naming the key and the variable (never a
value).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from string import Template

from imgproxy.config.sections import Config, ConfigError


def expand_environment(key: str, value: str, env: Mapping[str, str]) -> str:
    """`value` with each `${NAME}` replaced by the environment variable NAME (ConfigError if unset
    or if the value is not a valid template)."""
    template = Template(value)
    if not template.is_valid():
        raise ConfigError(f"{key}: a lone $ (write $$ for a dollar sign, ${{NAME}} for a variable)")
    missing = [name for name in template.get_identifiers() if name not in env]
    if missing:
        raise ConfigError(f"{key}: environment variable {missing[0]} is not set")
    expanded = template.substitute(env)
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in expanded):
        # Not echoed: it may be the secret.
        raise ConfigError(f"{key}: the value has a control character (a header value cannot)")
    return expanded


def with_cdn_secrets(config: Config, env: Mapping[str, str]) -> Config:
    """`config` with the environment variables of `cdn.purge_headers` expanded."""
    headers = config.cdn.purge_headers
    if not headers:
        return config
    expanded = {
        name: expand_environment(f"cdn.purge_headers.{name}", value, env) for name, value in headers.items()
    }
    return dataclasses.replace(
        config, cdn=dataclasses.replace(config.cdn, purge_headers=types.MappingProxyType(expanded))
    )
