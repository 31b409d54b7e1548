"""Pure HTTP semantics: the header set of a blob response.

Built once per blob version; handlers add only what varies per request (`X-Cache`).
"""

from __future__ import annotations

from email.utils import format_datetime
from typing import Final

from .origin import BlobMeta

X_CACHE: Final = "X-Cache"


def blob_headers(meta: BlobMeta, cache_control: str) -> dict[str, str]:
    """Representation headers for a blob (RFC 9110 section 8) plus our caching policy."""
    return {
        "Content-Type": meta.content_type,
        "ETag": meta.etag,
        "Last-Modified": format_datetime(meta.last_modified, usegmt=True),
        "Cache-Control": cache_control,
        # The proxy serves whatever was uploaded: browsers must not sniff it into HTML.
        "X-Content-Type-Options": "nosniff",
    }
