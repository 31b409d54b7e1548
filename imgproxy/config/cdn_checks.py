"""The checks of `[cdn]` beyond types and lower bounds: header names, the tag prefix, and the
purge request's templates (only the placeholders a purge fills in)."""

from __future__ import annotations

import re
from string import Template
from typing import Final
from urllib.parse import urlsplit

from imgproxy.config.sections import CdnConfig, ConfigError

# RFC 9110 section 5.6.2: a field name (and a method) is a token.
TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Letters, digits, - and _: valid in every CDN's tag syntax (Fastly, Cloudflare, Akamai, Varnish xkey).
TAG_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]{0,32}")
PLACEHOLDERS: Final = frozenset({"tag", "path", "container"})


def check_cdn(cdn: CdnConfig) -> None:
    names = [name.lower() for name in cdn.tag_headers]
    for name in cdn.tag_headers:
        if not TOKEN.fullmatch(name):
            raise ConfigError(f"cdn.tag_headers: not a header name: {name!r}")
    if len(set(names)) != len(names):
        raise ConfigError("cdn.tag_headers: a header is named twice")
    if not TAG_PREFIX.fullmatch(cdn.tag_prefix):
        raise ConfigError(f"cdn.tag_prefix: up to 32 letters, digits, - or _, got {cdn.tag_prefix!r}")
    if not cdn.purge_url:
        return
    if urlsplit(cdn.purge_url).scheme not in ("http", "https") or not urlsplit(cdn.purge_url).netloc:
        raise ConfigError("cdn.purge_url: must be an http:// or https:// URL")
    _check_template("cdn.purge_url", cdn.purge_url)
    _check_template("cdn.purge_body", cdn.purge_body)
    uses_tags = any("tag" in Template(text).get_identifiers() for text in (cdn.purge_url, cdn.purge_body))
    if uses_tags and not cdn.tag_headers:
        # A purge by tag with answers that carry none would purge nothing, silently.
        raise ConfigError(
            "cdn.tag_headers: empty, but cdn.purge_url or cdn.purge_body purges by $tag "
            '(name the headers, e.g. ["Cache-Tag"], or purge by $path)'
        )
    if not TOKEN.fullmatch(cdn.purge_method):
        raise ConfigError(f"cdn.purge_method: not a method: {cdn.purge_method!r}")
    for name in cdn.purge_headers:
        if not TOKEN.fullmatch(name):
            raise ConfigError(f"cdn.purge_headers: not a header name: {name!r}")


def _check_template(key: str, text: str) -> None:
    template = Template(text)
    if not template.is_valid():
        raise ConfigError(f"{key}: a lone $ (write $$ for a dollar sign)")
    unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS)
    if unknown:
        raise ConfigError(f"{key}: unknown placeholder ${unknown[0]} (known: $tag, $path, $container)")
