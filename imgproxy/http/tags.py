"""CDN tags (`cdn.tag_headers`): every answer for a blob, its variants' too, names the blob in
headers such as `Surrogate-Key` (Fastly, Varnish xkey) and `Cache-Tag` (Cloudflare), so that a
purge of the blob can reach every URL a CDN keeps of it.

A tag is `cdn.tag_prefix` and 32 hex digits of the SHA-256 of the container and the blob path
(at most 64 characters of `[A-Za-z0-9_-]`: within every CDN's limits on length and characters,
whatever the path holds). Each header carries two tags: the blob's, and the container's (what a
purge of everything purges). `Surrogate-Key` separates them with a space (Fastly's and Varnish
xkey's syntax), every other header with a comma (Cloudflare's and Akamai's).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Final

from imgproxy.core.blob import path_of

Headers = tuple[tuple[str, str], ...]
NO_TAGS: Final[Headers] = ()
DIGEST_CHARS: Final = 32  # 128 bits: no collision among any container's blobs
MEMO_ITEMS: Final = 4096  # header pairs remembered (hits ask on every request)


class CdnTags:
    """The tag headers of a container's blobs."""

    def __init__(self, names: tuple[str, ...], prefix: str, container: str) -> None:
        self._names = names
        self._prefix = prefix
        self._container = container
        self.container_tag = self._tag(container)
        self.headers: Callable[[str], Headers] = functools.lru_cache(maxsize=MEMO_ITEMS)(self._headers)

    def blob_tag(self, path: str) -> str:
        """The tag of the blob at `path` (and of its variants)."""
        # A container name holds no NUL: the two tags' inputs never coincide.
        return self._tag(f"{self._container}\0{path}")

    def _tag(self, text: str) -> str:
        return self._prefix + hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]

    def _headers(self, key: str) -> Headers:
        """The tag headers of the answer for `key` (an original's or a variant's)."""
        tags = (self.blob_tag(path_of(key)), self.container_tag)
        return tuple(
            (name, (" " if name.lower() == "surrogate-key" else ",").join(tags)) for name in self._names
        )
