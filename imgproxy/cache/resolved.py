"""What the fetcher answers a request with: metadata, how it was found, and the body or its source."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

from imgproxy.cache.disk.files import OpenEntry
from imgproxy.core.blob import BlobMeta, Entry

# (start, end) inclusive: the bytes a request needs, or None when it needs no body.
Span = tuple[int, int]


class CacheStatus(enum.Enum):
    """How a response was answered, sent as `X-Cache`."""

    HIT = "HIT"
    MISS = "MISS"
    STALE = "STALE"


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a request gets: the blob's metadata and its body, or a stream of the span it chose."""

    meta: BlobMeta
    status: CacheStatus
    body: bytes | None
    stream: AsyncGenerator[bytes, None] | None = None
    file: Path | None = None  # the entry is a complete file of the disk tier (not opened yet)
    head: bytes = b""  # see tiers.Entry.head
    opened: OpenEntry | None = None  # that file, opened and checked: send it, then close it
    fetched_at: float = 0.0  # wall clock: when Azure last confirmed this version (0: unknown)
    vary_accept: bool = False  # the bytes depend on the request's Accept header (a negotiated variant)

    @classmethod
    def of(cls, entry: Entry, status: CacheStatus) -> Resolved:
        """An entry of a tier (or one just downloaded) as answered with `status`."""
        return cls(
            entry.meta, status, entry.body, file=entry.file, head=entry.head, fetched_at=entry.fetched_at
        )
