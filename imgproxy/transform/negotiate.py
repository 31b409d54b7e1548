"""`fm=auto`: the `Accept` header chooses an output format bucket.

AVIF if `Accept` lists `image/avif` (and `transform.auto_avif` is on: AVIF encoding is slow), else
WebP if it lists `image/webp`, else `SOURCE`: the source's own family (JPEG, or PNG when the image
has alpha, GIF for a GIF), which the engine resolves once it has read the source's header. So a
cache key can hold the bucket before the source is known, and never holds the raw header.

"Lists" means named explicitly with a q-value above 0 (RFC 9110 section 12.5.1): `image/*` and
`*/*` do not count (curl's `*/*` gets the source's family; old browsers send `image/*` and
cannot all show WebP), and `image/webp;q=0` means not acceptable even when `*/*` is there.
"""

from __future__ import annotations

import enum
import functools
from typing import Final


class FormatBucket(enum.StrEnum):
    """The output format a variant is keyed by; `SOURCE` and `ORIGINAL` are resolved by the engine."""

    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"
    JSON = "json"  # `fm=json`: the source described, never negotiated
    SOURCE = "source"  # the safe family: JPEG, PNG (alpha) or GIF; never WebP/AVIF
    ORIGINAL = "original"  # no `fm`: the source's own format where we can write it


AVIF_TYPE: Final = "image/avif"
WEBP_TYPE: Final = "image/webp"
ACCEPT_MEMO_ITEMS: Final = 4096  # distinct Accept headers remembered
# Longer Accept values (browsers send under 256 characters) are read each time, not remembered:
# the memo holds at most 4,096 x 256 characters of keys, about 2 MiB with Python's overhead.
ACCEPT_MEMO_MAX_CHARS: Final = 256


def accepted_types(accept: str | None) -> frozenset[str]:
    """The media types `accept` names explicitly with q > 0 (lower case; wildcards left out)."""
    if not accept:
        return frozenset()
    named: set[str] = set()
    for element in accept.split(","):
        media_type, *parameters = (part.strip() for part in element.split(";"))
        media_type = media_type.lower()
        if "/" not in media_type or media_type.endswith("/*"):
            continue
        if _quality(parameters) > 0:
            named.add(media_type)
    return frozenset(named)


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0  # an unreadable weight: do not bet the format on it
            return quality if 0.0 <= quality <= 1.0 else 0.0
    return 1.0


def negotiate(accept: str | None, auto_avif: bool) -> FormatBucket:
    """The bucket for `fm=auto` given the request's `Accept` header (remembered when short:
    browsers send a handful of distinct headers, and every `fm=auto` request asks)."""
    if accept is not None and len(accept) > ACCEPT_MEMO_MAX_CHARS:
        return _negotiate(accept, auto_avif)
    return _remembered(accept, auto_avif)


def _negotiate(accept: str | None, auto_avif: bool) -> FormatBucket:
    named = accepted_types(accept)
    if auto_avif and AVIF_TYPE in named:
        return FormatBucket.AVIF
    if WEBP_TYPE in named:
        return FormatBucket.WEBP
    return FormatBucket.SOURCE


_remembered: Final = functools.lru_cache(maxsize=ACCEPT_MEMO_ITEMS)(_negotiate)
